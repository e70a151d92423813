//! The cloudlet's shared root load balancer: a layer-4 proxy run by the CRM.
//!
//! For every port of an AppInst on a shared-access cluster it listens on the cloudlet's public address
//! and the allocated public port and forwards to the app's backend on its cluster network, TCP and UDP.
//! Per route it counts connections (UDP: client flows), active connections and bytes each way, exposed
//! on the CRM's `/metrics` as `crm_lb_*{route="tcp:10000",appinst="org/name"}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How long a UDP flow without packets is kept.
const UDP_IDLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A public port of the load balancer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteKey {
    pub proto: Proto,
    pub port: u16,
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{p}:{}", self.port)
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

/// Counters of one route.
#[derive(Clone)]
struct Stats {
    connections: IntCounter,
    active: IntGauge,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

pub struct Lb {
    public_ip: IpAddr,
    routes: Mutex<HashMap<RouteKey, Route>>,
    connections: IntCounterVec,
    active: IntGaugeVec,
    bytes: IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
#[error("load balancer cannot listen on {addr}: {source}")]
pub struct LbError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl Lb {
    pub fn new(public_ip: IpAddr, registry: &Registry) -> Arc<Self> {
        let labels = &["route", "appinst"];
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
        registry
            .register(Box::new(bytes.clone()))
            .expect("registered once");
        Arc::new(Self {
            public_ip,
            routes: Mutex::default(),
            connections,
            active,
            bytes,
        })
    }

    /// Routes `key` to `backend` for `owner` (an AppInst key); a no-op when it already does.
    pub async fn ensure(
        &self,
        key: RouteKey,
        backend: SocketAddr,
        owner: &str,
    ) -> Result<(), LbError> {
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
        };
        let task = match key.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| LbError { addr, source })?;
                tokio::spawn(serve_tcp(l, backend, stats))
            }
            Proto::Udp => {
                let s = UdpSocket::bind(addr)
                    .await
                    .map_err(|source| LbError { addr, source })?;
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
            for d in ["in", "out"] {
                let _ = self.bytes.remove_label_values(&[&route, &r.owner, d]);
            }
            tracing::info!(%route, owner = %r.owner, "LB route removed");
        }
    }

    /// Every route with its backend and owner.
    pub fn routes(&self) -> Vec<(RouteKey, SocketAddr, String)> {
        let mut v: Vec<_> = self
            .routes
            .lock()
            .expect("lb lock")
            .iter()
            .map(|(k, r)| (*k, r.backend, r.owner.clone()))
            .collect();
        v.sort();
        v
    }
}

async fn serve_tcp(listener: TcpListener, backend: SocketAddr, stats: Stats) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            stats.connections.inc();
            let Ok(Ok(mut upstream)) =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(backend)).await
            else {
                let _ = client.shutdown().await;
                return;
            };
            stats.active.inc();
            if let Ok((sent, received)) =
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            {
                stats.bytes_in.inc_by(sent);
                stats.bytes_out.inc_by(received);
            }
            stats.active.dec();
        });
    }
}

async fn serve_udp(public: Arc<UdpSocket>, backend: SocketAddr, stats: Stats) {
    // One upstream socket per client address, so replies find their way back.
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = public.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows.lock().expect("udp flows").get(&client).cloned();
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
                flows.lock().expect("udp flows").insert(client, u.clone());
                stats.connections.inc();
                stats.active.inc();
                tokio::spawn(udp_replies(
                    u.clone(),
                    public.clone(),
                    client,
                    flows.clone(),
                    stats.clone(),
                ));
                u
            }
        };
        if upstream.send(&buf[..n]).await.is_ok() {
            stats.bytes_in.inc_by(n as u64);
        }
    }
}

/// Forwards replies of one UDP flow to its client until the flow is idle.
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    stats: Stats,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        if public.send_to(&buf[..n], client).await.is_ok() {
            stats.bytes_out.inc_by(n as u64);
        }
    }
    flows.lock().expect("udp flows").remove(&client);
    stats.active.dec();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_and_udp_routes_forward_and_count() {
        let registry = Registry::new();
        let lb = Lb::new("127.0.0.1".parse().unwrap(), &registry);
        // TCP echo backend
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

        // UDP echo backend
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_addr = udp.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = udp.recv_from(&mut b).await {
                let _ = udp.send_to(&b[..n], from).await;
            }
        });
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
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(&format!(
                "crm_lb_connections_total{{appinst=\"acme/echo\",route=\"tcp:{port}\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("crm_lb_bytes_total{{appinst=\"acme/echo\",direction=\"in\",route=\"udp:{uport}\"}} 5")), "{text}");

        lb.remove(key);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "route still listening after remove"
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
