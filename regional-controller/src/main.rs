//! `regional-controller`: serves one region's object API and notify streams from etcd.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use edge_common::telemetry::{self, LogFormat};
use regional_controller::{Config, Controller};

/// Regional controller: the source of truth of one region. Stores every object in etcd, validates
/// changes, tracks the lifecycle of clusters and app instances, and streams changes to the region's
/// CRMs, DMEs and Shepherds.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Region this controller serves (e.g. EU).
    #[arg(long, env = "EDGE_REGION")]
    region: String,
    /// etcd client URLs, comma separated.
    #[arg(
        long,
        env = "EDGE_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd: Vec<String>,
    /// gRPC API address (master controller, edgectl).
    #[arg(long, env = "EDGE_CTRL_API_ADDR", default_value = "127.0.0.1:55001")]
    api_addr: SocketAddr,
    /// gRPC notify address (CRMs, DMEs, Shepherds dial in).
    #[arg(long, env = "EDGE_CTRL_NOTIFY_ADDR", default_value = "127.0.0.1:37001")]
    notify_addr: SocketAddr,
    /// HTTP address of /metrics, /healthz and /readyz.
    #[arg(long, env = "EDGE_CTRL_HTTP_ADDR", default_value = "127.0.0.1:36001")]
    http_addr: SocketAddr,
    /// Notify address handed to CRMs at cloudlet onboarding [default: the notify address].
    #[arg(long, env = "EDGE_CTRL_NOTIFY_PUBLIC_ADDR")]
    notify_public_addr: Option<String>,
    /// Seconds a Create/Update/Delete stream waits for the CRM (the work continues after).
    #[arg(long, env = "EDGE_CTRL_LIFECYCLE_TIMEOUT", default_value_t = 600)]
    lifecycle_timeout_secs: u64,
    /// Seconds a cloudlet's CRM may be disconnected before the cloudlet is marked Offline.
    #[arg(long, env = "EDGE_CTRL_OFFLINE_AFTER", default_value_t = 30)]
    offline_after_secs: u64,
    /// Public port range of shared root load balancers, e.g. 10000-19999.
    #[arg(long, env = "EDGE_CTRL_PORT_RANGE", default_value = "10000-19999", value_parser = parse_range)]
    port_range: (u16, u16),
    /// Name of this replica [default: controller-<pid>].
    #[arg(long, env = "EDGE_CTRL_REPLICA")]
    replica: Option<String>,
    /// Vault/OpenBao holding the region's PKI (`pki_<region>`): the API and notify ports serve mTLS with
    /// certificates from it.
    #[arg(long, env = "VAULT_ADDR")]
    vault_addr: Option<String>,
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    vault_token: Option<String>,
    /// Lifetime of the client certificates issued to CRMs and Shepherds, in seconds.
    #[arg(long, env = "EDGE_CTRL_CLIENT_CERT_TTL", default_value_t = 4 * 3600)]
    client_cert_ttl_secs: u64,
    /// Serve the API and notify without TLS or client certificates (anyone who reaches the ports controls
    /// the region): only for a throwaway local setup.
    #[arg(long, env = "EDGE_INSECURE_PLAINTEXT", conflicts_with = "vault_addr")]
    insecure_plaintext: bool,
    /// The platform's own image registries, `host:port` (comma-separated): an App's image on one of
    /// them must be `<registry>/<app org>/<name>:<tag>`. Pull credentials for any registry are read from
    /// Vault KV `secret/registry/<host:port>` (fields `username`, `password`) and sent only to CRMs.
    #[arg(long = "registry", env = "EDGE_REGISTRIES", value_delimiter = ',')]
    registries: Vec<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("expected LOW-HIGH, e.g. 10000-19999")?;
    let lo: u16 = a.parse().map_err(|_| format!("\"{a}\" is not a port"))?;
    let hi: u16 = b.parse().map_err(|_| format!("\"{b}\" is not a port"))?;
    if lo == 0 || lo > hi {
        return Err("LOW must be 1-65535 and not above HIGH".into());
    }
    Ok((lo, hi))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("regional-controller", LogFormat::json(args.log_json))?;
    let mut config = Config::local(&args.region, "");
    config.etcd_endpoints = args.etcd;
    config.api_addr = args.api_addr;
    config.notify_addr = args.notify_addr;
    config.http_addr = args.http_addr;
    config.notify_public_addr = args.notify_public_addr.unwrap_or_default();
    config.lifecycle_timeout = Duration::from_secs(args.lifecycle_timeout_secs);
    config.offline_after = Duration::from_secs(args.offline_after_secs);
    config.port_range = args.port_range;
    config.registries = args.registries;
    if let Some(r) = args.replica {
        config.replica = r;
    }
    config.pki = match (args.vault_addr, args.vault_token, args.insecure_plaintext) {
        (Some(addr), Some(token), false) => Some(regional_controller::PkiConfig {
            vault: edge_common::pki::VaultPki::new(&addr, &token),
            client_cert_ttl: Duration::from_secs(args.client_cert_ttl_secs),
        }),
        (_, _, true) => {
            tracing::warn!("serving plaintext without client certificates (--insecure-plaintext)");
            None
        }
        _ => anyhow::bail!(
            "the controller serves mTLS from the region's Vault PKI: give --vault-addr and --vault-token (or VAULT_ADDR/VAULT_TOKEN), or --insecure-plaintext for a throwaway local setup"
        ),
    };
    let _controller = Controller::start(config).await?;
    let signal = edge_common::shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    Ok(())
}
