//! Async Rust SDK for the Distributed Matching Engine — the MobiledgeX client API over gRPC.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dme_client::Error> {
//! let mut dme = dme_client::DmeClient::connect("http://127.0.0.1:50051").await?;
//! dme.register("acme", "game", "1.0", None).await?;
//! if let Some(found) = dme.find_cloudlet("", 52.52, 13.40).await? {
//!     let addr = found.address(80).expect("the app has port 80");
//!     let stream = tokio::net::TcpStream::connect(addr).await;
//! }
//! # Ok(()) }
//! ```
//!
//! The client keeps the session cookie and registers again by itself when the DME says it expired.

pub use edge_proto::dme;
use edge_proto::dme::match_engine_api_client::MatchEngineApiClient;
use edge_proto::dme::{
    AppInstListRequest, AppPort, ClientEdgeEvent, CloudletLocation, FindCloudletRequest, Loc,
    RegisterClientRequest, ServerEdgeEvent, client_edge_event, find_cloudlet_reply,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the DME at {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the DME refused the call: {} ({:?})", .0.message(), .0.code())]
    Api(#[from] Status),
    #[error("call register() first")]
    NotRegistered,
}

/// The app this client registered as.
#[derive(Clone, Debug)]
struct Registration {
    org: String,
    app: String,
    version: String,
    auth_token: Option<String>,
}

/// The closest instance of the app, from FindCloudlet.
#[derive(Clone, Debug)]
pub struct FoundCloudlet {
    pub fqdn: String,
    pub ports: Vec<AppPort>,
    pub cloudlet_location: Loc,
    pub edge_events_cookie: String,
}

impl FoundCloudlet {
    /// `host:port` where the app's `internal_port` is reachable (public port, FQDN prefix applied;
    /// ports inside a range are offset accordingly).
    pub fn address(&self, internal_port: i32) -> Option<String> {
        self.ports.iter().find_map(|p| {
            let end = if p.end_port == 0 {
                p.internal_port
            } else {
                p.end_port
            };
            (p.internal_port..=end).contains(&internal_port).then(|| {
                format!(
                    "{}{}:{}",
                    p.fqdn_prefix,
                    self.fqdn,
                    p.public_port + (internal_port - p.internal_port)
                )
            })
        })
    }
}

/// An open edge-events stream: send client events, read server events.
pub struct EdgeEvents {
    pub sender: mpsc::Sender<ClientEdgeEvent>,
    pub events: Streaming<ServerEdgeEvent>,
}

impl EdgeEvents {
    /// Sends latency samples (ms) measured at `lat`, `lon`.
    pub async fn send_latency(&self, lat: f64, lon: f64, samples_ms: &[f64]) -> bool {
        let e = ClientEdgeEvent {
            event_type: client_edge_event::ClientEventType::EventLatencySamples as i32,
            gps_location: Some(loc(lat, lon)),
            samples: samples_ms
                .iter()
                .map(|v| dme::Sample {
                    value: *v,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.sender.send(e).await.is_ok()
    }

    /// Tells the DME the device moved.
    pub async fn send_location(&self, lat: f64, lon: f64) -> bool {
        let e = ClientEdgeEvent {
            event_type: client_edge_event::ClientEventType::EventLocationUpdate as i32,
            gps_location: Some(loc(lat, lon)),
            ..Default::default()
        };
        self.sender.send(e).await.is_ok()
    }

    /// The next event from the DME; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<ServerEdgeEvent>, Error> {
        Ok(self.events.message().await?)
    }
}

fn loc(latitude: f64, longitude: f64) -> Loc {
    Loc {
        latitude,
        longitude,
        ..Default::default()
    }
}

pub struct DmeClient {
    api: MatchEngineApiClient<Channel>,
    registration: Option<Registration>,
    cookie: String,
}

impl DmeClient {
    /// Connects to a DME's gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::dial(url, None).await
    }

    /// Connects to a DME serving TLS (`https://host:50051`) whose certificate chains to `ca_pem`.
    pub async fn connect_tls(url: &str, ca_pem: &str) -> Result<Self, Error> {
        Self::dial(url, Some(ca_pem)).await
    }

    async fn dial(url: &str, ca_pem: Option<&str>) -> Result<Self, Error> {
        let invalid = |what: String| Error::Api(Status::invalid_argument(what));
        let mut endpoint = Channel::from_shared(url.to_string())
            .map_err(|_| invalid(format!("invalid DME URL {url}")))?;
        if let Some(ca) = ca_pem {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid(format!("TLS settings for {url}: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            url: url.to_string(),
            source,
        })?;
        Ok(Self {
            api: MatchEngineApiClient::new(channel),
            registration: None,
            cookie: String::new(),
        })
    }

    /// Registers as app `org/app/version` (with the app's auth token when it has an auth key).
    pub async fn register(
        &mut self,
        org: &str,
        app: &str,
        version: &str,
        auth_token: Option<&str>,
    ) -> Result<(), Error> {
        let r = Registration {
            org: org.into(),
            app: app.into(),
            version: version.into(),
            auth_token: auth_token.map(String::from),
        };
        self.cookie = self.register_as(&r).await?;
        self.registration = Some(r);
        Ok(())
    }

    async fn register_as(&mut self, r: &Registration) -> Result<String, Error> {
        let req = RegisterClientRequest {
            ver: 1,
            org_name: r.org.clone(),
            app_name: r.app.clone(),
            app_vers: r.version.clone(),
            auth_token: r.auth_token.clone().unwrap_or_default(),
            ..Default::default()
        };
        Ok(self
            .api
            .register_client(req)
            .await?
            .into_inner()
            .session_cookie)
    }

    /// The current session cookie.
    pub fn session_cookie(&self) -> &str {
        &self.cookie
    }

    /// Runs `call` with the session cookie; when the DME says the session is no longer valid (expired),
    /// registers again once and retries.
    async fn with_session<T, F, Fut>(&mut self, call: F) -> Result<T, Error>
    where
        F: Fn(MatchEngineApiClient<Channel>, String) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let r = self.registration.clone().ok_or(Error::NotRegistered)?;
        match call(self.api.clone(), self.cookie.clone()).await {
            Err(s) if s.code() == Code::Unauthenticated => {
                self.cookie = self.register_as(&r).await?;
                Ok(call(self.api.clone(), self.cookie.clone()).await?)
            }
            other => Ok(other?),
        }
    }

    /// The closest usable instance of the registered app for a device at `lat`, `lon` on `carrier`
    /// (empty: any operator); `None` when there is none.
    pub async fn find_cloudlet(
        &mut self,
        carrier: &str,
        lat: f64,
        lon: f64,
    ) -> Result<Option<FoundCloudlet>, Error> {
        let carrier = carrier.to_string();
        let reply = self
            .with_session(|mut api, cookie| {
                let req = FindCloudletRequest {
                    ver: 1,
                    session_cookie: cookie,
                    carrier_name: carrier.clone(),
                    gps_location: Some(loc(lat, lon)),
                    ..Default::default()
                };
                async move { api.find_cloudlet(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        if reply.status != find_cloudlet_reply::FindStatus::FindFound as i32 {
            return Ok(None);
        }
        Ok(Some(FoundCloudlet {
            fqdn: reply.fqdn,
            ports: reply.ports,
            cloudlet_location: reply.cloudlet_location.unwrap_or_default(),
            edge_events_cookie: reply.edge_events_cookie,
        }))
    }

    /// Up to `limit` cloudlets (0: the DME's default of 3) with instances of the app, closest first.
    pub async fn app_inst_list(
        &mut self,
        carrier: &str,
        lat: f64,
        lon: f64,
        limit: u32,
    ) -> Result<Vec<CloudletLocation>, Error> {
        let carrier = carrier.to_string();
        let reply = self
            .with_session(|mut api, cookie| {
                let req = AppInstListRequest {
                    ver: 1,
                    session_cookie: cookie,
                    carrier_name: carrier.clone(),
                    gps_location: Some(loc(lat, lon)),
                    limit,
                    ..Default::default()
                };
                async move { api.get_app_inst_list(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(reply.cloudlets)
    }

    /// Opens the edge-events stream for the instance FindCloudlet chose; the DME's first event is
    /// EVENT_INIT_CONNECTION.
    pub async fn edge_events(&mut self, found: &FoundCloudlet) -> Result<EdgeEvents, Error> {
        let (tx, rx) = mpsc::channel(16);
        let init = ClientEdgeEvent {
            session_cookie: self.cookie.clone(),
            edge_events_cookie: found.edge_events_cookie.clone(),
            event_type: client_edge_event::ClientEventType::EventInitConnection as i32,
            ..Default::default()
        };
        tx.send(init)
            .await
            .map_err(|_| Error::Api(Status::internal("edge events channel closed")))?;
        let events = self
            .api
            .stream_edge_event(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(EdgeEvents { sender: tx, events })
    }
}
