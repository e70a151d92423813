//! The REST gateway (port 38001): `POST /v1/<method>` with MobiledgeX's JSON, answered by the same
//! `MatchEngineApi` implementation as gRPC. Errors are `{"code": <grpc code>, "message": ..., "details": []}`
//! with the HTTP status grpc-gateway used; streams are newline-delimited `{"result": ...}` objects.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use edge_proto::dme::match_engine_api_server::MatchEngineApi;
use edge_proto::dme::*;
use futures::StreamExt;
use serde_json::{Value as Json, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::{Code, Request, Status};

use crate::api::MatchEngineService;
use crate::json::{descriptor, from_dynamic, from_json, to_dynamic, to_json};

type Engine = MatchEngineService;

/// HTTP status for a gRPC code, as grpc-gateway maps them.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(s: &Status) -> Response {
    json_response(
        http_status(s.code()),
        &json!({"code": s.code() as i32, "message": s.message(), "details": []}),
    )
}

/// Parses the body (empty = all defaults) as message `name`.
fn parse<T: prost::Message + Default>(body: &Bytes, name: &str) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let v: Json = serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("invalid JSON: {e}")))?;
    let m = from_json(&descriptor(name), &v).map_err(Status::invalid_argument)?;
    Ok(from_dynamic(&m))
}

fn reply<T: prost::Message>(r: Result<tonic::Response<T>, Status>, name: &str) -> Response {
    match r {
        Ok(r) => json_response(StatusCode::OK, &to_json(&to_dynamic(r.get_ref(), name))),
        Err(s) => error(&s),
    }
}

macro_rules! unary {
    ($router:ident, $path:literal, $method:ident, $req:ident, $rep:ident) => {
        $router = $router.route(
            $path,
            post(|State(e): State<Engine>, body: Bytes| async move {
                match parse::<$req>(&body, stringify!($req)) {
                    Ok(req) => reply(e.$method(Request::new(req)).await, stringify!($rep)),
                    Err(s) => error(&s),
                }
            }),
        );
    };
}

/// Newline-delimited `{"result": ...}` lines, or a final `{"error": ...}` line.
async fn stream_lines<T: prost::Message>(
    mut s: impl futures::Stream<Item = Result<T, Status>> + Unpin,
    name: &str,
) -> Response {
    let mut out = String::new();
    while let Some(item) = s.next().await {
        let line = match item {
            Ok(m) => json!({"result": to_json(&to_dynamic(&m, name))}),
            Err(st) => {
                json!({"error": {"grpc_code": st.code() as i32, "http_code": http_status(st.code()).as_u16(),
                "message": st.message(), "http_status": http_status(st.code()).canonical_reason().unwrap_or(""), "details": []}})
            }
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}

async fn qos_kpi(State(e): State<Engine>, body: Bytes) -> Response {
    let req = match parse::<QosPositionRequest>(&body, "QosPositionRequest") {
        Ok(r) => r,
        Err(s) => return error(&s),
    };
    match e.get_qos_position_kpi(Request::new(req)).await {
        Ok(s) => stream_lines(s.into_inner(), "QosPositionKpiReply").await,
        Err(s) => error(&s),
    }
}

/// Edge events over REST: the body holds the client's events (concatenated JSON objects); the reply
/// holds the server's events for them. The session ends with the body.
async fn edge_events(State(e): State<Engine>, body: Bytes) -> Response {
    let mut events = Vec::new();
    for v in serde_json::Deserializer::from_slice(&body).into_iter::<Json>() {
        let parsed = v
            .map_err(|e| Status::invalid_argument(format!("invalid JSON: {e}")))
            .and_then(|v| {
                from_json(&descriptor("ClientEdgeEvent"), &v).map_err(Status::invalid_argument)
            });
        match parsed {
            Ok(m) => events.push(Ok(from_dynamic::<ClientEdgeEvent>(&m))),
            Err(s) => return error(&s),
        }
    }
    match crate::events::serve(e.0.clone(), Box::pin(futures::stream::iter(events))).await {
        Ok(s) => stream_lines(s, "ServerEdgeEvent").await,
        Err(s) => error(&s),
    }
}

pub fn router(engine: Engine) -> Router {
    let mut r = Router::new();
    unary!(
        r,
        "/v1/registerclient",
        register_client,
        RegisterClientRequest,
        RegisterClientReply
    );
    unary!(
        r,
        "/v1/findcloudlet",
        find_cloudlet,
        FindCloudletRequest,
        FindCloudletReply
    );
    unary!(
        r,
        "/v1/platformfindcloudlet",
        platform_find_cloudlet,
        PlatformFindCloudletRequest,
        FindCloudletReply
    );
    unary!(
        r,
        "/v1/qosprioritysessioncreate",
        qos_priority_session_create,
        QosPrioritySessionCreateRequest,
        QosPrioritySessionReply
    );
    unary!(
        r,
        "/v1/qosprioritysessiondelete",
        qos_priority_session_delete,
        QosPrioritySessionDeleteRequest,
        QosPrioritySessionDeleteReply
    );
    unary!(
        r,
        "/v1/verifylocation",
        verify_location,
        VerifyLocationRequest,
        VerifyLocationReply
    );
    unary!(
        r,
        "/v1/getlocation",
        get_location,
        GetLocationRequest,
        GetLocationReply
    );
    unary!(
        r,
        "/v1/addusertogroup",
        add_user_to_group,
        DynamicLocGroupRequest,
        DynamicLocGroupReply
    );
    // The C# SDK calls AddUserToGroup here.
    unary!(
        r,
        "/v1/dynamiclocgroup",
        add_user_to_group,
        DynamicLocGroupRequest,
        DynamicLocGroupReply
    );
    unary!(
        r,
        "/v1/getappinstlist",
        get_app_inst_list,
        AppInstListRequest,
        AppInstListReply
    );
    unary!(
        r,
        "/v1/getfqdnlist",
        get_fqdn_list,
        FqdnListRequest,
        FqdnListReply
    );
    unary!(
        r,
        "/v1/getappofficialfqdn",
        get_app_official_fqdn,
        AppOfficialFqdnRequest,
        AppOfficialFqdnReply
    );
    r.route("/v1/getqospositionkpi", post(qos_kpi))
        .route("/v1/streamedgeevent", post(edge_events))
        .fallback(|| async { error(&Status::unimplemented("Not Implemented")) })
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::MAX_REQUEST_BYTES,
        ))
        .with_state(engine)
}

/// Serves the gateway on `listener` until the task is aborted, over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let result = match tls {
        // As over TLS (below): replies go out without Nagle's delay.
        None => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router(engine)).await
        }
        Some(cfg) => axum::serve(TlsListener::new(listener, cfg), router(engine)).await,
    };
    if let Err(e) = result {
        tracing::error!(?addr, error = %e, "REST gateway stopped");
    }
}

/// Accepted TLS connections: each handshake runs in its own task (bounded in time), so a slow client
/// never holds up the others.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
}

impl TlsListener {
    fn new(listener: tokio::net::TcpListener, cfg: std::sync::Arc<rustls::ServerConfig>) -> Self {
        let local = listener.local_addr();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, say: pause rather than spin.
                        tracing::warn!(error = %e, "REST accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    if let Ok(Ok(tls)) = shake.await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
