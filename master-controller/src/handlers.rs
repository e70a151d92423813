//! REST handlers: accounts, API keys, organizations, roles, regions, audit, and the ops endpoints.
//! Every route under `/api/v1/auth/` needs `Authorization: Bearer <token>` and checks RBAC.

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
pub async fn caller(mc: &Mc, req: &HttpRequest) -> Result<Caller> {
    let token = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("No bearer token found"))?;
    let claims = mc.tokens.verify(token.trim())?;
    let expired = || ApiError::unauthorized("Invalid or expired jwt");
    let by_key = claims.authtype == "apikeyauth";
    let username = if by_key {
        claims.apikeyusername.clone()
    } else {
        claims.username.clone()
    };
    let user: Option<(String, i64, i64, bool)> =
        sqlx::query_as("SELECT email, id, token_gen, locked FROM users WHERE name = $1")
            .bind(&username)
            .fetch_optional(&mc.db)
            .await?;
    let Some((email, id, token_gen, locked)) = user else {
        return Err(expired());
    };
    if id != claims.uid || token_gen != claims.token_gen {
        return Err(expired());
    }
    if locked {
        return Err(ApiError::unauthorized(LOCKED));
    }
    let mut grants = grants_of(mc, &username).await?;
    if by_key {
        let key: Option<(String, Value)> =
            sqlx::query_as("SELECT org, permissions FROM api_keys WHERE id = $1 AND username = $2")
                .bind(&claims.username)
                .bind(&username)
                .fetch_optional(&mc.db)
                .await?;
        let (org, perms) = key.ok_or_else(expired)?;
        let perms: Vec<Perm> = serde_json::from_value(perms).unwrap_or_default();
        let held = grants.0.remove(&org).unwrap_or_default();
        let scoped = perms
            .into_iter()
            .map(|p| (p.resource, p.action))
            .filter(|p| held.contains(p))
            .collect();
        grants = Grants::default();
        grants.0.insert(org, scoped);
    }
    Ok(Caller {
        username,
        email,
        grants,
        client_ip: client_ip(req),
        api_key: by_key.then_some(claims.username),
    })
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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

// ----------------------------------------------------------------------------- accounts

#[derive(Deserialize, Serialize)]
pub struct Login {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub totp: String,
    #[serde(default)]
    pub apikeyid: String,
    #[serde(default)]
    pub apikey: String,
}

async fn login(mc: web::Data<Mc>, req: HttpRequest, body: Json<Login>) -> Result<HttpResponse> {
    let by_key = !body.apikeyid.is_empty() || !body.apikey.is_empty();
    let call = async {
        if by_key {
            if body.apikeyid.is_empty() {
                return Err(ApiError::bad_request("apikeyid not specified"));
            }
            if body.apikey.is_empty() {
                return Err(ApiError::bad_request("apikey not specified"));
            }
        } else {
            if body.username.is_empty() {
                return Err(ApiError::bad_request("Username not specified"));
            }
            if body.password.is_empty() {
                return Err(ApiError::bad_request("Please specify password"));
            }
        }
        // (name, email, hash, id, token generation, locked)
        let found: Option<(String, String, String, i64, i64, bool)> = if by_key {
            sqlx::query_as(
                "SELECT u.name, u.email, k.keyhash, u.id, u.token_gen, u.locked
                 FROM api_keys k JOIN users u ON u.name = k.username WHERE k.id = $1",
            )
            .bind(&body.apikeyid)
            .fetch_optional(&mc.db)
            .await?
        } else {
            // The user name or the email: one account, one throttle counter.
            sqlx::query_as(
                "SELECT name, email, passhash, id, token_gen, locked FROM users
                 WHERE lower(name) = lower($1) OR lower(email) = lower($1)",
            )
            .bind(&body.username)
            .fetch_optional(&mc.db)
            .await?
        };
        let account = match (&found, by_key) {
            (_, true) => format!("apikey:{}", body.apikeyid),
            (Some(f), false) => format!("user:{}", f.0.to_lowercase()),
            (None, false) => format!("user:{}", body.username.to_lowercase()),
        };
        let attempt = mc
            .throttle
            .attempt(&[account, format!("ip:{}", client_ip(&req))])?;
        let secret = if by_key { &body.apikey } else { &body.password };
        let verified = match &found {
            Some(f) => auth::verify_async(secret, &f.2).await,
            None => false,
        };
        let Some((name, email, _, id, token_gen, locked)) = found.filter(|_| verified) else {
            tokio::time::sleep(mc.bad_auth_delay).await;
            return Err(ApiError::bad_request(if by_key {
                "Invalid ApiKey or ApiKeyId"
            } else {
                "Invalid username or password"
            }));
        };
        mc.throttle.succeeded(attempt);
        if locked {
            return Err(ApiError::bad_request(LOCKED));
        }
        let account = auth::Account {
            name: &name,
            email: &email,
            id,
            token_gen,
        };
        let token = mc
            .tokens
            .issue(&account, if by_key { &body.apikeyid } else { "" });
        let admin: Option<(String,)> =
            sqlx::query_as("SELECT role FROM roles WHERE username = $1 AND org = ''")
                .bind(&name)
                .fetch_optional(&mc.db)
                .await?;
        let mut reply = json!({ "token": token });
        if admin.is_some() && !by_key {
            reply["admin"] = json!(true);
        }
        Ok(HttpResponse::Ok().json(reply))
    };
    // An unauthenticated route: the audit log gets who tried, never the body.
    let summary = if by_key {
        json!({ "apikeyid": body.apikeyid })
    } else {
        json!({ "username": body.username })
    };
    audited(&mc, &req, &body.username, "", &summary, call).await
}

#[derive(Deserialize, Serialize)]
struct NewUser {
    #[serde(default, alias = "Name")]
    name: String,
    #[serde(default, alias = "Email")]
    email: String,
    /// MobiledgeX sends the plaintext password in this field.
    #[serde(default, alias = "Passhash")]
    passhash: String,
}

async fn user_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<NewUser>,
) -> Result<HttpResponse> {
    let call = async {
        // Every create counts, successful or not: account creation is throttled per client address.
        mc.throttle
            .attempt_limited(&[format!("create:{}", client_ip(&req))], |_| {
                mc.user_create_limit
            })?;
        check_name("Name", &body.name)?;
        if !valid_email(&body.email) {
            return Err(ApiError::bad_request("Invalid email address"));
        }
        auth::check_password_length(&body.passhash)?;
        if name_taken_by_org(&mc, &body.name).await? {
            return Err(ApiError::bad_request(
                "User name cannot be same as org name",
            ));
        }
        auth::check_password_strength(&body.name, &body.passhash)?;
        let hash = auth::hash_async(&body.passhash).await;
        let r = sqlx::query("INSERT INTO users (name, email, passhash) VALUES ($1, $2, $3)")
            .bind(&body.name)
            .bind(&body.email)
            .bind(hash)
            .execute(&mc.db)
            .await;
        unique_user(r, &body.name)?;
        Ok(HttpResponse::Ok()
            .json(json!({"Message": "user created", "TOTPSharedKey": "", "TOTPQRImage": null})))
    };
    let summary = json!({ "Name": body.name, "Email": body.email });
    audited(&mc, &req, &body.name, "", &summary, call).await
}

/// MobiledgeX's email rule (`(.+)@(.+)\.(.+)`), within SMTP's length.
fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && e.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty()
                && domain
                    .rsplit_once('.')
                    .is_some_and(|(host, top)| !host.is_empty() && !top.is_empty())
        })
}

/// Maps a unique violation on the users table to the message naming what is taken.
fn unique_user<T>(r: std::result::Result<T, sqlx::Error>, name: &str) -> Result<T> {
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::conflict(
            if e.constraint().is_some_and(|c| c.contains("email")) {
                "Email already in use".to_string()
            } else {
                format!("Username with name {name} (case-insensitive) already exists")
            },
        )),
        other => Ok(other?),
    }
}

async fn name_taken_by_org(mc: &Mc, name: &str) -> Result<bool> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT name FROM organizations WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(&mc.db)
            .await?;
    Ok(r.is_some())
}

#[derive(Default, Serialize, sqlx::FromRow)]
struct UserOut {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Email")]
    email: String,
    #[serde(rename = "FamilyName")]
    family_name: String,
    #[serde(rename = "GivenName")]
    given_name: String,
    #[serde(rename = "Nickname")]
    nickname: String,
    #[serde(rename = "EmailVerified")]
    email_verified: bool,
    #[serde(rename = "Locked")]
    locked: bool,
}

/// Users holding a role (`role`, any when `None`) in one of `orgs` (any org when `None`); every user when
/// both are `None`.
async fn users(mc: &Mc, orgs: Option<Vec<String>>, role: Option<String>) -> Result<Vec<UserOut>> {
    Ok(sqlx::query_as(
        "SELECT name, email, family_name, given_name, nickname, email_verified, locked FROM users
         WHERE ($1::text[] IS NULL AND $2::text IS NULL) OR name IN
           (SELECT username FROM roles WHERE ($1::text[] IS NULL OR org = ANY($1))
                                         AND ($2::text IS NULL OR role = $2))
         ORDER BY name",
    )
    .bind(orgs)
    .bind(role)
    .fetch_all(&mc.db)
    .await?)
}

async fn user_current(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let u: UserOut = sqlx::query_as(
        "SELECT name, email, family_name, given_name, nickname, email_verified, locked FROM users
         WHERE name = $1",
    )
    .bind(&c.username)
    .fetch_one(&mc.db)
    .await?;
    Ok(HttpResponse::Ok().json(u))
}

#[derive(Deserialize, Serialize)]
struct NewPass {
    #[serde(default)]
    currentpassword: String,
    #[serde(default)]
    password: String,
}

/// Changes the caller's password; every token issued before (this one included) stops working.
async fn user_newpass(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<NewPass>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        no_api_key(&c, "change the password")?;
        if body.currentpassword.is_empty() {
            return Err(ApiError::bad_request("Please specify current password"));
        }
        if body.password.is_empty() {
            return Err(ApiError::bad_request("Please specify new password"));
        }
        let (hash,): (String,) = sqlx::query_as("SELECT passhash FROM users WHERE name = $1")
            .bind(&c.username)
            .fetch_one(&mc.db)
            .await?;
        if !auth::verify_async(&body.currentpassword, &hash).await {
            tokio::time::sleep(mc.bad_auth_delay).await;
            return Err(ApiError::bad_request("Invalid current password"));
        }
        auth::check_password(&c.username, &body.password)?;
        sqlx::query(
            "UPDATE users SET passhash = $2, token_gen = token_gen + 1, updated_at = now() WHERE name = $1",
        )
        .bind(&c.username)
        .bind(auth::hash_async(&body.password).await)
        .execute(&mc.db)
        .await?;
        Ok(ok("Password updated"))
    };
    audited(&mc, &req, &c.username, "", &json!({}), call).await
}

/// `/auth/user/show`: the users holding roles in orgs the caller may view users of (everyone for admins),
/// filtered by user fields and `org`/`role`; a filter on an org the caller may not view is a 403.
async fn user_show(mc: web::Data<Mc>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let mut filter = ShowFilter::parse(
        &body,
        "User",
        &as_value(&UserOut::default()),
        &["org", "role"],
    )?;
    let (org, role) = (filter.take("org"), filter.take("role"));
    let orgs = match (c.grants.viewable_orgs(rbac::USERS), org) {
        (Some(orgs), _) if orgs.is_empty() => return Err(ApiError::forbidden()),
        (Some(orgs), Some(org)) if !orgs.contains(&org) => return Err(ApiError::forbidden()),
        (_, Some(org)) => Some(vec![org]),
        (None, None) => None,
        (Some(orgs), None) => Some(orgs.into_iter().collect()),
    };
    let users = users(&mc, orgs, role).await?;
    let users: Vec<UserOut> = users.into_iter().filter(|u| filter.keeps(u)).collect();
    Ok(HttpResponse::Ok().json(users))
}

#[derive(Deserialize, Serialize)]
struct NameOnly {
    #[serde(default, alias = "Name")]
    name: String,
}

async fn user_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<NameOnly>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        no_api_key(&c, "delete users")?;
        if body.name.is_empty() {
            return Err(ApiError::bad_request("User Name not specified"));
        }
        if body.name != c.username {
            require(&c, rbac::USERS, rbac::MANAGE, "")?;
        }
        let n = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(&body.name)
            .execute(&mc.db)
            .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("User {} not found", body.name)));
        }
        Ok(ok("User deleted"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

/// The fields of a JSON object body with their names lowercased (MobiledgeX matched keys
/// case-insensitively); only `allowed` names may appear, others are refused by name.
fn fields_of(body: &Value, allowed: &[&str]) -> Result<serde_json::Map<String, Value>> {
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
struct ShowFilter(serde_json::Map<String, Value>);

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

fn str_field<'a>(m: &'a serde_json::Map<String, Value>, name: &str) -> Result<Option<&'a str>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid JSON data: field \"{name}\" must be a string"
        ))),
    }
}

fn bool_field(m: &serde_json::Map<String, Value>, name: &str) -> Result<Option<bool>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid JSON data: field \"{name}\" must be true or false"
        ))),
    }
}

/// Names fields a request may not change: each present and different from `current` is refused.
fn immutable(m: &serde_json::Map<String, Value>, current: &[(&str, &str)]) -> Result<()> {
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

/// `/auth/user/update`: the caller changes their own email (which then needs verifying again) and names.
async fn user_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Value>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        no_api_key(&c, "update users")?;
        let m = fields_of(&body, USER_FIELDS)?;
        immutable(&m, &[("name", &c.username)])?;
        for f in ["passhash", "locked", "emailverified"] {
            if m.contains_key(f) {
                return Err(ApiError::bad_request(format!("Cannot change {f}")));
            }
        }
        if let Some(email) = str_field(&m, "email")?
            && !valid_email(email)
        {
            return Err(ApiError::bad_request("Invalid email address"));
        }
        let r = sqlx::query(
            "UPDATE users SET
               email_verified = email_verified AND (coalesce($2, email) = email),
               email = coalesce($2, email), family_name = coalesce($3, family_name),
               given_name = coalesce($4, given_name), nickname = coalesce($5, nickname),
               updated_at = now()
             WHERE name = $1",
        )
        .bind(&c.username)
        .bind(str_field(&m, "email")?)
        .bind(str_field(&m, "familyname")?)
        .bind(str_field(&m, "givenname")?)
        .bind(str_field(&m, "nickname")?)
        .execute(&mc.db)
        .await;
        unique_user(r, &c.username)?;
        Ok(HttpResponse::Ok()
            .json(json!({"Message": "user updated", "TOTPSharedKey": "", "TOTPQRImage": null})))
    };
    audited(&mc, &req, &c.username, "", &body, call).await
}

/// `/auth/restricted/user/update` (admins): lock or unlock an account (which ends its tokens), mark its
/// email verified, fix its names.
async fn restricted_user_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Value>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        require(&c, rbac::USERS, rbac::MANAGE, "")?;
        let m = fields_of(&body, USER_FIELDS)?;
        let name = str_field(&m, "name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::bad_request("User Name not specified"));
        }
        for f in ["email", "passhash"] {
            if m.contains_key(f) {
                return Err(ApiError::bad_request(format!("Cannot change {f}")));
            }
        }
        let locked = bool_field(&m, "locked")?;
        let n = sqlx::query(
            "UPDATE users SET
               token_gen = token_gen + CASE WHEN $2::bool IS NOT NULL AND $2 <> locked THEN 1 ELSE 0 END,
               locked = coalesce($2, locked), email_verified = coalesce($3, email_verified),
               family_name = coalesce($4, family_name), given_name = coalesce($5, given_name),
               nickname = coalesce($6, nickname), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(locked)
        .bind(bool_field(&m, "emailverified")?)
        .bind(str_field(&m, "familyname")?)
        .bind(str_field(&m, "givenname")?)
        .bind(str_field(&m, "nickname")?)
        .execute(&mc.db)
        .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("User {name} not found")));
        }
        Ok(HttpResponse::Ok().finish())
    };
    audited(&mc, &req, &c.username, "", &body, call).await
}

// ----------------------------------------------------------------------------- API keys

#[derive(Deserialize, Serialize)]
struct NewApiKey {
    #[serde(default, alias = "org")]
    #[serde(rename = "Org")]
    org: String,
    #[serde(default, alias = "description")]
    #[serde(rename = "Description")]
    description: String,
    #[serde(default)]
    permissions: Vec<Perm>,
}

async fn apikey_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<NewApiKey>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        if c.api_key.is_some() {
            return Err(ApiError::forbidden_msg(
                "ApiKey auth not allowed to create API keys, please log in with user account",
            ));
        }
        if body.permissions.is_empty() {
            return Err(ApiError::bad_request("No permissions for specified org"));
        }
        // No role in the org: nothing to delegate there.
        let held = c
            .grants
            .0
            .get(&body.org)
            .ok_or_else(|| ApiError::forbidden_msg("Invalid org specified"))?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE username = $1")
            .bind(&c.username)
            .fetch_one(&mc.db)
            .await?;
        if count >= API_KEY_LIMIT {
            return Err(ApiError::bad_request(format!(
                "User cannot create more than {API_KEY_LIMIT} API keys, please delete existing keys to create new one"
            )));
        }
        let mut perms = Vec::new();
        for p in &body.permissions {
            if p.action != rbac::VIEW && p.action != rbac::MANAGE {
                return Err(ApiError::bad_request(format!(
                    "Invalid action {}: view or manage",
                    p.action
                )));
            }
            if !held.contains(&(p.resource.clone(), p.action.clone())) {
                let valid: Vec<String> = held.iter().map(|(r, a)| format!("{r}:{a}")).collect();
                return Err(ApiError::bad_request(format!(
                    "Invalid permission specified: [{}:{}], valid permissions (resource:action) are [{}]",
                    p.resource,
                    p.action,
                    valid.join(" ")
                )));
            }
            perms.push(p.clone());
            if p.action == rbac::MANAGE {
                perms.push(Perm {
                    resource: p.resource.clone(),
                    action: rbac::VIEW.into(),
                });
            }
        }
        let id = edge_common::vault::hex(&edge_common::vault::random_bytes(16));
        let key = edge_common::vault::hex(&edge_common::vault::random_bytes(24));
        let keyhash = auth::hash_async(&key).await;
        sqlx::query("INSERT INTO api_keys (id, username, org, permissions, keyhash, description) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(&c.username)
            .bind(&body.org)
            .bind(as_value(&perms))
            .bind(keyhash)
            .bind(&body.description)
            .execute(&mc.db)
            .await?;
        Ok(HttpResponse::Ok().json(
            json!({ "Id": id, "ApiKey": key, "Org": body.org, "Description": body.description }),
        ))
    };
    audited(&mc, &req, &c.username, &body.org, &as_value(&*body), call).await
}

/// API keys one user may hold (MobiledgeX's `UserApiKeyCreateLimit`).
const API_KEY_LIMIT: i64 = 10;

#[derive(Deserialize, Serialize)]
struct KeyId {
    #[serde(default, rename = "Id", alias = "id")]
    id: String,
}

async fn apikey_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<KeyId>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        no_api_key(&c, "delete API keys")?;
        if body.id.is_empty() {
            return Err(ApiError::bad_request("Missing API key ID"));
        }
        let owner: Option<(String, String)> =
            sqlx::query_as("SELECT username, org FROM api_keys WHERE id = $1")
                .bind(&body.id)
                .fetch_optional(&mc.db)
                .await?;
        let Some((owner, org)) = owner else {
            return Err(ApiError::not_found("API key ID not found"));
        };
        // The owner, the managers of the key's org, and admins.
        if owner != c.username && !c.grants.allows(rbac::USERS, rbac::MANAGE, &org) {
            return Err(ApiError::forbidden_msg(
                "Cannot delete other user's API key",
            ));
        }
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(&body.id)
            .execute(&mc.db)
            .await?;
        Ok(ok("Deleted API Key successfully"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

/// The caller's keys; managers also see every key of the orgs they manage, admins every key.
async fn apikey_show(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let managed: Vec<String> = c
        .grants
        .0
        .keys()
        .filter(|o| c.grants.allows(rbac::USERS, rbac::MANAGE, o))
        .cloned()
        .collect();
    let rows: Vec<(String, String, String, String, Value)> = sqlx::query_as(
        "SELECT id, username, org, description, permissions FROM api_keys
         WHERE username = $1 OR $2 OR org = ANY($3) ORDER BY id",
    )
    .bind(&c.username)
    .bind(c.grants.allows(rbac::USERS, rbac::MANAGE, ""))
    .bind(&managed)
    .fetch_all(&mc.db)
    .await?;
    let keys: Vec<Value> = rows
        .into_iter()
        .map(|(id, user, org, d, p)| {
            json!({"Id": id, "Username": user, "Org": org, "Description": d, "permissions": p})
        })
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

// ----------------------------------------------------------------------------- organizations

#[derive(Default, Deserialize, Serialize, sqlx::FromRow)]
pub struct Org {
    #[serde(default, rename = "Name", alias = "name")]
    pub name: String,
    #[serde(default, rename = "Type", alias = "type")]
    pub r#type: String,
    #[serde(default, rename = "Address", alias = "address")]
    pub address: String,
    #[serde(default, rename = "Phone", alias = "phone")]
    pub phone: String,
}

/// Organization names only admins may take: the platform's own (compared case-insensitively).
pub const RESERVED_ORGS: &[&str] = &["edgecloud", "mobiledgex", "edgebox"];

async fn org_create(mc: web::Data<Mc>, req: HttpRequest, body: Json<Org>) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        no_api_key(&c, "create organizations")?;
        check_name("Name", &body.name)?;
        let manager = match body.r#type.as_str() {
            "developer" => rbac::DEVELOPER_MANAGER,
            "operator" => rbac::OPERATOR_MANAGER,
            _ => {
                return Err(ApiError::bad_request(
                    "Organization type must be developer, or operator",
                ));
            }
        };
        if RESERVED_ORGS.contains(&body.name.to_lowercase().as_str()) && !c.grants.is_admin() {
            return Err(ApiError::bad_request(format!(
                "Not authorized to create reserved org {}",
                body.name
            )));
        }
        let user: Option<(String,)> =
            sqlx::query_as("SELECT name FROM users WHERE lower(name) = lower($1)")
                .bind(&body.name)
                .fetch_optional(&mc.db)
                .await?;
        if user.is_some() {
            return Err(ApiError::bad_request(
                "Org name cannot be same as existing user name",
            ));
        }
        let mut tx = mc.db.begin().await?;
        let r = sqlx::query(
            "INSERT INTO organizations (name, type, address, phone) VALUES ($1, $2, $3, $4)",
        )
        .bind(&body.name)
        .bind(&body.r#type)
        .bind(&body.address)
        .bind(&body.phone)
        .execute(&mut *tx)
        .await;
        conflict_on_unique(r, || {
            format!(
                "Organization with name {} (case-insensitive) already exists",
                body.name
            )
        })?;
        // The creator manages the new organization.
        sqlx::query("INSERT INTO roles (username, org, role) VALUES ($1, $2, $3)")
            .bind(&c.username)
            .bind(&body.name)
            .bind(manager)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ok("Organization created"))
    };
    audited(&mc, &req, &c.username, &body.name, &as_value(&*body), call).await
}

/// `/auth/org/update`: managers change the address and phone; the type never changes.
async fn org_update(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Value>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let m = fields_of(&body, &["name", "type", "address", "phone"])?;
    let name = str_field(&m, "name")?.unwrap_or_default().to_string();
    let call = async {
        if name.is_empty() {
            return Err(ApiError::bad_request("Organization name not specified"));
        }
        require(&c, rbac::USERS, rbac::MANAGE, &name)?;
        let t: Option<(String,)> = sqlx::query_as("SELECT type FROM organizations WHERE name = $1")
            .bind(&name)
            .fetch_optional(&mc.db)
            .await?;
        let Some((org_type,)) = t else {
            return Err(ApiError::not_found("Organization not found"));
        };
        immutable(&m, &[("type", &org_type)])
            .map_err(|_| ApiError::bad_request("Cannot change Organization type"))?;
        sqlx::query(
            "UPDATE organizations SET address = coalesce($2, address), phone = coalesce($3, phone),
             updated_at = now() WHERE name = $1",
        )
        .bind(&name)
        .bind(str_field(&m, "address")?)
        .bind(str_field(&m, "phone")?)
        .execute(&mc.db)
        .await?;
        Ok(HttpResponse::Ok().finish())
    };
    audited(&mc, &req, &c.username, &name, &body, call).await
}

/// Deletes an organization that no region holds objects of. While the regions are asked, the org is
/// marked as being deleted, so no new object can be created in it meanwhile.
async fn org_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<NameOnly>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        if body.name.is_empty() {
            return Err(ApiError::bad_request("Organization name not specified"));
        }
        require(&c, rbac::USERS, rbac::MANAGE, &body.name)?;
        let marked = sqlx::query(
            "UPDATE organizations SET delete_in_progress = true WHERE name = $1 AND NOT delete_in_progress",
        )
        .bind(&body.name)
        .execute(&mc.db)
        .await?;
        if marked.rows_affected() == 0 {
            let exists: Option<(String,)> =
                sqlx::query_as("SELECT name FROM organizations WHERE name = $1")
                    .bind(&body.name)
                    .fetch_optional(&mc.db)
                    .await?;
            return Err(match exists {
                Some(_) => ApiError::bad_request("Org already being deleted"),
                None => ApiError::not_found("Organization not found"),
            });
        }
        let unmark = || async {
            sqlx::query("UPDATE organizations SET delete_in_progress = false WHERE name = $1")
                .bind(&body.name)
                .execute(&mc.db)
                .await
        };
        match crate::ctrl::org_in_use(&mc, &body.name).await {
            Ok(used) if used.is_empty() => {}
            Ok(used) => {
                unmark().await?;
                return Err(ApiError::bad_request(format!(
                    "Organization {} in use: {}; delete these first",
                    body.name,
                    used.join("; ")
                )));
            }
            Err(e) => {
                unmark().await?;
                return Err(ApiError::bad_request(format!(
                    "Organization {} in use check failed: {}",
                    body.name, e.message
                )));
            }
        }
        let mut tx = mc.db.begin().await?;
        sqlx::query("DELETE FROM organizations WHERE name = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM roles WHERE org = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE org = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ok("Organization deleted"))
    };
    audited(&mc, &req, &c.username, &body.name, &as_value(&*body), call).await
}

async fn org_show(mc: web::Data<Mc>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let filter = ShowFilter::parse(&body, "Organization", &as_value(&Org::default()), &[])?;
    let orgs: Vec<Org> = match c.grants.viewable_orgs(rbac::USERS) {
        None => {
            sqlx::query_as("SELECT name, type, address, phone FROM organizations ORDER BY name")
                .fetch_all(&mc.db)
                .await?
        }
        Some(_) => {
            let mine: Vec<String> = c.grants.0.keys().cloned().collect();
            sqlx::query_as("SELECT name, type, address, phone FROM organizations WHERE name = ANY($1) ORDER BY name")
                .bind(&mine)
                .fetch_all(&mc.db)
                .await?
        }
    };
    let orgs: Vec<Org> = orgs.into_iter().filter(|o| filter.keeps(o)).collect();
    Ok(HttpResponse::Ok().json(orgs))
}

// ----------------------------------------------------------------------------- roles

#[derive(Deserialize, Serialize, sqlx::FromRow)]
pub struct Role {
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub role: String,
}

async fn role_change(mc: &Mc, req: &HttpRequest, body: &Role, add: bool) -> Result<HttpResponse> {
    let c = caller(mc, req).await?;
    let call = async {
        if body.username.is_empty() {
            return Err(ApiError::bad_request("Username not specified"));
        }
        if body.role.is_empty() {
            return Err(ApiError::bad_request("Role not specified"));
        }
        let admin_role = rbac::is_admin_role(&body.role);
        if admin_role && !body.org.is_empty() {
            return Err(ApiError::bad_request(
                "Admin roles cannot be associated with an org, please specify the empty org \"\"",
            ));
        }
        if !admin_role && body.org.is_empty() {
            return Err(ApiError::bad_request(
                "Org name must be specified for the specified role",
            ));
        }
        if !rbac::ROLES.contains(&body.role.as_str()) {
            return Err(ApiError::bad_request("Role not found"));
        }
        if !admin_role {
            let t: Option<(String,)> =
                sqlx::query_as("SELECT type FROM organizations WHERE name = $1")
                    .bind(&body.org)
                    .fetch_optional(&mc.db)
                    .await?;
            let Some((org_type,)) = t else {
                // Only those who could manage it learn that an organization does not exist.
                require(&c, rbac::USERS, rbac::MANAGE, "")?;
                return Err(ApiError::not_found("Organization not found"));
            };
            let fits = (org_type == "developer" && body.role.starts_with("Developer"))
                || (org_type == "operator" && body.role.starts_with("Operator"));
            if !fits {
                return Err(ApiError::bad_request(format!(
                    "Can only assign {org_type} roles for {org_type} organization"
                )));
            }
        }
        require(&c, rbac::USERS, rbac::MANAGE, &body.org)?;
        if add {
            let r = sqlx::query("INSERT INTO roles (username, org, role) VALUES ($1, $2, $3)")
                .bind(&body.username)
                .bind(&body.org)
                .bind(&body.role)
                .execute(&mc.db)
                .await;
            match r {
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    return Err(ApiError::not_found("Username not found"));
                }
                other => conflict_on_unique(other, || {
                    format!(
                        "User already has a role for org {}, please remove existing role first",
                        body.org
                    )
                })?,
            };
            Ok(ok("Role added to user"))
        } else {
            sqlx::query("DELETE FROM roles WHERE username = $1 AND org = $2 AND role = $3")
                .bind(&body.username)
                .bind(&body.org)
                .bind(&body.role)
                .execute(&mc.db)
                .await?;
            Ok(ok("Role removed from user"))
        }
    };
    audited(mc, req, &c.username, &body.org, &as_value(body), call).await
}

async fn role_adduser(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Role>,
) -> Result<HttpResponse> {
    role_change(&mc, &req, &body, true).await
}

async fn role_removeuser(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Role>,
) -> Result<HttpResponse> {
    role_change(&mc, &req, &body, false).await
}

async fn role_assignments(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let rows: Vec<Role> = if c.grants.viewable_orgs(rbac::USERS).is_none() {
        sqlx::query_as("SELECT org, username, role FROM roles ORDER BY org, username")
            .fetch_all(&mc.db)
            .await?
    } else {
        sqlx::query_as("SELECT org, username, role FROM roles WHERE username = $1 ORDER BY org")
            .bind(&c.username)
            .fetch_all(&mc.db)
            .await?
    };
    Ok(HttpResponse::Ok().json(rows))
}

async fn role_perms(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let admin = c.grants.is_admin();
    let rows: Vec<Value> = rbac::table()
        .into_iter()
        .filter(|(role, _, _)| admin || !rbac::is_admin_role(role))
        .map(|(role, resource, action)| json!({"role": role, "resource": resource, "action": action}))
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

async fn role_show(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let admin = c.grants.is_admin();
    let roles: Vec<&str> = rbac::ROLES
        .iter()
        .copied()
        .filter(|r| admin || !rbac::is_admin_role(r))
        .collect();
    Ok(HttpResponse::Ok().json(roles))
}

// ----------------------------------------------------------------------------- regions

#[derive(Default, Deserialize, Serialize, sqlx::FromRow)]
pub struct Controller {
    #[serde(default, rename = "Region", alias = "region")]
    pub region: String,
    #[serde(default, rename = "Address", alias = "address")]
    pub address: String,
    #[serde(default, rename = "NotifyAddr", alias = "notifyaddr")]
    pub notify_addr: String,
    #[serde(default, rename = "InfluxDB", alias = "influxdb")]
    pub influxdb: String,
    /// PEM of the region's CA; empty at registration: taken from the region's PKI in Vault, if any
    #[serde(default, rename = "CaCert", alias = "cacert")]
    pub ca_cert: String,
    /// Name in the controller's certificate [default: controller.<region>.edge]
    #[serde(default, rename = "ServerName", alias = "servername")]
    pub server_name: String,
}

async fn controller_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Controller>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        require(&c, rbac::CONTROLLERS, rbac::MANAGE, "")?;
        if body.region.is_empty() {
            return Err(ApiError::bad_request("Controller Region not specified"));
        }
        check_name("Region", &body.region)?;
        if body.address.is_empty() {
            return Err(ApiError::bad_request("Controller Address not specified"));
        }
        if !body.address.contains(':') {
            return Err(ApiError::bad_request(format!(
                "Invalid Address \"{}\": host:port",
                body.address
            )));
        }
        // mTLS to the controller: the CA given, else the region's CA in Vault; none means plaintext.
        let ca = if body.ca_cert.is_empty() {
            match mc.pki().region_ca(&body.region).await {
                Ok(ca) => ca,
                Err(edge_common::pki::PkiError::Invalid(_)) => String::new(),
                Err(e) => {
                    tracing::error!(error = %e, "reading the region's CA");
                    return Err(ApiError::unavailable("Vault is unavailable, retry later"));
                }
            }
        } else if body.ca_cert.contains("-----BEGIN CERTIFICATE-----") {
            body.ca_cert.clone()
        } else {
            return Err(ApiError::bad_request(
                "Invalid CaCert: a PEM certificate (-----BEGIN CERTIFICATE-----) is expected",
            ));
        };
        let server_name = if body.server_name.is_empty() {
            edge_common::pki::controller_server_name(&body.region)
        } else {
            body.server_name.clone()
        };
        let r = sqlx::query("INSERT INTO controllers (region, address, notify_addr, influxdb, ca_cert, server_name) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&body.region)
            .bind(&body.address)
            .bind(&body.notify_addr)
            .bind(&body.influxdb)
            .bind(ca)
            .bind(server_name)
            .execute(&mc.db)
            .await;
        conflict_on_unique(r, || {
            format!("Controller for region {} already exists", body.region)
        })?;
        Ok(ok("Controller registered"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

async fn controller_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: Json<Controller>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        require(&c, rbac::CONTROLLERS, rbac::MANAGE, "")?;
        let n = sqlx::query("DELETE FROM controllers WHERE region = $1")
            .bind(&body.region)
            .execute(&mc.db)
            .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!(
                "Region \"{}\" not found",
                body.region
            )));
        }
        Ok(ok("Controller deregistered"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

async fn controller_show(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let filter = ShowFilter::parse(&body, "Controller", &as_value(&Controller::default()), &[])?;
    let rows: Vec<Controller> = sqlx::query_as(
        "SELECT region, address, notify_addr, influxdb, ca_cert, server_name FROM controllers ORDER BY region",
    )
    .fetch_all(&mc.db)
    .await?;
    // Without controllers:view a caller learns only the region names.
    let full = c.grants.allows(rbac::CONTROLLERS, rbac::VIEW, "");
    let rows: Vec<Controller> = rows
        .into_iter()
        .map(|r| {
            if full {
                r
            } else {
                Controller {
                    region: r.region,
                    address: String::new(),
                    notify_addr: String::new(),
                    influxdb: String::new(),
                    ca_cert: String::new(),
                    server_name: String::new(),
                }
            }
        })
        .filter(|r| filter.keeps(r))
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

// ----------------------------------------------------------------------------- audit

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    org: String,
    /// RFC 3339; default: 48 h before `endtime`
    #[serde(default)]
    starttime: Option<String>,
    /// RFC 3339; default: now
    #[serde(default)]
    endtime: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// One audit entry as shown: times in microseconds, as MobiledgeX showed them.
#[derive(Serialize, sqlx::FromRow)]
struct AuditRow {
    operationname: String,
    username: String,
    org: String,
    region: String,
    clientip: String,
    status: i32,
    starttime: i64,
    duration: i64,
    request: Option<Value>,
    response: String,
}

async fn audit_show(
    mc: &Mc,
    q: &AuditQuery,
    user: Option<&str>,
    org: Option<&str>,
) -> Result<HttpResponse> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT operation AS operationname, username, org, region, client_ip AS clientip, status,
                (extract(epoch FROM start_time) * 1000000)::int8 AS starttime, duration_ms * 1000 AS duration,
                request, response
         FROM audit
         WHERE ($1::text IS NULL OR username = $1) AND ($2::text IS NULL OR org = $2)
           AND start_time <= coalesce($4::timestamptz, now())
           AND start_time >= coalesce($3::timestamptz, coalesce($4::timestamptz, now()) - interval '48 hours')
         ORDER BY start_time DESC, id DESC LIMIT $5",
    )
    .bind(user)
    .bind(org)
    .bind(q.starttime.as_deref())
    .bind(q.endtime.as_deref())
    .bind(q.limit.unwrap_or(100).clamp(1, 10_000))
    .fetch_all(&mc.db)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("22007" | "22008")) => {
            ApiError::bad_request(format!("invalid starttime or endtime (RFC 3339 expected): {}", d.message()))
        }
        other => other.into(),
    })?;
    Ok(HttpResponse::Ok().json(rows))
}

async fn audit_self(
    mc: web::Data<Mc>,
    req: HttpRequest,
    q: Option<Json<AuditQuery>>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    audit_show(
        &mc,
        &q.map(|q| q.0).unwrap_or_default(),
        Some(&c.username),
        None,
    )
    .await
}

async fn audit_org(
    mc: web::Data<Mc>,
    req: HttpRequest,
    q: Json<AuditQuery>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    if q.org.is_empty() {
        require(&c, rbac::USERS, rbac::VIEW, "")?;
        return audit_show(&mc, &q, None, None).await;
    }
    require(&c, rbac::USERS, rbac::VIEW, &q.org)?;
    audit_show(&mc, &q, None, Some(&q.org)).await
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

/// Declares the REST routes once: [`ROUTES`] lists them (the OpenAPI test and the RBAC matrix test read
/// it) and `register` installs them.
macro_rules! route_table {
    ($($path:literal => $handler:path,)*) => {
        /// Every `POST /api/v1...` route.
        pub const ROUTES: &[&str] = &[$($path),*];
        fn register(cfg: &mut web::ServiceConfig) {
            $(cfg.route(concat!("/api/v1", $path), web::post().to($handler));)*
        }
    };
}

route_table! {
    "/login" => login,
    "/usercreate" => user_create,
    "/auth/user/current" => user_current,
    "/auth/user/newpass" => user_newpass,
    "/auth/user/show" => user_show,
    "/auth/user/delete" => user_delete,
    "/auth/user/update" => user_update,
    "/auth/restricted/user/update" => restricted_user_update,
    "/auth/user/create/apikey" => apikey_create,
    "/auth/user/delete/apikey" => apikey_delete,
    "/auth/user/show/apikey" => apikey_show,
    "/auth/org/create" => org_create,
    "/auth/org/update" => org_update,
    "/auth/org/delete" => org_delete,
    "/auth/org/show" => org_show,
    "/auth/role/adduser" => role_adduser,
    "/auth/role/removeuser" => role_removeuser,
    "/auth/role/assignment/show" => role_assignments,
    "/auth/role/perms/show" => role_perms,
    "/auth/role/show" => role_show,
    "/auth/controller/create" => controller_create,
    "/auth/controller/delete" => controller_delete,
    "/auth/controller/show" => controller_show,
    "/auth/audit/showself" => audit_self,
    "/auth/audit/showorg" => audit_org,
    "/auth/ctrl/{method}" => crate::ctrl::forward,
    "/auth/alert/show" => crate::ctrl::show_alert,
    "/auth/alertreceiver/create" => crate::alerts::receiver_create,
    "/auth/alertreceiver/delete" => crate::alerts::receiver_delete,
    "/auth/alertreceiver/show" => crate::alerts::receiver_show,
    "/auth/metrics/app" => crate::monitor::metrics_app,
    "/auth/metrics/cluster" => crate::monitor::metrics_cluster,
    "/auth/metrics/cloudlet" => crate::monitor::metrics_cloudlet,
    "/auth/events/app" => crate::monitor::events_app,
    "/auth/events/cluster" => crate::monitor::events_cluster,
    "/auth/events/cloudlet" => crate::monitor::events_cloudlet,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(|| async { "ok\n" }))
        .route("/readyz", web::get().to(readyz))
        .route("/api/v1/openapi.json", web::get().to(crate::openapi::serve));
    register(cfg);
    cfg.default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("Not Found"))
    }));
}
