//! `crm`: the Cloudlet Resource Manager of one cloudlet.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use crm::{Config, Crm, PlatformKind};
use edge_common::telemetry::{self, LogFormat};
use edge_proto::edge::CloudletKey;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlatformArg {
    Docker,
    Fake,
}

/// Cloudlet Resource Manager: connects out to its regional controller, authenticates with the cloudlet
/// access key, and makes the cloudlet's clusters, app instances and load-balancer routes match what the
/// controller stores — also while the controller is unreachable.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Region of the cloudlet.
    #[arg(long, env = "EDGE_REGION")]
    region: String,
    /// Operator organization of the cloudlet.
    #[arg(long, env = "EDGE_CLOUDLET_ORG")]
    cloudlet_org: String,
    /// Name of the cloudlet.
    #[arg(long, env = "EDGE_CLOUDLET_NAME")]
    cloudlet_name: String,
    /// Controller notify address (host:port), as given at CreateCloudlet.
    #[arg(
        long,
        env = "EDGE_CONTROLLER_NOTIFY",
        default_value = "127.0.0.1:37001"
    )]
    controller_notify: String,
    /// File holding the cloudlet access key returned by CreateCloudlet.
    #[arg(long, env = "EDGE_ACCESS_KEY_FILE")]
    access_key: PathBuf,
    /// Platform driver.
    #[arg(long, env = "EDGE_PLATFORM", value_enum, default_value = "docker")]
    platform: PlatformArg,
    /// Docker Engine socket (docker platform).
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
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
    /// PEM file of the region's CA (`ca_certificate` of the onboarding reply): the CRM checks its
    /// controller with it and obtains its own short-lived client certificate with the access key.
    #[arg(
        long,
        env = "EDGE_CA_CERT_FILE",
        required_unless_present = "insecure_plaintext"
    )]
    ca_cert: Option<PathBuf>,
    /// Name in the controller's certificate [default: controller.<region>.edge].
    #[arg(long, env = "EDGE_CONTROLLER_SERVER_NAME")]
    controller_server_name: Option<String>,
    /// Dial a controller that serves plaintext notify (`--insecure-plaintext` there).
    #[arg(long, env = "EDGE_INSECURE_PLAINTEXT", conflicts_with = "ca_cert")]
    insecure_plaintext: bool,
    /// Log as JSON lines.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(
        "crm",
        if args.log_json {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
    )?;
    let access_key = std::fs::read_to_string(&args.access_key).map_err(|e| {
        anyhow::anyhow!(
            "reading the access key file {}: {e}",
            args.access_key.display()
        )
    })?;
    let tls = match &args.ca_cert {
        Some(path) => Some(crm::ControllerTls {
            ca: std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading the CA file {}: {e}", path.display()))?,
            server_name: args
                .controller_server_name
                .clone()
                .unwrap_or_else(|| edge_common::pki::controller_server_name(&args.region)),
        }),
        None => None,
    };
    let platform = match args.platform {
        PlatformArg::Docker => PlatformKind::Docker {
            host: args.docker_host,
        },
        PlatformArg::Fake => PlatformKind::Fake {
            delay: Duration::from_millis(args.fake_delay_ms),
        },
    };
    let _crm = Crm::start(Config {
        region: args.region,
        cloudlet: CloudletKey {
            organization: args.cloudlet_org,
            name: args.cloudlet_name,
        },
        controller: args.controller_notify,
        access_key,
        platform,
        state_dir: args.state_dir,
        http_addr: args.http_addr,
        public_addr: args.public_addr,
        tls,
    })
    .await?;
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down; apps and routes of this cloudlet stay as they are");
    Ok(())
}
