//! Master controller: the one public REST API of the platform, for operators and developers across all
//! regions. Accounts, organizations, roles and the audit log live in PostgreSQL; the token signing key
//! and the bootstrap admin password in Vault/OpenBao; region-scoped calls are forwarded to the region's
//! controller over gRPC after an RBAC decision (see `WIRE.md` for the MobiledgeX paths and shapes).

pub mod api;
pub mod audit;
pub mod auth;
pub mod console;
pub mod error;
pub mod json;
pub mod openapi;
pub mod rbac;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tonic::transport::Channel;

use crate::error::ApiError;

/// Settings of the master controller.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub vault_addr: String,
    pub vault_token: String,
    pub http_addr: SocketAddr,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Lifetime of login tokens.
    pub token_ttl: Duration,
    /// Bootstrap admin created on first start (its password comes from Vault `secret/mc/admin`, field
    /// `password`, or from `admin_password` when set).
    pub admin_user: String,
    pub admin_password: Option<String>,
    /// Failed logins allowed per user and per client address within `throttle_window`.
    pub throttle_failures: usize,
    pub throttle_window: Duration,
    /// Accounts one client address may create (`/usercreate`) within `throttle_window`.
    pub user_create_limit: usize,
    /// Pause before answering a failed login (slows password guessing; MobiledgeX used 3 s).
    pub bad_auth_delay: Duration,
    /// How often the MC looks at every region's alerts to notify alert receivers.
    pub alert_poll_interval: Duration,
    /// Where email alert receivers' mail goes; `None`: email receivers are refused.
    pub smtp: Option<Smtp>,
}

/// An SMTP relay (plain SMTP, no authentication: one on this host or site).
#[derive(Clone, Debug)]
pub struct Smtp {
    /// `host:port`
    pub relay: String,
    /// the sender address of alert mail
    pub from: String,
}

impl Config {
    pub fn local(database_url: &str, vault_addr: &str, vault_token: &str) -> Self {
        Self {
            database_url: database_url.into(),
            vault_addr: vault_addr.into(),
            vault_token: vault_token.into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            tls: None,
            token_ttl: Duration::from_secs(24 * 3600),
            admin_user: "mexadmin".into(),
            admin_password: None,
            throttle_failures: 3,
            throttle_window: Duration::from_secs(60),
            user_create_limit: 10,
            bad_auth_delay: Duration::from_secs(3),
            alert_poll_interval: Duration::from_secs(5),
            smtp: None,
        }
    }
}

/// Shared state of every handler.
pub struct Mc {
    pub db: PgPool,
    pub tokens: auth::Tokens,
    pub throttle: auth::Throttle,
    pub bad_auth_delay: Duration,
    pub user_create_limit: usize,
    /// the platform's own admin account (`Config::admin_user`), which cannot be deleted
    pub superuser: String,
    /// each region's controller channel
    channels: Mutex<Channels>,
    pki: edge_common::pki::VaultPki,
    /// secrets of the MC (alert receivers' URLs)
    pub vault: edge_common::vault::Kv,
    /// outgoing HTTP (InfluxDB queries, alert receivers)
    pub http: reqwest::Client,
    /// the relay of email alert receivers
    pub smtp: Option<Smtp>,
}

/// A region's controller channel as the MC last found it registered.
struct Region {
    address: String,
    /// when the channel's client certificate is renewed (unix s)
    renew: i64,
    /// when the registration was last read from the database
    checked: std::time::Instant,
    channel: Channel,
}

/// The controller channels of the regions in use.
#[derive(Default)]
struct Channels {
    regions: HashMap<String, Region>,
    /// how many registrations were forgotten: a lookup that read the database before one was does not
    /// keep what it read
    forgotten: u64,
}

/// How long a region's registration is used without reading it again. Deregistering through this MC
/// takes effect at once; through another MC replica, within this time.
const REGION_RECHECK: Duration = Duration::from_secs(5);

impl Mc {
    pub fn pki(&self) -> &edge_common::pki::VaultPki {
        &self.pki
    }

    /// A gRPC channel to `region`'s controller (registered with controller/create): mTLS with an `mc`
    /// certificate from the region's PKI when the region was registered with a CA.
    pub async fn region(&self, region: &str) -> Result<Channel, ApiError> {
        if region.is_empty() {
            return Err(ApiError::bad_request("region is required"));
        }
        let now = edge_common::now_ms() / 1000;
        let forgotten = {
            let channels = self.channels.lock().expect("channels lock");
            if let Some(r) = channels.regions.get(region)
                && r.checked.elapsed() < REGION_RECHECK
                && r.renew > now
            {
                return Ok(r.channel.clone());
            }
            channels.forgotten
        };
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT address, ca_cert, server_name FROM controllers WHERE region = $1",
        )
        .bind(region)
        .fetch_optional(&self.db)
        .await?;
        let Some((addr, ca, server_name)) = row else {
            return Err(ApiError::bad_request(format!(
                "Region \"{region}\" not found"
            )));
        };
        let checked = std::time::Instant::now();
        if let Some(r) = self
            .channels
            .lock()
            .expect("channels lock")
            .regions
            .get_mut(region)
            .filter(|r| r.address == addr && r.renew > now)
        {
            r.checked = checked;
            return Ok(r.channel.clone());
        }
        let bad_addr = |e: &dyn std::fmt::Display| {
            ApiError::bad_request(format!(
                "controller address \"{addr}\" of region {region}: {e}"
            ))
        };
        let (ch, renew) = if ca.is_empty() {
            let ch = Channel::from_shared(format!("http://{addr}"))
                .map_err(|e| bad_addr(&e))?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy();
            (ch, i64::MAX)
        } else {
            let me = edge_common::pki::Peer {
                region: region.into(),
                role: edge_common::pki::Role::Mc,
                cloudlet: None,
            };
            let cert = self
                .pki
                .issue(&me, &[], &[], Duration::from_secs(24 * 3600))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, region, "issuing the MC's client certificate failed");
                    ApiError::unavailable(format!("the PKI of region {region} is unavailable, retry later"))
                })?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                .identity(tonic::transport::Identity::from_pem(&cert.chain, &cert.key))
                .domain_name(server_name);
            let ch = Channel::from_shared(format!("https://{addr}"))
                .map_err(|e| bad_addr(&e))?
                .tls_config(tls)
                .map_err(|e| bad_addr(&e))?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy();
            (ch, now + cert.renew_in(now).as_secs() as i64)
        };
        let mut channels = self.channels.lock().expect("channels lock");
        if channels.forgotten == forgotten {
            channels.regions.insert(
                region.to_string(),
                Region {
                    address: addr,
                    renew,
                    checked,
                    channel: ch.clone(),
                },
            );
        }
        Ok(ch)
    }

    /// Forgets the channel of a region whose registration changed.
    pub fn forget_region(&self, region: &str) {
        let mut channels = self.channels.lock().expect("channels lock");
        channels.regions.remove(region);
        channels.forgotten += 1;
    }
}

/// A running master controller.
pub struct MasterController {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    alerts: tokio::task::JoinHandle<()>,
}

impl Drop for MasterController {
    fn drop(&mut self) {
        self.alerts.abort();
    }
}

impl MasterController {
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let db = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&cfg.database_url)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
        sqlx::migrate!("./migrations")
            .run(&db)
            .await
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        let vault = edge_common::vault::Kv::new(&cfg.vault_addr, &cfg.vault_token, "secret")?;
        let key = vault.key("mc/jwt", "key", 64).await?;
        bootstrap_admin(&db, &vault, &cfg).await?;
        let mc = web::Data::new(Mc {
            db,
            tokens: auth::Tokens::new(key, cfg.token_ttl),
            throttle: auth::Throttle::new(cfg.throttle_failures, cfg.throttle_window),
            bad_auth_delay: cfg.bad_auth_delay,
            user_create_limit: cfg.user_create_limit,
            superuser: cfg.admin_user.clone(),
            channels: Mutex::default(),
            pki: edge_common::pki::VaultPki::new(&cfg.vault_addr, &cfg.vault_token),
            vault,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            smtp: cfg.smtp.clone(),
        });
        let alerts = tokio::spawn(api::alerts::run(mc.clone(), cfg.alert_poll_interval));
        let metrics = web::Data::new(api::Metrics::new());
        let server = HttpServer::new(move || {
            let m = metrics.clone();
            App::new()
                .wrap_fn(move |req, srv| {
                    // Labelled by route pattern (e.g. /api/v1/auth/ctrl/{method}) to keep label values few.
                    let path = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    let start = std::time::Instant::now();
                    let m = m.clone();
                    let fut = actix_web::dev::Service::call(srv, req);
                    async move {
                        let res = fut.await?;
                        let status = res.status().as_u16().to_string();
                        m.requests
                            .with_label_values(&[path.as_str(), status.as_str()])
                            .inc();
                        m.latency
                            .with_label_values(&[path.as_str()])
                            .observe(start.elapsed().as_secs_f64());
                        Ok(res)
                    }
                })
                .app_data(mc.clone())
                .app_data(metrics.clone())
                // Bodies up to 2 MiB (requests are small; ctrl calls carry one object).
                .app_data(web::PayloadConfig::new(2 << 20))
                .configure(api::routes)
        })
        .workers(2)
        // Idle connections stay open longer than the pools of common HTTP clients (Go's and reqwest's
        // keep them 90 s). With actix's 5 s, a client reusing a connection just as the MC closed it got
        // an empty reply to a POST, which it cannot safely resend.
        .keep_alive(Duration::from_secs(120))
        // Signals are the binary's to handle (actix's own handler took SIGTERM and left the process
        // running).
        .disable_signals();
        let listener = listener(cfg.http_addr)?;
        let server = match &cfg.tls {
            Some((cert, key)) => {
                server.listen_rustls_0_23(listener, edge_common::pki::server_config(cert, key)?)?
            }
            None => server.listen(listener)?,
        };
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        tracing::info!(%addr, "master controller started");
        Ok(Self {
            addr,
            handle,
            alerts,
        })
    }

    pub async fn stop(self) {
        self.alerts.abort();
        self.handle.stop(true).await;
    }
}

/// The MC's listening socket. Its connections send without Nagle's delay (Linux hands TCP_NODELAY down to
/// accepted sockets; actix leaves it unset): a streamed reply ends in a small chunk that otherwise waits
/// for the client's delayed ACK, 40 ms.
fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// Creates the admin account with the AdminManager role on first start.
async fn bootstrap_admin(
    db: &PgPool,
    vault: &edge_common::vault::Kv,
    cfg: &Config,
) -> anyhow::Result<()> {
    let exists: Option<(String,)> = sqlx::query_as("SELECT name FROM users WHERE name = $1")
        .bind(&cfg.admin_user)
        .fetch_optional(db)
        .await?;
    if exists.is_some() {
        return Ok(());
    }
    let password = match &cfg.admin_password {
        Some(p) => p.clone(),
        None => vault.read("mc/admin", "password").await?.ok_or_else(|| {
            anyhow::anyhow!("no bootstrap admin password: set MC_ADMIN_PASSWORD or Vault secret/mc/admin field password")
        })?,
    };
    auth::check_password(&cfg.admin_user, &password)
        .map_err(|e| anyhow::anyhow!("bootstrap admin password: {e}"))?;
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO users (name, email, passhash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&cfg.admin_user)
    .bind(format!("{}@localhost", cfg.admin_user))
    .bind(auth::hash(&password))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO roles (username, org, role) VALUES ($1, '', $2) ON CONFLICT DO NOTHING",
    )
    .bind(&cfg.admin_user)
    .bind(rbac::ADMIN_MANAGER)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(user = %cfg.admin_user, "bootstrap admin created");
    Ok(())
}
