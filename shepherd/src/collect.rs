//! Where an AppInst's resource use and address come from: the Docker Engine (the containers the CRM
//! labelled with the AppInst's key), the CRM's qemu VMs (their processes and disks), or a simulation for
//! the fake platform.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use crm::lb::Proto;
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
    /// `(proto, app port)` → the port on `backend`, where it differs (a VM's forwards)
    pub ports: BTreeMap<(Proto, u16), u16>,
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
                        ports: o.ports.clone(),
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
                // A stable personality per instance.
                let h = crm::platform::fnv1a(&key);
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
                        ports: BTreeMap::new(),
                        stats,
                    },
                )
            })
            .collect())
    }
}

/// The CRM's qemu VMs (its `vms/` directory): CPU from the qemu process's times between two samples,
/// memory from its resident set, disk from the size of the VM's overlay. qemu's user networking keeps no
/// counters Shepherd can read: network is left 0 here and taken from the shared LB's counters (a VM's
/// only traffic, `restrict=on`).
pub struct Vm {
    pub dir: PathBuf,
    /// CPU seconds of each qemu process at the previous sample
    last: Mutex<HashMap<u32, (f64, Instant)>>,
}

impl Vm {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            last: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Collector for Vm {
    async fn collect(
        &self,
        insts: &[AppInst],
        _stats: bool,
    ) -> anyhow::Result<HashMap<String, Sample>> {
        let vms: HashMap<String, crm::platform::vm::RunningVm> =
            crm::platform::vm::running_vms(&self.dir)
                .into_iter()
                .map(|v| (v.observed.key.clone(), v))
                .collect();
        let mut last = self.last.lock().expect("vm samples lock");
        let mut out = HashMap::new();
        for i in insts {
            let key = i.key_string();
            let Some(vm) = vms.get(&key) else { continue };
            let mut stats = AppStats::default();
            if let Some((cpu_secs, rss)) = edge_common::process_usage(vm.pid) {
                let now = Instant::now();
                if let Some((before, at)) = last.insert(vm.pid, (cpu_secs, now)) {
                    let wall = now.duration_since(at).as_secs_f64();
                    if wall > 0.0 {
                        stats.cpu = (cpu_secs - before).max(0.0) / wall * 100.0;
                    }
                }
                stats.mem = rss;
            }
            stats.disk = std::fs::metadata(vm.dir.join("disk.qcow2")).map_or(0, |m| m.len());
            out.insert(
                key,
                Sample {
                    running: vm.observed.running,
                    backend: vm.observed.backend,
                    ports: vm.observed.ports.clone(),
                    stats,
                },
            );
        }
        last.retain(|pid, _| vms.values().any(|v| v.pid == *pid));
        Ok(out)
    }
}
