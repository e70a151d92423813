//! The web console at `/console/`: server-rendered pages for developers, operators and admins.
//!
//! The console has no rules of its own. A login goes through the REST login (throttling, lockout and the
//! audit log included); every page reads through the REST handlers with the session's [`Caller`], so
//! RBAC, show filtering and error texts are the API's. Its forms are posted as JSON by `console.js` to
//! the same handlers, mounted a second time under [`API`] behind [`authenticate`]: the session cookie and
//! an `X-CSRF-Token` header instead of a bearer token.
//!
//! Session: a random id in an `HttpOnly; Secure; SameSite=Strict` cookie scoped to `/console`; the
//! database keeps only its SHA-256 (`console_sessions`), so logout ends it for good. It also ends with
//! the login token's lifetime, and when the user's password changes or the account is locked. CSRF:
//! every POST carries the session's token (a form field or the header); the login form uses a
//! double-submit cookie.

mod pages;

use std::fmt::Write;

use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use edge_common::proto_json;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Mc;
use crate::api::{self, Caller};
use crate::error::{ApiError, Result};

/// Where the REST API's `/auth` routes are mounted for the console's scripts.
pub const API: &str = "/console/api/auth";
const SESSION: &str = "edge_session";
const LOGIN_CSRF: &str = "edge_login";
const ORG: &str = "edge_org";
const REGION: &str = "edge_region";
/// Rows per page of a list.
const PAGE: usize = 20;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .route("", web::get().to(home))
            .route("/", web::get().to(home))
            .route("/login", web::get().to(login_page))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/select", web::post().to(select))
            .route("/console.css", web::get().to(|| asset("text/css", CSS)))
            .route(
                "/console.js",
                web::get().to(|| asset("text/javascript", SCRIPT)),
            )
            .route("/{page}", web::get().to(pages::render)),
    );
}

const CSS: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

async fn asset(kind: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

// ----------------------------------------------------------------------------- sessions

/// A logged-in console user.
pub(crate) struct Session {
    id_hash: Vec<u8>,
    pub csrf: String,
    pub caller: Caller,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("the system's random source");
    b.iter().fold(String::with_capacity(64), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn sha256(s: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .to_vec()
}

/// The value of cookie `name` of the request.
fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console's paths; `max_age` 0 removes the cookie.
fn set_cookie(name: &str, value: &str, path: &str, max_age: i64) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
        ),
    )
}

fn same(a: &str, b: &str) -> bool {
    !b.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The request's session: `None` when there is no cookie, or its session ended (logout, expiry, changed
/// password, locked or deleted account).
pub(crate) async fn session(mc: &Mc, req: &HttpRequest) -> Result<Option<Session>> {
    let Some(id) = cookie(req, SESSION) else {
        return Ok(None);
    };
    let id_hash = sha256(id);
    let row: Option<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT username, uid, token_gen, csrf FROM console_sessions
         WHERE id_hash = $1 AND expires_at > now()",
    )
    .bind(&id_hash)
    .fetch_optional(&mc.db)
    .await?;
    let Some((username, uid, token_gen, csrf)) = row else {
        return Ok(None);
    };
    match api::account_caller(mc, &username, uid, token_gen, req).await {
        Ok(caller) => Ok(Some(Session {
            id_hash,
            csrf,
            caller,
        })),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                .bind(&id_hash)
                .execute(&mc.db)
                .await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Authenticates the console's calls of the REST handlers under [`API`]: the session cookie and its
/// CSRF token in `X-CSRF-Token`.
pub(crate) async fn authenticate(
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
    let s = session(&mc, req.request()).await?.ok_or_else(|| {
        ApiError::unauthorized("Your console session has ended, please log in again")
    })?;
    let sent = req
        .headers()
        .get("X-CSRF-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !same(&s.csrf, sent) {
        return Err(ApiError::forbidden_msg("Missing or wrong CSRF token, reload the page").into());
    }
    req.extensions_mut().insert(s.caller);
    next.call(req).await
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

async fn home(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    Ok(match session(&mc, &req).await? {
        Some(_) => redirect("/console/appinsts"),
        None => redirect("/console/login"),
    })
}

async fn login_page(mc: web::Data<Mc>, req: HttpRequest) -> Result<HttpResponse> {
    if session(&mc, &req).await?.is_some() {
        return Ok(redirect("/console/appinsts"));
    }
    Ok(login_form(StatusCode::OK, "", ""))
}

fn login_form(status: StatusCode, username: &str, error: &str) -> HttpResponse {
    let csrf = random_token();
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p class="form-error" id="login-error">{}</p>"#,
            esc(error)
        )
    };
    let body = format!(
        r#"<main class="login"><h1>Edge Cloud console</h1>
<form method="post" action="/console/login" class="card">{error}
<input type="hidden" name="csrf" value="{csrf}">
<label>User name or email<input name="username" id="username" autocomplete="username" value="{}" required></label>
<label>Password<input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login">Log in</button></form></main>"#,
        esc(username)
    );
    let mut r = HttpResponse::build(status);
    r.insert_header(set_cookie(LOGIN_CSRF, &csrf, "/console/login", 3600));
    document(r, "Log in", "", &body)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Logs in through the REST login and opens a session for the token's account.
async fn login(
    mc: web::Data<Mc>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse> {
    let form = form.into_inner();
    if !same(cookie(&req, LOGIN_CSRF).unwrap_or_default(), &form.csrf) {
        return Ok(login_form(
            StatusCode::FORBIDDEN,
            &form.username,
            "The login form expired, please try again",
        ));
    }
    let body = json!({"username": form.username, "password": form.password});
    let body = serde_json::from_value(body).expect("a login request");
    let reply = match api::accounts::login(mc.clone(), req.clone(), crate::json::Json(body)).await {
        Ok(r) => json_body(r).await?,
        Err(e) => return Ok(login_form(e.status, &form.username, &e.message)),
    };
    let token = reply["token"].as_str().unwrap_or_default();
    let claims = mc.tokens.verify(token)?;
    let (id, csrf) = (random_token(), random_token());
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, username, uid, token_gen, csrf, expires_at)
         VALUES ($1, $2, $3, $4, $5, to_timestamp($6))",
    )
    .bind(sha256(&id))
    .bind(&claims.username)
    .bind(claims.uid)
    .bind(claims.token_gen)
    .bind(&csrf)
    .bind(claims.exp as f64)
    .execute(&mc.db)
    .await?;
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
        .execute(&mc.db)
        .await?;
    let ttl = claims.exp - claims.iat;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/appinsts"))
        .insert_header(set_cookie(SESSION, &id, "/console", ttl))
        .append_header(set_cookie(LOGIN_CSRF, "", "/console/login", 0))
        .finish())
}

#[derive(Deserialize)]
struct PostForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    next: String,
}

/// The session of a console form post, with its CSRF token checked.
async fn posted(mc: &Mc, req: &HttpRequest, form: &PostForm) -> Result<Option<Session>> {
    let s = session(mc, req).await?;
    match s {
        Some(s) if same(&s.csrf, &form.csrf) => Ok(Some(s)),
        Some(_) => Err(ApiError::forbidden_msg(
            "Missing or wrong CSRF token, reload the page",
        )),
        None => Ok(None),
    }
}

async fn logout(
    mc: web::Data<Mc>,
    req: HttpRequest,
    form: web::Form<PostForm>,
) -> Result<HttpResponse> {
    if let Some(s) = posted(&mc, &req, &form).await? {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(&s.id_hash)
            .execute(&mc.db)
            .await?;
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/login"))
        .insert_header(set_cookie(SESSION, "", "/console", 0))
        .finish())
}

/// The org switcher and region picker: remembered in cookies (a choice the user may not make is
/// ignored when a page is built).
async fn select(
    mc: web::Data<Mc>,
    req: HttpRequest,
    form: web::Form<PostForm>,
) -> Result<HttpResponse> {
    if posted(&mc, &req, &form).await?.is_none() {
        return Ok(redirect("/console/login"));
    }
    let next = if form.next.starts_with("/console/") && !form.next.contains("//") {
        form.next.as_str()
    } else {
        "/console/appinsts"
    };
    let year = 365 * 24 * 3600;
    let mut r = HttpResponse::SeeOther();
    r.insert_header((header::LOCATION, next));
    if let Some(org) = &form.org {
        r.append_header(set_cookie(ORG, &url_safe(org), "/console", year));
    }
    if let Some(region) = &form.region {
        r.append_header(set_cookie(REGION, &url_safe(region), "/console", year));
    }
    Ok(r.finish())
}

/// Names are letters, digits and `_ . -`; anything else is dropped from a cookie value.
fn url_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

// ----------------------------------------------------------------------------- calling the API

/// The JSON body of a handler's reply.
async fn json_body(r: HttpResponse) -> Result<Value> {
    let bytes = actix_web::body::to_bytes(r.into_body())
        .await
        .map_err(|_| ApiError::internal("reading a reply"))?;
    crate::json::value(&bytes)
}

/// A handler's reply parsed as `T`.
async fn call<T: DeserializeOwned>(r: Result<HttpResponse>) -> Result<T> {
    serde_json::from_value(json_body(r?).await?)
        .map_err(|e| ApiError::internal(format!("an unexpected reply: {e}")))
}

/// The objects a region's `Show<Kind>` returns to the caller (RBAC-filtered by the API; its enum names are
/// read back as numbers).
async fn show<T: DeserializeOwned + prost::Name>(
    mc: &web::Data<Mc>,
    req: &HttpRequest,
    c: &Caller,
    region: &str,
    kind: &str,
    filter: Value,
) -> Result<Vec<T>> {
    let body = json!({ "Region": region, kind: filter });
    let r = api::ctrl::forward(
        mc.clone(),
        req.clone(),
        c.clone(),
        web::Path::from(format!("Show{kind}")),
        Bytes::from(body.to_string()),
    )
    .await?;
    let bytes = actix_web::body::to_bytes(r.into_body())
        .await
        .map_err(|_| ApiError::internal("reading a reply"))?;
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut v: Value = crate::json::value(line)?;
        if let Some(r) = v.get("result") {
            return Err(ApiError::internal(
                r["message"].as_str().unwrap_or_default().to_string(),
            ));
        }
        out.push(
            proto_json::from_json(&mut v["data"], kind)
                .map_err(|e| ApiError::internal(format!("an unexpected {kind}: {e}")))?,
        );
    }
    Ok(out)
}

// ----------------------------------------------------------------------------- HTML

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page as the reply `r`; `head` goes into `<head>` (the CSRF token). Pages are never cached,
/// never framed, and load only the console's own script and stylesheet.
fn document(
    mut r: actix_web::HttpResponseBuilder,
    title: &str,
    head: &str,
    body: &str,
) -> HttpResponse {
    r.content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Edge Cloud</title><link rel="stylesheet" href="/console/console.css">{head}
<script src="/console/console.js" defer></script></head><body>{body}</body></html>"#,
            esc(title)
        ))
}
