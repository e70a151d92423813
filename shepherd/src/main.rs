//! `shepherd`: metrics and health checks of one cloudlet, next to its CRM.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use edge_common::notify_client::AgentArgs;
use edge_common::telemetry::{self, LogFormat};
use edge_proto::edge::ClientType;
use shepherd::influx::InfluxConfig;
use shepherd::{Config, PlatformKind, Shepherd};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlatformArg {
    Docker,
    Vm,
    Fake,
}

/// Shepherd: runs next to a cloudlet's CRM. Samples the CPU, memory, disk and network of every app
/// instance and the shared load balancer's connections into InfluxDB, checks that every app's ports
/// answer, and reports failing instances and alerts to the regional controller.
///
/// Example: shepherd --region EU --cloudlet-org tmus --cloudlet-name berlin --access-key berlin.key
/// --ca-cert region-ca.pem --influxdb http://127.0.0.1:8086 --interval 10s
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,
    /// Platform the cloudlet's apps run on.
    #[arg(long, env = "EDGE_PLATFORM", value_enum, default_value = "docker")]
    platform: PlatformArg,
    /// Docker Engine socket (docker platform): the CRM's.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// The CRM's VM directory, `<crm state dir>/vms` (vm platform).
    #[arg(long, env = "EDGE_VM_DIR", required_if_eq("platform", "vm"))]
    vm_dir: Option<std::path::PathBuf>,
    /// InfluxDB base URL (v1 HTTP API).
    #[arg(long, env = "EDGE_INFLUXDB", default_value = "http://127.0.0.1:8086")]
    influxdb: String,
    /// Database of the metrics (created when missing).
    #[arg(long, env = "EDGE_INFLUX_DATABASE", default_value = "metrics")]
    database: String,
    /// Database of the lifecycle events (created when missing).
    #[arg(long, env = "EDGE_INFLUX_EVENTS_DATABASE", default_value = "events")]
    events_database: String,
    /// Days points are kept (the retention policy made default when a database is created).
    #[arg(long, env = "EDGE_INFLUX_RETENTION_DAYS", default_value_t = 28)]
    retention_days: u32,
    /// Most points held while InfluxDB is unreachable; the oldest are dropped beyond.
    #[arg(long, env = "EDGE_SHEPHERD_MAX_QUEUED", default_value_t = 200_000)]
    max_queued: usize,
    /// Time between two metric samples, e.g. 10s, 500ms, 1m.
    #[arg(long, env = "EDGE_SHEPHERD_INTERVAL", default_value = "10s", value_parser = duration)]
    interval: Duration,
    /// Time between two health checks of every app instance.
    #[arg(long, env = "EDGE_SHEPHERD_HEALTH_INTERVAL", default_value = "5s", value_parser = duration)]
    health_interval: Duration,
    /// Failed health checks in a row before an app instance is reported failing.
    #[arg(long, env = "EDGE_SHEPHERD_HEALTH_FAILURES", default_value_t = 3)]
    health_failures: u32,
    /// Address the shared root load balancer publishes app ports on (the CRM's --public-addr).
    #[arg(long, env = "EDGE_PUBLIC_ADDR", default_value = "127.0.0.1")]
    public_addr: IpAddr,
    /// The load balancer's metrics page (`edge-lb`'s /metrics, the CRM's --lb-http-addr); "" to skip
    /// connection counters.
    #[arg(
        long,
        env = "EDGE_LB_METRICS",
        default_value = "http://127.0.0.1:36102/metrics"
    )]
    lb_metrics: String,
    /// Percentage of a cloudlet resource (vCPUs, RAM, disk) in use above which an alert fires.
    #[arg(
        long,
        env = "EDGE_SHEPHERD_RESOURCE_ALERT_PERCENT",
        default_value_t = 80
    )]
    resource_alert_percent: u64,
    /// HTTP address of /metrics and /healthz.
    #[arg(
        long,
        env = "EDGE_SHEPHERD_HTTP_ADDR",
        default_value = "127.0.0.1:36201"
    )]
    http_addr: SocketAddr,
    /// Log as JSON lines.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

/// `10s`, `500ms`, `2m`, or plain seconds; more than zero.
fn duration(s: &str) -> Result<Duration, String> {
    match edge_common::parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err("must be more than zero".into()),
        None => Err(format!("\"{s}\" is not a duration like 10s, 500ms or 1m")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("shepherd", LogFormat::json(args.log_json))?;
    let agent = args
        .agent
        .agent(ClientType::Shepherd)
        .map_err(|e| anyhow::anyhow!(e))?;
    let _shepherd = Shepherd::start(Config {
        agent,
        platform: match args.platform {
            PlatformArg::Docker => PlatformKind::Docker {
                host: args.docker_host,
            },
            PlatformArg::Vm => PlatformKind::Vm {
                dir: args.vm_dir.clone().unwrap_or_default(),
            },
            PlatformArg::Fake => PlatformKind::Fake,
        },
        influx: InfluxConfig {
            url: args.influxdb.trim_end_matches('/').to_string(),
            database: args.database,
            events_database: args.events_database,
            retention_days: args.retention_days.max(1),
            max_queued: args.max_queued.max(1),
        },
        interval: args.interval,
        health_interval: args.health_interval,
        health_failures: args.health_failures,
        public_addr: args.public_addr,
        lb_metrics: Some(args.lb_metrics).filter(|u| !u.is_empty()),
        http_addr: args.http_addr,
        resource_alert_percent: args.resource_alert_percent,
    })
    .await?;
    let signal = edge_common::shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    Ok(())
}
