//! The web console's sessions and its API mount, over HTTP (the browser-driven test is in e2e/): cookie
//! flags, login CSRF, the CSRF header on every call, the same RBAC as the REST API, and what ends a
//! session (logout, a password change, a lock).

use crate::common::*;
use serde_json::{Value, json};

/// A browser-like client of the console: follows no redirects and keeps the cookies it is given.
struct Console {
    http: reqwest::Client,
    root: String,
    cookies: Vec<(String, String)>,
}

impl Console {
    fn new(p: &Platform) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            root: format!("http://{}", p.mc.addr),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps the response's cookies (a `Max-Age=0` one is dropped); returns the `Set-Cookie` lines.
    fn keep(&mut self, r: &reqwest::Response) -> Vec<String> {
        let lines: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for l in &lines {
            let (name, value) = l.split(';').next().unwrap().split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !l.contains("Max-Age=0") {
                self.cookies.push((name.into(), value.into()));
            }
        }
        lines
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.root))
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let status = r.status().as_u16();
        let location = header(&r, "location");
        (status, location, r.text().await.unwrap())
    }

    async fn form(&mut self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.root))
            .header("Cookie", self.cookie_header())
            .form(fields)
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let status = r.status().as_u16();
        let location = header(&r, "location");
        (status, location, r.text().await.unwrap())
    }

    /// A REST call through the console's mount, with the session cookie and `csrf` as the header.
    async fn api(&self, path: &str, csrf: Option<&str>, body: Value) -> (u16, String) {
        let mut r = self
            .http
            .post(format!("{}/console/api/auth{path}", self.root))
            .header("Cookie", self.cookie_header())
            .json(&body);
        if let Some(t) = csrf {
            r = r.header("X-CSRF-Token", t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn log_in(&mut self, user: &str, password: &str) -> (u16, String, String) {
        let (_, _, page) = self.get("/console/login").await;
        let csrf = between(&page, r#"name="csrf" value=""#, "\"");
        self.form(
            "/console/login",
            &[("username", user), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    /// The session's CSRF token, from a page.
    async fn csrf(&mut self) -> String {
        let (s, _, page) = self.get("/console/apps").await;
        assert_eq!(s, 200, "{page}");
        between(&page, r#"<meta name="csrf-token" content=""#, "\"")
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len();
    text[from..].split(end).next().unwrap().to_string()
}

/// A CreateApp request for region A.
fn create_app(org: &str, name: &str) -> Value {
    json!({"Region": "A", "App": app(org, name)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_are_strict_cookies_with_csrf_and_end_at_logout_password_change_or_lock() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    admin.create_small_flavor("A").await;
    let alice = p.user("alice").await;
    let (s, b) = alice
        .post(
            "/auth/org/create",
            json!({"Name": "aorg", "Type": "developer"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mallory = p.user("mallory").await;
    let (s, b) = mallory
        .post(
            "/auth/org/create",
            json!({"Name": "morg", "Type": "developer"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // A user of no organization is told how to get one, on every region page.
    let _loner = p.user("loner").await;
    let mut lone = Console::new(&p);
    assert_eq!(lone.log_in("loner", PASSWORD).await.0, 303);
    let (s, _, html) = lone.get("/console/apps").await;
    assert!(s == 200 && html.contains(r#"id="no-org""#), "{html}");

    // Pages need a session.
    let mut c = Console::new(&p);
    assert_eq!(c.get("/console/apps").await.1, "/console/login");

    // The login form is a double submit: without the cookie it carries, a post is refused.
    let (s, _, page) = Console::new(&p)
        .form(
            "/console/login",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("csrf", "guess"),
            ],
        )
        .await;
    assert_eq!(s, 403);
    assert!(page.contains("The login form expired"), "{page}");
    let (s, _, page) = c.log_in("alice", "wrong-password").await;
    assert_eq!(s, 400);
    assert!(page.contains("Invalid username or password"), "{page}");

    let (_, _, page) = c.get("/console/login").await;
    let csrf = between(&page, r#"name="csrf" value=""#, "\"");
    let r = c
        .http
        .post(format!("{}/console/login", c.root))
        .header("Cookie", c.cookie_header())
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(header(&r, "location"), "/console/appinsts");
    let set = c.keep(&r);
    let session = set
        .iter()
        .find(|l| l.starts_with("edge_session="))
        .expect("a session cookie");
    for flag in ["Path=/console", "HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    let id = between(session, "edge_session=", ";");
    // Only the SHA-256 of the cookie is stored.
    let db = p.db().await;
    let (plain, hashed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE encode(id_hash, 'hex') = $1),
                count(*) FILTER (WHERE id_hash = sha256(convert_to($1, 'UTF8')))
         FROM console_sessions",
    )
    .bind(&id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((plain, hashed), (0, 1));

    // Every page renders for the user, who sees their org in the switcher.
    for page in [
        "cloudlets",
        "clusters",
        "apps",
        "appinsts",
        "flavors",
        "monitoring",
        "access",
        "audit",
    ] {
        let (s, _, html) = c.get(&format!("/console/{page}")).await;
        assert_eq!(s, 200, "{page}: {html}");
        assert!(
            html.contains(r#"<option value="aorg">aorg (developer)</option>"#),
            "{page}: {html}"
        );
        assert!(!html.contains("morg"), "{page} shows another org: {html}");
    }
    assert_eq!(c.get("/console/nothing").await.0, 404);

    // Long lists come in pages of 20.
    for n in 0..25 {
        let flavor =
            json!({"key": {"name": format!("f{n:02}")}, "vcpus": 1, "ram": 512, "disk": 1});
        assert_eq!(
            admin.ctrl("CreateFlavor", "A", "Flavor", flavor).await.0,
            200
        );
    }
    let (_, _, first) = c.get("/console/flavors").await;
    assert!(
        first.contains("Page 1 of 2") && first.contains("<td>f00</td>"),
        "{first}"
    );
    assert!(!first.contains("<td>small</td>"), "{first}");
    let (_, _, second) = c.get("/console/flavors?page=2").await;
    assert!(
        second.contains("Page 2 of 2") && second.contains("<td>small</td>"),
        "{second}"
    );
    assert!(!second.contains("<td>f00</td>"), "{second}");

    // The REST handlers behind the console: the CSRF header is required, then the API's own rules.
    let token = c.csrf().await;
    assert_eq!(
        c.api("/ctrl/CreateApp", None, create_app("aorg", "a1"))
            .await
            .0,
        403
    );
    assert_eq!(
        c.api("/ctrl/CreateApp", Some("forged"), create_app("aorg", "a1"))
            .await
            .0,
        403
    );
    let (s, b) = c
        .api("/ctrl/CreateApp", Some(&token), create_app("aorg", "a1"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = c
        .api("/ctrl/CreateApp", Some(&token), create_app("morg", "a2"))
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = c
        .api(
            "/ctrl/CreateApp",
            Some(&token),
            create_app("aorg", "bad name!"),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // The audit log names the console's route.
    let (_, audit) = alice.post("/auth/audit/showself", json!({})).await;
    assert!(
        audit
            .to_string()
            .contains("/console/api/auth/ctrl/CreateApp"),
        "{audit}"
    );
    let (s, _, html) = c.get("/console/apps").await;
    assert_eq!(s, 200);
    assert!(html.contains("aorg/a1"), "{html}");

    // The org switcher needs the session's token, and only keeps a choice among the user's orgs.
    assert_eq!(
        c.form("/console/select", &[("org", "aorg"), ("csrf", "forged")])
            .await
            .0,
        403
    );
    let (s, to, _) = c
        .form(
            "/console/select",
            &[("org", "morg"), ("next", "/console/apps"), ("csrf", &token)],
        )
        .await;
    assert_eq!((s, to.as_str()), (303, "/console/apps"));
    let (_, _, html) = c.get("/console/apps").await;
    assert!(html.contains(r#"<option value="" selected>"#), "{html}");

    // A password change ends the session; so does a lock; logout deletes it.
    let (s, b) = alice
        .post(
            "/auth/user/newpass",
            json!({"currentpassword": PASSWORD, "password": "Other-Passw0rd"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(c.get("/console/apps").await.1, "/console/login");
    assert_eq!(
        c.api("/ctrl/ShowApp", Some(&token), json!({"Region": "A"}))
            .await
            .0,
        401
    );

    let (s, _, _) = c.log_in("alice", "Other-Passw0rd").await;
    assert_eq!(s, 303);
    let (s, b) = admin
        .post(
            "/auth/restricted/user/update",
            json!({"Name": "alice", "Locked": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(c.get("/console/apps").await.1, "/console/login");
    let (s, b) = admin
        .post(
            "/auth/restricted/user/update",
            json!({"Name": "alice", "Locked": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let (s, _, _) = c.log_in("alice", "Other-Passw0rd").await;
    assert_eq!(s, 303);
    let token = c.csrf().await;
    let (s, to, _) = c.form("/console/logout", &[("csrf", &token)]).await;
    assert_eq!((s, to.as_str()), (303, "/console/login"));
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM console_sessions WHERE username = 'alice'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(left, 0, "logout and the ended sessions left rows");
    c.cookies.push(("edge_session".into(), id));
    assert_eq!(c.get("/console/apps").await.1, "/console/login");
}
