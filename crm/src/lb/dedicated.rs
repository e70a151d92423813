//! Dedicated root LBs: a ClusterInst with dedicated IP access gets an `edge-lb` of its own, listening on
//! an address of its own from the CRM's `--dedicated-ips`, so its ports never share the cloudlet's LB (and
//! its AppInsts keep their own port numbers).
//!
//! Each lives in `<state>/lb-dedicated/<fnv of the cluster key>/`, an LB directory like the shared one's
//! plus `owner.json`, the cluster and its address, written atomically when the address is taken: the
//! allocation outlives CRM restarts, and removing the directory releases the address and ends the LB.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus::Registry;
use serde::{Deserialize, Serialize};

use super::client::{LbClient, LbConfig, LbError};

/// Port of a dedicated LB's `/metrics`, on its own address.
pub const METRICS_PORT: u16 = 36102;

#[derive(Serialize, Deserialize)]
struct Owner {
    cluster: String,
    address: IpAddr,
}

pub struct Dedicated {
    binary: PathBuf,
    root: PathBuf,
    pool: Vec<IpAddr>,
    lbs: Mutex<BTreeMap<String, (IpAddr, Arc<LbClient>)>>,
}

impl Dedicated {
    /// LBs under `<state_dir>/lb-dedicated` on the addresses of `pool`, adopting those allocated before.
    pub fn new(binary: PathBuf, state_dir: &Path, pool: Vec<IpAddr>) -> anyhow::Result<Self> {
        let d = Self {
            binary,
            root: state_dir.join("lb-dedicated"),
            pool,
            lbs: Mutex::default(),
        };
        for entry in std::fs::read_dir(&d.root).into_iter().flatten().flatten() {
            let file = entry.path().join("owner.json");
            match std::fs::read(&file).map(|b| serde_json::from_slice::<Owner>(&b)) {
                Ok(Ok(o)) => {
                    let lb = d.client(&o.cluster, o.address)?;
                    d.lbs().insert(o.cluster, (o.address, lb));
                }
                // Taken down half-way: nothing was allocated.
                _ => {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(d)
    }

    /// Whether the CRM has addresses to give (`--dedicated-ips`).
    pub fn enabled(&self) -> bool {
        !self.pool.is_empty()
    }

    fn lbs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (IpAddr, Arc<LbClient>)>> {
        self.lbs.lock().expect("dedicated LBs lock")
    }

    fn dir(&self, cluster: &str) -> PathBuf {
        self.root
            .join(format!("{:08x}", edge_common::fnv1a(cluster)))
    }

    fn client(&self, cluster: &str, address: IpAddr) -> anyhow::Result<Arc<LbClient>> {
        let cfg = LbConfig {
            binary: self.binary.clone(),
            dir: self.dir(cluster),
            public_addr: address,
            http_addr: SocketAddr::new(address, METRICS_PORT),
        };
        // Its metrics are its own (`<address>:36102`); the CRM exports the shared LB's.
        Ok(Arc::new(LbClient::new(cfg, &Registry::new())?))
    }

    /// The address of `cluster`'s LB, if it has one.
    pub fn address(&self, cluster: &str) -> Option<IpAddr> {
        self.lbs().get(cluster).map(|(a, _)| *a)
    }

    /// The LB of `cluster`, if it has one.
    pub fn get(&self, cluster: &str) -> Option<Arc<LbClient>> {
        self.lbs().get(cluster).map(|(_, lb)| lb.clone())
    }

    /// Clusters that hold an address.
    pub fn clusters(&self) -> Vec<String> {
        self.lbs().keys().cloned().collect()
    }

    /// The address of `cluster`'s LB, taking a free one from the pool the first time. The LB process
    /// starts with the first route.
    pub fn ensure(&self, cluster: &str) -> Result<IpAddr, LbError> {
        let mut lbs = self.lbs();
        if let Some((a, _)) = lbs.get(cluster) {
            return Ok(*a);
        }
        let taken: Vec<IpAddr> = lbs.values().map(|(a, _)| *a).collect();
        let Some(address) = self.pool.iter().copied().find(|a| !taken.contains(a)) else {
            return Err(LbError(format!(
                "no dedicated address is free: all {} of the cloudlet's --dedicated-ips are in use",
                self.pool.len()
            )));
        };
        let dir = self.dir(cluster);
        let owner = Owner {
            cluster: cluster.into(),
            address,
        };
        let failed = |e: std::io::Error| LbError(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let tmp = dir.join("owner.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&owner).expect("serializes")).map_err(failed)?;
        std::fs::rename(&tmp, dir.join("owner.json")).map_err(failed)?;
        let lb = self
            .client(cluster, address)
            .map_err(|e| LbError(e.to_string()))?;
        lbs.insert(cluster.into(), (address, lb));
        tracing::info!(cluster, %address, "dedicated load balancer address taken");
        Ok(address)
    }

    /// Ends `cluster`'s LB and releases its address: its directory goes, and the LB exits within a
    /// second, once it sees its socket gone.
    pub fn release(&self, cluster: &str) {
        if self.lbs().remove(cluster).is_none() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(self.dir(cluster)) {
            tracing::warn!(cluster, error = %e, "removing a dedicated load balancer's directory failed");
        }
        tracing::info!(cluster, "dedicated load balancer released");
    }
}
