//! Whole-system tests live in `tests/`; they start every component against real servers from `testenv`.
//!
//! [`Region`] is the platform as an operator runs it: real etcd, PostgreSQL, OpenBao and dockerd, and
//! `regional-controller`, `dme`, `master-controller` and one `crm` per cloudlet (docker platform, with
//! its `edge-lb`) as processes, which a test may kill and start again. Users reach it through the MC's
//! REST API ([`Mc`]); mobile clients through the DME ([`dme_finds`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use testenv::fixtures::*;
use testenv::{Component, free_port, http_get, wait_for};

pub const REGION: &str = "EU";
pub const PASSWORD: &str = "E2e-Passw0rd!";

/// A free address on 127.0.0.1.
pub fn addr() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// Whether `GET path` on `addr` answers 200.
pub fn answers(addr: SocketAddr, path: &str) -> bool {
    matches!(http_get(addr, path), Some((200, _)))
}

/// Command-line arguments from one line of text (no argument here contains a space).
pub fn args(line: String) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

/// A user of the MC's REST API.
#[derive(Clone)]
pub struct Mc {
    pub http: reqwest::Client,
    /// `http://host:port/api/v1`
    pub base: String,
    pub token: String,
}

impl Mc {
    /// POSTs `body` to `/api/v1<path>`: the reply's JSON documents (one per line for streamed calls), or
    /// why the call failed (unreachable, an error status, or an error line ending the stream).
    pub async fn post(&self, path: &str, body: Value) -> Result<Vec<Value>, String> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = r.status();
        let text = r.text().await.map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {text}"));
        }
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        match lines.last() {
            Some(l) if l.get("result").is_some() => Err(format!("{path}: {l}")),
            _ => Ok(lines),
        }
    }

    /// Calls controller method `method` of region [`REGION`] with `obj` as its `kind`.
    pub async fn ctrl(&self, method: &str, kind: &str, obj: Value) -> Result<Vec<Value>, String> {
        self.region_ctrl(REGION, method, kind, obj).await
    }

    pub async fn region_ctrl(
        &self,
        region: &str,
        method: &str,
        kind: &str,
        obj: Value,
    ) -> Result<Vec<Value>, String> {
        self.post(
            &format!("/auth/ctrl/{method}"),
            json!({"Region": region, kind: obj}),
        )
        .await
    }

    pub async fn login(base: &str, user: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let r: Value = http
            .post(format!("{base}/login"))
            .json(&json!({"username": user, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = r["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login of {user}: {r}"))
            .to_string();
        Self {
            http,
            base: base.into(),
            token,
        }
    }
}

/// A cloudlet's CRM process and where it serves.
pub struct Crm {
    pub process: Component,
    pub http: SocketAddr,
    /// the address its LB publishes app ports on (also the name clients are given)
    pub public_ip: IpAddr,
    pub state_dir: PathBuf,
}

/// The region: real servers, and the platform's binaries as processes.
pub struct Region {
    pub etcd: testenv::Etcd,
    pub docker: testenv::Docker,
    pub pg: testenv::Postgres,
    _bao: testenv::OpenBao,
    pub dir: tempfile::TempDir,
    pub ctrl: Component,
    pub dme: Component,
    pub mc: Component,
    /// CRMs by cloudlet name (organization `tmus`)
    pub crms: BTreeMap<String, Crm>,
    pub ctrl_api: SocketAddr,
    pub ctrl_notify: SocketAddr,
    pub ctrl_http: SocketAddr,
    pub dme_grpc: SocketAddr,
    pub dme_http: SocketAddr,
    pub mc_http: SocketAddr,
    /// the MC's admin, the developer `dev` (org `acme`) and the operator `op` (org `tmus`)
    pub admin: Mc,
    pub dev: Mc,
    pub op: Mc,
}

impl Region {
    /// Everything up, tenants created (admin registers the region and flavor `small`; `dev` and `op`
    /// have their organizations), and no cloudlet yet.
    pub async fn start() -> Self {
        let (etcd, docker, pg, bao) = tokio::join!(
            testenv::Etcd::start(),
            testenv::Docker::start(),
            testenv::Postgres::start(),
            testenv::OpenBao::start()
        );
        let (etcd, docker, pg, bao) = (etcd.unwrap(), docker.unwrap(), pg.unwrap(), bao.unwrap());
        docker.busybox_image(&web_app("", "").image_path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = |name: &str| dir.path().join(format!("{name}.log"));
        let no_env = [("", ""); 0];

        let (ctrl_api, ctrl_notify, ctrl_http) = (addr(), addr(), addr());
        let ctrl = controller(
            REGION,
            &etcd.url,
            ctrl_api,
            ctrl_notify,
            ctrl_http,
            &log("controller"),
        )
        .await;
        let (dme_grpc, dme_rest, dme_http) = (addr(), addr(), addr());
        let dme = Component::start(
            "dme",
            args(format!(
                "--region {REGION} --controller-notify {ctrl_notify} --grpc-addr {dme_grpc} \
                 --rest-addr {dme_rest} --http-addr {dme_http} --carrier tmus --public-plaintext \
                 --insecure-plaintext"
            )),
            no_env,
            &log("dme"),
            || answers(dme_http, "/readyz"),
        )
        .await
        .unwrap();
        let mc_http = addr();
        let mc = Component::start(
            "master-controller",
            args(format!("--http-addr {mc_http} --admin-password {PASSWORD}")),
            [
                ("DATABASE_URL", pg.url.as_str()),
                ("VAULT_ADDR", bao.addr.as_str()),
                ("VAULT_TOKEN", bao.token.as_str()),
            ],
            &log("mc"),
            || answers(mc_http, "/readyz"),
        )
        .await
        .unwrap();

        let base = format!("http://{mc_http}/api/v1");
        let admin = Mc::login(&base, "mexadmin").await;
        admin
            .post(
                "/auth/controller/create",
                json!({"Region": REGION, "Address": ctrl_api.to_string()}),
            )
            .await
            .unwrap();
        admin
            .ctrl("CreateFlavor", "Flavor", json!(flavor("small")))
            .await
            .unwrap();
        let mut users = Vec::new();
        for (user, org, kind) in [("dev", "acme", "developer"), ("op", "tmus", "operator")] {
            let anonymous = Mc {
                token: String::new(),
                ..admin.clone()
            };
            anonymous
                .post(
                    "/usercreate",
                    json!({"Name": user, "Email": format!("{user}@example.com"), "Passhash": PASSWORD}),
                )
                .await
                .unwrap();
            let u = Mc::login(&base, user).await;
            u.post("/auth/org/create", json!({"Name": org, "Type": kind}))
                .await
                .unwrap();
            users.push(u);
        }
        let (dev, op) = (users.remove(0), users.remove(0));
        Self {
            etcd,
            docker,
            pg,
            _bao: bao,
            dir,
            ctrl,
            dme,
            mc,
            crms: BTreeMap::new(),
            ctrl_api,
            ctrl_notify,
            ctrl_http,
            dme_grpc,
            dme_http,
            mc_http,
            admin,
            dev,
            op,
        }
    }

    /// The MC's REST base URL, `http://host:port/api/v1`.
    pub fn mc_base(&self) -> String {
        format!("http://{}/api/v1", self.mc_http)
    }

    /// `op` onboards cloudlet `tmus/<name>` at (`lat`, `lon`) through the MC, and its CRM starts with the
    /// key the first streamed line carries; returns once the cloudlet is READY. `nth` (0–2) picks the
    /// test's loopback address its LB serves on.
    pub async fn onboard(&mut self, name: &str, nth: u8, lat: f64, lon: f64) {
        let public_ip = testenv::loopback_ip_nth(nth);
        let mut c = cloudlet("tmus", name);
        c.public_addr = public_ip.to_string();
        c.root_lb_fqdn = public_ip.to_string();
        c.location = Some(edge_proto::edge::Loc {
            latitude: lat,
            longitude: lon,
        });
        let r = self
            .op
            .http
            .post(format!("{}/auth/ctrl/CreateCloudlet", self.mc_base()))
            .bearer_auth(&self.op.token)
            .json(&json!({"Region": REGION, "Cloudlet": c}))
            .send()
            .await
            .unwrap();
        let mut body = r.bytes_stream();
        let mut text = Vec::new();
        while !text.contains(&b'\n') {
            text.extend_from_slice(&body.next().await.expect("a first line").unwrap());
        }
        let first: Value =
            serde_json::from_slice(text.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let key = first["data"]["access"]["access_private_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no access key in {first}"));
        self.start_crm(name, nth, key).await;
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let shown = self
            .op
            .ctrl("ShowCloudlet", "Cloudlet", json!(cloudlet("tmus", name)))
            .await
            .unwrap();
        assert_eq!(
            shown[0]["data"]["state"],
            "Ready",
            "the cloudlet did not come up: {}",
            String::from_utf8_lossy(&text)
        );
    }

    /// Starts the CRM of cloudlet `tmus/<name>` (docker platform) with access key `key`, its LB on the
    /// test's `nth` loopback address.
    pub async fn start_crm(&mut self, name: &str, nth: u8, key: &str) {
        let public_ip = testenv::loopback_ip_nth(nth);
        let key_file = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&key_file, key).unwrap();
        let http = addr();
        let state_dir = self.dir.path().join(format!("crm-{name}"));
        let process = Component::start(
            "crm",
            args(format!(
                "--region {REGION} --cloudlet-org tmus --cloudlet-name {name} --controller-notify {} \
                 --insecure-plaintext --platform docker --docker-host {} --http-addr {http} \
                 --public-addr {public_ip} --lb-http-addr {} --access-key {} --state-dir {}",
                self.ctrl_notify,
                self.docker.host,
                addr(),
                key_file.display(),
                state_dir.display()
            )),
            [("", ""); 0],
            &self.dir.path().join(format!("crm-{name}.log")),
            || answers(http, "/healthz"),
        )
        .await
        .unwrap();
        self.crms.insert(
            name.into(),
            Crm {
                process,
                http,
                public_ip,
                state_dir,
            },
        );
    }

    /// What is left of AppInst `acme/<inst>` and ClusterInst `acme/<cluster>`: containers, networks,
    /// LB routes (of every cloudlet), etcd keys.
    pub async fn leftovers(&self, inst: &str, cluster: &str) -> Vec<String> {
        let mut found = Vec::new();
        let label = format!("edge.appinst=acme/{inst}");
        for c in docker_ids(&self.docker.host, "ps -aq", &label) {
            found.push(format!("container {c}"));
        }
        let label = format!("edge.clusterinst=acme/{cluster}");
        for n in docker_ids(&self.docker.host, "network ls -q", &label) {
            found.push(format!("network {n}"));
        }
        for (name, crm) in &self.crms {
            let routes =
                std::fs::read_to_string(crm.state_dir.join("lb/routes.json")).unwrap_or_default();
            if routes.contains(&format!("\"acme/{inst}\"")) {
                found.push(format!("LB route of acme/{inst} on {name}"));
            }
        }
        let mut etcd = etcd_client::Client::connect([self.etcd.url.as_str()], None)
            .await
            .unwrap();
        let kvs = etcd
            .get("/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let mine = |s: &str| {
            s.ends_with(&format!("acme/{inst}")) || s.ends_with(&format!("acme/{cluster}"))
        };
        for kv in kvs.kvs() {
            let (k, v) = (kv.key_str().unwrap_or(""), kv.value_str().unwrap_or(""));
            if mine(k) || mine(v.trim_matches('"')) {
                found.push(format!("etcd key {k}"));
            }
        }
        found
    }

    /// Polls [`Region::leftovers`] for up to 30 s (cleanup is asynchronous) and returns what stays.
    pub async fn leftovers_after_cleanup(&self, inst: &str, cluster: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.leftovers(inst, cluster).await;
            if now.is_empty() || std::time::Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Starts `regional-controller` for `region` on `etcd` (plaintext), ready once `/readyz` answers.
pub async fn controller(
    region: &str,
    etcd: &str,
    api: SocketAddr,
    notify: SocketAddr,
    http: SocketAddr,
    log: &std::path::Path,
) -> Component {
    Component::start(
        "regional-controller",
        args(format!(
            "--region {region} --etcd {etcd} --insecure-plaintext --api-addr {api} --notify-addr {notify} \
             --http-addr {http} --lifecycle-timeout-secs 60 --offline-after-secs 3"
        )),
        [("", ""); 0],
        log,
        || answers(http, "/readyz"),
    )
    .await
    .unwrap()
}

/// Ids of the docker objects listed by `docker <list> --filter label=<label>` on the engine at `host`.
pub fn docker_ids(host: &str, list: &str, label: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(list.split_whitespace())
        .args(["--filter", &format!("label={label}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// What a mobile client at (`lat`, `lon`) gets from the DME for App `acme/<app>/1.0`: the address of port
/// 80 of the closest instance, or `None`.
pub async fn dme_finds(
    dme: SocketAddr,
    app: &str,
    lat: f64,
    lon: f64,
) -> Result<Option<SocketAddr>, String> {
    let mut c = dme_client::DmeClient::connect(&format!("http://{dme}"))
        .await
        .map_err(|e| e.to_string())?;
    c.register("acme", app, "1.0", None)
        .await
        .map_err(|e| e.to_string())?;
    let found = c
        .find_cloudlet("", lat, lon)
        .await
        .map_err(|e| e.to_string())?;
    Ok(found.and_then(|f| f.address(80)?.parse().ok()))
}

/// Waits until the DME sends a client at (`lat`, `lon`) to an instance of `acme/<app>` that answers
/// `greeting` through its LB; returns that address.
pub async fn reached_through_the_dme(
    dme: SocketAddr,
    app: &str,
    lat: f64,
    lon: f64,
    greeting: &str,
) -> SocketAddr {
    wait_for(
        &format!("the DME to send ({lat}, {lon}) to acme/{app} answering \"{greeting}\""),
        Duration::from_secs(60),
        async || {
            let a = dme_finds(dme, app, lat, lon).await.ok()??;
            matches!(http_get(a, "/"), Some((200, b)) if b.trim() == greeting).then_some(a)
        },
    )
    .await
}

/// Logs `user` in to the web console of the MC at `root` (`http://host:port`) the way a browser's form
/// does, and returns page `page` (e.g. `monitoring`) as HTML.
pub async fn console_page(root: &str, user: &str, password: &str, page: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie_of = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} cookie"))
    };
    let form = http
        .get(format!("{root}/console/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_of(&form, "edge_login");
    let r = http
        .post(format!("{root}/console/login"))
        .header("Cookie", format!("edge_login={login_cookie}"))
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", &login_cookie),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "console login of {user}");
    let session = cookie_of(&r, "edge_session");
    let r = http
        .get(format!("{root}/console/{page}"))
        .header("Cookie", format!("edge_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "console page {page}");
    r.text().await.unwrap()
}
