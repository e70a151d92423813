//! Measurement names and tags, as MobiledgeX's Shepherd wrote them: metrics go to the `metrics`
//! database as `appinst-*`, `cluster-*` and `cloudlet-*`; lifecycle events go to the `events` database
//! as `appinst`, `clusterinst` and `cloudlet`.

use edge_proto::edge::{AppInst, CloudletKey, ClusterInst};

use crate::influx::Point;

pub const APPINST_CPU: &str = "appinst-cpu";
pub const APPINST_MEM: &str = "appinst-mem";
pub const APPINST_DISK: &str = "appinst-disk";
pub const APPINST_NETWORK: &str = "appinst-network";
pub const APPINST_CONNECTIONS: &str = "appinst-connections";
pub const CLUSTER_CPU: &str = "cluster-cpu";
pub const CLUSTER_MEM: &str = "cluster-mem";
pub const CLUSTER_DISK: &str = "cluster-disk";
pub const CLUSTER_NETWORK: &str = "cluster-network";
pub const CLOUDLET_UTILIZATION: &str = "cloudlet-utilization";
pub const EVENT_APPINST: &str = "appinst";
pub const EVENT_CLUSTER: &str = "clusterinst";
pub const EVENT_CLOUDLET: &str = "cloudlet";

/// `cloudlet`, `cloudletorg`.
pub fn cloudlet(p: Point, k: &CloudletKey) -> Point {
    p.tag("cloudlet", &k.name)
        .tag("cloudletorg", &k.organization)
}

/// `cluster`, `clusterorg`, `cloudlet`, `cloudletorg`.
pub fn cluster(p: Point, c: &ClusterInst) -> Point {
    let k = c.key.clone().unwrap_or_default();
    cloudlet(
        p.tag("cluster", k.name).tag("clusterorg", k.organization),
        &c.cloudlet_key.clone().unwrap_or_default(),
    )
}

/// `app`, `ver`, `apporg`, `cluster`, `clusterorg`, `cloudlet`, `cloudletorg`, and `inst` (the
/// AppInst's own name, since several instances of one App may share a cluster here).
pub fn app_inst(p: Point, i: &AppInst) -> Point {
    let a = i.app_key.clone().unwrap_or_default();
    let c = i.cluster_key.clone().unwrap_or_default();
    cloudlet(
        p.tag("app", a.name)
            .tag("ver", a.version)
            .tag("apporg", a.organization)
            .tag("cluster", c.name)
            .tag("clusterorg", c.organization)
            .tag("inst", i.key.clone().unwrap_or_default().name),
        &i.cloudlet_key.clone().unwrap_or_default(),
    )
}
