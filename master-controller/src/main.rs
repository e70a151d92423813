//! `master-controller`: the global REST API of the edge platform.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use edge_common::telemetry::{self, LogFormat};
use master_controller::{Config, MasterController};

/// Master controller: the one REST API (`/api/v1/...`, MobiledgeX's paths) for operators and developers:
/// accounts, organizations, roles, regions, audit, and region-scoped calls forwarded to the regional
/// controllers. State in PostgreSQL; the token key and bootstrap admin password in Vault/OpenBao.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// PostgreSQL URL; migrations are applied at start.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Vault/OpenBao address.
    #[arg(long, env = "VAULT_ADDR")]
    vault_addr: String,
    /// Vault token.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    vault_token: String,
    /// REST listen address.
    #[arg(long, env = "EDGE_MC_HTTP_ADDR", default_value = "127.0.0.1:9900")]
    http_addr: SocketAddr,
    /// PEM certificate (chain) for HTTPS; with --tls-key.
    #[arg(long, env = "EDGE_MC_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for HTTPS; with --tls-cert.
    #[arg(long, env = "EDGE_MC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Login token lifetime, hours.
    #[arg(long, env = "EDGE_MC_TOKEN_HOURS", default_value_t = 24)]
    token_hours: u64,
    /// Bootstrap admin user created on first start.
    #[arg(long, env = "EDGE_MC_ADMIN_USER", default_value = "mexadmin")]
    admin_user: String,
    /// Bootstrap admin password (else read from Vault secret/mc/admin field password); never logged.
    #[arg(long, env = "MC_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// SMTP relay (host:port) for email alert receivers: plain SMTP without authentication, e.g. the
    /// host's postfix. Without it, email receivers are refused.
    #[arg(long, env = "EDGE_MC_SMTP_RELAY")]
    smtp_relay: Option<String>,
    /// Sender address of alert mail.
    #[arg(
        long,
        env = "EDGE_MC_SMTP_FROM",
        default_value = "edge-alerts@localhost"
    )]
    smtp_from: String,
    /// Seconds between two looks at every region's alerts (alert receivers are notified from them).
    #[arg(long, env = "EDGE_MC_ALERT_POLL_SECS", default_value_t = 5)]
    alert_poll_secs: u64,
    /// Log as JSON lines.
    #[arg(long, env = "EDGE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("master-controller", LogFormat::json(args.log_json))?;
    let mut cfg = Config::local(&args.database_url, &args.vault_addr, &args.vault_token);
    cfg.http_addr = args.http_addr;
    cfg.tls = args.tls_cert.zip(args.tls_key);
    cfg.token_ttl = Duration::from_secs(args.token_hours * 3600);
    cfg.admin_user = args.admin_user;
    cfg.admin_password = args.admin_password;
    cfg.alert_poll_interval = Duration::from_secs(args.alert_poll_secs.max(1));
    cfg.smtp = args.smtp_relay.map(|relay| master_controller::Smtp {
        relay,
        from: args.smtp_from,
    });
    let mc = MasterController::start(cfg).await?;
    let signal = edge_common::shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    mc.stop().await;
    Ok(())
}
