//! `MatchEngineApi`: the MobiledgeX client API. The REST gateway calls these same methods, so gRPC and
//! REST clients get identical answers (codes and messages as MobiledgeX's DME gives them).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use edge_proto::dme::match_engine_api_server::MatchEngineApi;
use edge_proto::dme::*;
use edge_proto::edge::{AppInst, AppKey};
use futures::Stream;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus::{HistogramVec, IntCounterVec};
use tonic::{Request, Response, Status, Streaming};

use crate::cookie::{Cookies, EdgeEventsKey, SessionKey};
use crate::index::{Candidate, Index};

/// MobiledgeX's platform app, the only one allowed PlatformFindCloudlet and GetFqdnList.
pub const PLATFORM_ORG: &str = "platos";
pub const PLATFORM_APP: &str = "PlatosEnablingLayer";
/// Where the standalone location verifier assumes every device is (MobiledgeX's simulated location).
pub const SIMULATED_LOCATION: (f64, f64) = (32.013988, -96.598243);

pub struct Metrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub find_results: IntCounterVec,
    pub edge_event_streams: prometheus::IntGauge,
}

pub struct MatchEngine {
    pub index: Arc<Index>,
    pub cookies: Arc<Cookies>,
    pub token_server_uri: String,
    /// this DME's operator (GetLocation's carrier when the client names none)
    pub carrier: String,
    pub metrics: Arc<Metrics>,
    /// one permit per open edge-events stream
    pub edge_event_slots: Arc<tokio::sync::Semaphore>,
    /// how long a new edge-events stream may wait for its first message
    pub first_event_timeout: std::time::Duration,
}

/// The app a session cookie was issued for, if it still exists.
struct Session {
    key: SessionKey,
    app: AppKey,
}

fn check_location(loc: Option<&Loc>, missing: &str) -> Result<Loc, Status> {
    let loc = loc.ok_or_else(|| Status::invalid_argument(missing))?;
    if !(-90.0..=90.0).contains(&loc.latitude) || !(-180.0..=180.0).contains(&loc.longitude) {
        return Err(Status::invalid_argument("Invalid GpsLocation"));
    }
    Ok(*loc)
}

fn ports(inst: &AppInst) -> Vec<AppPort> {
    inst.mapped_ports
        .iter()
        .map(|p| AppPort {
            proto: p.proto,
            internal_port: p.internal_port,
            public_port: p.public_port,
            fqdn_prefix: p.fqdn_prefix.clone(),
            end_port: p.end_port,
            tls: p.tls,
            nginx: false,
            max_pkt_size: 0,
        })
        .collect()
}

fn cloudlet_loc(c: &Candidate) -> Loc {
    let l = c.cloudlet.location.unwrap_or_default();
    Loc {
        latitude: l.latitude,
        longitude: l.longitude,
        ..Default::default()
    }
}

impl MatchEngine {
    /// Runs one call and records it in the metrics.
    fn timed<T>(
        &self,
        method: &str,
        call: impl FnOnce() -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let r = call();
        let outcome = if r.is_ok() { "ok" } else { "error" };
        self.metrics
            .requests
            .with_label_values(&[method, outcome])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        r.map(Response::new)
    }

    fn session(&self, cookie: &str) -> Result<Session, Status> {
        let key = self.cookies.verify_session(cookie)?;
        let app = AppKey {
            organization: key.orgname.clone(),
            name: key.appname.clone(),
            version: key.appvers.clone(),
        };
        if self.index.app(&app).is_none() {
            return Err(Status::unauthenticated(format!(
                "app not found -- developer: {}, app: {}, appvers: {}",
                app.organization, app.name, app.version
            )));
        }
        Ok(Session { key, app })
    }

    /// A FIND_FOUND reply for `c`, with its edge-events cookie.
    pub fn found(&self, c: &Candidate, client: &Loc) -> FindCloudletReply {
        let cluster = c.inst.cluster_key.clone().unwrap_or_default();
        let inst = c.inst.key.clone().unwrap_or_default();
        let cloudlet = c.cloudlet.key.clone().unwrap_or_default();
        let cookie = self.cookies.edge_events(EdgeEventsKey {
            appinstorg: inst.organization,
            appinstname: inst.name,
            clusterorg: cluster.organization,
            clustername: cluster.name,
            cloudletorg: cloudlet.organization,
            cloudletname: cloudlet.name,
            location: client.into(),
            kid: 0,
        });
        FindCloudletReply {
            status: find_cloudlet_reply::FindStatus::FindFound as i32,
            fqdn: c.inst.uri.clone(),
            ports: ports(&c.inst),
            cloudlet_location: Some(cloudlet_loc(c)),
            edge_events_cookie: cookie,
            ..Default::default()
        }
    }

    pub fn not_found() -> FindCloudletReply {
        FindCloudletReply {
            status: find_cloudlet_reply::FindStatus::FindNotfound as i32,
            cloudlet_location: Some(Loc::default()),
            ..Default::default()
        }
    }

    /// The closest usable instance of `app` for a client at `loc` on `carrier`.
    pub fn find(&self, app: &AppKey, carrier: &str, loc: &Loc) -> FindCloudletReply {
        let found = self
            .index
            .candidates(app, carrier, loc.latitude, loc.longitude, 1)
            .into_iter()
            .next();
        self.metrics
            .find_results
            .with_label_values(&[if found.is_some() { "found" } else { "notfound" }])
            .inc();
        match found {
            Some(c) => self.found(&c, loc),
            None => Self::not_found(),
        }
    }

    fn register(
        &self,
        req: RegisterClientRequest,
        peer: String,
    ) -> Result<RegisterClientReply, Status> {
        for (v, msg) in [
            (&req.org_name, "OrgName cannot be empty"),
            (&req.app_name, "AppName cannot be empty"),
            (&req.app_vers, "AppVers cannot be empty"),
        ] {
            if v.is_empty() {
                return Err(Status::invalid_argument(msg));
            }
        }
        let key = AppKey {
            organization: req.org_name.clone(),
            name: req.app_name.clone(),
            version: req.app_vers.clone(),
        };
        let app = self
            .index
            .app(&key)
            .ok_or_else(|| Status::not_found("app not found"))?;
        match (app.auth_public_key.is_empty(), req.auth_token.is_empty()) {
            (false, true) => return Err(Status::invalid_argument("No authtoken received")),
            (true, false) => {
                return Err(Status::unauthenticated(
                    "No authkey found to validate token",
                ));
            }
            (false, false) => verify_auth_token(&app.auth_public_key, &req.auth_token, &key)
                .map_err(|why| {
                    Status::unauthenticated(format!("failed to verify token - {why}"))
                })?,
            (true, true) => {}
        }
        if req.unique_id.is_empty() != req.unique_id_type.is_empty() {
            return Err(Status::invalid_argument(
                "Both, or none of UniqueId and UniqueIdType should be set",
            ));
        }
        let (unique_id, unique_id_type, generated) = if req.unique_id.is_empty() {
            (edge_common::ksuid(), "dme-ksuid".to_string(), true)
        } else {
            (req.unique_id.clone(), req.unique_id_type.clone(), false)
        };
        let cookie = self.cookies.session(SessionKey {
            peerip: peer,
            orgname: key.organization,
            appname: key.name,
            appvers: key.version,
            uniqueidtype: unique_id_type.clone(),
            uniqueid: unique_id.clone(),
            kid: 0,
        });
        Ok(RegisterClientReply {
            status: ReplyStatus::RsSuccess as i32,
            session_cookie: cookie,
            token_server_uri: self.token_server_uri.clone(),
            unique_id_type: if generated {
                unique_id_type
            } else {
                String::new()
            },
            unique_id: if generated { unique_id } else { String::new() },
            ..Default::default()
        })
    }
}

#[derive(serde::Deserialize)]
struct AuthClaims {
    #[serde(default)]
    orgname: String,
    #[serde(default)]
    appname: String,
    #[serde(default)]
    appvers: String,
}

/// Verifies a client's RS256 auth token against the app's public key (MobiledgeX's claims).
fn verify_auth_token(public_pem: &str, token: &str, app: &AppKey) -> Result<(), String> {
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes())
        .map_err(|_| "unable to parse JWT token".to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v.leeway = 0;
    let claims = jsonwebtoken::decode::<AuthClaims>(token, &key, &v)
        .map_err(|e| e.to_string())?
        .claims;
    if claims.orgname != app.organization {
        return Err("token organization mismatch".into());
    }
    if claims.appname != app.name {
        return Err("token appname mismatch".into());
    }
    if claims.appvers != app.version {
        return Err("token appvers mismatch".into());
    }
    Ok(())
}

pub type EdgeEventStream = Pin<Box<dyn Stream<Item = Result<ServerEdgeEvent, Status>> + Send>>;
pub type QosKpiStream = Pin<Box<dyn Stream<Item = Result<QosPositionKpiReply, Status>> + Send>>;

/// The gRPC service: a shared handle on the engine (the REST gateway holds another).
#[derive(Clone)]
pub struct MatchEngineService(pub Arc<MatchEngine>);

impl std::ops::Deref for MatchEngineService {
    type Target = MatchEngine;
    fn deref(&self) -> &MatchEngine {
        &self.0
    }
}

#[tonic::async_trait]
impl MatchEngineApi for MatchEngineService {
    async fn register_client(
        &self,
        req: Request<RegisterClientRequest>,
    ) -> Result<Response<RegisterClientReply>, Status> {
        let peer = req
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        self.timed("RegisterClient", || self.register(req.into_inner(), peer))
    }

    async fn find_cloudlet(
        &self,
        req: Request<FindCloudletRequest>,
    ) -> Result<Response<FindCloudletReply>, Status> {
        let req = req.into_inner();
        self.timed("FindCloudlet", || {
            let s = self.session(&req.session_cookie)?;
            let loc = check_location(req.gps_location.as_ref(), "Missing GpsLocation")?;
            Ok(self.find(&s.app, &req.carrier_name, &loc))
        })
    }

    async fn platform_find_cloudlet(
        &self,
        req: Request<PlatformFindCloudletRequest>,
    ) -> Result<Response<FindCloudletReply>, Status> {
        let req = req.into_inner();
        self.timed("PlatformFindCloudlet", || {
            let s = self.session(&req.session_cookie)?;
            require_platform_app(&s)?;
            if req.client_token.is_empty() {
                return Err(Status::invalid_argument("Missing ClientToken"));
            }
            let token: ClientToken = B64
                .decode(&req.client_token)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| Status::invalid_argument("Invalid ClientToken"))?;
            let k = token.app_key;
            for (v, field) in [
                (&k.organization, "OrgName"),
                (&k.name, "AppName"),
                (&k.version, "AppVers"),
            ] {
                if v.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "{field} in token cannot be empty"
                    )));
                }
            }
            let app = AppKey {
                organization: k.organization,
                name: k.name,
                version: k.version,
            };
            if self.index.app(&app).is_none() {
                return Err(Status::invalid_argument("Requested app does not exist"));
            }
            let loc = Loc {
                latitude: token.location.latitude,
                longitude: token.location.longitude,
                ..Default::default()
            };
            Ok(self.find(&app, &req.carrier_name, &loc))
        })
    }

    async fn qos_priority_session_create(
        &self,
        req: Request<QosPrioritySessionCreateRequest>,
    ) -> Result<Response<QosPrioritySessionReply>, Status> {
        let req = req.into_inner();
        self.timed("QosPrioritySessionCreate", || {
            self.session(&req.session_cookie)?;
            Err(Status::invalid_argument(
                "Cannot create session because qosSesAddr not defined.",
            ))
        })
    }

    async fn qos_priority_session_delete(
        &self,
        req: Request<QosPrioritySessionDeleteRequest>,
    ) -> Result<Response<QosPrioritySessionDeleteReply>, Status> {
        let req = req.into_inner();
        self.timed("QosPrioritySessionDelete", || {
            self.session(&req.session_cookie)?;
            Ok(QosPrioritySessionDeleteReply::default())
        })
    }

    async fn verify_location(
        &self,
        req: Request<VerifyLocationRequest>,
    ) -> Result<Response<VerifyLocationReply>, Status> {
        let req = req.into_inner();
        self.timed("VerifyLocation", || {
            self.session(&req.session_cookie)?;
            let loc = req
                .gps_location
                .filter(|l| l.latitude != 0.0 || l.longitude != 0.0);
            let loc = check_location(loc.as_ref(), "Missing GPS location")?;
            // No carrier location verifier is configured: compare against the simulated device position,
            // as MobiledgeX's standalone DME does.
            let d = crate::index::distance_km(
                SIMULATED_LOCATION.0,
                SIMULATED_LOCATION.1,
                loc.latitude,
                loc.longitude,
            );
            use verify_location_reply::GpsLocationStatus as S;
            let (status, accuracy) = match d {
                d if d < 2.0 => (S::LocVerified, 2.0),
                d if d < 10.0 => (S::LocVerified, 10.0),
                d if d < 100.0 => (S::LocVerified, 100.0),
                _ => (S::LocMismatchSameCountry, -1.0),
            };
            Ok(VerifyLocationReply {
                gps_location_status: status as i32,
                gps_location_accuracy_km: accuracy,
                ..Default::default()
            })
        })
    }

    async fn get_location(
        &self,
        req: Request<GetLocationRequest>,
    ) -> Result<Response<GetLocationReply>, Status> {
        let req = req.into_inner();
        self.timed("GetLocation", || {
            self.session(&req.session_cookie)?;
            Ok(GetLocationReply {
                status: get_location_reply::LocStatus::LocFound as i32,
                carrier_name: if req.carrier_name.is_empty() {
                    self.carrier.clone()
                } else {
                    req.carrier_name
                },
                network_location: Some(Loc {
                    latitude: SIMULATED_LOCATION.0,
                    longitude: SIMULATED_LOCATION.1,
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
    }

    async fn add_user_to_group(
        &self,
        req: Request<DynamicLocGroupRequest>,
    ) -> Result<Response<DynamicLocGroupReply>, Status> {
        let req = req.into_inner();
        self.timed("AddUserToGroup", || {
            self.session(&req.session_cookie)?;
            Ok(DynamicLocGroupReply {
                status: ReplyStatus::RsSuccess as i32,
                ..Default::default()
            })
        })
    }

    async fn get_app_inst_list(
        &self,
        req: Request<AppInstListRequest>,
    ) -> Result<Response<AppInstListReply>, Status> {
        let req = req.into_inner();
        self.timed("GetAppInstList", || {
            let s = self.session(&req.session_cookie)?;
            let loc = req
                .gps_location
                .ok_or_else(|| Status::invalid_argument("Missing GPS location"))?;
            let limit = if req.limit == 0 {
                3
            } else {
                req.limit as usize
            };
            let mut cloudlets: Vec<CloudletLocation> = Vec::new();
            for c in self
                .index
                .candidates(
                    &s.app,
                    &req.carrier_name,
                    loc.latitude,
                    loc.longitude,
                    limit,
                )
                .iter()
            {
                let ck = c.cloudlet.key.clone().unwrap_or_default();
                let found = self.found(c, &loc);
                let inst = Appinstance {
                    app_name: s.app.name.clone(),
                    app_vers: s.app.version.clone(),
                    fqdn: found.fqdn,
                    ports: found.ports,
                    org_name: s.app.organization.clone(),
                    edge_events_cookie: found.edge_events_cookie,
                };
                match cloudlets
                    .iter_mut()
                    .find(|x| x.carrier_name == ck.organization && x.cloudlet_name == ck.name)
                {
                    Some(x) => x.appinstances.push(inst),
                    None => cloudlets.push(CloudletLocation {
                        carrier_name: ck.organization,
                        cloudlet_name: ck.name,
                        gps_location: Some(cloudlet_loc(c)),
                        distance: c.distance_km,
                        appinstances: vec![inst],
                    }),
                }
            }
            Ok(AppInstListReply {
                status: app_inst_list_reply::AiStatus::AiSuccess as i32,
                cloudlets,
                ..Default::default()
            })
        })
    }

    async fn get_fqdn_list(
        &self,
        req: Request<FqdnListRequest>,
    ) -> Result<Response<FqdnListReply>, Status> {
        let req = req.into_inner();
        self.timed("GetFqdnList", || {
            let s = self.session(&req.session_cookie)?;
            require_platform_app(&s)?;
            let mut app_fqdns: Vec<AppFqdn> = self
                .index
                .apps()
                .into_iter()
                .filter(|a| !a.official_fqdn.is_empty())
                .map(|a| {
                    let k = a.key.clone().unwrap_or_default();
                    AppFqdn {
                        app_name: k.name,
                        app_vers: k.version,
                        org_name: k.organization,
                        fqdns: a
                            .official_fqdn
                            .split(',')
                            .map(|f| f.trim().to_string())
                            .collect(),
                        android_package_name: String::new(),
                    }
                })
                .collect();
            app_fqdns.sort_by(|a, b| (&a.org_name, &a.app_name).cmp(&(&b.org_name, &b.app_name)));
            Ok(FqdnListReply {
                app_fqdns,
                status: fqdn_list_reply::FlStatus::FlSuccess as i32,
                ..Default::default()
            })
        })
    }

    async fn get_app_official_fqdn(
        &self,
        req: Request<AppOfficialFqdnRequest>,
    ) -> Result<Response<AppOfficialFqdnReply>, Status> {
        let req = req.into_inner();
        self.timed("GetAppOfficialFqdn", || {
            let s = self.session(&req.session_cookie)?;
            let loc = check_location(req.gps_location.as_ref(), "Missing GpsLocation")?;
            let app = self.index.app(&s.app).unwrap_or_default();
            if app.official_fqdn.is_empty() {
                return Ok(AppOfficialFqdnReply {
                    status: app_official_fqdn_reply::AofStatus::AofFail as i32,
                    ..Default::default()
                });
            }
            let token = ClientToken {
                location: TokenLoc {
                    latitude: loc.latitude,
                    longitude: loc.longitude,
                },
                app_key: TokenAppKey {
                    organization: s.app.organization.clone(),
                    name: s.app.name.clone(),
                    version: s.app.version.clone(),
                },
            };
            let _ = &s.key;
            Ok(AppOfficialFqdnReply {
                app_official_fqdn: app.official_fqdn.clone(),
                client_token: B64.encode(serde_json::to_vec(&token).expect("token serializes")),
                status: app_official_fqdn_reply::AofStatus::AofSuccess as i32,
                ..Default::default()
            })
        })
    }

    type GetQosPositionKpiStream = QosKpiStream;
    async fn get_qos_position_kpi(
        &self,
        req: Request<QosPositionRequest>,
    ) -> Result<Response<QosKpiStream>, Status> {
        let req = req.into_inner();
        self.session(&req.session_cookie)?;
        // No operator QoS service: a flat estimate per requested position.
        let results = req
            .positions
            .into_iter()
            .map(|p| QosPositionKpiResult {
                positionid: p.positionid,
                gps_location: p.gps_location,
                dluserthroughput_min: 10.0,
                dluserthroughput_avg: 50.0,
                dluserthroughput_max: 100.0,
                uluserthroughput_min: 5.0,
                uluserthroughput_avg: 20.0,
                uluserthroughput_max: 40.0,
                latency_min: 10.0,
                latency_avg: 20.0,
                latency_max: 40.0,
            })
            .collect();
        let reply = QosPositionKpiReply {
            status: ReplyStatus::RsSuccess as i32,
            position_results: results,
            ..Default::default()
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    type StreamEdgeEventStream = EdgeEventStream;
    async fn stream_edge_event(
        &self,
        req: Request<Streaming<ClientEdgeEvent>>,
    ) -> Result<Response<EdgeEventStream>, Status> {
        let stream = crate::events::serve(self.0.clone(), Box::pin(req.into_inner())).await?;
        Ok(Response::new(stream))
    }
}

fn require_platform_app(s: &Session) -> Result<(), Status> {
    if s.app.organization != PLATFORM_ORG || s.app.name != PLATFORM_APP {
        return Err(Status::permission_denied(format!(
            "API Not allowed for developer: {} app: {}",
            s.app.organization, s.app.name
        )));
    }
    Ok(())
}

/// MobiledgeX's client token for PlatformFindCloudlet: base64 JSON of the app key and location.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct ClientToken {
    #[serde(rename = "Location", default)]
    location: TokenLoc,
    #[serde(rename = "AppKey", default)]
    app_key: TokenAppKey,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct TokenLoc {
    #[serde(default)]
    latitude: f64,
    #[serde(default)]
    longitude: f64,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct TokenAppKey {
    #[serde(default)]
    organization: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}
