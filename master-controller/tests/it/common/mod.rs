//! A platform for MC tests: real PostgreSQL, OpenBao and etcd, two regional controllers (regions A and
//! B) in-process, and the master controller in-process.
#![allow(dead_code)]

use std::time::Duration;

use master_controller::{Config, MasterController};
use regional_controller::Controller;
use serde_json::{Value, json};

pub const ADMIN: &str = "mexadmin";
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd!";
pub const PASSWORD: &str = "Str0ng-Passw0rd";

pub struct Platform {
    pub pg: testenv::Postgres,
    pub bao: testenv::OpenBao,
    pub etcd: testenv::Etcd,
    pub region_a: Controller,
    pub region_b: Controller,
    pub mc: MasterController,
    pub config: Config,
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let (pg, bao, etcd) = tokio::join!(
            testenv::Postgres::start(),
            testenv::OpenBao::start(),
            testenv::Etcd::start()
        );
        let (pg, bao, etcd) = (pg.unwrap(), bao.unwrap(), etcd.unwrap());
        // Short lifecycle timeouts: a CreateCloudlet without a CRM ends after 5 s.
        let region = |name: &str| {
            let mut c = regional_controller::Config::local(name, &etcd.url);
            c.lifecycle_timeout = Duration::from_secs(5);
            c
        };
        let region_a = Controller::start(region("A")).await.unwrap();
        let region_b = Controller::start(region("B")).await.unwrap();
        let mut config = Config::local(&pg.url, &bao.addr, &bao.token);
        config.admin_password = Some(ADMIN_PASSWORD.into());
        config.bad_auth_delay = Duration::ZERO;
        // Tests create many users from 127.0.0.1; the per-address limit has its own test.
        config.user_create_limit = 10_000;
        f(&mut config);
        let mc = MasterController::start(config.clone()).await.unwrap();
        let p = Self {
            pg,
            bao,
            etcd,
            region_a,
            region_b,
            mc,
            config,
        };
        let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
        for (region, ctrl) in [("A", &p.region_a), ("B", &p.region_b)] {
            let r = admin
                .post(
                    "/auth/controller/create",
                    json!({"Region": region, "Address": ctrl.api_addr.to_string()}),
                )
                .await;
            assert_eq!(r.0, 200, "{r:?}");
        }
        p
    }

    /// A connection pool to the MC's database, to check what a call changed.
    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.pg.url).await.unwrap()
    }

    /// Creates user `name` with `role` in `org` (given by the admin) and logs in.
    pub async fn user_with_role(&self, name: &str, org: &str, role: &str) -> Client {
        let c = self.user(name).await;
        let admin = self.login(ADMIN, ADMIN_PASSWORD).await;
        let r = admin
            .post(
                "/auth/role/adduser",
                json!({"org": org, "username": name, "role": role}),
            )
            .await;
        assert_eq!(r.0, 200, "{r:?}");
        c
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1", self.mc.addr)
    }

    pub fn anonymous(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.url(),
            token: None,
        }
    }

    pub async fn login(&self, user: &str, password: &str) -> Client {
        let c = self.anonymous();
        let (status, body) = c
            .post("/login", json!({"username": user, "password": password}))
            .await;
        assert_eq!(status, 200, "login of {user}: {body}");
        Client {
            token: Some(body["token"].as_str().unwrap().to_string()),
            ..c
        }
    }

    /// Creates user `name` and logs in.
    pub async fn user(&self, name: &str) -> Client {
        let r = self
            .anonymous()
            .post(
                "/usercreate",
                json!({"Name": name, "Email": format!("{name}@example.com"), "Passhash": PASSWORD}),
            )
            .await;
        assert_eq!(r.0, 200, "{r:?}");
        self.login(name, PASSWORD).await
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Client {
    fn request(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// POSTs `body`; the status and the JSON reply (newline-delimited replies become an array).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.request(path, body).send().await.expect("MC answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        // Streamed replies ({"data": ...} / {"result": ...} lines, or nothing) become an array.
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON reply"))
            .collect();
        let streamed = lines
            .iter()
            .all(|l| l.get("data").is_some() || l.get("result").is_some());
        let v = if streamed {
            Value::Array(lines)
        } else {
            lines.into_iter().next().unwrap_or(Value::Null)
        };
        (status, v)
    }

    /// The raw response, for streaming.
    pub async fn send(&self, path: &str, body: Value) -> reqwest::Response {
        self.request(path, body).send().await.expect("MC answers")
    }

    /// Creates flavor `small` (1 vCPU, 512 MB, 1 GB) in `region`, which [`app`] uses.
    pub async fn create_small_flavor(&self, region: &str) {
        let (s, b) = self
            .ctrl(
                "CreateFlavor",
                region,
                "Flavor",
                json!({"key": {"name": "small"}, "vcpus": 1, "ram": 512, "disk": 1}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// `/auth/ctrl/<method>` in `region` with `object` under `kind`.
    pub async fn ctrl(
        &self,
        method: &str,
        region: &str,
        kind: &str,
        object: Value,
    ) -> (u16, Value) {
        self.post(
            &format!("/auth/ctrl/{method}"),
            json!({"Region": region, kind: object}),
        )
        .await
    }
}

/// A docker App `org/name/1.0` on flavor `small`.
pub fn app(org: &str, name: &str) -> Value {
    json!({"key": {"organization": org, "name": name, "version": "1.0"}, "image_type": 1, "image_path": "img",
           "deployment": "docker", "default_flavor": {"name": "small"}})
}
