//! The CRM's notify client: dials out to the controller (so a cloudlet behind NAT works), proves its
//! cloudlet with the access key, mirrors the desired state and sends the reconciler's reports.
//!
//! A lost stream is redialled with exponential backoff and jitter; on every reconnect the full sync
//! repeats, whatever the resend did not include is dropped from the mirror, and every object's actual
//! state is reported again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use edge_common::{Keyed, access_key};
use edge_proto::edge::notify_client::NotifyClient;
use edge_proto::edge::{
    ChangeAction, ClientType, CloudletKey, Heartbeat, Hello, NotifyUp, change, notify_down,
    notify_up,
};
use prometheus::IntGauge;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::mirror::Mirror;
use crate::report::Reporter;

pub struct Connection {
    pub region: String,
    pub cloudlet: CloudletKey,
    pub controller: String,
    pub access_key: String,
    pub mirror: Arc<Mirror>,
    pub reporter: Arc<Reporter>,
    /// wakes the reconciler for a full pass after a (re)sync
    pub resync: Arc<Notify>,
    pub connected: IntGauge,
}

/// Pseudo-random jitter in [0, max) without a random number crate: the clock's nanoseconds.
pub fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

impl Connection {
    /// Keeps a session with the controller until the process ends.
    pub async fn run(self, mut reports: mpsc::UnboundedReceiver<NotifyUp>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = std::time::Instant::now();
            let result = self.session(&mut reports).await;
            self.connected.set(0);
            match result {
                Err(e) if e.code() == Code::Unauthenticated => {
                    tracing::error!(error = %e.message(), "controller refused the cloudlet access key; check --access-key");
                    backoff = Duration::from_secs(30);
                }
                Err(e) => {
                    tracing::warn!(controller = %self.controller, error = %e.message(), "notify stream lost")
                }
                Ok(()) => {
                    tracing::warn!(controller = %self.controller, "notify stream closed by the controller")
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(200);
            }
            let wait = backoff + jitter(backoff / 2);
            tracing::info!("redialling the controller in {} ms", wait.as_millis());
            // Reports made while disconnected are dropped: after the resync everything is re-reported.
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

    async fn session(
        &self,
        reports: &mut mpsc::UnboundedReceiver<NotifyUp>,
    ) -> Result<(), tonic::Status> {
        let url = format!("http://{}", self.controller);
        let channel = Endpoint::from_shared(url)
            .map_err(|e| tonic::Status::invalid_argument(format!("bad controller address: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| {
                tonic::Status::unavailable(format!("connecting to {}: {e}", self.controller))
            })?;
        let signed_at = edge_common::now_ms();
        let signature = access_key::sign(
            &self.access_key,
            &self.region,
            &self.cloudlet.organization,
            &self.cloudlet.name,
            signed_at,
        )
        .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        let hello = Hello {
            client_type: ClientType::Crm as i32,
            region: self.region.clone(),
            cloudlet_key: Some(self.cloudlet.clone()),
            signed_at,
            signature,
            client_name: format!("crm-{}", self.cloudlet.key_string()),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let (up, up_rx) = mpsc::channel(256);
        let msg = |m| NotifyUp {
            trace_context: Default::default(),
            msg: Some(m),
        };
        up.send(msg(notify_up::Msg::Hello(hello)))
            .await
            .map_err(|_| tonic::Status::internal("send"))?;
        let mut down = NotifyClient::new(channel)
            .stream(ReceiverStream::new(up_rx))
            .await?
            .into_inner();

        let mut heartbeat = Duration::from_secs(5);
        let mut received: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tokio::select! {
                m = down.message() => {
                    let Some(m) = m? else { return Ok(()) };
                    match m.msg {
                        Some(notify_down::Msg::HelloReply(r)) => {
                            heartbeat = Duration::from_secs(u64::from(r.heartbeat_interval_secs.max(1)));
                            tick = tokio::time::interval(heartbeat);
                            self.connected.set(1);
                            tracing::info!(controller = %r.controller, "connected to the controller");
                        }
                        Some(notify_down::Msg::Change(c)) => {
                            let action = c.action();
                            let Some(obj) = c.object else { continue };
                            if action == ChangeAction::Update {
                                received.insert(object_id(&obj));
                            }
                            self.store(|d| d.apply(action, c.revision, obj));
                        }
                        Some(notify_down::Msg::SendAllEnd(end)) => {
                            // A full sync is complete: drop what it did not include.
                            let keep = std::mem::take(&mut received);
                            self.store(|d| {
                                d.flavors.retain(|k, _| keep.contains(&format!("Flavor/{k}")));
                                d.apps.retain(|k, _| keep.contains(&format!("App/{k}")));
                                d.clusters.retain(|k, _| keep.contains(&format!("ClusterInst/{k}")));
                                d.app_insts.retain(|k, _| keep.contains(&format!("AppInst/{k}")));
                                if d.cloudlet.as_ref().is_some_and(|c| !keep.contains(&format!("Cloudlet/{}", c.key_string()))) {
                                    d.cloudlet = None;
                                }
                                d.revision = d.revision.max(end.revision);
                                d.complete = true;
                            });
                            self.reporter.reset();
                            self.resync.notify_one();
                        }
                        None => {}
                    }
                }
                r = reports.recv() => {
                    let Some(r) = r else { return Ok(()) };
                    up.send(r).await.map_err(|_| tonic::Status::unavailable("notify stream closed"))?;
                }
                _ = tick.tick() => {
                    let hb = msg(notify_up::Msg::Heartbeat(Heartbeat { sent_at: edge_common::now_ms() }));
                    up.send(hb).await.map_err(|_| tonic::Status::unavailable("notify stream closed"))?;
                }
            }
        }
    }

    fn store(&self, f: impl FnOnce(&mut crate::mirror::Desired)) {
        if let Err(e) = self.mirror.update(f) {
            tracing::error!(error = %e, "persisting the desired state failed");
        }
    }
}

fn object_id(o: &change::Object) -> String {
    match o {
        change::Object::Flavor(x) => format!("Flavor/{}", x.key_string()),
        change::Object::App(x) => format!("App/{}", x.key_string()),
        change::Object::ClusterInst(x) => format!("ClusterInst/{}", x.key_string()),
        change::Object::AppInst(x) => format!("AppInst/{}", x.key_string()),
        change::Object::Cloudlet(x) => format!("Cloudlet/{}", x.key_string()),
        change::Object::CloudletInfo(x) => format!("CloudletInfo/{}", x.key_string()),
        change::Object::OperatorCode(x) => format!("OperatorCode/{}", x.key_string()),
    }
}
