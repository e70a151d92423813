//! The notify server (port 37001): one bidirectional stream per CRM, DME or Shepherd.
//!
//! After the client's hello (CRMs and Shepherds prove their cloudlet with its access key), the server
//! sends every visible object of the wanted kinds, `SendAllEnd`, then each committed change from the
//! cache (which follows the etcd watch, so every replica streams the same truth). CRMs and Shepherds see
//! only their cloudlet's objects: its Cloudlet, ClusterInsts and AppInsts, the Apps those AppInsts use,
//! and all Flavors. A CRM's reports are written to etcd; while its stream lives, the controller holds a
//! `Conn/<cloudlet>` key on an etcd lease, and a cloudlet whose key expired is marked Offline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use edge_common::pki::{Peer, Role, access_key_id};
use edge_common::{Keyed, access_key};
use edge_proto::edge::notify_server::Notify;
use edge_proto::edge::{
    AlertPolicy, App, AppInst, Change as ChangeMsg, ChangeAction, ClientType, Cloudlet,
    CloudletInfo, CloudletKey, CloudletState, Hello, HelloReply, NotifyDown, NotifyUp, ObjectKind,
    SendAllEnd, notify_down, notify_up,
};
use etcd_client::PutOptions;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::Api;
use crate::cache::{Cache, Event};
use crate::error::{CtrlError, Result};
use crate::metrics::Metrics;
use crate::objects::{Any, kind_of, sync_rank};
use crate::store::Write;

pub struct NotifyService {
    pub api: Api,
    pub metrics: Arc<Metrics>,
    /// mTLS: the client certificate, not a signed hello, proves who the client is
    pub tls: bool,
    /// becomes true when the controller stops: every session ends (their tasks outlive the server's)
    pub stopped: tokio::sync::watch::Receiver<bool>,
}

/// Who is on the other end of a stream, after the hello.
#[derive(Clone, Debug)]
struct Client {
    kind: ClientType,
    /// the client's cloudlet (CRM, Shepherd); None for a DME, which sees the whole region
    cloudlet: Option<CloudletKey>,
    /// the access public key the client authenticated with
    public_key: String,
    wanted: HashSet<&'static str>,
    name: String,
}

fn kind_name(k: ObjectKind) -> Option<&'static str> {
    Some(match k {
        ObjectKind::Flavor => "Flavor",
        ObjectKind::OperatorCode => "OperatorCode",
        ObjectKind::Cloudlet => "Cloudlet",
        ObjectKind::CloudletInfo => "CloudletInfo",
        ObjectKind::ClusterInst => "ClusterInst",
        ObjectKind::App => "App",
        ObjectKind::AppInst => "AppInst",
        ObjectKind::Alert => "Alert",
        ObjectKind::AlertPolicy => "AlertPolicy",
        ObjectKind::ExecRequest => "ExecRequest",
        ObjectKind::Unknown => return None,
    })
}

impl NotifyService {
    fn authenticate(&self, hello: &Hello, peer: Option<&Peer>) -> Result<Client> {
        let region = &self.api.store.region;
        if &hello.region != region {
            return Err(CtrlError::Invalid(format!(
                "this controller serves region \"{region}\", not \"{}\"",
                hello.region
            )));
        }
        let kind = hello.client_type();
        let default_kinds: &[&'static str] = match kind {
            ClientType::Crm => &[
                "Flavor",
                "Cloudlet",
                "ClusterInst",
                "App",
                "AppInst",
                "ExecRequest",
            ],
            ClientType::Shepherd => &[
                "Flavor",
                "Cloudlet",
                "CloudletInfo",
                "ClusterInst",
                "App",
                "AppInst",
                "Alert",
                "AlertPolicy",
            ],
            ClientType::Dme => &[
                "Flavor",
                "OperatorCode",
                "Cloudlet",
                "CloudletInfo",
                "App",
                "AppInst",
            ],
            ClientType::Unknown => {
                return Err(CtrlError::Invalid("hello.client_type is required".into()));
            }
        };
        let mut wanted: HashSet<&'static str> = hello.wanted().filter_map(kind_name).collect();
        if wanted.is_empty() {
            wanted = default_kinds.iter().copied().collect();
        }
        let mut client = Client {
            kind,
            cloudlet: None,
            public_key: String::new(),
            wanted,
            name: hello.client_name.clone(),
        };
        // With mTLS the certificate must name this region and the role the hello claims.
        let peer = match (self.tls, peer) {
            (false, _) => None,
            (true, Some(p)) if p.region == *region => Some(p),
            (true, _) => {
                return Err(CtrlError::Unauthenticated(format!(
                    "a client certificate of region {region} is required"
                )));
            }
        };
        let role = match kind {
            ClientType::Crm => Role::Crm,
            ClientType::Shepherd => Role::Shepherd,
            _ => Role::Dme,
        };
        if let Some(p) = peer
            && p.role != role
        {
            return Err(CtrlError::PermissionDenied(format!(
                "a {} certificate cannot connect as {}",
                p.role.as_str(),
                kind.as_str_name()
            )));
        }
        if kind == ClientType::Dme {
            return Ok(client);
        }
        let key = hello
            .cloudlet_key
            .clone()
            .ok_or_else(|| CtrlError::Invalid("hello.cloudlet_key is required".into()))?;
        let refuse = |why: String| refused(&key, &why);
        let cloudlet = self
            .api
            .cache
            .get::<Cloudlet>(&key.key_string())
            .ok_or_else(|| refuse("unknown cloudlet".into()))?;
        match peer.and_then(|p| p.cloudlet.as_ref()) {
            // The certificate names the cloudlet and the access key it was issued under: a rotated key
            // ends every certificate issued before.
            Some((org, name, key_id)) => {
                if (org, name) != (&key.organization, &key.name) {
                    return Err(CtrlError::PermissionDenied(format!(
                        "this certificate is for cloudlet {org}/{name}, not {}",
                        key.key_string()
                    )));
                }
                if *key_id != access_key_id(&cloudlet.access_public_key) {
                    return Err(refuse(
                        "certificate issued under a rotated access key".into(),
                    ));
                }
            }
            None if self.tls => return Err(refuse("certificate names no cloudlet".into())),
            None => access_key::verify(
                &cloudlet.access_public_key,
                region,
                &key.organization,
                &key.name,
                hello.signed_at,
                &hello.signature,
                edge_common::now_ms(),
            )
            .map_err(|e| refuse(e.to_string()))?,
        }
        client.cloudlet = Some(key);
        client.public_key = cloudlet.access_public_key;
        Ok(client)
    }
}

/// One answer for an unknown cloudlet and a wrong key or certificate: the caller learns nothing about
/// which (the log says).
fn refused(key: &CloudletKey, why: &str) -> CtrlError {
    tracing::warn!(cloudlet = %key.key_string(), why, "cloudlet credentials refused");
    CtrlError::Unauthenticated(format!(
        "cloudlet \"{}\": unknown cloudlet or wrong access key",
        key.key_string()
    ))
}

type DownStream = ReceiverStream<Result<NotifyDown, Status>>;

#[tonic::async_trait]
impl Notify for NotifyService {
    type StreamStream = DownStream;

    async fn stream(
        &self,
        req: Request<Streaming<NotifyUp>>,
    ) -> Result<Response<DownStream>, Status> {
        let peer = Peer::of_request(&req);
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let Some(NotifyUp {
            msg: Some(notify_up::Msg::Hello(hello)),
            ..
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first notify message must be a hello",
            ));
        };
        // Before authentication, which needs the region: a CRM refused as an unknown cloudlet would back
        // off for long, and a client must never take an empty world for the region.
        if let Err(e) = crate::ready(&self.api.cache) {
            let claimed =
                ClientType::try_from(hello.client_type).map_or("unknown", |t| t.as_str_name());
            self.metrics
                .notify_refused
                .with_label_values(&[claimed])
                .inc();
            return Err(e);
        }
        let client = self.authenticate(&hello, peer.as_ref())?;
        tracing::info!(client_type = client.kind.as_str_name(), cloudlet = ?client.cloudlet.as_ref().map(|k| k.key_string()), name = %client.name, "notify client connected");
        let (tx, rx) = mpsc::channel(1024);
        let session = Session {
            api: self.api.clone(),
            client,
            tx,
            since: hello.last_revision,
            sent: HashSet::new(),
            stopped: self.stopped.clone(),
        };
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let gauge = metrics
                .notify_clients
                .with_label_values(&[session.client.kind.as_str_name()]);
            gauge.inc();
            session.run(inbound).await;
            gauge.dec();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    api: Api,
    client: Client,
    tx: mpsc::Sender<Result<NotifyDown, Status>>,
    /// the revision the client says it is up to date with (its hello's `last_revision`)
    since: i64,
    /// etcd paths of the objects this client holds
    sent: HashSet<String>,
    stopped: tokio::sync::watch::Receiver<bool>,
}

/// Why a session ended.
enum End {
    ClientGone,
    Refused(Status),
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<NotifyUp>) {
        let cfg = self.api.config.clone();
        let crm_key = self
            .client
            .cloudlet
            .clone()
            .filter(|_| self.client.kind == ClientType::Crm);
        let conn = crm_key.as_ref().map(|k| {
            let key = self.api.store.conn_key(&k.key_string());
            tokio::spawn(hold_connection(
                self.api.store.client.clone(),
                key,
                cfg.replica.clone(),
                cfg.offline_after,
            ))
        });
        let reply = HelloReply {
            region: self.api.store.region.clone(),
            controller: cfg.replica.clone(),
            heartbeat_interval_secs: cfg.heartbeat_interval.as_secs().max(1) as u32,
        };
        let end: Result<(), End> = async {
            self.send(notify_down::Msg::HelloReply(reply)).await?;
            let mut events = match self.delta_sync().await? {
                Some(events) => events,
                None => self.full_sync().await?,
            };
            // A client silent for three heartbeat intervals is gone (half-open connection).
            let silence = cfg.heartbeat_interval * 3;
            let mut deadline = tokio::time::Instant::now() + silence;
            let mut stopped = self.stopped.clone();
            loop {
                tokio::select! {
                    _ = async { stopped.wait_for(|s| *s).await.map(|_| ()) } => return Err(End::ClientGone),
                    ev = events.recv() => match ev {
                        Ok(Event::Change(c)) => self.on_change(&c).await?,
                        Ok(Event::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => events = self.full_sync().await?,
                        Err(broadcast::error::RecvError::Closed) => return Err(End::ClientGone),
                    },
                    msg = inbound.message() => match msg {
                        Ok(Some(up)) => {
                            deadline = tokio::time::Instant::now() + silence;
                            self.on_report(up).await;
                        }
                        Ok(None) | Err(_) => return Err(End::ClientGone),
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::warn!(name = %self.client.name, "notify client silent for {} s; closing", silence.as_secs());
                        return Err(End::ClientGone);
                    }
                }
            }
        }
        .await;
        if let Err(End::Refused(status)) = end {
            let _ = self.tx.send(Err(status)).await;
        }
        if let Some(task) = conn {
            // The lease now expires after `offline_after` unless the CRM reconnects (to any replica).
            task.abort();
        }
        tracing::info!(name = %self.client.name, "notify client disconnected");
    }

    async fn send(&self, msg: notify_down::Msg) -> Result<(), End> {
        let down = NotifyDown {
            trace_context: Default::default(),
            msg: Some(msg),
        };
        self.tx.send(Ok(down)).await.map_err(|_| End::ClientGone)
    }

    async fn send_change(
        &mut self,
        action: ChangeAction,
        revision: i64,
        path: &str,
        object: &Any,
    ) -> Result<(), End> {
        match action {
            ChangeAction::Delete => self.sent.remove(path),
            ChangeAction::Update => self.sent.insert(path.to_string()),
        };
        // (The one copy this client's message is made of.)
        let object = match (self.client.kind, object.clone()) {
            // A DME needs an App's identity, ports and auth key, never how it runs.
            (ClientType::Dme, Any::App(mut a)) => {
                a.env.clear();
                a.command.clear();
                a.deployment_manifest.clear();
                Any::App(a)
            }
            // The cloudlet's CRM gets the env values themselves and the image's pull credentials,
            // from Vault.
            (ClientType::Crm, Any::App(mut a)) if action == ChangeAction::Update => {
                if let Some(s) = &self.api.secrets {
                    s.resolve(&mut a)
                        .await
                        .map_err(|e| End::Refused(e.into()))?;
                    a.registry_auth = s
                        .registry_auth(&a.image_path)
                        .await
                        .map_err(|e| End::Refused(e.into()))?;
                }
                Any::App(a)
            }
            (_, o) => o,
        };
        let change = ChangeMsg {
            action: action as i32,
            revision,
            object: Some(object),
        };
        self.send(notify_down::Msg::Change(change)).await
    }

    /// Sends every visible object (what others refer to first), then `SendAllEnd`. The client drops
    /// whatever it holds that this resend did not include.
    async fn full_sync(&mut self) -> Result<broadcast::Receiver<Event>, End> {
        let (mut objs, rev, rx) = self.api.cache.snapshot();
        objs.sort_by_key(|(path, _, o)| (sync_rank(kind_of(o)), path.clone()));
        self.sent.clear();
        for (path, _, obj) in objs {
            if self.visible(&obj, &self.api.cache) {
                self.send_change(ChangeAction::Update, rev, &path, &obj)
                    .await?;
            }
        }
        self.send(notify_down::Msg::SendAllEnd(SendAllEnd {
            revision: rev,
            delta: false,
        }))
        .await?;
        Ok(rx)
    }

    /// For a client that says it is up to date with a revision (a reconnect): sends only what changed
    /// after it, the deletes from etcd's history first, then the changed objects it may see (each after
    /// what it needs), and a delta `SendAllEnd`. `None` when a full sync is due instead: no revision, one
    /// this controller has not seen yet, or history etcd no longer has (compacted).
    async fn delta_sync(&mut self) -> Result<Option<broadcast::Receiver<Event>>, End> {
        let since = self.since;
        if since <= 0 {
            return Ok(None);
        }
        let (all, rev, rx) = self.api.cache.snapshot();
        if since > rev {
            return Ok(None);
        }
        let Some(deleted) = self.api.cache.deleted_between(since, rev).await else {
            tracing::info!(name = %self.client.name, since, "history compacted: full sync");
            return Ok(None);
        };
        // The client holds what it may see now (and had before): later deletes of those reach it. Of
        // those, it gets what changed after `since`.
        let cache = self.api.cache.clone();
        let visible: Vec<_> = all
            .into_iter()
            .filter(|(_, _, o)| self.visible(o, &cache))
            .collect();
        self.sent = visible.iter().map(|(path, _, _)| path.clone()).collect();
        let mut changed: Vec<_> = visible.into_iter().filter(|(_, r, _)| *r > since).collect();
        let (mut deletes, mut updates) = (0, 0);
        for (path, r, obj) in deleted {
            // (An object deleted and created again since comes back below as an update.)
            if self.visible(&obj, &cache) || self.sent.contains(&path) {
                self.sent.insert(path.clone());
                self.send_change(ChangeAction::Delete, r, &path, &obj)
                    .await?;
                deletes += 1;
            }
        }
        changed.sort_by_key(|(path, _, o)| (sync_rank(kind_of(o)), path.clone()));
        // What changed objects need is sent once, before the first of them (the client may not hold it).
        let mut given = HashSet::new();
        for (path, _, obj) in changed {
            if self.client.cloudlet.is_some() {
                for (p, o) in self.needed(&obj) {
                    if given.insert(p.clone()) {
                        self.send_change(ChangeAction::Update, rev, &p, &o).await?;
                    }
                }
            }
            given.insert(path.clone());
            self.send_change(ChangeAction::Update, rev, &path, &obj)
                .await?;
            updates += 1;
        }
        self.send(notify_down::Msg::SendAllEnd(SendAllEnd {
            revision: rev,
            delta: true,
        }))
        .await?;
        tracing::info!(name = %self.client.name, since, revision = rev, updates, deletes, "delta resync");
        Ok(Some(rx))
    }

    async fn on_change(&mut self, c: &crate::cache::Change) -> Result<(), End> {
        if let (Some(mine), Any::Cloudlet(cl)) = (&self.client.cloudlet, c.object.as_ref())
            && cl.key.as_ref() == Some(mine)
            && (c.action == ChangeAction::Delete || cl.access_public_key != self.client.public_key)
        {
            return Err(End::Refused(Status::unauthenticated(format!(
                "cloudlet \"{}\" was deleted or its access key rotated",
                mine.key_string()
            ))));
        }
        if c.action == ChangeAction::Delete {
            if self.sent.contains(&c.path) {
                self.send_change(ChangeAction::Delete, c.revision, &c.path, &c.object)
                    .await?;
            }
            return Ok(());
        }
        if !self.visible(&c.object, &self.api.cache) {
            return Ok(());
        }
        // A cloudlet-scoped client gets what an object needs before the object: an AppInst's App, an
        // App's AlertPolicies.
        if self.client.cloudlet.is_some() {
            for (path, o) in self.needed(&c.object) {
                if self.client.wanted.contains(kind_of(&o)) && !self.sent.contains(&path) {
                    self.send_change(ChangeAction::Update, c.revision, &path, &o)
                        .await?;
                }
            }
        }
        self.send_change(ChangeAction::Update, c.revision, &c.path, &c.object)
            .await
    }

    /// What `obj` refers to that a cloudlet-scoped client needs first, in sending order.
    fn needed(&self, obj: &Any) -> Vec<(String, Any)> {
        let cache = &self.api.cache;
        let policies = |a: &App| -> Vec<(String, Any)> {
            let org = a.key.clone().unwrap_or_default().organization;
            a.alert_policies
                .iter()
                .filter_map(|p| {
                    let k = format!("{org}/{p}");
                    let policy = cache.get::<AlertPolicy>(&k)?;
                    Some((
                        self.api.store.path(AlertPolicy::KIND, &k),
                        Any::AlertPolicy(policy),
                    ))
                })
                .collect()
        };
        match obj {
            Any::App(a) => policies(a),
            Any::AppInst(i) => {
                let k = i.app_key.clone().unwrap_or_default().key_string();
                let Some(app) = cache.get::<App>(&k) else {
                    return Vec::new();
                };
                let mut out = policies(&app);
                out.push((self.api.store.path(App::KIND, &k), Any::App(app)));
                out
            }
            _ => Vec::new(),
        }
    }

    fn visible(&self, obj: &Any, cache: &Cache) -> bool {
        if !self.client.wanted.contains(kind_of(obj)) {
            return false;
        }
        let Some(mine) = &self.client.cloudlet else {
            return true;
        };
        let on_mine = |k: &Option<CloudletKey>| k.as_ref() == Some(mine);
        match obj {
            Any::Flavor(_) => true,
            Any::Cloudlet(c) => on_mine(&c.key),
            Any::CloudletInfo(c) => on_mine(&c.key),
            Any::ClusterInst(c) => on_mine(&c.cloudlet_key),
            Any::AppInst(i) => on_mine(&i.cloudlet_key),
            // only while it waits for the CRM's answer
            Any::ExecRequest(r) => on_mine(&r.cloudlet_key) && !r.answered,
            Any::App(a) => cache.any(|i: &AppInst| on_mine(&i.cloudlet_key) && i.app_key == a.key),
            Any::OperatorCode(_) => false,
            Any::AlertPolicy(p) => {
                let k = p.key.clone().unwrap_or_default();
                let users: Vec<Option<edge_proto::edge::AppKey>> = cache
                    .list_where(|a: &App| {
                        a.key.as_ref().map(|x| &x.organization) == Some(&k.organization)
                            && a.alert_policies.contains(&k.name)
                    })
                    .into_iter()
                    .map(|a| a.key)
                    .collect();
                !users.is_empty()
                    && cache
                        .any(|i: &AppInst| on_mine(&i.cloudlet_key) && users.contains(&i.app_key))
            }
            Any::Alert(a) => {
                a.labels.get("cloudletorg") == Some(&mine.organization)
                    && a.labels.get("cloudlet") == Some(&mine.name)
            }
        }
    }

    async fn on_report(&self, up: NotifyUp) {
        use notify_up::Msg;
        let Some(msg) = up.msg else { return };
        let (Some(cloudlet), kind) = (&self.client.cloudlet, self.client.kind) else {
            if !matches!(msg, Msg::Heartbeat(_)) {
                tracing::warn!(name = %self.client.name, "a DME reports nothing; ignored");
            }
            return;
        };
        let api = &self.api;
        let result = match (kind, msg) {
            (_, Msg::Heartbeat(_) | Msg::Hello(_)) => Ok(()),
            (ClientType::Crm, Msg::CloudletInfo(info)) => {
                api.apply_cloudlet_info(cloudlet, info, &api.config.replica)
                    .await
            }
            (ClientType::Crm, Msg::ClusterInstInfo(info)) => {
                api.apply_cluster_inst_info(cloudlet, info).await
            }
            (ClientType::Crm, Msg::AppInstInfo(info)) => {
                api.apply_app_inst_info(cloudlet, info).await
            }
            (ClientType::Crm, Msg::ExecReply(reply)) => api.apply_exec_reply(cloudlet, reply).await,
            (ClientType::Shepherd, Msg::AppInstInfo(info)) => {
                api.apply_app_inst_health(cloudlet, info).await
            }
            (ClientType::Shepherd, Msg::AlertFiring(a)) => {
                api.apply_shepherd_alert(cloudlet, a, true).await
            }
            (ClientType::Shepherd, Msg::AlertCleared(a)) => {
                api.apply_shepherd_alert(cloudlet, a, false).await
            }
            (kind, msg) => {
                tracing::warn!(name = %self.client.name, client = kind.as_str_name(), report = ?std::mem::discriminant(&msg), "report not accepted from this client type; ignored");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(cloudlet = %cloudlet.key_string(), client = kind.as_str_name(), error = %e, "storing a report failed");
        }
    }
}

/// Holds `key` on an etcd lease of `ttl` while the task runs; re-creates it after etcd errors.
async fn hold_connection(
    mut client: etcd_client::Client,
    key: String,
    value: String,
    ttl: Duration,
) {
    let ttl_secs = ttl.as_secs().max(1) as i64;
    loop {
        let held: Result<(), etcd_client::Error> = async {
            let lease = client.lease_grant(ttl_secs, None).await?.id();
            client
                .put(
                    key.as_str(),
                    value.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await?;
            let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
            loop {
                tokio::time::sleep(ttl / 3).await;
                keeper.keep_alive().await?;
                match responses.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Ok(()),
                }
            }
        }
        .await;
        if let Err(e) = held {
            tracing::warn!(key, error = %e, "holding the CRM connection key failed; retrying");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Marks Offline every cloudlet whose CRM connection key is gone (its lease expired): checked every
/// second on every replica; the write is guarded, so replicas never fight.
pub async fn sweep_offline(api: Api) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for info in api.cache.list::<CloudletInfo>() {
            let ck = info.key.clone().unwrap_or_default().key_string();
            if info.state == CloudletState::Offline as i32 || api.cache.is_connected(&ck) {
                continue;
            }
            if let Err(e) = mark_offline(&api, &ck).await {
                tracing::warn!(cloudlet = %ck, error = %e, "marking cloudlet offline failed");
            }
        }
    }
}

async fn mark_offline(api: &Api, ck: &str) -> Result<()> {
    let rev = api
        .write(&format!("CloudletInfo \"{ck}\""), || async {
            let Some(cur) = api.store.get::<CloudletInfo>(ck).await? else {
                return Ok(Some(0));
            };
            if cur.obj.state == CloudletState::Offline as i32 || api.cache.is_connected(ck) {
                return Ok(Some(0));
            }
            let mut w = Write::default();
            w.absent(&api.store.conn_key(ck));
            w.unchanged(&api.store.path_of(&cur.obj), cur.rev);
            let mut info = cur.obj;
            info.state = CloudletState::Offline as i32;
            api.store.put_obj(&mut w, &info);
            let key = info.key.clone().unwrap_or_default();
            let down =
                crate::api::alert::cloudlet_down(&api.store.region, &key, &api.config.replica);
            api.store.put_obj(&mut w, &down);
            api.store.commit(w).await
        })
        .await?;
    if rev > 0 {
        tracing::info!(cloudlet = %ck, "CRM connection gone: cloudlet marked offline");
    }
    Ok(())
}

/// `Certificates` on the notify port: a CRM or Shepherd proves its cloudlet with the access key (a
/// signature over its CSR) and gets a short-lived client certificate naming that cloudlet and key.
pub struct CertificateService {
    pub api: Api,
    pub pki: Option<crate::PkiConfig>,
    pub metrics: Arc<Metrics>,
}

/// Largest CSR accepted (a P-256 CSR is about 400 bytes of PEM).
const MAX_CSR_BYTES: usize = 8 * 1024;

#[tonic::async_trait]
impl edge_proto::edge::certificates_server::Certificates for CertificateService {
    async fn issue_certificate(
        &self,
        req: Request<edge_proto::edge::CertificateRequest>,
    ) -> Result<Response<edge_proto::edge::CertificateReply>, Status> {
        crate::ready(&self.api.cache)?;
        let Some(pki) = &self.pki else {
            return Err(Status::failed_precondition(
                "this controller serves plaintext notify: no certificates to issue",
            ));
        };
        let r = req.into_inner();
        let region = &self.api.store.region;
        if &r.region != region {
            return Err(Status::invalid_argument(format!(
                "this controller serves region \"{region}\", not \"{}\"",
                r.region
            )));
        }
        let role = match r.client_type() {
            ClientType::Crm => Role::Crm,
            ClientType::Shepherd => Role::Shepherd,
            other => {
                return Err(Status::invalid_argument(format!(
                    "certificates are issued here to CRMs and Shepherds, not {}",
                    other.as_str_name()
                )));
            }
        };
        if r.csr.is_empty() || r.csr.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "csr is required, at most {MAX_CSR_BYTES} bytes of PEM"
            )));
        }
        let key = r
            .cloudlet_key
            .clone()
            .ok_or_else(|| Status::invalid_argument("cloudlet_key is required"))?;
        let cloudlet = self
            .api
            .cache
            .get::<Cloudlet>(&key.key_string())
            .ok_or_else(|| refused(&key, "unknown cloudlet"))?;
        access_key::verify_csr(
            &cloudlet.access_public_key,
            region,
            &key,
            r.client_type(),
            &r.csr,
            &r.signature,
        )
        .map_err(|e| {
            self.metrics
                .client_certs
                .with_label_values(&["refused"])
                .inc();
            refused(&key, &e.to_string())
        })?;
        let peer = Peer {
            region: region.clone(),
            role,
            cloudlet: Some((
                key.organization.clone(),
                key.name.clone(),
                access_key_id(&cloudlet.access_public_key),
            )),
        };
        let cert = pki
            .vault
            .sign(&peer, &r.csr, pki.client_cert_ttl)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "signing a client certificate failed");
                Status::unavailable("the region's PKI is unavailable, retry later")
            })?;
        tracing::info!(cloudlet = %key.key_string(), role = role.as_str(), expires_at = cert.expires_at, "client certificate issued");
        self.metrics
            .client_certs
            .with_label_values(&["issued"])
            .inc();
        Ok(Response::new(edge_proto::edge::CertificateReply {
            certificate_chain: cert.chain,
            ca: cert.ca,
            expires_at: cert.expires_at,
        }))
    }
}
