//! `dme`: the Distributed Matching Engine of a region.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dme::{Config, CookieSecret, Dme};
use edge_common::telemetry::{self, LogFormat};

/// Distributed Matching Engine: the MobiledgeX-compatible API (gRPC MatchEngineApi + REST /v1/...) that
/// mobile and edge clients call to register and find the closest cloudlet running their app.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Region this DME serves.
    #[arg(long, env = "EDGE_REGION")]
    region: String,
    /// Controller notify address (host:port).
    #[arg(
        long,
        env = "EDGE_CONTROLLER_NOTIFY",
        default_value = "127.0.0.1:37001"
    )]
    controller_notify: String,
    /// gRPC MatchEngineApi address.
    #[arg(long, env = "EDGE_DME_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// REST gateway address.
    #[arg(long, env = "EDGE_DME_REST_ADDR", default_value = "127.0.0.1:38001")]
    rest_addr: SocketAddr,
    /// HTTP address of /metrics and /healthz.
    #[arg(long, env = "EDGE_DME_HTTP_ADDR", default_value = "127.0.0.1:36301")]
    http_addr: SocketAddr,
    /// This DME's operator (GetLocation's carrier when the client names none).
    #[arg(long, env = "EDGE_DME_CARRIER", default_value = "")]
    carrier: String,
    /// Token server URI returned by RegisterClient (empty: no location-verification token server).
    #[arg(long, env = "EDGE_DME_TOKEN_SERVER_URI", default_value = "")]
    token_server_uri: String,
    /// Session cookie lifetime, hours.
    #[arg(long, env = "EDGE_DME_COOKIE_HOURS", default_value_t = 24)]
    cookie_hours: u64,
    /// Edge-events cookie lifetime, minutes.
    #[arg(long, env = "EDGE_DME_EVENTS_COOKIE_MINUTES", default_value_t = 10)]
    events_cookie_minutes: u64,
    /// Vault/OpenBao address for the region's cookie secret (random per process when unset).
    #[arg(long, env = "VAULT_ADDR")]
    vault_addr: Option<String>,
    /// Vault token.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    vault_token: Option<String>,
    /// PEM certificate chain the public gRPC and REST ports serve TLS with (with --tls-key).
    #[arg(long, env = "EDGE_DME_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EDGE_DME_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve the public gRPC and REST ports without TLS (clients' cookies and locations travel in clear).
    #[arg(long, env = "EDGE_DME_PUBLIC_PLAINTEXT", conflicts_with = "tls_cert")]
    public_plaintext: bool,
    /// Dial a controller that serves plaintext notify (`--insecure-plaintext` there); otherwise the DME
    /// presents a `dme` certificate from the region's Vault PKI (needs --vault-addr/--vault-token).
    #[arg(long, env = "EDGE_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    /// Log as JSON lines.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("dme", LogFormat::json(args.log_json))?;
    let mut cfg = Config::local(&args.region, &args.controller_notify);
    cfg.grpc_addr = args.grpc_addr;
    cfg.rest_addr = args.rest_addr;
    cfg.http_addr = args.http_addr;
    cfg.carrier = args.carrier;
    cfg.token_server_uri = args.token_server_uri;
    cfg.session_ttl = Duration::from_secs(args.cookie_hours * 3600);
    cfg.edge_events_ttl = Duration::from_secs(args.events_cookie_minutes * 60);
    cfg.public_tls = match (args.tls_cert, args.tls_key, args.public_plaintext) {
        (Some(c), Some(k), false) => Some((c, k)),
        (_, _, true) => {
            tracing::warn!("serving the public API without TLS (--public-plaintext)");
            None
        }
        _ => anyhow::bail!(
            "the public gRPC and REST ports serve TLS: give --tls-cert and --tls-key, or --public-plaintext"
        ),
    };
    match (&args.vault_addr, &args.vault_token, args.insecure_plaintext) {
        (_, _, true) => {
            tracing::warn!("dialling the controller in plaintext (--insecure-plaintext)")
        }
        (Some(addr), Some(token), false) => {
            cfg.notify_tls = Some(dme::NotifyTls {
                vault: edge_common::pki::VaultPki::new(addr, token),
                server_name: edge_common::pki::controller_server_name(&args.region),
            })
        }
        _ => anyhow::bail!(
            "the DME dials its controller with mTLS: give --vault-addr and --vault-token (or VAULT_ADDR/VAULT_TOKEN), or --insecure-plaintext for a controller that serves plaintext"
        ),
    }
    if let (Some(addr), Some(token)) = (args.vault_addr, args.vault_token) {
        let path = format!("{}/dme/cookie", args.region);
        cfg.cookie_secret = CookieSecret::Vault {
            addr,
            token,
            mount: "secret".into(),
            path,
        };
    } else {
        tracing::warn!("no VAULT_ADDR/VAULT_TOKEN: cookies are signed with a per-process key");
    }
    let _dme = Dme::start(cfg).await?;
    let signal = edge_common::shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    Ok(())
}
