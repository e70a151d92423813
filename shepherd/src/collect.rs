//! Where an AppInst's resource use and address come from: the Docker Engine (the containers the CRM
//! labelled with the AppInst's key), or a simulation for the fake platform.

use std::collections::HashMap;
use std::net::IpAddr;

use crm::platform::docker::DockerPlatform;
use crm::platform::{AppStats, ClusterOps};
use edge_common::Keyed;
use edge_proto::edge::AppInst;

/// What the platform shows of one AppInst.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// every container (or VM) of it runs
    pub running: bool,
    /// its address on the cluster network, for the direct health probe (`None`: not probed)
    pub backend: Option<IpAddr>,
    pub stats: AppStats,
}

#[async_trait::async_trait]
pub trait Collector: Send + Sync {
    /// Samples of the given instances, by AppInst key; an instance the platform does not have is left
    /// out. Without `stats`, only whether they run and where (for health checks).
    async fn collect(
        &self,
        insts: &[AppInst],
        stats: bool,
    ) -> anyhow::Result<HashMap<String, Sample>>;
}

pub struct Docker(pub DockerPlatform);

#[async_trait::async_trait]
impl Collector for Docker {
    async fn collect(
        &self,
        insts: &[AppInst],
        stats: bool,
    ) -> anyhow::Result<HashMap<String, Sample>> {
        let observed: HashMap<String, _> = self
            .0
            .list_app_insts()
            .await?
            .into_iter()
            .map(|o| (o.key.clone(), o))
            .collect();
        let wanted = insts
            .iter()
            .filter_map(|i| observed.get(&i.key_string()))
            .map(|o| async move {
                // A container that is gone between the listing and its stats is simply not running.
                let stats = if o.running && stats {
                    self.0.app_stats(o).await.unwrap_or_default()
                } else {
                    AppStats::default()
                };
                (
                    o.key.clone(),
                    Sample {
                        running: o.running,
                        backend: o.backend,
                        stats,
                    },
                )
            });
        // The engine samples CPU over about a second per container: ask for all at once.
        Ok(futures::future::join_all(wanted)
            .await
            .into_iter()
            .collect())
    }
}

/// Plausible figures for the fake platform: steady per instance, drifting over time, network counters
/// growing. Instances have no address, so they are not probed.
pub struct Fake {
    started: std::time::Instant,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
        }
    }
}

#[async_trait::async_trait]
impl Collector for Fake {
    async fn collect(
        &self,
        insts: &[AppInst],
        _stats: bool,
    ) -> anyhow::Result<HashMap<String, Sample>> {
        let t = self.started.elapsed().as_secs_f64();
        Ok(insts
            .iter()
            .map(|i| {
                let key = i.key_string();
                // FNV-1a of the key: a stable personality per instance.
                let h = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
                    (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                });
                let base = f64::from(h % 40) + 2.0;
                let rate = u64::from(h % 5000) + 500;
                let stats = AppStats {
                    cpu: base + 5.0 * (t / 60.0 + f64::from(h % 7)).sin().abs(),
                    mem: (64 + u64::from(h % 192)) << 20,
                    disk: (8 + u64::from(h % 56)) << 20,
                    net_rx: rate * t as u64,
                    net_tx: 3 * rate * t as u64,
                };
                (
                    key,
                    Sample {
                        running: true,
                        backend: None,
                        stats,
                    },
                )
            })
            .collect())
    }
}
