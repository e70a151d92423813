//! The client side of notify, shared by the CRM, the DME and Shepherd: dials out to the controller,
//! sends a hello, hands every change to a [`Sink`], and forwards the client's reports.
//!
//! A lost stream is redialled with exponential backoff and jitter. Every `SendAllEnd` closes a sync: a
//! full one (the first one, or a resync the controller decided on), after which the sink drops whatever
//! that sync did not include, or a delta one (a reconnect of a sink that knew its revision: only what
//! changed since, deletes included). While disconnected the sink keeps what it mirrored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use edge_proto::edge::notify_client::NotifyClient;
use edge_proto::edge::{ChangeAction, Heartbeat, Hello, NotifyUp, change, notify_down, notify_up};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::Keyed;
use crate::pki::{self, CertBundle, Peer, VaultPki};

/// Where a notify client puts what the controller sends.
pub trait Sink: Send + Sync + 'static {
    /// One object changed.
    fn apply(&self, action: ChangeAction, revision: i64, object: change::Object);
    /// A sync ended: a full one (`keep` holds [`object_id`] of every object it included; drop the rest), or
    /// a delta one (`None`: only changes after [`last_revision`](Self::last_revision) were sent, deletes
    /// included; keep the rest).
    fn sync_end(&self, revision: i64, keep: Option<&HashSet<String>>);
    /// The revision of the last sync and changes this sink holds completely (0: none), sent in the hello
    /// so that a reconnect gets only what changed since.
    fn last_revision(&self) -> i64 {
        0
    }
    /// The stream came up (after its HelloReply) or went down.
    fn connected(&self, _up: bool) {}
}

/// `Kind/key` of an object, e.g. `AppInst/acme/game-1`.
pub fn object_id(o: &change::Object) -> String {
    match o {
        change::Object::Flavor(x) => format!("Flavor/{}", x.key_string()),
        change::Object::App(x) => format!("App/{}", x.key_string()),
        change::Object::ClusterInst(x) => format!("ClusterInst/{}", x.key_string()),
        change::Object::AppInst(x) => format!("AppInst/{}", x.key_string()),
        change::Object::Cloudlet(x) => format!("Cloudlet/{}", x.key_string()),
        change::Object::CloudletInfo(x) => format!("CloudletInfo/{}", x.key_string()),
        change::Object::OperatorCode(x) => format!("OperatorCode/{}", x.key_string()),
        change::Object::Alert(x) => format!("Alert/{}", x.key_string()),
        change::Object::AlertPolicy(x) => format!("AlertPolicy/{}", x.key_string()),
        change::Object::ExecRequest(x) => format!("ExecRequest/{}", x.key_string()),
    }
}

/// Pseudo-random jitter in [0, max), from the clock's nanoseconds (no random number crate needed).
pub fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// How a client reaches its controller: a channel for each attempt, and how long a session on it may
/// last (until its client certificate is due for renewal; the session then ends and is redialled with a
/// fresh certificate, so a stream never outlives its certificate).
#[async_trait::async_trait]
pub trait Dial: Send + Sync {
    /// The controller's address, for logs.
    fn target(&self) -> &str;
    async fn dial(&self) -> Result<(Channel, Option<Duration>), Status>;
}

fn endpoint(addr: &str, tls: bool) -> Result<Endpoint, Status> {
    let scheme = if tls { "https" } else { "http" };
    Ok(Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("bad controller address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10)))
}

async fn connect(e: Endpoint, addr: &str) -> Result<Channel, Status> {
    e.connect()
        .await
        .map_err(|e| Status::unavailable(format!("connecting to {addr}: {e}")))
}

/// Plaintext notify, for a controller started without PKI (tests of other parts, explicit opt-in).
pub struct Plaintext(pub String);

#[async_trait::async_trait]
impl Dial for Plaintext {
    fn target(&self) -> &str {
        &self.0
    }
    async fn dial(&self) -> Result<(Channel, Option<Duration>), Status> {
        Ok((connect(endpoint(&self.0, false)?, &self.0).await?, None))
    }
}

/// Where a client's certificate comes from.
#[async_trait::async_trait]
pub trait CertSource: Send + Sync {
    async fn fetch(&self) -> Result<CertBundle, Status>;
}

/// mTLS notify with a client certificate from `source`, renewed at two thirds of its lifetime.
pub struct Tls {
    addr: String,
    server_name: String,
    source: Box<dyn CertSource>,
    /// the certificate in use and when it was obtained (unix seconds)
    current: tokio::sync::Mutex<Option<(CertBundle, i64)>>,
}

impl Tls {
    pub fn new(addr: String, server_name: String, source: Box<dyn CertSource>) -> Self {
        Self {
            addr,
            server_name,
            source,
            current: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl Dial for Tls {
    fn target(&self) -> &str {
        &self.addr
    }
    async fn dial(&self) -> Result<(Channel, Option<Duration>), Status> {
        let mut current = self.current.lock().await;
        let fresh = current
            .as_ref()
            .is_some_and(|(c, issued)| !c.renew_in(*issued).is_zero());
        if !fresh {
            let cert = self.source.fetch().await?;
            tracing::info!(
                expires_at = cert.expires_at,
                "obtained a client certificate"
            );
            *current = Some((cert, crate::now_ms() / 1000));
        }
        let (cert, issued) = current.as_ref().expect("set above");
        let tls = endpoint(&self.addr, true)?
            .tls_config(cert.client_tls(&self.server_name))
            .map_err(|e| Status::internal(format!("TLS settings: {e}")))?;
        Ok((
            connect(tls, &self.addr).await?,
            Some(cert.renew_in(*issued)),
        ))
    }
}

/// A CRM's or Shepherd's certificate: proves the cloudlet with its access key on the controller's
/// `Certificates` service, over TLS that checks the controller against the region's CA.
pub struct AccessKeyCerts {
    pub addr: String,
    pub server_name: String,
    /// PEM of the region's CA
    pub ca: String,
    pub region: String,
    pub cloudlet: edge_proto::edge::CloudletKey,
    pub client_type: edge_proto::edge::ClientType,
    /// base64 PKCS#8 ed25519 private key
    pub access_key: String,
}

#[async_trait::async_trait]
impl CertSource for AccessKeyCerts {
    async fn fetch(&self) -> Result<CertBundle, Status> {
        use edge_proto::edge::CertificateRequest;
        use edge_proto::edge::certificates_client::CertificatesClient;
        let (csr, key) = pki::new_csr().map_err(|e| Status::internal(e.to_string()))?;
        let signature = crate::access_key::sign_csr(
            &self.access_key,
            &self.region,
            &self.cloudlet,
            self.client_type,
            &csr,
        )
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let tls = endpoint(&self.addr, true)?
            .tls_config(pki::anonymous_client_tls(&self.ca, &self.server_name))
            .map_err(|e| Status::internal(format!("TLS settings: {e}")))?;
        let reply = CertificatesClient::new(connect(tls, &self.addr).await?)
            .issue_certificate(CertificateRequest {
                client_type: self.client_type.into(),
                region: self.region.clone(),
                cloudlet_key: Some(self.cloudlet.clone()),
                csr,
                signature,
            })
            .await?
            .into_inner();
        Ok(CertBundle {
            chain: reply.certificate_chain,
            key,
            ca: reply.ca,
            expires_at: reply.expires_at,
        })
    }
}

/// How a cloudlet agent (CRM, Shepherd) checks its controller: the region's CA and the controller's
/// certificate name, both given at onboarding. Its own client certificate it obtains with the access key.
#[derive(Clone, Debug)]
pub struct ControllerTls {
    /// PEM of the region's CA
    pub ca: String,
    pub server_name: String,
}

/// Command-line flags of a cloudlet agent (CRM, Shepherd): its cloudlet, its controller, the cloudlet
/// access key and the region's CA from the onboarding reply.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// Region of the cloudlet.
    #[arg(long, env = "EDGE_REGION")]
    pub region: String,
    /// Operator organization of the cloudlet.
    #[arg(long, env = "EDGE_CLOUDLET_ORG")]
    pub cloudlet_org: String,
    /// Name of the cloudlet.
    #[arg(long, env = "EDGE_CLOUDLET_NAME")]
    pub cloudlet_name: String,
    /// Controller notify address (host:port), as given at CreateCloudlet.
    #[arg(
        long,
        env = "EDGE_CONTROLLER_NOTIFY",
        default_value = "127.0.0.1:37001"
    )]
    pub controller_notify: String,
    /// File holding the cloudlet access key returned by CreateCloudlet.
    #[arg(long, env = "EDGE_ACCESS_KEY_FILE")]
    pub access_key: std::path::PathBuf,
    /// PEM file of the region's CA (`ca_certificate` of the onboarding reply): the controller is checked
    /// with it, and a short-lived client certificate is obtained with the access key.
    #[arg(
        long,
        env = "EDGE_CA_CERT_FILE",
        required_unless_present = "insecure_plaintext"
    )]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Name in the controller's certificate [default: controller.<region>.edge].
    #[arg(long, env = "EDGE_CONTROLLER_SERVER_NAME")]
    pub controller_server_name: Option<String>,
    /// Dial a controller that serves plaintext notify (`--insecure-plaintext` there).
    #[arg(long, env = "EDGE_INSECURE_PLAINTEXT", conflicts_with = "ca_cert")]
    pub insecure_plaintext: bool,
}

impl AgentArgs {
    /// The agent of `client_type` these flags describe, its key and CA read from their files.
    pub fn agent(
        &self,
        client_type: edge_proto::edge::ClientType,
    ) -> Result<CloudletAgent, String> {
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading the {what} file {}: {e}", path.display()))
        };
        let tls = match &self.ca_cert {
            Some(path) => Some(ControllerTls {
                ca: read("CA", path)?,
                server_name: self
                    .controller_server_name
                    .clone()
                    .unwrap_or_else(|| pki::controller_server_name(&self.region)),
            }),
            None => None,
        };
        Ok(CloudletAgent {
            client_type,
            region: self.region.clone(),
            cloudlet: edge_proto::edge::CloudletKey {
                organization: self.cloudlet_org.clone(),
                name: self.cloudlet_name.clone(),
            },
            controller: self.controller_notify.clone(),
            access_key: read("access key", &self.access_key)?.trim().to_string(),
            tls,
        })
    }
}

/// Who a cloudlet agent is and how it reaches its controller.
#[derive(Clone, Debug)]
pub struct CloudletAgent {
    pub client_type: edge_proto::edge::ClientType,
    pub region: String,
    pub cloudlet: edge_proto::edge::CloudletKey,
    /// controller notify address, `host:port`
    pub controller: String,
    /// base64 PKCS#8 ed25519 cloudlet access key
    pub access_key: String,
    /// `None`: plaintext notify and a signed hello (a controller without PKI)
    pub tls: Option<ControllerTls>,
}

impl CloudletAgent {
    /// mTLS with a certificate obtained with the access key, or plaintext without PKI.
    pub fn dial(&self) -> Arc<dyn Dial> {
        match &self.tls {
            Some(t) => Arc::new(Tls::new(
                self.controller.clone(),
                t.server_name.clone(),
                Box::new(AccessKeyCerts {
                    addr: self.controller.clone(),
                    server_name: t.server_name.clone(),
                    ca: t.ca.clone(),
                    region: self.region.clone(),
                    cloudlet: self.cloudlet.clone(),
                    client_type: self.client_type,
                    access_key: self.access_key.clone(),
                }),
            )),
            None => Arc::new(Plaintext(self.controller.clone())),
        }
    }

    /// The hello of one attempt, asking for `wanted` (empty: the controller's default for the client
    /// type). Signed with the access key only towards a controller without PKI; with mTLS the
    /// certificate proves the cloudlet.
    pub fn hello(&self, wanted: &[edge_proto::edge::ObjectKind]) -> Result<Hello, Status> {
        let (signed_at, signature) = match &self.tls {
            None => {
                let at = crate::now_ms();
                let sig = crate::access_key::sign(
                    &self.access_key,
                    &self.region,
                    &self.cloudlet.organization,
                    &self.cloudlet.name,
                    at,
                )
                .map_err(|e| Status::unauthenticated(format!("{e}: check --access-key")))?;
                (at, sig)
            }
            Some(_) => (0, Vec::new()),
        };
        let role = match self.client_type {
            edge_proto::edge::ClientType::Shepherd => "shepherd",
            _ => "crm",
        };
        Ok(Hello {
            client_type: self.client_type as i32,
            region: self.region.clone(),
            cloudlet_key: Some(self.cloudlet.clone()),
            wanted: wanted.iter().map(|k| *k as i32).collect(),
            signed_at,
            signature,
            client_name: format!("{role}-{}", self.cloudlet.key_string()),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }
}

/// A certificate issued straight from Vault (a DME, which holds a Vault token).
pub struct VaultCerts {
    pub vault: VaultPki,
    pub peer: Peer,
    pub ttl: Duration,
}

#[async_trait::async_trait]
impl CertSource for VaultCerts {
    async fn fetch(&self) -> Result<CertBundle, Status> {
        self.vault
            .issue(&self.peer, &[], &[], self.ttl)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

/// Keeps a notify session with the controller until `reports` closes. `hello` is called for every
/// attempt (in plaintext mode a CRM signs each one afresh). Reports made while disconnected are dropped:
/// clients re-report after each sync.
pub async fn run(
    dial: Arc<dyn Dial>,
    hello: impl Fn() -> Result<Hello, Status> + Send + Sync,
    sink: Arc<dyn Sink>,
    mut reports: mpsc::UnboundedReceiver<NotifyUp>,
) {
    let controller = dial.target().to_string();
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = std::time::Instant::now();
        let result = session(dial.as_ref(), &hello, sink.as_ref(), &mut reports).await;
        sink.connected(false);
        match result {
            Err(e) if e.code() == Code::Unauthenticated => {
                tracing::error!(error = %e.message(), "the controller refused this client's credentials");
                backoff = Duration::from_secs(30);
            }
            Err(e) => tracing::warn!(%controller, error = %e.message(), "notify stream lost"),
            Ok(()) => tracing::info!(%controller, "notify stream ended"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        let wait = backoff + jitter(backoff / 2);
        tracing::info!("redialling the controller in {} ms", wait.as_millis());
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                r = reports.recv() => if r.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Which objects a full sync included. Every object of a sync is sent at the sync's revision, so an object
/// last heard of at another revision (a live change before a resync the controller started because this
/// client lagged) was not in it and is dropped, even if it was never deleted on this stream.
#[derive(Default)]
struct SyncTracker {
    /// object id → revision of the last update received since the previous `SendAllEnd`
    seen: std::collections::HashMap<String, i64>,
}

impl SyncTracker {
    fn change(&mut self, action: ChangeAction, revision: i64, id: String) {
        match action {
            ChangeAction::Update => {
                self.seen.insert(id, revision);
            }
            ChangeAction::Delete => {
                self.seen.remove(&id);
            }
        }
    }

    /// The ids the sync that ends at `revision` included; starts afresh for the next sync.
    fn end(&mut self, revision: i64) -> HashSet<String> {
        std::mem::take(&mut self.seen)
            .into_iter()
            .filter(|(_, r)| *r == revision)
            .map(|(id, _)| id)
            .collect()
    }
}

fn up(msg: notify_up::Msg) -> NotifyUp {
    NotifyUp {
        trace_context: Default::default(),
        msg: Some(msg),
    }
}

async fn session(
    dial: &dyn Dial,
    hello: &(impl Fn() -> Result<Hello, Status> + Send + Sync),
    sink: &dyn Sink,
    reports: &mut mpsc::UnboundedReceiver<NotifyUp>,
) -> Result<(), Status> {
    let (channel, lifetime) = dial.dial().await?;
    // The session ends when its certificate is due for renewal (never, without one).
    let renew = tokio::time::sleep(lifetime.unwrap_or(Duration::from_secs(100 * 365 * 86400)));
    tokio::pin!(renew);
    let (tx, rx) = mpsc::channel(256);
    let closed = || Status::unavailable("notify stream closed");
    let mut hello = hello()?;
    hello.last_revision = sink.last_revision();
    tx.send(up(notify_up::Msg::Hello(hello)))
        .await
        .map_err(|_| closed())?;
    let mut down = NotifyClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();

    let mut sync = SyncTracker::default();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            m = down.message() => {
                let Some(m) = m? else { return Ok(()) };
                match m.msg {
                    Some(notify_down::Msg::HelloReply(r)) => {
                        tick = tokio::time::interval(Duration::from_secs(u64::from(r.heartbeat_interval_secs.max(1))));
                        sink.connected(true);
                        tracing::info!(controller = %r.controller, "connected to the controller");
                    }
                    Some(notify_down::Msg::Change(c)) => {
                        let action = c.action();
                        let Some(obj) = c.object else { continue };
                        sync.change(action, c.revision, object_id(&obj));
                        sink.apply(action, c.revision, obj);
                    }
                    Some(notify_down::Msg::SendAllEnd(end)) => {
                        let kept = sync.end(end.revision);
                        sink.sync_end(end.revision, (!end.delta).then_some(&kept));
                    }
                    None => {}
                }
            }
            r = reports.recv() => {
                let Some(r) = r else { return Ok(()) };
                tx.send(r).await.map_err(|_| closed())?;
            }
            _ = &mut renew => {
                tracing::info!("client certificate due for renewal: reconnecting");
                return Ok(());
            }
            _ = tick.tick() => {
                let hb = up(notify_up::Msg::Heartbeat(Heartbeat { sent_at: crate::now_ms() }));
                tx.send(hb).await.map_err(|_| closed())?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_keeps_only_what_it_sent() {
        let mut t = SyncTracker::default();
        // First sync at revision 10: a and b.
        t.change(ChangeAction::Update, 10, "a".into());
        t.change(ChangeAction::Update, 10, "b".into());
        assert_eq!(t.end(10), HashSet::from(["a".into(), "b".into()]));
        // Live: c appears at 11, then the client lags; b and c are deleted meanwhile, unseen.
        t.change(ChangeAction::Update, 11, "c".into());
        // The controller resyncs at revision 20 with only a.
        t.change(ChangeAction::Update, 20, "a".into());
        assert_eq!(t.end(20), HashSet::from(["a".into()]));
        // A delete on the stream forgets an object before the next sync ends.
        t.change(ChangeAction::Update, 30, "d".into());
        t.change(ChangeAction::Delete, 31, "d".into());
        assert!(t.end(30).is_empty());
    }
}
