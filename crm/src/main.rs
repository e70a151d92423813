//! `crm`: the Cloudlet Resource Manager of one cloudlet.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use crm::{Config, Crm, PlatformKind};
use edge_common::notify_client::AgentArgs;
use edge_common::telemetry::{self, LogFormat};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlatformArg {
    Docker,
    Vm,
    Fake,
}

/// Cloudlet Resource Manager: connects out to its regional controller, authenticates with the cloudlet
/// access key, and makes the cloudlet's clusters, app instances and load-balancer routes match what the
/// controller stores — also while the controller is unreachable. App ports are served by the cloudlet's
/// load balancer, `edge-lb`, which the CRM starts, adopts after a restart and keeps running.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,
    /// Platform driver.
    #[arg(long, env = "EDGE_PLATFORM", value_enum, default_value = "docker")]
    platform: PlatformArg,
    /// Docker Engine socket: where the docker platform runs containers; on the vm platform, where the
    /// images of docker-cluster apps are pulled to and copied into the cluster VMs from.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// Kernel, initramfs and disk images of VMs (vm platform; built by infra/vm-images.sh).
    #[arg(
        long,
        env = "EDGE_VM_IMAGES",
        default_value = "/opt/edge-platform/images"
    )]
    vm_images: PathBuf,
    /// Seconds a new VM has to answer on its ports (vm platform).
    #[arg(long, env = "EDGE_VM_BOOT_TIMEOUT", default_value_t = 120)]
    vm_boot_timeout_secs: u64,
    /// Simulated delay per operation in ms (fake platform).
    #[arg(long, env = "EDGE_FAKE_DELAY_MS", default_value_t = 100)]
    fake_delay_ms: u64,
    /// Directory for the cached desired state.
    #[arg(long, env = "EDGE_CRM_STATE_DIR")]
    state_dir: PathBuf,
    /// HTTP address of /metrics and /healthz.
    #[arg(long, env = "EDGE_CRM_HTTP_ADDR", default_value = "127.0.0.1:36101")]
    http_addr: SocketAddr,
    /// Address the shared root load balancer publishes app ports on.
    #[arg(long, env = "EDGE_PUBLIC_ADDR", default_value = "127.0.0.1")]
    public_addr: IpAddr,
    /// The load balancer executable the CRM starts (default: `edge-lb` next to `crm`).
    #[arg(long, env = "EDGE_LB_BINARY")]
    lb_binary: Option<PathBuf>,
    /// HTTP address of the load balancer's /metrics (`crm_lb_*`, read by Shepherd) and /healthz.
    #[arg(long, env = "EDGE_LB_HTTP_ADDR", default_value = "127.0.0.1:36102")]
    lb_http_addr: SocketAddr,
    /// Addresses this host can give clusters with dedicated IP access, comma separated: each such cluster
    /// gets its own load balancer on one (its /metrics on <address>:36102). None: such clusters are
    /// refused.
    #[arg(long, env = "EDGE_DEDICATED_IPS", value_delimiter = ',')]
    dedicated_ips: Vec<IpAddr>,
    /// Log as JSON lines.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("crm", LogFormat::json(args.log_json))?;
    let agent = args
        .agent
        .agent(edge_proto::edge::ClientType::Crm)
        .map_err(|e| anyhow::anyhow!(e))?;
    let platform = match args.platform {
        PlatformArg::Docker => PlatformKind::Docker {
            host: args.docker_host,
        },
        PlatformArg::Vm => PlatformKind::Vm {
            images: args.vm_images,
            boot_timeout: Duration::from_secs(args.vm_boot_timeout_secs),
            image_engine: Some(args.docker_host),
        },
        PlatformArg::Fake => PlatformKind::Fake {
            delay: Duration::from_millis(args.fake_delay_ms),
        },
    };
    let _crm = Crm::start(Config {
        region: agent.region,
        cloudlet: agent.cloudlet,
        controller: agent.controller,
        access_key: agent.access_key,
        platform,
        state_dir: args.state_dir,
        http_addr: args.http_addr,
        public_addr: args.public_addr,
        lb_binary: args.lb_binary.unwrap_or_else(crm::lb::default_binary),
        lb_http_addr: args.lb_http_addr,
        dedicated_ips: args.dedicated_ips,
        tls: agent.tls,
    })
    .await?;
    let signal = edge_common::shutdown_signal().await?;
    tracing::info!(
        signal,
        "shutting down; apps and routes of this cloudlet stay as they are"
    );
    Ok(())
}
