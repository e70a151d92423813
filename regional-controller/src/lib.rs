//! Regional controller: the source of truth of one region.
//!
//! Every object lives in etcd (see [`store`]); an in-memory [`cache`] follows one etcd watch and feeds
//! Show calls, progress streams and the [`notify`] server. Several replicas may run against one etcd:
//! every write is a guarded transaction and every replica streams changes from its own watch.

pub mod api;
pub mod cache;
pub mod error;
pub mod metrics;
pub mod notify;
pub mod objects;
pub mod reports;
pub mod secrets;
pub mod store;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_common::ops::{self, Readiness};
use edge_common::pki::{Peer, Role};
use edge_proto::edge::{
    alert_api_server::AlertApiServer, alert_policy_api_server::AlertPolicyApiServer,
    app_api_server::AppApiServer, app_inst_api_server::AppInstApiServer,
    certificates_server::CertificatesServer, cloudlet_api_server::CloudletApiServer,
    cluster_inst_api_server::ClusterInstApiServer, exec_api_server::ExecApiServer,
    flavor_api_server::FlavorApiServer, notify_server::NotifyServer,
    operator_code_api_server::OperatorCodeApiServer,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::cache::Cache;
use crate::metrics::{Metrics, MetricsLayer};
use crate::store::Store;

/// Version of the stored data model this controller writes. Upgrade steps from older versions run at
/// start, in order; a newer stored version refuses to start (an older binary must not rewrite it).
pub const DATA_MODEL_VERSION: u32 = 1;

/// Settings of one controller replica.
#[derive(Clone, Debug)]
pub struct Config {
    pub region: String,
    pub etcd_endpoints: Vec<String>,
    pub api_addr: SocketAddr,
    pub notify_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Notify address given to CRMs at onboarding (defaults to the bound notify address).
    pub notify_public_addr: String,
    /// How long Create/Update/Delete streams wait for the CRM before giving up (the work goes on).
    pub lifecycle_timeout: Duration,
    /// How long a cloudlet's CRM may be disconnected before the cloudlet is marked Offline.
    pub offline_after: Duration,
    /// Heartbeat interval asked of notify clients; three missed ones close the stream.
    pub heartbeat_interval: Duration,
    /// Public ports handed out on shared root load balancers, inclusive.
    pub port_range: (u16, u16),
    /// Name of this replica (in logs and CloudletInfo.controller).
    pub replica: String,
    /// mTLS from the region's Vault PKI on the API and notify ports. `None` serves plaintext without
    /// client authentication beyond the CRM's signed hello: only for tests of other parts, or when asked
    /// explicitly (`--insecure-plaintext`).
    pub pki: Option<PkiConfig>,
    /// Most Apps, ClusterInsts and AppInsts (each) one organization may hold in the region.
    pub org_quota: usize,
    /// The platform's own image registries (`host[:port]`): an App's image there must sit under the
    /// App's organization. Credentials to pull from any registry are read from Vault KV `registry/<host>`.
    pub registries: Vec<String>,
}

/// Where the controller gets certificates, and how long those it issues to CRMs and Shepherds live.
#[derive(Clone, Debug)]
pub struct PkiConfig {
    pub vault: edge_common::pki::VaultPki,
    pub client_cert_ttl: Duration,
}

impl Config {
    /// Defaults for `region` against `etcd`, every listener on a free loopback port (tests).
    pub fn local(region: &str, etcd: &str) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            region: region.into(),
            etcd_endpoints: vec![etcd.into()],
            api_addr: any,
            notify_addr: any,
            http_addr: any,
            notify_public_addr: String::new(),
            lifecycle_timeout: Duration::from_secs(600),
            offline_after: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            port_range: (10000, 19999),
            replica: format!("controller-{}", std::process::id()),
            pki: None,
            org_quota: 10_000,
            registries: Vec::new(),
        }
    }
}

/// A running controller replica; dropping it stops every task.
pub struct Controller {
    pub api_addr: SocketAddr,
    pub notify_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<()>>,
    /// ends the notify sessions when the controller stops
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Controller {
    pub async fn start(mut config: Config) -> anyhow::Result<Self> {
        if config.port_range.0 == 0 || config.port_range.0 > config.port_range.1 {
            anyhow::bail!(
                "invalid public port range {}-{}",
                config.port_range.0,
                config.port_range.1
            );
        }
        let client = etcd_client::Client::connect(
            &config.etcd_endpoints,
            Some(
                etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5)),
            ),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "connecting to etcd at {}: {e}",
                config.etcd_endpoints.join(",")
            )
        })?;
        let store = Store::new(client, &config.region);
        upgrade_data_model(&store).await?;

        let api_listener = TcpListener::bind(config.api_addr).await?;
        let notify_listener = TcpListener::bind(config.notify_addr).await?;
        let api_addr = api_listener.local_addr()?;
        let notify_addr = notify_listener.local_addr()?;
        if config.notify_public_addr.is_empty() {
            config.notify_public_addr = notify_addr.to_string();
        }
        // With PKI: the controller's own server certificate, and the region's CA it demands of clients.
        let tls = match &config.pki {
            Some(p) => {
                let region = &config.region;
                p.vault.setup_region(region).await?;
                let me = Peer {
                    region: region.clone(),
                    role: Role::Controller,
                    cloudlet: None,
                };
                let server_name = edge_common::pki::controller_server_name(region);
                let cert = p
                    .vault
                    .issue(
                        &me,
                        &[server_name.as_str(), "localhost"],
                        &["127.0.0.1", "::1"],
                        Duration::from_secs(365 * 86400),
                    )
                    .await?;
                Some(cert)
            }
            None => None,
        };
        let config = Arc::new(config);
        let cache = Cache::new(store.clone());
        let api = Api {
            store,
            cache: cache.clone(),
            config: config.clone(),
            ca: tls.as_ref().map(|c| c.ca.clone()),
            secrets: match &config.pki {
                Some(p) => Some(Arc::new(secrets::AppSecrets::new(
                    p.vault.kv("secret")?,
                    &config.region,
                ))),
                None => None,
            },
        };
        let metrics = Metrics::new();
        let ready = Readiness::default();
        let ops_server =
            ops::serve(config.http_addr, metrics.registry.clone(), ready.clone()).await?;

        let mut tasks = vec![ops_server.task, tokio::spawn(cache.clone().run())];
        tasks.push(tokio::spawn(notify::sweep_offline(api.clone())));
        tasks.push(tokio::spawn(watch_health(
            cache.clone(),
            ready,
            metrics.clone(),
        )));
        macro_rules! limit {
            ($s:expr) => {
                edge_common::limit_messages!($s, edge_common::GRPC_MAX_MESSAGE_BYTES)
            };
        }
        let builder = || {
            tonic::transport::Server::builder()
                .max_concurrent_streams(Some(edge_common::GRPC_MAX_CONCURRENT_STREAMS))
        };
        let mut api_builder = builder();
        let mut notify_builder = builder();
        if let Some(cert) = &tls {
            api_builder = api_builder.tls_config(cert.server_tls(false))?;
            // Optional at the handshake: a CRM asks for its first certificate without one; every
            // other call checks the caller's certificate itself.
            notify_builder = notify_builder.tls_config(cert.server_tls(true))?;
        }
        let region = config.region.clone();
        let tls_on = tls.is_some();
        // Dropping the controller ends its connections too (see `edge_common::grpc_incoming`).
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let api_server = api_builder
            .layer(MetricsLayer(metrics.clone()))
            .layer(tonic::service::InterceptorLayer::new({
                let cache = cache.clone();
                move |req| {
                    crate::ready(&cache)?;
                    api_caller(&region, tls_on, req)
                }
            }))
            .add_service(limit!(FlavorApiServer::new(api::FlavorService(
                api.clone()
            ))))
            .add_service(limit!(OperatorCodeApiServer::new(
                api::OperatorCodeService(api.clone())
            )))
            .add_service(limit!(CloudletApiServer::new(api::CloudletService(
                api.clone()
            ))))
            .add_service(limit!(ClusterInstApiServer::new(api::ClusterInstService(
                api.clone()
            ))))
            .add_service(limit!(AppApiServer::new(api::AppService(api.clone()))))
            .add_service(limit!(ExecApiServer::new(api::ExecService(api.clone()))))
            .add_service(limit!(AlertApiServer::new(api::AlertService(api.clone()))))
            .add_service(limit!(AlertPolicyApiServer::new(api::AlertPolicyService(
                api.clone()
            ))))
            .add_service(limit!(AppInstApiServer::new(api::AppInstService(
                api.clone()
            ))))
            .serve_with_incoming(edge_common::grpc_incoming(api_listener, stop.subscribe()));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = api_server.await {
                tracing::error!(error = %e, "API server stopped");
            }
        }));
        let notify = notify::NotifyService {
            api: api.clone(),
            metrics: metrics.clone(),
            tls: tls_on,
            stopped,
        };
        let certificates = notify::CertificateService {
            api: api.clone(),
            pki: config.pki.clone(),
            metrics: metrics.clone(),
        };
        let notify_server = notify_builder
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(limit!(NotifyServer::new(notify)))
            .add_service(limit!(CertificatesServer::new(certificates)))
            .serve_with_incoming(edge_common::grpc_incoming(
                notify_listener,
                stop.subscribe(),
            ));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = notify_server.await {
                tracing::error!(error = %e, "notify server stopped");
            }
        }));
        let controller = Self {
            api_addr,
            notify_addr,
            http_addr: ops_server.addr,
            metrics,
            tasks,
            stop,
        };
        // Ports are open (and answer Unavailable) while the region loads; start returns once it is loaded.
        tracing::info!(region = %config.region, %api_addr, %notify_addr, http_addr = %ops_server.addr, "controller started; loading the region");
        cache.wait_loaded().await;
        Ok(controller)
    }
}

/// Refuses every call until the region is loaded: answers from an empty cache would be wrong (Show
/// empty, creates ignoring what exists) and a notify client would drop everything it holds.
pub(crate) fn ready(cache: &Cache) -> Result<(), tonic::Status> {
    if cache.is_loaded() {
        Ok(())
    } else {
        Err(tonic::Status::unavailable(
            "the controller is still loading the region; retry shortly",
        ))
    }
}

/// Who may call the controller API: with PKI, the master controller (which may act for a user, named in
/// `x-edge-user`) and admins (`edgectl`, for themselves only); every other certificate is refused.
fn api_caller(
    region: &str,
    tls: bool,
    req: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    if !tls {
        return Ok(req);
    }
    let acts_for_user = req.metadata().contains_key("x-edge-user");
    match Peer::of_request(&req).filter(|p| p.region == region) {
        Some(p) if p.role == Role::Mc => Ok(req),
        Some(p) if p.role == Role::Admin && !acts_for_user => Ok(req),
        Some(p) if p.role == Role::Admin => Err(tonic::Status::permission_denied(
            "user metadata is accepted from the master controller only",
        )),
        Some(p) => Err(tonic::Status::permission_denied(format!(
            "a {} certificate may not call the controller API",
            p.role.as_str()
        ))),
        None => Err(tonic::Status::unauthenticated(format!(
            "a client certificate of region {region} is required"
        ))),
    }
}

/// Keeps `/readyz` and the per-kind object gauges up to date.
async fn watch_health(cache: Arc<Cache>, ready: Readiness, metrics: Arc<Metrics>) {
    loop {
        ready.set(cache.is_healthy());
        metrics.objects.reset();
        for (kind, n) in cache.counts() {
            metrics.objects.with_label_values(&[kind]).set(n as i64);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Brings stored data to [`DATA_MODEL_VERSION`]. There are no upgrade steps yet: version 1 is the first.
async fn upgrade_data_model(store: &Store) -> anyhow::Result<()> {
    let key = format!("{}DataModelVersion", store.root());
    let mut kv = store.client.kv_client();
    let stored = match kv.get(key.as_str(), None).await?.kvs().first() {
        Some(v) => v
            .value_str()?
            .trim()
            .parse::<u32>()
            .map_err(|e| anyhow::anyhow!("reading {key}: {e}"))?,
        None => 0,
    };
    if stored > DATA_MODEL_VERSION {
        anyhow::bail!(
            "stored data model version {stored} is newer than this controller's {DATA_MODEL_VERSION}: run a newer controller"
        );
    }
    if stored < DATA_MODEL_VERSION {
        // Upgrade steps from `stored` to DATA_MODEL_VERSION go here, each idempotent, in order.
        kv.put(key.as_str(), DATA_MODEL_VERSION.to_string(), None)
            .await?;
        tracing::info!(
            from = stored,
            to = DATA_MODEL_VERSION,
            "data model upgraded"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_served_before_the_region_is_loaded() {
        let etcd = testenv::Etcd::start().await.unwrap();
        let client = etcd_client::Client::connect([etcd.url.as_str()], None)
            .await
            .unwrap();
        let cache = Cache::new(Store::new(client, "EU"));
        // An empty cache is not an empty region: API calls and notify streams are refused meanwhile.
        let refused = ready(&cache).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().contains("still loading the region"));
        let task = tokio::spawn(cache.clone().run());
        tokio::time::timeout(Duration::from_secs(10), cache.wait_loaded())
            .await
            .expect("the region loads");
        assert!(ready(&cache).is_ok());
        task.abort();
    }
}
