//! The proxy of the load balancer: listeners and the copying of bytes.
//!
//! For every route it listens on the cloudlet's public address and the route's port and forwards to the
//! route's backend, TCP and UDP. Per route it counts connections (UDP: client flows), active connections
//! and bytes each way, exposed on the LB's `/metrics` as `crm_lb_*{route="tcp:10000",appinst="org/name"}`.
//!
//! Every route is bounded ([`Limits`]): connections beyond the cap are closed at once (counted in
//! `crm_lb_refused_total`), idle TCP connections and UDP flows are closed, and a route's UDP flows are
//! capped with the least recently used flow evicted first (`crm_lb_udp_evicted_total`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::{Proto, RouteKey, RouteSpec};

/// Bounds of every route of the load balancer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// open TCP connections per route; more are closed at once
    pub max_connections: usize,
    /// a TCP connection without a byte either way for this long is closed
    pub tcp_idle: Duration,
    /// a UDP flow without a packet either way for this long is dropped
    pub udp_idle: Duration,
    /// UDP flows (client addresses) per route; a new one evicts the least recently used
    pub max_udp_flows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            tcp_idle: Duration::from_secs(600),
            udp_idle: Duration::from_secs(60),
            max_udp_flows: 4096,
        }
    }
}

struct Route {
    backend: SocketAddr,
    owner: String,
    task: JoinHandle<()>,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counters and bounds of one route.
#[derive(Clone)]
struct Stats {
    connections: IntCounter,
    active: IntGauge,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    refused: IntCounter,
    evicted: IntCounter,
    limits: Limits,
}

pub struct Proxy {
    public_ip: IpAddr,
    limits: Limits,
    routes: Mutex<HashMap<RouteKey, Route>>,
    connections: IntCounterVec,
    active: IntGaugeVec,
    bytes: IntCounterVec,
    refused: IntCounterVec,
    evicted: IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
#[error("load balancer cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl Proxy {
    pub fn new(public_ip: IpAddr, registry: &Registry) -> Arc<Self> {
        Self::with_limits(public_ip, registry, Limits::default())
    }

    pub fn with_limits(public_ip: IpAddr, registry: &Registry, limits: Limits) -> Arc<Self> {
        let labels = &["route", "appinst"];
        let refused = IntCounterVec::new(
            Opts::new(
                "crm_lb_refused_total",
                "TCP connections closed at once because the route had its maximum open",
            ),
            labels,
        )
        .expect("valid metric");
        let evicted = IntCounterVec::new(
            Opts::new(
                "crm_lb_udp_evicted_total",
                "UDP flows dropped to make room for a new one",
            ),
            labels,
        )
        .expect("valid metric");
        let connections = IntCounterVec::new(
            Opts::new(
                "crm_lb_connections_total",
                "connections (UDP: flows) per LB route",
            ),
            labels,
        )
        .expect("valid metric");
        let active = IntGaugeVec::new(
            Opts::new("crm_lb_active_connections", "open connections per LB route"),
            labels,
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "crm_lb_bytes_total",
                "bytes per LB route; direction in = client to app",
            ),
            &["route", "appinst", "direction"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections.clone()))
            .expect("registered once");
        registry
            .register(Box::new(active.clone()))
            .expect("registered once");
        for c in [
            Box::new(bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refused.clone()),
            Box::new(evicted.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Arc::new(Self {
            public_ip,
            limits,
            routes: Mutex::default(),
            connections,
            active,
            bytes,
            refused,
            evicted,
        })
    }

    /// Routes `key` to `backend` for `owner` (an AppInst key); a no-op when it already does.
    pub async fn ensure(
        &self,
        key: RouteKey,
        backend: SocketAddr,
        owner: &str,
    ) -> Result<(), BindError> {
        if self
            .routes
            .lock()
            .expect("lb lock")
            .get(&key)
            .is_some_and(|r| r.backend == backend && r.owner == owner)
        {
            return Ok(());
        }
        self.remove(key);
        let addr = SocketAddr::new(self.public_ip, key.port);
        let route = key.to_string();
        let stats = Stats {
            connections: self.connections.with_label_values(&[&route, owner]),
            active: self.active.with_label_values(&[&route, owner]),
            bytes_in: self.bytes.with_label_values(&[&route, owner, "in"]),
            bytes_out: self.bytes.with_label_values(&[&route, owner, "out"]),
            refused: self.refused.with_label_values(&[&route, owner]),
            evicted: self.evicted.with_label_values(&[&route, owner]),
            limits: self.limits,
        };
        let task = match key.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| BindError { addr, source })?;
                tokio::spawn(serve_tcp(l, backend, stats))
            }
            Proto::Udp => {
                let s = UdpSocket::bind(addr)
                    .await
                    .map_err(|source| BindError { addr, source })?;
                tokio::spawn(serve_udp(Arc::new(s), backend, stats))
            }
        };
        tracing::info!(%route, %backend, owner, "LB route added");
        self.routes.lock().expect("lb lock").insert(
            key,
            Route {
                backend,
                owner: owner.to_string(),
                task,
            },
        );
        Ok(())
    }

    /// Stops listening on `key`.
    pub fn remove(&self, key: RouteKey) {
        if let Some(r) = self.routes.lock().expect("lb lock").remove(&key) {
            let route = key.to_string();
            let _ = self.connections.remove_label_values(&[&route, &r.owner]);
            let _ = self.active.remove_label_values(&[&route, &r.owner]);
            let _ = self.refused.remove_label_values(&[&route, &r.owner]);
            let _ = self.evicted.remove_label_values(&[&route, &r.owner]);
            for d in ["in", "out"] {
                let _ = self.bytes.remove_label_values(&[&route, &r.owner, d]);
            }
            tracing::info!(%route, owner = %r.owner, "LB route removed");
        }
    }

    /// Every route, ordered by key.
    pub fn routes(&self) -> Vec<RouteSpec> {
        let mut v: Vec<_> = self
            .routes
            .lock()
            .expect("lb lock")
            .iter()
            .map(|(k, r)| RouteSpec {
                key: *k,
                backend: r.backend,
                owner: r.owner.clone(),
            })
            .collect();
        v.sort_by_key(|r| r.key);
        v
    }
}

async fn serve_tcp(listener: TcpListener, backend: SocketAddr, stats: Stats) {
    let slots = Arc::new(tokio::sync::Semaphore::new(stats.limits.max_connections));
    let mut backoff = Backoff::default();
    loop {
        let mut client = match listener.accept().await {
            Ok((c, _)) => {
                backoff.reset();
                c
            }
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.inc();
            drop(client);
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            stats.connections.inc();
            let Ok(Ok(upstream)) =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(backend)).await
            else {
                let _ = client.shutdown().await;
                return;
            };
            stats.active.inc();
            let activity = Activity::new();
            let idle = stats.limits.tcp_idle;
            tokio::select! {
                r = forward(&client, &upstream, &activity) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "LB connection ended with an error");
                    }
                }
                _ = activity.idle_for(idle) => tracing::debug!("LB connection idle for {} s: closed", idle.as_secs()),
            }
            stats.bytes_in.inc_by(activity.read.load(Ordering::Relaxed));
            stats
                .bytes_out
                .inc_by(activity.written.load(Ordering::Relaxed));
            stats.active.dec();
        });
    }
}

/// Moves bytes both ways between `client` and `upstream` until both sides have closed (or one fails),
/// counting them in `activity` (`read`: client → app, `written`: app → client).
async fn forward(
    client: &TcpStream,
    upstream: &TcpStream,
    activity: &Activity,
) -> std::io::Result<()> {
    tokio::try_join!(
        splice_one_way(client, upstream, activity, &activity.read),
        splice_one_way(upstream, client, activity, &activity.written),
    )
    .map(drop)
}

/// Most bytes one splice(2) moves: what a pipe of the default size holds. (Bigger pipes measured no
/// faster, and count against the user's pipe memory, `fs.pipe-user-pages-soft`.)
const SPLICE_CHUNK: usize = 64 * 1024;

/// Moves bytes from `from` to `to` until `from` ends, then shuts down `to`'s sending side. The bytes go
/// through a pipe with splice(2), never through user space: a copying proxy moves half as many bytes per
/// CPU second (`edge-bench lb`).
async fn splice_one_way(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Activity,
    count: &AtomicU64,
) -> std::io::Result<()> {
    use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
    use tokio::io::Interest;
    let (pipe_out, pipe_in) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, &pipe_in, None, SPLICE_CHUNK, flags)?)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => break r?,
            }
        };
        if n == 0 {
            rustix::net::shutdown(to, rustix::net::Shutdown::Write)?;
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe_out, None, to, None, left, flags)?)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => left -= r?,
            }
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
    }
}

/// Pause after a failed accept or receive (out of file descriptors, say): growing from 10 ms to 1 s, so a
/// persistent error does not spin a core.
#[derive(Default)]
struct Backoff(Duration);

impl Backoff {
    async fn wait(&mut self, e: &std::io::Error) {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tracing::warn!(error = %e, "LB accept failed; pausing {} ms", self.0.as_millis());
        tokio::time::sleep(self.0).await;
    }

    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

/// What moved on a TCP connection, and when it last did, either way.
struct Activity {
    start: Instant,
    /// ms since `start` of the last byte read or written
    last: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let due = last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// One UDP client flow: its upstream socket, the task forwarding replies, when it last carried a packet.
struct Flow {
    upstream: Arc<UdpSocket>,
    replies: tokio::task::AbortHandle,
    last: Instant,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

async fn serve_udp(public: Arc<UdpSocket>, backend: SocketAddr, stats: Stats) {
    // One upstream socket per client address, so replies find their way back.
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65536];
    let mut backoff = Backoff::default();
    loop {
        let (n, client) = match public.recv_from(&mut buf).await {
            Ok(r) => {
                backoff.reset();
                r
            }
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        };
        let existing = flows.lock().expect("udp flows").get_mut(&client).map(|f| {
            f.last = Instant::now();
            f.upstream.clone()
        });
        let upstream = match existing {
            Some(u) => u,
            None => {
                let bind: SocketAddr = if backend.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    "[::]:0".parse().expect("valid")
                };
                let Ok(u) = UdpSocket::bind(bind).await else {
                    continue;
                };
                if u.connect(backend).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                let replies = tokio::spawn(udp_replies(
                    u.clone(),
                    public.clone(),
                    client,
                    flows.clone(),
                    stats.clone(),
                ));
                let mut f = flows.lock().expect("udp flows");
                if f.len() >= stats.limits.max_udp_flows
                    && let Some(oldest) = f.iter().min_by_key(|(_, fl)| fl.last).map(|(a, _)| *a)
                    && let Some(gone) = f.remove(&oldest)
                {
                    gone.replies.abort();
                    stats.active.dec();
                    stats.evicted.inc();
                }
                f.insert(
                    client,
                    Flow {
                        upstream: u.clone(),
                        replies: replies.abort_handle(),
                        last: Instant::now(),
                    },
                );
                stats.connections.inc();
                stats.active.inc();
                u
            }
        };
        if upstream.send(&buf[..n]).await.is_ok() {
            stats.bytes_in.inc_by(n as u64);
        }
    }
}

/// Forwards replies of one UDP flow to its client until the flow is idle either way.
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Flows,
    stats: Stats,
) {
    let mut buf = vec![0u8; 65536];
    let idle = stats.limits.udp_idle;
    loop {
        match tokio::time::timeout(idle, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if let Some(f) = flows.lock().expect("udp flows").get_mut(&client) {
                    f.last = Instant::now();
                }
                if public.send_to(&buf[..n], client).await.is_ok() {
                    stats.bytes_out.inc_by(n as u64);
                }
            }
            Ok(Err(_)) => break,
            // No reply for `idle`: the flow ends unless the client sent meanwhile.
            Err(_) => {
                let recent = flows
                    .lock()
                    .expect("udp flows")
                    .get(&client)
                    .is_some_and(|f| f.last.elapsed() < idle);
                if !recent {
                    break;
                }
            }
        }
    }
    if flows.lock().expect("udp flows").remove(&client).is_some() {
        stats.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn tcp_echo() -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        echo_addr
    }

    async fn udp_echo() -> SocketAddr {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_addr = udp.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = udp.recv_from(&mut b).await {
                let _ = udp.send_to(&b[..n], from).await;
            }
        });
        udp_addr
    }

    /// Sends `msg` and reads it back.
    async fn round_trip(c: &mut TcpStream, msg: &[u8]) {
        c.write_all(msg).await.unwrap();
        let mut b = vec![0u8; msg.len()];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(b, msg);
    }

    /// Whether the peer closed `c` (EOF or reset) within 5 s.
    async fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    fn metric(registry: &Registry, line: &str) -> bool {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap()
            .contains(line)
    }

    #[tokio::test]
    async fn routes_are_bounded_in_connections_idle_time_and_flows() {
        let registry = Registry::new();
        let limits = Limits {
            max_connections: 2,
            tcp_idle: Duration::from_millis(500),
            udp_idle: Duration::from_secs(60),
            max_udp_flows: 2,
        };
        let lb = Proxy::with_limits("127.0.0.1".parse().unwrap(), &registry, limits);
        let port = free_port();
        let key = RouteKey {
            proto: Proto::Tcp,
            port,
        };
        lb.ensure(key, tcp_echo().await, "acme/echo").await.unwrap();
        let mut a = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        round_trip(&mut a, b"a").await;
        let mut b = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        round_trip(&mut b, b"b").await;
        // A third connection is closed at once and counted.
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert!(closed(&mut c).await, "third connection was served");
        assert!(metric(
            &registry,
            &format!("crm_lb_refused_total{{appinst=\"acme/echo\",route=\"tcp:{port}\"}} 1")
        ));
        // Idle connections are closed, which frees their slots.
        assert!(
            closed(&mut a).await && closed(&mut b).await,
            "idle connections stay open"
        );
        let mut d = testenv::wait_for("a free slot", Duration::from_secs(5), async || {
            let mut d = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            d.write_all(b"d").await.ok()?;
            let mut r = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(1), d.read(&mut r)).await,
                Ok(Ok(1))
            )
            .then_some(d)
        })
        .await;
        round_trip(&mut d, b"again").await;

        // UDP: a third client flow evicts the least recently used one.
        let uport = free_port();
        lb.ensure(
            RouteKey {
                proto: Proto::Udp,
                port: uport,
            },
            udp_echo().await,
            "acme/echo",
        )
        .await
        .unwrap();
        for _ in 0..3 {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(b"x", ("127.0.0.1", uport)).await.unwrap();
            let mut b = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut b))
                .await
                .unwrap()
                .unwrap();
        }
        assert!(metric(
            &registry,
            &format!("crm_lb_udp_evicted_total{{appinst=\"acme/echo\",route=\"udp:{uport}\"}} 1")
        ));
        assert!(metric(
            &registry,
            &format!("crm_lb_active_connections{{appinst=\"acme/echo\",route=\"udp:{uport}\"}} 2")
        ));
    }

    #[tokio::test]
    async fn tcp_and_udp_routes_forward_and_count() {
        let registry = Registry::new();
        let lb = Proxy::new("127.0.0.1".parse().unwrap(), &registry);
        let echo_addr = tcp_echo().await;
        let port = free_port();
        let key = RouteKey {
            proto: Proto::Tcp,
            port,
        };
        lb.ensure(key, echo_addr, "acme/echo").await.unwrap();
        lb.ensure(key, echo_addr, "acme/echo").await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        drop(c);

        let udp_addr = udp_echo().await;
        let uport = free_port();
        lb.ensure(
            RouteKey {
                proto: Proto::Udp,
                port: uport,
            },
            udp_addr,
            "acme/echo",
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(b"hello", ("127.0.0.1", uport))
            .await
            .unwrap();
        let mut b = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], b"hello");

        assert_eq!(lb.routes().len(), 2);
        // The TCP connection is counted when its proxy task ends, after the client dropped it.
        let text = testenv::wait_for("the closed connection to be counted", Duration::from_secs(5), async || {
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap();
            text.contains(&format!("crm_lb_bytes_total{{appinst=\"acme/echo\",direction=\"in\",route=\"tcp:{port}\"}} 4"))
                .then_some(text)
        })
        .await;
        assert!(
            text.contains(&format!(
                "crm_lb_connections_total{{appinst=\"acme/echo\",route=\"tcp:{port}\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("crm_lb_bytes_total{{appinst=\"acme/echo\",direction=\"in\",route=\"udp:{uport}\"}} 5")), "{text}");

        lb.remove(key);
        testenv::wait_for(
            "the route to stop listening",
            Duration::from_secs(5),
            async || {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
