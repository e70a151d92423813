//! The REST API, one module per area, with what every handler shares: the caller (an extractor that
//! checks the bearer token and loads the caller's grants), the permission check, the audit wrapper, name
//! rules and show filters, and the one route table the server, the OpenAPI document and the tests read.
//! Every route under `/api/v1/auth/` needs `Authorization: Bearer <token>` and checks RBAC.

pub mod accounts;
pub mod alerts;
pub mod apikeys;
pub mod audit_log;
pub mod ctrl;
pub mod monitor;
pub mod orgs;
pub mod regions;
pub mod roles;

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Mc;
use crate::audit::{self, Entry};
use crate::auth;
use crate::error::{ApiError, Result};
use crate::json::Json;
use crate::rbac::{self, Grants};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("mc_requests_total", "REST calls by path and status"),
            &["path", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("mc_request_seconds", "REST call latency by path"),
            &["path"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        Self {
            registry,
            requests,
            latency,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The authenticated user of a request.
#[derive(Clone)]
pub struct Caller {
    pub username: String,
    pub email: String,
    pub grants: Grants,
    pub client_ip: String,
    /// the API key id of an API-key session
    pub api_key: Option<String>,
}

fn client_ip(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Checks the bearer token against the account as it is now (same user id, same credential generation,
/// not locked) and loads what the caller may do. An API-key session may do what the key's scope and its
/// creator's roles *today* both allow.
async fn caller(mc: &Mc, req: &HttpRequest) -> Result<Caller> {
    let token = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::bad_request("No bearer token found"))?;
    let claims = mc.tokens.verify(token.trim())?;
    let by_key = claims.authtype == "apikeyauth";
    let username = if by_key {
        &claims.apikeyusername
    } else {
        &claims.username
    };
    let mut c = account_caller(mc, username, claims.uid, claims.token_gen, req).await?;
    if by_key {
        let key: Option<(String, Value)> =
            sqlx::query_as("SELECT org, permissions FROM api_keys WHERE id = $1 AND username = $2")
                .bind(&claims.username)
                .bind(username)
                .fetch_optional(&mc.db)
                .await?;
        let (org, perms) = key.ok_or_else(expired)?;
        let perms: Vec<Perm> = serde_json::from_value(perms).unwrap_or_default();
        let held = c.grants.0.remove(&org).unwrap_or_default();
        let scoped = perms
            .into_iter()
            .map(|p| (p.resource, p.action))
            .filter(|p| held.contains(p))
            .collect();
        c.grants = Grants::default();
        c.grants.0.insert(org, scoped);
        c.api_key = Some(claims.username);
    }
    Ok(c)
}

fn expired() -> ApiError {
    ApiError::unauthorized("Invalid or expired jwt")
}

/// The caller `username` of a password session (a token or a console session) issued for user id `uid`
/// at credential generation `token_gen`: refused when the account is gone, was recreated, changed its
/// password since, or is locked.
pub(crate) async fn account_caller(
    mc: &Mc,
    username: &str,
    uid: i64,
    token_gen: i64,
    req: &HttpRequest,
) -> Result<Caller> {
    // The account and its roles in one round trip (this runs before every authenticated call).
    #[derive(sqlx::FromRow)]
    struct Account {
        email: String,
        id: i64,
        token_gen: i64,
        locked: bool,
        orgs: Vec<String>,
        roles: Vec<String>,
    }
    let user: Option<Account> = sqlx::query_as(
        "SELECT u.email, u.id, u.token_gen, u.locked, \
           COALESCE(array_agg(r.org) FILTER (WHERE r.org IS NOT NULL), '{}') AS orgs, \
           COALESCE(array_agg(r.role) FILTER (WHERE r.org IS NOT NULL), '{}') AS roles \
         FROM users u LEFT JOIN roles r ON r.username = u.name WHERE u.name = $1 GROUP BY u.name",
    )
    .bind(username)
    .fetch_optional(&mc.db)
    .await?;
    let Some(Account {
        email,
        id,
        token_gen: generation,
        locked,
        orgs,
        roles,
    }) = user
    else {
        return Err(expired());
    };
    if id != uid || generation != token_gen {
        return Err(expired());
    }
    if locked {
        return Err(ApiError::unauthorized(LOCKED));
    }
    Ok(Caller {
        username: username.to_string(),
        email,
        grants: Grants::from_roles(orgs.into_iter().zip(roles)),
        client_ip: client_ip(req),
        api_key: None,
    })
}

/// Authenticates every `/api/v1/auth/` call before anything else of it is read (MobiledgeX's `AuthCookie`
/// middleware): the caller is kept in the request for the handler's [`Caller`] argument.
async fn authenticate(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> std::result::Result<
    actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    actix_web::Error,
> {
    use actix_web::HttpMessage;
    let mc = req
        .app_data::<web::Data<Mc>>()
        .expect("the server holds the MC as app data")
        .clone();
    let c = caller(&mc, req.request()).await?;
    req.extensions_mut().insert(c);
    next.call(req).await
}

/// The caller as a handler argument, authenticated by [`authenticate`].
impl actix_web::FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        std::future::ready(
            req.extensions_mut().remove::<Caller>().ok_or_else(|| {
                ApiError::internal("a route outside /api/v1/auth asked for its caller")
            }),
        )
    }
}

/// What `username`'s roles allow now.
pub async fn grants_of(mc: &Mc, username: &str) -> Result<Grants> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT org, role FROM roles WHERE username = $1")
            .bind(username)
            .fetch_all(&mc.db)
            .await?;
    Ok(Grants::from_roles(rows))
}

const LOCKED: &str = "Account is locked, please contact your platform administrator";

/// Account management needs the user's own password session, never an API key.
fn no_api_key(c: &Caller, what: &str) -> Result<()> {
    match c.api_key {
        Some(_) => Err(ApiError::forbidden_msg(format!(
            "ApiKey auth not allowed to {what}, please log in with user account"
        ))),
        None => Ok(()),
    }
}

/// One permission of an API key.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Perm {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub action: String,
}

pub fn ok(message: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "message": message }))
}

pub fn require(c: &Caller, resource: &str, action: &str, org: &str) -> Result<()> {
    if c.grants.allows(resource, action, org) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Names of users, organizations and regions: MobiledgeX's rules, checks and texts in its order (an
/// empty name is "<field> not specified").
pub fn check_name(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("{field} not specified")));
    }
    let fail = |m: &str| Err(ApiError::bad_request(m.to_string()));
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return fail("Name can only contain letters, digits, _ . -");
    }
    for (bad, message) in [
        (v.starts_with('.'), "Name cannot start with '.'"),
        (v.starts_with('-'), "Name cannot start with '-'"),
        (v.ends_with('.'), "Name cannot end with '.'"),
        (v.ends_with(".git"), "Name cannot end with '.git'"),
        (v.ends_with(".atom"), "Name cannot end with '.atom'"),
        (v.ends_with("-cache"), "Name cannot end with '-cache'"),
        (v.len() > 59, "Name too long"),
    ] {
        if bad {
            return fail(message);
        }
    }
    Ok(())
}

/// Runs a mutating call and records it in the audit log (operation = request path, request redacted).
pub async fn audited(
    mc: &Mc,
    req: &HttpRequest,
    user: &str,
    org: &str,
    request: &Value,
    call: impl Future<Output = Result<HttpResponse>>,
) -> Result<HttpResponse> {
    let (start, start_unix) = (Instant::now(), edge_common::now_ms() as f64 / 1000.0);
    let result = call.await;
    let (status, response) = match &result {
        Ok(r) => (r.status().as_u16(), String::new()),
        Err(e) => (e.status.as_u16(), e.message.clone()),
    };
    let entry = Entry {
        start: start_unix,
        duration_ms: start.elapsed().as_millis() as i64,
        username: user,
        org,
        region: request
            .get("Region")
            .or_else(|| request.get("region"))
            .and_then(Value::as_str)
            .unwrap_or(""),
        operation: req.path(),
        status,
        client_ip: &client_ip(req),
        request: Some(request),
        response: &response,
    };
    audit::record(&mc.db, entry).await;
    result
}

fn as_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn conflict_on_unique<T>(
    r: std::result::Result<T, sqlx::Error>,
    msg: impl FnOnce() -> String,
) -> Result<T> {
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::conflict(msg())),
        other => Ok(other?),
    }
}

/// The fields of a JSON object body with their names lowercased (MobiledgeX matched keys
/// case-insensitively); only `allowed` names may appear, others are refused by name.
pub(crate) fn fields_of(body: &Value, allowed: &[&str]) -> Result<serde_json::Map<String, Value>> {
    let Value::Object(m) = body else {
        return Err(ApiError::bad_request(
            "Invalid JSON data: expected a JSON object",
        ));
    };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        let lk = k.to_lowercase();
        if !allowed.contains(&lk.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Invalid JSON data: unknown field \"{k}\", allowed: {}",
                allowed.join(", ")
            )));
        }
        out.insert(lk, v.clone());
    }
    Ok(out)
}

/// MobiledgeX's show filter: an optional JSON object whose keys name fields of the shown `object` (matched
/// case-insensitively, as the JSON of `sample` spells them, plus `extra` keys the route reads itself);
/// an item passes when each filtered field equals the given value.
pub(crate) struct ShowFilter(serde_json::Map<String, Value>);

impl ShowFilter {
    fn parse(body: &[u8], object: &str, sample: &Value, extra: &[&str]) -> Result<Self> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Default::default()));
        }
        let Value::Object(given) = crate::json::value(body)? else {
            return Err(crate::json::invalid("expected a JSON object"));
        };
        let names: Vec<&str> = sample
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut out = serde_json::Map::new();
        for (k, v) in given {
            let Some(name) = names
                .iter()
                .chain(extra)
                .find(|n| n.eq_ignore_ascii_case(&k))
            else {
                return Err(ApiError::bad_request(format!(
                    "Failed to parse input data: JSON field {k} not found in database object {object}"
                )));
            };
            out.insert(name.to_string(), v);
        }
        Ok(Self(out))
    }

    /// The value given for `key` (one of the extra keys), as text.
    fn take(&mut self, key: &str) -> Option<String> {
        self.0
            .remove(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    }

    fn keeps<T: Serialize>(&self, item: &T) -> bool {
        let v = as_value(item);
        self.0.iter().all(|(k, want)| v.get(k) == Some(want))
    }
}

pub(crate) fn str_field<'a>(
    m: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid JSON data: field \"{name}\" must be a string"
        ))),
    }
}

pub(crate) fn bool_field(m: &serde_json::Map<String, Value>, name: &str) -> Result<Option<bool>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid JSON data: field \"{name}\" must be true or false"
        ))),
    }
}

/// Names fields a request may not change: each present and different from `current` is refused.
pub(crate) fn immutable(
    m: &serde_json::Map<String, Value>,
    current: &[(&str, &str)],
) -> Result<()> {
    for (name, value) in current {
        if let Some(v) = str_field(m, name)?
            && v != *value
        {
            return Err(ApiError::bad_request(format!("Cannot change {name}")));
        }
    }
    Ok(())
}

/// The fields of a user an update request may name (lowercased; each route refuses some).
const USER_FIELDS: &[&str] = &[
    "name",
    "email",
    "familyname",
    "givenname",
    "nickname",
    "passhash",
    "locked",
    "emailverified",
];

/// Fields of MobiledgeX's user this platform does not keep: accepted in updates and ignored (clients
/// send back the user they were shown).
const USER_IGNORED: &[&str] = &[
    "verify",
    "picture",
    "metadata",
    "enabletotp",
    "totpsharedkey",
    "failedlogins",
    "salt",
    "iter",
    "createdat",
    "updatedat",
    "passcracktimesec",
    "lastlogin",
    "lastfailedlogin",
];

/// A body naming one user or organization.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub(crate) struct NameOnly {
    #[serde(default, rename = "Name", alias = "name")]
    pub name: String,
}

// ----------------------------------------------------------------------------- ops

async fn metrics(m: web::Data<Metrics>) -> HttpResponse {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&m.registry.gather(), &mut buf);
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(buf)
}

async fn readyz(mc: web::Data<Mc>) -> HttpResponse {
    match sqlx::query("SELECT 1").execute(&mc.db).await {
        Ok(_) => HttpResponse::Ok().body("ready\n"),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("database: {e}\n")),
    }
}

/// Declares the REST routes once, each with its handler, summary and request type: [`ROUTES`] lists them
/// (the tests read it), `register` installs them (those under `/auth` behind [`authenticate`]) and
/// [`documented`] gives them to the OpenAPI document.
macro_rules! route_table {
    ($($path:literal => $handler:path, $summary:literal $(, $request:ty)?;)*) => {
        /// Every `POST /api/v1...` route.
        pub const ROUTES: &[&str] = &[$($path),*];
        fn register(cfg: &mut web::ServiceConfig) {
            $(
                if !$path.starts_with("/auth/") {
                    cfg.route(concat!("/api/v1", $path), web::post().to($handler));
                }
            )*
            cfg.service(
                authenticated(web::scope("/api/v1/auth"))
                    .wrap(actix_web::middleware::from_fn(authenticate)),
            );
            cfg.service(
                authenticated(web::scope(crate::console::API))
                    .wrap(actix_web::middleware::from_fn(crate::console::authenticate)),
            );
        }
        /// The `/auth` routes in `scope` (the REST API's, and the console's).
        fn authenticated(mut scope: actix_web::Scope) -> actix_web::Scope {
            $(
                if let Some(rest) = $path.strip_prefix("/auth") {
                    scope = scope.route(rest, web::post().to($handler));
                }
            )*
            scope
        }
        /// Every route with its summary and the schema of its request body.
        pub fn documented() -> Vec<crate::openapi::Route> {
            vec![$(crate::openapi::Route {
                path: $path,
                summary: $summary,
                request: None$(.or(Some(crate::openapi::request_type::<$request>())))?,
            }),*]
        }
    };
}

route_table! {
    "/login" => accounts::login, "Log in with a user name (or email) and password, or an API key; returns a token", accounts::Login;
    "/usercreate" => accounts::user_create, "Create a user account", accounts::NewUser;
    "/auth/user/current" => accounts::user_current, "The calling user";
    "/auth/user/newpass" => accounts::user_newpass, "Change the caller's password", accounts::NewPass;
    "/auth/user/show" => accounts::user_show, "Users the caller may see", accounts::UserOut;
    "/auth/user/delete" => accounts::user_delete, "Delete a user (oneself, or any as admin)", NameOnly;
    "/auth/user/update" => accounts::user_update, "Change the caller's email and names", accounts::NewUser;
    "/auth/restricted/user/update" => accounts::restricted_user_update, "Admins: lock or unlock a user, mark the email verified", accounts::UserOut;
    "/auth/user/create/apikey" => apikeys::apikey_create, "Create an API key with a subset of the caller's permissions in an org", apikeys::NewApiKey;
    "/auth/user/delete/apikey" => apikeys::apikey_delete, "Delete an API key", apikeys::KeyId;
    "/auth/user/show/apikey" => apikeys::apikey_show, "The caller's API keys";
    "/auth/org/create" => orgs::org_create, "Create an organization (developer or operator); the caller becomes its manager", orgs::Org;
    "/auth/org/update" => orgs::org_update, "Change an organization's address and phone", orgs::Org;
    "/auth/restricted/org/update" => orgs::restricted_org_update, "Admins: change any organization's address and phone", orgs::Org;
    "/auth/org/delete" => orgs::org_delete, "Delete an organization", NameOnly;
    "/auth/org/show" => orgs::org_show, "Organizations the caller belongs to (all for admins)", orgs::Org;
    "/auth/role/adduser" => roles::role_adduser, "Give a user a role in an organization", roles::Role;
    "/auth/role/removeuser" => roles::role_removeuser, "Take a role from a user", roles::Role;
    "/auth/role/assignment/show" => roles::role_assignments, "Role assignments";
    "/auth/role/perms/show" => roles::role_perms, "The permission table: role, resource, action";
    "/auth/role/show" => roles::role_show, "Role names";
    "/auth/controller/create" => regions::controller_create, "Register a region's controller", regions::Controller;
    "/auth/controller/delete" => regions::controller_delete, "Deregister a region", regions::Controller;
    "/auth/controller/show" => regions::controller_show, "Regions", regions::Controller;
    "/auth/audit/showself" => audit_log::audit_self, "The caller's audit entries", audit_log::AuditQuery;
    "/auth/audit/showorg" => audit_log::audit_org, "An organization's audit entries", audit_log::AuditQuery;
    "/auth/ctrl/{method}" => ctrl::forward, "A call of the region's controller API (one path per method, below)", ctrl::RegionRequest;
    "/auth/alert/show" => ctrl::show_alert, "Alerts of a region the caller may see (same as /auth/ctrl/ShowAlert)", ctrl::RegionRequest;
    "/auth/alertreceiver/create" => alerts::receiver_create, "Have a region's alerts about an app instance or a cloudlet sent to a webhook or Slack", alerts::ReceiverIn;
    "/auth/alertreceiver/delete" => alerts::receiver_delete, "Delete one of the caller's alert receivers", alerts::ReceiverIn;
    "/auth/alertreceiver/show" => alerts::receiver_show, "The caller's alert receivers (all for admins), URLs hidden", alerts::ReceiverIn;
    "/auth/metrics/app" => monitor::metrics_app, "Metrics of app instances (selector cpu, mem, disk, network, connections), newest first", monitor::Request;
    "/auth/metrics/cluster" => monitor::metrics_cluster, "Metrics of cluster instances (selector cpu, mem, disk, network), newest first", monitor::Request;
    "/auth/metrics/cloudlet" => monitor::metrics_cloudlet, "Metrics of cloudlets (selector utilization), newest first", monitor::Request;
    "/auth/events/app" => monitor::events_app, "Lifecycle and health events of app instances", monitor::Request;
    "/auth/events/cluster" => monitor::events_cluster, "Lifecycle and health events of cluster instances", monitor::Request;
    "/auth/events/cloudlet" => monitor::events_cloudlet, "Lifecycle and health events of cloudlets", monitor::Request;
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(|| async { "ok\n" }))
        .route("/readyz", web::get().to(readyz))
        .route("/api/v1/openapi.json", web::get().to(crate::openapi::serve));
    register(cfg);
    crate::console::routes(cfg);
    cfg.default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("Not Found"))
    }));
}
