//! The client side of notify, shared by the CRM, the DME and Shepherd: dials out to the controller,
//! sends a hello, hands every change to a [`Sink`], and forwards the client's reports.
//!
//! A lost stream is redialled with exponential backoff and jitter. Every `SendAllEnd` closes a full sync
//! (the first one, or a resync the controller decided on); the sink then drops whatever that sync did
//! not include. While disconnected the sink keeps what it mirrored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use edge_proto::edge::notify_client::NotifyClient;
use edge_proto::edge::{ChangeAction, Heartbeat, Hello, NotifyUp, change, notify_down, notify_up};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use crate::Keyed;

/// Where a notify client puts what the controller sends.
pub trait Sink: Send + Sync + 'static {
    /// One object changed.
    fn apply(&self, action: ChangeAction, revision: i64, object: change::Object);
    /// A full sync ended; `keep` holds [`object_id`] of every object it included.
    fn sync_end(&self, revision: i64, keep: &HashSet<String>);
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

/// Keeps a notify session with `controller` (`host:port`) until `reports` closes. `hello` is called for
/// every attempt (a CRM signs each one afresh). Reports made while disconnected are dropped: clients
/// re-report after each sync.
pub async fn run(
    controller: String,
    hello: impl Fn() -> Result<Hello, Status> + Send + Sync,
    sink: Arc<dyn Sink>,
    mut reports: mpsc::UnboundedReceiver<NotifyUp>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = std::time::Instant::now();
        let result = session(&controller, &hello, sink.as_ref(), &mut reports).await;
        sink.connected(false);
        match result {
            Err(e) if e.code() == Code::Unauthenticated => {
                tracing::error!(error = %e.message(), "the controller refused this client's credentials");
                backoff = Duration::from_secs(30);
            }
            Err(e) => tracing::warn!(%controller, error = %e.message(), "notify stream lost"),
            Ok(()) => tracing::warn!(%controller, "notify stream closed by the controller"),
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

fn up(msg: notify_up::Msg) -> NotifyUp {
    NotifyUp {
        trace_context: Default::default(),
        msg: Some(msg),
    }
}

async fn session(
    controller: &str,
    hello: &(impl Fn() -> Result<Hello, Status> + Send + Sync),
    sink: &dyn Sink,
    reports: &mut mpsc::UnboundedReceiver<NotifyUp>,
) -> Result<(), Status> {
    let channel = Endpoint::from_shared(format!("http://{controller}"))
        .map_err(|e| Status::invalid_argument(format!("bad controller address {controller}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connecting to {controller}: {e}")))?;
    let (tx, rx) = mpsc::channel(256);
    let closed = || Status::unavailable("notify stream closed");
    tx.send(up(notify_up::Msg::Hello(hello()?)))
        .await
        .map_err(|_| closed())?;
    let mut down = NotifyClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();

    let mut received: HashSet<String> = HashSet::new();
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
                        if action == ChangeAction::Update {
                            received.insert(object_id(&obj));
                        }
                        sink.apply(action, c.revision, obj);
                    }
                    Some(notify_down::Msg::SendAllEnd(end)) => {
                        let keep = std::mem::take(&mut received);
                        sink.sync_end(end.revision, &keep);
                    }
                    None => {}
                }
            }
            r = reports.recv() => {
                let Some(r) = r else { return Ok(()) };
                tx.send(r).await.map_err(|_| closed())?;
            }
            _ = tick.tick() => {
                let hb = up(notify_up::Msg::Heartbeat(Heartbeat { sent_at: crate::now_ms() }));
                tx.send(hb).await.map_err(|_| closed())?;
            }
        }
    }
}
