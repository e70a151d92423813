//! Distributed Matching Engine: the API mobile and edge clients call to register and to find the
//! closest cloudlet running their app. Wire-compatible with MobiledgeX's client API (gRPC
//! `distributed_match_engine.MatchEngineApi` and its REST paths, see `WIRE.md`), so existing SDKs work.
//!
//! The DME mirrors its region through notify into an in-memory [`index`]; lookups never touch the
//! network, and it keeps answering while the controller is down.

pub mod api;
pub mod cookie;
pub mod events;
pub mod index;
pub mod json;
pub mod rest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_common::ops;
use edge_proto::dme::match_engine_api_server::MatchEngineApiServer;
use edge_proto::edge::{ClientType, Hello, ObjectKind};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the cookie secret comes from.
#[derive(Clone, Debug)]
pub enum CookieSecret {
    /// Vault/OpenBao KV v2: address, token, mount, path.
    Vault {
        addr: String,
        token: String,
        mount: String,
        path: String,
    },
    /// Random per process (cookies do not survive a restart or work across DMEs).
    Random,
}

/// Largest request a client may send the DME (gRPC message or REST body); requests are small.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    pub region: String,
    /// Controller notify address, `host:port`.
    pub controller: String,
    pub grpc_addr: SocketAddr,
    pub rest_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// This DME's operator.
    pub carrier: String,
    pub token_server_uri: String,
    pub session_ttl: Duration,
    pub edge_events_ttl: Duration,
    pub cookie_secret: CookieSecret,
    /// mTLS to the controller with a `dme` certificate from the region's Vault PKI; `None` dials a
    /// controller that serves plaintext.
    pub notify_tls: Option<NotifyTls>,
    /// Most edge-events streams open at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_edge_event_streams: usize,
    /// How long a new edge-events stream may stay silent before its first message.
    pub first_event_timeout: Duration,
    /// PEM certificate chain and key the public gRPC and REST ports serve TLS with; `None` serves
    /// plaintext (tests, or `--plaintext` on the command line).
    pub public_tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Where the DME's notify client certificate comes from, and the controller's certificate name.
#[derive(Clone, Debug)]
pub struct NotifyTls {
    pub vault: edge_common::pki::VaultPki,
    pub server_name: String,
}

impl Config {
    /// Defaults for `region` against a controller's notify address, listeners on free loopback ports.
    pub fn local(region: &str, controller: &str) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            region: region.into(),
            controller: controller.into(),
            grpc_addr: any,
            rest_addr: any,
            http_addr: any,
            carrier: String::new(),
            token_server_uri: String::new(),
            session_ttl: Duration::from_secs(24 * 3600),
            edge_events_ttl: Duration::from_secs(600),
            cookie_secret: CookieSecret::Random,
            notify_tls: None,
            max_edge_event_streams: 10_000,
            first_event_timeout: Duration::from_secs(10),
            public_tls: None,
        }
    }
}

pub struct Dme {
    pub grpc_addr: SocketAddr,
    pub rest_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    _reports: tokio::sync::mpsc::UnboundedSender<edge_proto::edge::NotifyUp>,
    /// dropped with the DME: its gRPC connections end (see `edge_common::grpc_incoming`)
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Dme {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Dme {
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let secret = match &cfg.cookie_secret {
            CookieSecret::Vault {
                addr,
                token,
                mount,
                path,
            } => {
                edge_common::vault::Kv::new(addr, token, mount)?
                    .key(path, "secret", 64)
                    .await?
            }
            CookieSecret::Random => cookie::random_bytes(64),
        };
        let registry = Registry::new();
        let metrics = Arc::new(api::Metrics {
            requests: IntCounterVec::new(
                Opts::new("dme_requests_total", "calls by method and outcome"),
                &["method", "result"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new("dme_request_seconds", "call latency by method"),
                &["method"],
            )?,
            find_results: IntCounterVec::new(
                Opts::new("dme_find_cloudlet_total", "FindCloudlet answers"),
                &["result"],
            )?,
            edge_event_streams: prometheus::IntGauge::new(
                "dme_edge_event_streams",
                "open edge-events streams (also those still waiting for their first event)",
            )?,
        });
        registry.register(Box::new(metrics.edge_event_streams.clone()))?;
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.latency.clone()))?;
        registry.register(Box::new(metrics.find_results.clone()))?;

        let index = Arc::new(index::Index::default());
        let engine = api::MatchEngineService(Arc::new(api::MatchEngine {
            index: index.clone(),
            cookies: Arc::new(cookie::Cookies::new(
                secret,
                cfg.session_ttl,
                cfg.edge_events_ttl,
            )),
            token_server_uri: cfg.token_server_uri.clone(),
            carrier: cfg.carrier.clone(),
            metrics,
            edge_event_slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_edge_event_streams)),
            first_event_timeout: cfg.first_event_timeout,
        }));

        // Ready once the region's objects are in: before that, FindCloudlet would send clients to
        // whichever part of the region happened to have arrived.
        let ops_server = ops::serve(cfg.http_addr, registry, index.synced.clone()).await?;
        let grpc = TcpListener::bind(cfg.grpc_addr).await?;
        let rest = TcpListener::bind(cfg.rest_addr).await?;
        let (grpc_addr, rest_addr) = (grpc.local_addr()?, rest.local_addr()?);

        let region = cfg.region.clone();
        let hello = move || {
            Ok(Hello {
                client_type: ClientType::Dme as i32,
                region: region.clone(),
                wanted: [
                    ObjectKind::App,
                    ObjectKind::AppInst,
                    ObjectKind::Cloudlet,
                    ObjectKind::CloudletInfo,
                    ObjectKind::OperatorCode,
                ]
                .into_iter()
                .map(|k| k as i32)
                .collect(),
                client_name: "dme".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            })
        };
        let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel();
        use edge_common::notify_client::{Dial, Plaintext, Tls, VaultCerts};
        let dial: Arc<dyn Dial> = match &cfg.notify_tls {
            Some(t) => Arc::new(Tls::new(
                cfg.controller.clone(),
                t.server_name.clone(),
                Box::new(VaultCerts {
                    vault: t.vault.clone(),
                    peer: edge_common::pki::Peer {
                        region: cfg.region.clone(),
                        role: edge_common::pki::Role::Dme,
                        cloudlet: None,
                    },
                    ttl: Duration::from_secs(24 * 3600),
                }),
            )),
            None => Arc::new(Plaintext(cfg.controller.clone())),
        };
        let notify = edge_common::notify_client::run(dial, hello, index, reports_rx);
        let mut grpc_builder = tonic::transport::Server::builder();
        let mut rest_tls = None;
        if let Some((cert, key)) = &cfg.public_tls {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
            };
            grpc_builder =
                grpc_builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(
                    tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
                ))?;
            rest_tls = Some(Arc::new(edge_common::pki::server_config(cert, key)?));
        }
        let (stop, _) = tokio::sync::watch::channel(false);
        let grpc_server = grpc_builder
            .max_concurrent_streams(Some(edge_common::GRPC_MAX_CONCURRENT_STREAMS))
            .add_service(edge_common::limit_messages!(
                MatchEngineApiServer::new(engine.clone()),
                MAX_REQUEST_BYTES
            ))
            .serve_with_incoming(edge_common::grpc_incoming(grpc, stop.subscribe()));
        let tasks = vec![
            ops_server.task,
            tokio::spawn(notify),
            tokio::spawn(async move {
                if let Err(e) = grpc_server.await {
                    tracing::error!(error = %e, "gRPC server stopped");
                }
            }),
            tokio::spawn(rest::serve(rest, engine, rest_tls)),
        ];
        tracing::info!(%grpc_addr, %rest_addr, http = %ops_server.addr, controller = %cfg.controller, "DME started");
        Ok(Self {
            grpc_addr,
            rest_addr,
            http_addr: ops_server.addr,
            tasks,
            _reports: reports_tx,
            _stop: stop,
        })
    }
}
