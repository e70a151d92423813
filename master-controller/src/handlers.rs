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

/// Checks the bearer token and loads what the caller may do (an API-key session: only the key's
/// permissions in its org).
pub async fn caller(mc: &Mc, req: &HttpRequest) -> Result<Caller> {
    let token = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("No bearer token found"))?;
    let claims = mc.tokens.verify(token.trim())?;
    let by_key = claims.authtype == "apikeyauth";
    let username = if by_key {
        claims.apikeyusername.clone()
    } else {
        claims.username.clone()
    };
    let email: Option<(String,)> = sqlx::query_as("SELECT email FROM users WHERE name = $1")
        .bind(&username)
        .fetch_optional(&mc.db)
        .await?;
    let Some((email,)) = email else {
        return Err(ApiError::unauthorized("Invalid or expired jwt"));
    };
    let grants = if by_key {
        let key: Option<(String, Value)> =
            sqlx::query_as("SELECT org, permissions FROM api_keys WHERE id = $1 AND username = $2")
                .bind(&claims.username)
                .bind(&username)
                .fetch_optional(&mc.db)
                .await?;
        let (org, perms) = key.ok_or_else(|| ApiError::unauthorized("Invalid or expired jwt"))?;
        let perms: Vec<Perm> = serde_json::from_value(perms).unwrap_or_default();
        let mut g = Grants::default();
        g.0.insert(
            org,
            perms.into_iter().map(|p| (p.resource, p.action)).collect(),
        );
        g
    } else {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT org, role FROM roles WHERE username = $1")
                .bind(&username)
                .fetch_all(&mc.db)
                .await?;
        Grants::from_roles(rows)
    };
    Ok(Caller {
        username,
        email,
        grants,
        client_ip: client_ip(req),
        api_key: by_key.then_some(claims.username),
    })
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

/// Names of users, organizations and regions (MobiledgeX's rules).
pub fn check_name(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("{field} not specified")));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid {field} \"{v}\": name can only contain letters, digits, _ . -"
        )));
    }
    if v.starts_with(['.', '-']) || v.ends_with('.') || v.len() > 59 {
        return Err(ApiError::bad_request(format!(
            "Invalid {field} \"{v}\": at most 59 characters, not starting with . or - nor ending with ."
        )));
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

async fn login(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<Login>,
) -> Result<HttpResponse> {
    let by_key = !body.apikeyid.is_empty() || !body.apikey.is_empty();
    let who = if by_key {
        format!("apikey:{}", body.apikeyid)
    } else {
        format!("user:{}", body.username)
    };
    let keys = [who, format!("ip:{}", client_ip(&req))];
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
        mc.throttle.check(&keys)?;
        let found: Option<(String, String, String)> = if by_key {
            sqlx::query_as(
                "SELECT u.name, u.email, k.keyhash FROM api_keys k JOIN users u ON u.name = k.username WHERE k.id = $1",
            )
            .bind(&body.apikeyid)
            .fetch_optional(&mc.db)
            .await?
        } else {
            // The user name or the email.
            sqlx::query_as("SELECT name, email, passhash FROM users WHERE name = $1 OR email = $1")
                .bind(&body.username)
                .fetch_optional(&mc.db)
                .await?
        };
        let secret = if by_key { &body.apikey } else { &body.password };
        match found {
            Some((name, email, hash)) if auth::verify(secret, &hash) => {
                mc.throttle.succeeded(&keys);
                let token =
                    mc.tokens
                        .issue(&name, &email, if by_key { &body.apikeyid } else { "" });
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
            }
            _ => {
                mc.throttle.failed(&keys);
                tokio::time::sleep(mc.bad_auth_delay).await;
                Err(ApiError::bad_request(if by_key {
                    "Invalid ApiKey or ApiKeyId"
                } else {
                    "Invalid username or password"
                }))
            }
        }
    };
    audited(&mc, &req, &body.username, "", &as_value(&*body), call).await
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
    body: web::Json<NewUser>,
) -> Result<HttpResponse> {
    let call = async {
        check_name("Name", &body.name)?;
        if !body.email.contains('@') || body.email.len() > 254 {
            return Err(ApiError::bad_request("Invalid email address"));
        }
        auth::check_password(&body.name, &body.passhash)?;
        let r = sqlx::query("INSERT INTO users (name, email, passhash) VALUES ($1, $2, $3)")
            .bind(&body.name)
            .bind(&body.email)
            .bind(auth::hash(&body.passhash))
            .execute(&mc.db)
            .await;
        conflict_on_unique(r, || {
            format!(
                "User with name {} or email {} already exists",
                body.name, body.email
            )
        })?;
        Ok(HttpResponse::Ok()
            .json(json!({"Message": "user created", "TOTPSharedKey": "", "TOTPQRImage": null})))
    };
    audited(&mc, &req, &body.name, "", &as_value(&*body), call).await
}

#[derive(Serialize, sqlx::FromRow)]
struct UserOut {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Email")]
    email: String,
}

async fn user_current(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    Ok(HttpResponse::Ok().json(UserOut {
        name: c.username,
        email: c.email,
    }))
}

#[derive(Deserialize, Serialize)]
struct NewPass {
    #[serde(default)]
    currentpassword: String,
    #[serde(default)]
    password: String,
}

async fn user_newpass(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<NewPass>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
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
        if !auth::verify(&body.currentpassword, &hash) {
            tokio::time::sleep(mc.bad_auth_delay).await;
            return Err(ApiError::bad_request("Invalid current password"));
        }
        auth::check_password(&c.username, &body.password)?;
        sqlx::query("UPDATE users SET passhash = $2, updated_at = now() WHERE name = $1")
            .bind(&c.username)
            .bind(auth::hash(&body.password))
            .execute(&mc.db)
            .await?;
        Ok(ok("Password updated"))
    };
    audited(&mc, &req, &c.username, "", &as_value(&*body), call).await
}

async fn user_show(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let users: Vec<UserOut> = match c.grants.viewable_orgs(rbac::USERS) {
        None => {
            sqlx::query_as("SELECT name, email FROM users ORDER BY name")
                .fetch_all(&mc.db)
                .await?
        }
        Some(orgs) if orgs.is_empty() => return Err(ApiError::forbidden()),
        Some(orgs) => {
            let orgs: Vec<String> = orgs.into_iter().collect();
            sqlx::query_as(
                "SELECT DISTINCT u.name, u.email FROM users u JOIN roles r ON r.username = u.name
                 WHERE r.org = ANY($1) ORDER BY u.name",
            )
            .bind(&orgs)
            .fetch_all(&mc.db)
            .await?
        }
    };
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
    body: web::Json<NameOnly>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
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
    body: web::Json<NewApiKey>,
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
        let held = c
            .grants
            .0
            .get(&body.org)
            .ok_or_else(|| ApiError::bad_request("Invalid org specified"))?;
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
        let id = hex(&edge_common::vault::random_bytes(16));
        let key = hex(&edge_common::vault::random_bytes(24));
        sqlx::query("INSERT INTO api_keys (id, username, org, permissions, keyhash, description) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(&c.username)
            .bind(&body.org)
            .bind(as_value(&perms))
            .bind(auth::hash(&key))
            .bind(&body.description)
            .execute(&mc.db)
            .await?;
        Ok(HttpResponse::Ok().json(
            json!({ "Id": id, "ApiKey": key, "Org": body.org, "Description": body.description }),
        ))
    };
    audited(&mc, &req, &c.username, &body.org, &as_value(&*body), call).await
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Deserialize, Serialize)]
struct KeyId {
    #[serde(default, rename = "Id", alias = "id")]
    id: String,
}

async fn apikey_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<KeyId>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        if body.id.is_empty() {
            return Err(ApiError::bad_request("Missing API key ID"));
        }
        let owner: Option<(String,)> =
            sqlx::query_as("SELECT username FROM api_keys WHERE id = $1")
                .bind(&body.id)
                .fetch_optional(&mc.db)
                .await?;
        let Some((owner,)) = owner else {
            return Err(ApiError::not_found("API key ID not found"));
        };
        if owner != c.username && !c.grants.allows(rbac::USERS, rbac::MANAGE, "") {
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

async fn apikey_show(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let rows: Vec<(String, String, String, Value)> = sqlx::query_as(
        "SELECT id, org, description, permissions FROM api_keys WHERE username = $1 OR $2 ORDER BY id",
    )
    .bind(&c.username)
    .bind(c.grants.allows(rbac::USERS, rbac::MANAGE, ""))
    .fetch_all(&mc.db)
    .await?;
    let keys: Vec<Value> = rows
        .into_iter()
        .map(|(id, org, d, p)| json!({"Id": id, "Org": org, "Description": d, "permissions": p}))
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

// ----------------------------------------------------------------------------- organizations

#[derive(Deserialize, Serialize, sqlx::FromRow)]
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

async fn org_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<Org>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
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
            format!("Organization with name {} already exists", body.name)
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

async fn org_delete(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<NameOnly>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let call = async {
        if body.name.is_empty() {
            return Err(ApiError::bad_request("Organization name not specified"));
        }
        require(&c, rbac::USERS, rbac::MANAGE, &body.name)?;
        let mut tx = mc.db.begin().await?;
        let n = sqlx::query("DELETE FROM organizations WHERE name = $1")
            .bind(&body.name)
            .execute(&mut *tx)
            .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found("Organization not found"));
        }
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

async fn org_show(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
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
                // Non-admins learn nothing about organizations they are not in.
                if !c.grants.is_admin() {
                    return Err(ApiError::forbidden());
                }
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
    body: web::Json<Role>,
) -> Result<HttpResponse> {
    role_change(&mc, &req, &body, true).await
}

async fn role_removeuser(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<Role>,
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

#[derive(Deserialize, Serialize, sqlx::FromRow)]
pub struct Controller {
    #[serde(default, rename = "Region", alias = "region")]
    pub region: String,
    #[serde(default, rename = "Address", alias = "address")]
    pub address: String,
    #[serde(default, rename = "NotifyAddr", alias = "notifyaddr")]
    pub notify_addr: String,
    #[serde(default, rename = "InfluxDB", alias = "influxdb")]
    pub influxdb: String,
}

async fn controller_create(
    mc: web::Data<Mc>,
    req: HttpRequest,
    body: web::Json<Controller>,
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
        let r = sqlx::query("INSERT INTO controllers (region, address, notify_addr, influxdb) VALUES ($1, $2, $3, $4)")
            .bind(&body.region)
            .bind(&body.address)
            .bind(&body.notify_addr)
            .bind(&body.influxdb)
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
    body: web::Json<Controller>,
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

async fn controller_show(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    let rows: Vec<Controller> = sqlx::query_as(
        "SELECT region, address, notify_addr, influxdb FROM controllers ORDER BY region",
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
                }
            }
        })
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
    q: Option<web::Json<AuditQuery>>,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    audit_show(
        &mc,
        &q.map(|q| q.into_inner()).unwrap_or_default(),
        Some(&c.username),
        None,
    )
    .await
}

async fn audit_org(
    mc: web::Data<Mc>,
    req: HttpRequest,
    q: web::Json<AuditQuery>,
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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(|| async { "ok\n" }))
        .route("/readyz", web::get().to(readyz))
        .route("/api/v1/openapi.json", web::get().to(crate::openapi::serve))
        .route("/api/v1/login", web::post().to(login))
        .route("/api/v1/usercreate", web::post().to(user_create))
        .route("/api/v1/auth/user/current", web::post().to(user_current))
        .route("/api/v1/auth/user/newpass", web::post().to(user_newpass))
        .route("/api/v1/auth/user/show", web::post().to(user_show))
        .route("/api/v1/auth/user/delete", web::post().to(user_delete))
        .route(
            "/api/v1/auth/user/create/apikey",
            web::post().to(apikey_create),
        )
        .route(
            "/api/v1/auth/user/delete/apikey",
            web::post().to(apikey_delete),
        )
        .route("/api/v1/auth/user/show/apikey", web::post().to(apikey_show))
        .route("/api/v1/auth/org/create", web::post().to(org_create))
        .route("/api/v1/auth/org/delete", web::post().to(org_delete))
        .route("/api/v1/auth/org/show", web::post().to(org_show))
        .route("/api/v1/auth/role/adduser", web::post().to(role_adduser))
        .route(
            "/api/v1/auth/role/removeuser",
            web::post().to(role_removeuser),
        )
        .route(
            "/api/v1/auth/role/assignment/show",
            web::post().to(role_assignments),
        )
        .route("/api/v1/auth/role/perms/show", web::post().to(role_perms))
        .route("/api/v1/auth/role/show", web::post().to(role_show))
        .route(
            "/api/v1/auth/controller/create",
            web::post().to(controller_create),
        )
        .route(
            "/api/v1/auth/controller/delete",
            web::post().to(controller_delete),
        )
        .route(
            "/api/v1/auth/controller/show",
            web::post().to(controller_show),
        )
        .route("/api/v1/auth/audit/showself", web::post().to(audit_self))
        .route("/api/v1/auth/audit/showorg", web::post().to(audit_org))
        .route(
            "/api/v1/auth/ctrl/{method}",
            web::post().to(crate::ctrl::forward),
        )
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::not_found("Not Found"))
        }));
}
