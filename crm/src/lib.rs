//! Cloudlet Resource Manager: the agent on an operator's PlatformVM, one per cloudlet.
//!
//! It dials out to its regional controller's notify port (see [`notify`]), mirrors the cloudlet's
//! desired state into its state dir ([`mirror`]), and makes the cloudlet match it ([`reconcile`]) through
//! a platform driver ([`platform`]: `docker`, `vm` or `fake`), publishing app ports on the shared root load
//! balancer ([`lb`]). When the controller is unreachable it keeps everything running and keeps
//! reconciling against the cached state.

mod exec;
pub mod lb;
pub mod mirror;
pub mod notify;
pub mod platform;
pub mod reconcile;
pub mod report;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_common::ops::{self, Readiness};
use edge_proto::edge::CloudletKey;
use prometheus::{IntGauge, Registry};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::platform::Platform;

/// Writes `data` to `path` so that a crash at any point leaves either the old or the new content: a
/// private temporary file, fsynced, renamed over `path`.
pub(crate) fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Which driver runs the cloudlet's infrastructure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// Real containers on the Docker Engine at this address (`unix:///run/docker.sock`).
    Docker { host: String },
    /// In-memory simulation with this delay per operation.
    Fake { delay: Duration },
    /// qemu VMs, booted from the images in `images` (`infra/vm-images.sh`), each given `boot_timeout`
    /// to answer on its ports.
    Vm {
        images: PathBuf,
        boot_timeout: Duration,
        /// the Docker Engine (`unix:///run/docker.sock`) images of docker-cluster apps come from
        image_engine: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub region: String,
    pub cloudlet: CloudletKey,
    /// Controller notify address, `host:port`.
    pub controller: String,
    /// Cloudlet access private key (base64 PKCS#8), as issued at CreateCloudlet.
    pub access_key: String,
    pub platform: PlatformKind,
    pub state_dir: PathBuf,
    pub http_addr: SocketAddr,
    /// Address the shared root load balancer listens on.
    pub public_addr: IpAddr,
    /// The `edge-lb` executable the CRM starts ([`lb::default_binary`]).
    pub lb_binary: PathBuf,
    /// Where a load balancer the CRM starts serves its `/metrics`.
    pub lb_http_addr: SocketAddr,
    /// Addresses for the load balancers of clusters with dedicated IP access (none: such clusters are
    /// refused).
    pub dedicated_ips: Vec<IpAddr>,
    /// mTLS to the controller (the region's CA and the controller's certificate name, both given at
    /// onboarding); `None` dials plaintext and signs the hello (a controller without PKI).
    pub tls: Option<ControllerTls>,
}

pub use edge_common::notify_client::ControllerTls;

impl Config {
    /// A CRM of `cloudlet` on the fake platform (simulation, scale tests), its ops endpoint and load
    /// balancer on loopback.
    pub fn fake(
        region: &str,
        cloudlet: CloudletKey,
        controller: String,
        access_key: String,
        delay: Duration,
        state_dir: PathBuf,
    ) -> Self {
        Self {
            region: region.into(),
            cloudlet,
            controller,
            access_key,
            platform: PlatformKind::Fake { delay },
            state_dir,
            http_addr: ([127, 0, 0, 1], 0).into(),
            public_addr: [127, 0, 0, 1].into(),
            lb_binary: lb::default_binary(),
            lb_http_addr: ([127, 0, 0, 1], 0).into(),
            dedicated_ips: Vec::new(),
            tls: None,
        }
    }
}

/// A running CRM; dropping it stops every task (running apps stay, as after a crash).
pub struct Crm {
    pub http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Crm {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Crm {
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        // The state dir holds the desired state (App env and commands): the CRM's user only.
        std::fs::create_dir_all(&cfg.state_dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| anyhow::anyhow!("creating state dir {}: {e}", cfg.state_dir.display()))?;
        let ck = edge_common::Keyed::key_string(&cfg.cloudlet);
        let platform: Arc<dyn Platform> = match &cfg.platform {
            PlatformKind::Docker { host } => Arc::new(
                platform::docker::DockerPlatform::connect(host, &ck)
                    .await?
                    .isolated(cfg.public_addr),
            ),
            PlatformKind::Vm {
                images,
                boot_timeout,
                image_engine,
            } => Arc::new(platform::vm::VmPlatform::new(platform::vm::VmConfig {
                dir: cfg.state_dir.join("vms"),
                images: images.clone(),
                boot_timeout: *boot_timeout,
                image_engine: image_engine.clone(),
            })?),
            PlatformKind::Fake { delay } => Arc::new(platform::fake::FakePlatform::new(
                *delay,
                platform::Capacity {
                    vcpus: 1000,
                    ram: 4_096_000,
                    disk: 100_000,
                },
            )),
        };
        let mirror = Arc::new(mirror::Mirror::load(
            &cfg.state_dir,
            mirror::Seal::from_access_key(&cfg.access_key),
        )?);
        let registry = Registry::new();
        let connected = IntGauge::new(
            "crm_controller_connected",
            "1 while the notify stream to the controller is up",
        )?;
        registry.register(Box::new(connected.clone()))?;
        let lb = Arc::new(lb::client::LbClient::new(
            lb::client::LbConfig {
                binary: cfg.lb_binary.clone(),
                dir: cfg.state_dir.join("lb"),
                public_addr: cfg.public_addr,
                http_addr: cfg.lb_http_addr,
            },
            &registry,
        )?);
        let resent = prometheus::IntCounter::new(
            "crm_reports_resent_total",
            "reports the controller had not stored a while after they went out, sent again",
        )?;
        registry.register(Box::new(resent.clone()))?;
        let passes = prometheus::IntCounter::new(
            "crm_reconcile_passes_total",
            "reconcile passes completed (one at least every 2 s while the CRM works)",
        )?;
        registry.register(Box::new(passes.clone()))?;
        let (reporter, reports) = report::Reporter::new(report::RESEND_AFTER, resent);
        let reporter = Arc::new(reporter);
        let resync = Arc::new(Notify::new());
        let ready = Readiness::default();
        ready.set(true);
        let ops_server = ops::serve(cfg.http_addr, registry, ready).await?;

        let dedicated = lb::dedicated::Dedicated::new(
            cfg.lb_binary.clone(),
            &cfg.state_dir,
            cfg.dedicated_ips.clone(),
        )?;
        let exec = Arc::new(exec::Exec {
            platform: platform.clone(),
            mirror: mirror.clone(),
            reporter: reporter.clone(),
        });
        let reconciler = Arc::new(reconcile::Reconciler::new(
            cfg.cloudlet.clone(),
            mirror.clone(),
            platform,
            lb::Lbs {
                shared: lb.clone(),
                dedicated,
            },
            reporter.clone(),
            resync.clone(),
            passes,
        ));
        let sink = Arc::new(notify::CrmSink {
            mirror: mirror.clone(),
            reporter,
            resync,
            connected,
            exec,
        });
        let agent = edge_common::notify_client::CloudletAgent {
            client_type: edge_proto::edge::ClientType::Crm,
            region: cfg.region.clone(),
            cloudlet: cfg.cloudlet.clone(),
            controller: cfg.controller.clone(),
            access_key: cfg.access_key.trim().to_string(),
            tls: cfg.tls.clone(),
        };
        let dial = agent.dial();
        let hello = move || agent.hello(&[]);
        let connection = edge_common::notify_client::run(dial, hello, sink, reports);
        let tasks = vec![
            ops_server.task,
            tokio::spawn(mirror.clone().run_flusher()),
            tokio::spawn(reconciler.run()),
            tokio::spawn(lb.supervise()),
            tokio::spawn(connection),
        ];
        tracing::info!(cloudlet = %ck, controller = %cfg.controller, http = %ops_server.addr, "CRM started");
        Ok(Self {
            http_addr: ops_server.addr,
            tasks,
        })
    }
}
