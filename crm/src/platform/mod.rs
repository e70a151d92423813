//! Platform drivers: what actually runs clusters and app instances on a cloudlet.
//!
//! Drivers are peers chosen by the cloudlet's platform type. What a driver can do is data
//! ([`PlatformFeatures`]) that callers branch on, never its name. Every operation is idempotent and
//! every resource a driver creates carries labels with the object key, so a restarted CRM adopts what
//! already runs and removes what nobody wants.

pub mod docker;
pub mod fake;
pub mod isolation;
pub mod vm;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::lb::Proto;

use edge_proto::edge::{App, AppInst, ClusterInst, Flavor, PlatformFeatures};

/// Label keys on every resource the CRM creates.
pub const LABEL_MANAGED: &str = "edge.managed";
pub const LABEL_CLOUDLET: &str = "edge.cloudlet";
pub const LABEL_CLUSTER: &str = "edge.clusterinst";
pub const LABEL_APPINST: &str = "edge.appinst";

/// A failed platform operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PlatformError {
    pub message: String,
    /// Worth retrying with backoff (the engine was unreachable, a conflict), as opposed to a problem with
    /// the request itself (image missing, command exits).
    pub transient: bool,
}

impl PlatformError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }
}

pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// Receives step messages of a long operation ("creating network", ...).
pub trait Progress: Send + Sync {
    fn step(&self, message: &str);
}

/// What an app instance looks like on the platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedAppInst {
    /// AppInst key string
    pub key: String,
    pub container_ids: Vec<String>,
    /// all containers running
    pub running: bool,
    /// address of the app on its cluster network, for the load balancer
    pub backend: Option<IpAddr>,
    /// `(proto, app port)` → the backend's port, where it differs from the app's own (a VM's forwards)
    pub ports: BTreeMap<(Proto, u16), u16>,
}

/// Resource use of one app instance (what Shepherd reports as `appinst-*` metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AppStats {
    /// percent of one CPU (100 = one core busy)
    pub cpu: f64,
    /// bytes of memory in use
    pub mem: u64,
    /// bytes the instance wrote to its own filesystem
    pub disk: u64,
    /// bytes received and sent since the instance started
    pub net_rx: u64,
    pub net_tx: u64,
}

/// Which lines of an instance's output ShowLogs returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// the last this many lines
    pub tail: usize,
    /// only lines since this unix second (containers)
    pub since: Option<i64>,
    /// each line prefixed with its time (containers)
    pub timestamps: bool,
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Total capacity of the cloudlet's infrastructure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub vcpus: u64,
    /// MB
    pub ram: u64,
    /// GB
    pub disk: u64,
}

/// Clusters and the apps on them (docker clusters; kubernetes later).
#[async_trait::async_trait]
pub trait ClusterOps: Send + Sync {
    /// Key strings of the clusters that exist.
    async fn list_clusters(&self) -> Result<Vec<String>>;
    /// Creates the cluster if it does not exist (`flavor`: its nodes' size).
    async fn create_cluster(
        &self,
        c: &ClusterInst,
        flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<()>;
    /// Deletes the cluster if it exists.
    async fn delete_cluster(&self, key: &str) -> Result<()>;
    /// App instances that exist, running or not.
    async fn list_app_insts(&self) -> Result<Vec<ObservedAppInst>>;
    /// Starts the app instance on its cluster; fails if it does not come up.
    async fn deploy_app(
        &self,
        cluster: &ClusterInst,
        app: &App,
        inst: &AppInst,
        flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<ObservedAppInst>;
    /// Deletes the app instance's resources if they exist.
    async fn delete_app(&self, key: &str) -> Result<()>;
    /// What the instance's container (`container`: its name or id; empty: the instance's) wrote to
    /// stdout and stderr.
    async fn app_logs(&self, key: &str, container: &str, opts: LogOptions) -> Result<String>;
}

/// Virtual machines, one per VM AppInst.
#[async_trait::async_trait]
pub trait VmOps: Send + Sync {
    /// VM app instances that exist, running or not.
    async fn list_vms(&self) -> Result<Vec<ObservedAppInst>>;
    /// Creates and boots the instance's VM (or starts the existing one); fails if it does not come up.
    async fn create_vm(
        &self,
        app: &App,
        inst: &AppInst,
        flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<ObservedAppInst>;
    /// Stops the VM and removes everything it had, if it exists.
    async fn delete_vm(&self, key: &str) -> Result<()>;
    /// Stops the VM and keeps its disk (`create_vm` starts it again).
    async fn power_off(&self, key: &str) -> Result<()>;
    /// Restarts the VM and waits until it answers again.
    async fn reboot(&self, key: &str, progress: &dyn Progress) -> Result<()>;
    /// The last `tail` lines of the VM's serial console (since its last boot).
    async fn console_log(&self, key: &str, tail: usize) -> Result<String>;
}

/// A cloudlet's infrastructure.
#[async_trait::async_trait]
pub trait Platform: Send + Sync {
    fn features(&self) -> PlatformFeatures;
    /// Checks the infrastructure answers and returns its capacity.
    async fn check(&self) -> Result<Capacity>;
    fn clusters(&self) -> Option<&dyn ClusterOps> {
        None
    }
    fn vms(&self) -> Option<&dyn VmOps> {
        None
    }
}

/// Docker-safe unique name for an object key: readable part plus a hash of the exact key, so keys that
/// differ only in where the `/` falls never share a name (`acme/game-1` → `edge-acme.game-1-1a2b3c4d`).
pub fn resource_name(prefix: &str, key: &str) -> String {
    let body: String = key
        .chars()
        .map(|c| if c == '/' { '.' } else { c })
        .collect();
    format!("{prefix}-{body}-{:08x}", fnv1a(key))
}

pub use edge_common::fnv1a;
