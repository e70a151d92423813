//! `edge-lb`: the shared root load balancer of one cloudlet, started and supervised by its CRM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use crm::lb::proxy::Limits;
use crm::lb::server::{self, ServerConfig};
use edge_common::telemetry::{self, LogFormat};

/// Shared root load balancer of a cloudlet: a layer-4 TCP/UDP proxy from public ports to app backends,
/// programmed by the CRM over `<dir>/lb.sock` and serving its saved routes (`<dir>/routes.json`) from the
/// moment it starts, whether the CRM runs or not. The CRM starts it; run it by hand only to inspect it.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory of the control socket, lock, saved routes and pid file (the CRM's `<state dir>/lb`).
    #[arg(long, env = "EDGE_LB_DIR")]
    dir: PathBuf,
    /// Address the routes listen on (the cloudlet's public address).
    #[arg(long, env = "EDGE_PUBLIC_ADDR", default_value = "127.0.0.1")]
    public_addr: IpAddr,
    /// HTTP address of /metrics (`crm_lb_*`) and /healthz.
    #[arg(long, env = "EDGE_LB_HTTP_ADDR", default_value = "127.0.0.1:36102")]
    http_addr: SocketAddr,
    /// Open TCP connections per route; more are closed at once.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a TCP connection may carry no byte before it is closed.
    #[arg(long, default_value_t = Limits::default().tcp_idle.as_secs())]
    tcp_idle_secs: u64,
    /// Seconds a UDP flow may carry no packet before it is dropped.
    #[arg(long, default_value_t = Limits::default().udp_idle.as_secs())]
    udp_idle_secs: u64,
    /// UDP flows (client addresses) per route; a new one evicts the least recently used.
    #[arg(long, default_value_t = Limits::default().max_udp_flows)]
    max_udp_flows: usize,
    /// Log as JSON lines.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("edge-lb", LogFormat::json(args.log_json))?;
    server::run(ServerConfig {
        dir: args.dir,
        public_addr: args.public_addr,
        http_addr: args.http_addr,
        limits: Limits {
            max_connections: args.max_connections,
            tcp_idle: Duration::from_secs(args.tcp_idle_secs),
            udp_idle: Duration::from_secs(args.udp_idle_secs),
            max_udp_flows: args.max_udp_flows,
        },
    })
    .await
}
