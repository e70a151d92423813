//! The cloudlet's shared root load balancer: a layer-4 proxy in its own process, `edge-lb`.
//!
//! The LB outlives the CRM: a CRM crash, restart or upgrade never closes a connection or a listener.
//! - [`server`] is the `edge-lb` process: the [`proxy`], a control socket the CRM programs it through
//!   (JSON lines, [`Request`]/[`Response`]), its routes persisted atomically in `routes.json` and bound again
//!   when it starts, and its own `/metrics`.
//! - [`client`] is the CRM's side: it adopts the LB that runs, starts one when routes are needed and none
//!   answers, and starts it again when it dies.
//!
//! Everything of one LB lives in one directory (`<crm state dir>/lb`):
//! `lock` (held by the running LB, so two never run), `lb.sock`, `routes.json`, `pid` and `lb.log`.
//! The LB exits when its socket is removed (the state dir was deleted: nobody can program it any more).

pub mod client;
pub mod dedicated;
pub mod proxy;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The protocol of an App's port (anything but UDP is TCP).
    pub fn of(port: &edge_proto::edge::AppPort) -> Self {
        if port.proto == edge_proto::edge::LProto::Udp as i32 {
            Self::Udp
        } else {
            Self::Tcp
        }
    }
}

/// A public port of the load balancer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

/// The cloudlet's load balancers: the shared one, and those of clusters with dedicated IP access.
pub struct Lbs {
    pub shared: Arc<client::LbClient>,
    pub dedicated: dedicated::Dedicated,
}

impl Lbs {
    /// The shared LB and every dedicated one.
    pub fn all(&self) -> Vec<Arc<client::LbClient>> {
        std::iter::once(self.shared.clone())
            .chain(
                self.dedicated
                    .clusters()
                    .iter()
                    .filter_map(|c| self.dedicated.get(c)),
            )
            .collect()
    }
}

/// A route: public port → backend, for the AppInst `owner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub key: RouteKey,
    pub backend: SocketAddr,
    pub owner: String,
}

/// One line the CRM sends on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Route `route.key` to `route.backend` (a no-op when it already does).
    Ensure { route: RouteSpec },
    /// Stop listening on `key` (a no-op when nothing does).
    Remove { key: RouteKey },
    /// The LB's pid, metrics address and routes.
    Status,
}

/// The LB's answer to one [`Request`]: `error` set when it failed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// where the LB serves `/metrics` and `/healthz`
    pub http_addr: SocketAddr,
    pub routes: Vec<RouteSpec>,
}

/// The files of the LB whose directory is `dir`.
#[derive(Clone, Debug)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("lb.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn routes(&self) -> PathBuf {
        self.dir.join("routes.json")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("lb.log")
    }
}

/// The `edge-lb` binary next to the running executable (`target/<profile>/` for tests, whose executables
/// sit one level down in `deps/`).
pub fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let beside = dir.join("edge-lb");
    match dir.parent() {
        Some(up) if !beside.exists() && dir.ends_with("deps") => up.join("edge-lb"),
        _ => beside,
    }
}
