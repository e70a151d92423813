//! Shepherd with real servers: a docker app's CPU, memory, network and LB connections land in InfluxDB
//! and come back through the MC (to its org only); a failing app is reported unhealthy, the DME stops
//! returning it, an alert fires and reaches a webhook receiver, and all of it clears when the app is
//! back. Points wait out an InfluxDB outage in a bounded queue.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use edge_common::notify_client::CloudletAgent;
use edge_proto::edge::app_api_client::AppApiClient;
use edge_proto::edge::app_inst_api_client::AppInstApiClient;
use edge_proto::edge::cloudlet_api_client::CloudletApiClient;
use edge_proto::edge::cluster_inst_api_client::ClusterInstApiClient;
use edge_proto::edge::flavor_api_client::FlavorApiClient;
use edge_proto::edge::*;
use regional_controller::{Config, Controller};
use serde_json::{Value, json};
use shepherd::influx::InfluxConfig;
use testenv::fixtures::*;
use testenv::{metric, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

const REGION: &str = "EU";
const IMAGE: &str = "edge-busybox:test";
const PASSWORD: &str = "Test-Passw0rd!";

/// A region of one cloudlet `tmus/berlin` with its CRM.
struct Region {
    _etcd: testenv::Etcd,
    influx: testenv::Influx,
    ctrl: Controller,
    channel: Channel,
    _crm: crm::Crm,
    /// the metrics address of the CRM's load balancer
    lb_http: std::net::SocketAddr,
    public_ip: IpAddr,
    access_key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Region {
    fn drop(&mut self) {
        // VMs (and the LB) outlive their CRM by design; the test's end is theirs.
        testenv::kill_processes_in(self._dir.path());
    }
}

fn cloudlet_key() -> CloudletKey {
    CloudletKey {
        organization: "tmus".into(),
        name: "berlin".into(),
    }
}

impl Region {
    /// Controller, CRM on `platform`, flavor and the onboarded cloudlet.
    async fn start(platform: crm::PlatformKind, influx: testenv::Influx) -> Self {
        let etcd = testenv::Etcd::start().await.unwrap();
        let mut config = Config::local(REGION, &etcd.url);
        config.lifecycle_timeout = Duration::from_secs(60);
        let ctrl = Controller::start(config).await.unwrap();
        let channel = Channel::from_shared(format!("http://{}", ctrl.api_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlavorApiClient::new(channel.clone())
            .create_flavor(flavor("small"))
            .await
            .unwrap();
        let public_ip = testenv::loopback_ip();
        let mut c = cloudlet("tmus", "berlin");
        c.public_addr = public_ip.to_string();
        let mut s = CloudletApiClient::new(channel.clone())
            .create_cloudlet(c)
            .await
            .unwrap()
            .into_inner();
        let access_key = s
            .message()
            .await
            .unwrap()
            .unwrap()
            .access
            .unwrap()
            .access_private_key;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crm::Config::fake(
            REGION,
            cloudlet_key(),
            ctrl.notify_addr.to_string(),
            access_key.clone(),
            Duration::from_millis(10),
            dir.path().join("crm"),
        );
        cfg.platform = platform;
        cfg.public_addr = public_ip;
        cfg.lb_http_addr = ([127, 0, 0, 1], testenv::free_port()).into();
        let lb_http = cfg.lb_http_addr;
        let crm = crm::Crm::start(cfg).await.unwrap();
        drain(&mut s).await.expect("cloudlet ready");
        Self {
            _etcd: etcd,
            influx,
            ctrl,
            channel,
            _crm: crm,
            lb_http,
            public_ip,
            access_key,
            _dir: dir,
        }
    }

    async fn shepherd(
        &self,
        platform: shepherd::PlatformKind,
        max_queued: usize,
    ) -> shepherd::Shepherd {
        shepherd::Shepherd::start(shepherd::Config {
            agent: CloudletAgent {
                client_type: ClientType::Shepherd,
                region: REGION.into(),
                cloudlet: cloudlet_key(),
                controller: self.ctrl.notify_addr.to_string(),
                access_key: self.access_key.clone(),
                tls: None,
            },
            platform,
            influx: InfluxConfig {
                url: self.influx.url.clone(),
                database: "metrics".into(),
                events_database: "events".into(),
                retention_days: 7,
                max_queued,
            },
            interval: Duration::from_millis(500),
            health_interval: Duration::from_millis(300),
            health_failures: 2,
            public_addr: self.public_ip,
            lb_metrics: Some(format!("http://{}/metrics", self.lb_http)),
            http_addr: ([127, 0, 0, 1], 0).into(),
            resource_alert_percent: 80,
        })
        .await
        .unwrap()
    }

    /// Cluster `acme/c1`, App `acme/web` 1.0 (`app`) and its instance `acme/web1`, READY.
    async fn deploy(&self, mut app: App) -> AppInst {
        let mut s = ClusterInstApiClient::new(self.channel.clone())
            .create_cluster_inst(cluster("acme", "c1", "tmus", "berlin"))
            .await
            .unwrap()
            .into_inner();
        drain(&mut s).await.expect("cluster ready");
        app.key = Some(AppKey {
            organization: "acme".into(),
            name: "web".into(),
            version: "1.0".into(),
        });
        AppApiClient::new(self.channel.clone())
            .create_app(app)
            .await
            .unwrap();
        let mut inst = app_inst("acme", "web1", "web", "c1");
        inst.app_key.as_mut().unwrap().version = "1.0".into();
        let mut s = AppInstApiClient::new(self.channel.clone())
            .create_app_inst(inst)
            .await
            .unwrap()
            .into_inner();
        let p = drain(&mut s).await.expect("app instance ready");
        assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
        self.app_inst().await
    }

    async fn app_inst(&self) -> AppInst {
        show(AppInstApiClient::new(self.channel.clone()).show_app_inst(AppInst::default()))
            .await
            .remove(0)
    }

    /// Rows of an InfluxQL query (`SELECT ...`) on `db`: every value row of the first series.
    async fn rows(&self, db: &str, q: &str) -> Vec<Value> {
        let v = self.influx.query(db, q).await.unwrap();
        v["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn alerts(&self) -> Vec<Alert> {
        show(
            edge_proto::edge::alert_api_client::AlertApiClient::new(self.channel.clone())
                .show_alert(Alert::default()),
        )
        .await
    }
}

/// A private dockerd with the test image, and a region whose CRM runs on it.
async fn docker_region() -> (testenv::Docker, Region) {
    let (docker, influx) = tokio::join!(testenv::Docker::start(), testenv::Influx::start());
    let (docker, influx) = (docker.unwrap(), influx.unwrap());
    docker.busybox_image(IMAGE).unwrap();
    let platform = crm::PlatformKind::Docker {
        host: docker.host.clone(),
    };
    (docker, Region::start(platform, influx).await)
}

/// A local HTTP endpoint standing in for a user's alert webhook: every JSON body posted to it.
async fn webhook() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() < len {
                        continue;
                    }
                    let _ = tx.send(serde_json::from_str(body).unwrap_or(Value::Null));
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (addr, rx)
}

/// A master controller with the region registered (its InfluxDB included) and three users: `dev`
/// (manager of developer org `acme`), `op` (of operator org `tmus`) and `eve` (of developer org `evil`).
struct Mc {
    mc: master_controller::MasterController,
    http: reqwest::Client,
    tokens: std::collections::HashMap<&'static str, String>,
    _pg: testenv::Postgres,
    _bao: testenv::OpenBao,
}

impl Mc {
    async fn start(region: &Region, smtp: &testenv::Smtp) -> Self {
        let (pg, bao) = tokio::join!(testenv::Postgres::start(), testenv::OpenBao::start());
        let (pg, bao) = (pg.unwrap(), bao.unwrap());
        let mut cfg = master_controller::Config::local(&pg.url, &bao.addr, &bao.token);
        cfg.admin_password = Some(PASSWORD.into());
        cfg.bad_auth_delay = Duration::ZERO;
        cfg.user_create_limit = 1000;
        cfg.alert_poll_interval = Duration::from_millis(200);
        cfg.smtp = Some(master_controller::Smtp {
            relay: smtp.addr.to_string(),
            from: "alerts@edge.example".into(),
        });
        let mc = master_controller::MasterController::start(cfg)
            .await
            .unwrap();
        let mut m = Self {
            mc,
            http: reqwest::Client::new(),
            tokens: Default::default(),
            _pg: pg,
            _bao: bao,
        };
        let admin = m.login("mexadmin").await;
        m.tokens.insert("admin", admin);
        let (s, b) = m
            .post(
                "admin",
                "/auth/controller/create",
                json!({"Region": REGION, "Address": region.ctrl.api_addr.to_string(),
                       "InfluxDB": region.influx.url}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        for (user, org, kind) in [
            ("dev", "acme", "developer"),
            ("op", "tmus", "operator"),
            ("eve", "evil", "developer"),
        ] {
            let (s, b) = m
                .post_as(
                    None,
                    "/usercreate",
                    json!({"Name": user, "Email": format!("{user}@example.com"), "Passhash": PASSWORD}),
                )
                .await;
            assert_eq!(s, 200, "{b}");
            let token = m.login(user).await;
            m.tokens.insert(user, token);
            let (s, b) = m
                .post(user, "/auth/org/create", json!({"Name": org, "Type": kind}))
                .await;
            assert_eq!(s, 200, "{b}");
        }
        m
    }

    async fn login(&self, user: &str) -> String {
        let (s, b) = self
            .post_as(
                None,
                "/login",
                json!({"username": user, "password": PASSWORD}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    async fn post_as(&self, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("http://{}/api/v1{path}", self.mc.addr))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        // Streamed replies are one JSON document per line.
        let value = serde_json::from_str(&text).unwrap_or_else(|_| {
            Value::Array(
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect(),
            )
        });
        (status, value)
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.post_as(Some(&self.tokens[user]), path, body).await
    }
}

/// Names of the series of a metrics reply.
fn series_names(reply: &Value) -> Vec<String> {
    reply["data"][0]["Series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_measured_checked_and_alerted_on() {
    let (docker, region) = docker_region().await;
    // httpd runs in the background so the test can stop and start the server inside the container.
    let mut app = app("acme", "web", "tcp:80");
    app.image_path = IMAGE.into();
    app.command =
        "mkdir -p /www && echo hello > /www/index.html && httpd -p 80 -h /www && exec sleep 100000"
            .into();
    let inst = region.deploy(app).await;
    let container = inst.runtime_info.as_ref().unwrap().container_ids[0].clone();
    // Runs a command in the app's container.
    let exec = |cmd: &[&str]| {
        let out = docker
            .cli()
            .args(["exec", &container])
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let public: SocketAddr = (region.public_ip, inst.mapped_ports[0].public_port as u16).into();
    let smtp = testenv::Smtp::start().await.unwrap();
    let mc = Mc::start(&region, &smtp).await;
    let (hook, mut hooked) = webhook().await;
    let receiver = json!({"Name": "ops", "Type": "webhook", "Severity": "warning",
        "Webhook": format!("http://{hook}/alerts"), "AppInst": {"app_key": {"organization": "acme"}}});
    let (s, b) = mc
        .post("dev", "/auth/alertreceiver/create", receiver.clone())
        .await;
    assert_eq!(s, 200, "{b}");
    // Another org cannot have acme's alerts sent to itself; bad receivers are refused by field.
    let (s, _) = mc
        .post("eve", "/auth/alertreceiver/create", receiver.clone())
        .await;
    assert_eq!(s, 403);
    for (bad, msg) in [
        (
            json!({"Name": "x", "Type": "webhook", "Severity": "loud", "Webhook": "http://127.0.0.1:1/"}),
            "Alert severity has to be one of \"info\", \"warning\", \"error\"",
        ),
        (
            json!({"Name": "a:b", "Type": "webhook", "Severity": "info"}),
            "Receiver name cannot contain colons(\":\")",
        ),
        (
            json!({"Name": "x", "Type": "slack", "Severity": "info", "SlackChannel": "ops",
                "AppInst": {"app_key": {"organization": "acme"}}}),
            "Both slack URL and slack channel must be specified",
        ),
        (
            json!({"Name": "x", "Type": "webhook", "Severity": "info", "Webhook": "ftp://x",
                "AppInst": {"app_key": {"organization": "acme"}}}),
            "Webhook URL must be an http or https URL",
        ),
        (
            json!({"Name": "x", "Type": "webhook", "Severity": "info", "Webhook": "http://127.0.0.1:1/"}),
            "Either cloudlet, cluster or app instance details have to be specified",
        ),
    ] {
        let (s, b) = mc.post("dev", "/auth/alertreceiver/create", bad).await;
        assert_eq!((s, b["message"].as_str().unwrap_or_default()), (400, msg));
    }
    // Email to the user's own address unless another is given.
    let mail = json!({"Name": "mail", "Type": "email", "Severity": "error",
        "AppInst": {"app_key": {"organization": "acme"}}});
    let (s, b) = mc.post("dev", "/auth/alertreceiver/create", mail).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = mc
        .post(
            "dev",
            "/auth/alertreceiver/create",
            json!({"Name": "mail2", "Type": "email", "Severity": "error",
            "Email": "not an address", "AppInst": {"app_key": {"organization": "acme"}}}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap_or_default()),
        (400, "Receiver email is invalid")
    );
    let (_, shown) = mc.post("dev", "/auth/alertreceiver/show", json!({})).await;
    let ops = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Name"] == "ops");
    assert_eq!(ops.unwrap()["Webhook"], "<hidden>", "{shown}");

    let _shepherd = region
        .shepherd(
            shepherd::PlatformKind::Docker {
                host: docker.host.clone(),
            },
            100_000,
        )
        .await;
    assert_eq!(testenv::http_get(public, "/").map(|(s, _)| s), Some(200));

    // Metrics with MobiledgeX's measurement names and tags.
    for m in [
        "appinst-cpu",
        "appinst-mem",
        "appinst-disk",
        "appinst-network",
        "cluster-cpu",
        "cloudlet-utilization",
    ] {
        wait_for(
            &format!("{m} points"),
            Duration::from_secs(30),
            async || {
                let rows = region
                    .rows(
                        "metrics",
                        &format!("SELECT * FROM \"{m}\" WHERE cloudletorg = 'tmus' LIMIT 1"),
                    )
                    .await;
                (!rows.is_empty()).then_some(())
            },
        )
        .await;
    }
    let v = region
        .influx
        .query("metrics", "SELECT * FROM \"appinst-mem\" WHERE app = 'web' AND apporg = 'acme' AND ver = '1.0' AND cluster = 'c1' AND clusterorg = 'acme' AND cloudlet = 'berlin' LIMIT 1")
        .await
        .unwrap();
    let cols = v["results"][0]["series"][0]["columns"].to_string();
    assert!(cols.contains("\"mem\""), "{v}");
    let mem = v["results"][0]["series"][0]["values"][0]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["results"][0]["series"][0]["columns"].as_array().unwrap())
        .find(|(_, c)| *c == "mem")
        .map(|(v, _)| v.as_i64().unwrap())
        .unwrap();
    assert!(mem > 0, "a running httpd uses memory: {v}");
    let accepts = wait_for("the LB connection counted", Duration::from_secs(30), async || {
        let rows = region
            .rows("metrics", &format!("SELECT accepts FROM \"appinst-connections\" WHERE app = 'web' AND port = '{}' ORDER BY time DESC LIMIT 1", public.port()))
            .await;
        rows.first().and_then(|r| r[1].as_i64()).filter(|n| *n >= 1)
    })
    .await;
    assert!(accepts >= 1);

    // The MC returns them to the app's org, and to nobody else.
    let q = json!({"Region": REGION, "AppInst": {"app_key": {"organization": "acme", "name": "web"}}, "Selector": "cpu,connections", "Limit": 5});
    let (s, b) = mc.post("dev", "/auth/metrics/app", q.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        series_names(&b),
        ["appinst-cpu", "appinst-connections"],
        "{b}"
    );
    let cpu = &b["data"][0]["Series"][0];
    assert_eq!(cpu["columns"][0], "time");
    assert!(
        cpu["columns"].to_string().contains("\"cpu\"")
            && cpu["values"].as_array().unwrap().len() <= 5,
        "{cpu}"
    );
    assert_eq!(mc.post("eve", "/auth/metrics/app", q.clone()).await.0, 403);
    let (s, b) = mc.post("dev", "/auth/metrics/app", json!({"Region": REGION, "AppInst": {"app_key": {"organization": "acme"}}, "NumSamples": 3, "Selector": "mem"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(series_names(&b), ["appinst-mem"], "{b}");
    let (s, b) = mc
        .post(
            "op",
            "/auth/metrics/cloudlet",
            json!({"Region": REGION, "Cloudlet": {"organization": "tmus", "name": "berlin"}}),
        )
        .await;
    assert_eq!(
        (s, series_names(&b)),
        (200, vec!["cloudlet-utilization".to_string()]),
        "{b}"
    );
    assert_eq!(
        mc.post(
            "dev",
            "/auth/metrics/cloudlet",
            json!({"Region": REGION, "Cloudlet": {"organization": "tmus"}})
        )
        .await
        .0,
        403
    );
    for (body, msg) in [
        (
            json!({"Region": REGION, "AppInst": {"app_key": {"organization": "acme"}}, "Selector": "gpu"}),
            "Invalid appinst selector: gpu, must be one of \"cpu\", \"mem\", \"disk\", \"network\", \"connections\"",
        ),
        (
            json!({"Region": REGION, "AppInst": {"app_key": {"organization": "acme"}}, "Limit": 1, "NumSamples": 2}),
            "Only one of Limit or NumSamples can be specified",
        ),
        (
            json!({"Region": REGION, "AppInst": {"app_key": {"name": "web"}}}),
            "Must provide either App organization or Cloudlet organization",
        ),
        (
            json!({"Region": REGION, "AppInst": {"app_key": {"organization": "acme"}}, "StartTime": "yesterday"}),
            "Invalid starttime \"yesterday\": expected an RFC 3339 time such as 2026-11-30T12:00:00Z",
        ),
    ] {
        let (s, b) = mc.post("dev", "/auth/metrics/app", body).await;
        assert_eq!((s, b["message"].as_str().unwrap_or_default()), (400, msg));
    }

    // Shepherd's checks pass: the instance is reported healthy.
    wait_for("health OK", Duration::from_secs(30), async || {
        (region.app_inst().await.health_check() == HealthCheck::Ok).then_some(())
    })
    .await;

    // The web console draws the same metrics for the app's org, and shows the health; eve gets no chart.
    let root = format!("http://{}", mc.mc.addr);
    let page = e2e::console_page(&root, "dev", PASSWORD, "monitoring").await;
    for part in [
        r#"<figure class="chart" id="chart-cpu">"#,
        r#"id="chart-mem""#,
        "<polyline",
        "web on ",
    ] {
        assert!(
            page.contains(part),
            "no {part} in the monitoring page: {page}"
        );
    }
    let page = e2e::console_page(&root, "dev", PASSWORD, "appinsts").await;
    assert!(page.contains(r#"title="HEALTH_CHECK_OK""#), "{page}");
    let page = e2e::console_page(&root, "eve", PASSWORD, "monitoring").await;
    assert!(
        !page.contains("<polyline") && page.contains("No CPU (%) measured yet."),
        "{page}"
    );
    let dme = dme::Dme::start(dme::Config::local(
        REGION,
        &region.ctrl.notify_addr.to_string(),
    ))
    .await
    .unwrap();
    let mut client = dme_client::DmeClient::connect(&format!("http://{}", dme.grpc_addr))
        .await
        .unwrap();
    wait_for(
        "the DME to know the app",
        Duration::from_secs(30),
        async || client.register("acme", "web", "1.0", None).await.ok(),
    )
    .await;
    wait_for(
        "the DME to find the app",
        Duration::from_secs(30),
        async || client.find_cloudlet("", 52.5, 13.4).await.unwrap(),
    )
    .await;

    // The server inside the container stops (the container keeps running, so the CRM sees nothing).
    exec(&["killall", "httpd"]);
    wait_for("health SERVER_FAIL", Duration::from_secs(30), async || {
        (region.app_inst().await.health_check() == HealthCheck::FailServerFail).then_some(())
    })
    .await;
    wait_for(
        "the DME to stop returning it",
        Duration::from_secs(30),
        async || {
            client
                .find_cloudlet("", 52.5, 13.4)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let alert = wait_for("AppInstDown", Duration::from_secs(30), async || {
        region
            .alerts()
            .await
            .into_iter()
            .find(|a| a.labels["alertname"] == "AppInstDown")
    })
    .await;
    assert_eq!(alert.labels["status"], "HealthCheckServerFail");
    assert_eq!(
        (
            alert.labels["apporg"].as_str(),
            alert.labels["cloudlet"].as_str()
        ),
        ("acme", "berlin")
    );
    let (s, shown) = mc
        .post(
            "dev",
            "/auth/ctrl/ShowAlert",
            json!({"Region": REGION, "Alert": {}}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(shown.to_string().contains("AppInstDown"), "{shown}");
    let (s, shown) = mc
        .post(
            "eve",
            "/auth/alert/show",
            json!({"Region": REGION, "Alert": {}}),
        )
        .await;
    assert_eq!(
        (s, shown.to_string()),
        (200, "[]".to_string()),
        "another org sees no alert"
    );
    let fired = tokio::time::timeout(Duration::from_secs(30), hooked.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fired["status"], "firing", "{fired}");
    assert_eq!(
        fired["alerts"][0]["labels"]["alertname"], "AppInstDown",
        "{fired}"
    );
    assert_eq!(fired["alerts"][0]["labels"]["app"], "web", "{fired}");
    let mailed = |what: &'static str| {
        let smtp = &smtp;
        async move || {
            smtp.messages().into_iter().find(|m| {
                m.contains(&format!(
                    "Subject: [{what}:1] Alert for mail: AppInstDown Application: web Version: 1.0"
                ))
            })
        }
    };
    let m = wait_for("the firing mail", Duration::from_secs(30), mailed("FIRING")).await;
    assert!(
        m.contains("To: dev@example.com") && m.contains("status: HealthCheckServerFail"),
        "{m}"
    );
    wait_for("the health event", Duration::from_secs(30), async || {
        let rows = region
            .rows("events", "SELECT event FROM appinst WHERE app = 'web' AND event = 'HEALTH_CHECK_FAIL_SERVER_FAIL'")
            .await;
        (!rows.is_empty()).then_some(())
    })
    .await;
    let (s, ev) = mc
        .post(
            "dev",
            "/auth/events/app",
            json!({"Region": REGION, "AppInst": {"app_key": {"organization": "acme"}}}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        ev.to_string().contains("HEALTH_CHECK_FAIL_SERVER_FAIL"),
        "{ev}"
    );

    // The server is back: healthy again, found again, the alert cleared and the receiver told.
    exec(&["httpd", "-p", "80", "-h", "/www"]);
    wait_for("health OK again", Duration::from_secs(30), async || {
        (region.app_inst().await.health_check() == HealthCheck::Ok).then_some(())
    })
    .await;
    wait_for(
        "the DME to return it again",
        Duration::from_secs(30),
        async || client.find_cloudlet("", 52.5, 13.4).await.unwrap(),
    )
    .await;
    wait_for("the alert to clear", Duration::from_secs(30), async || {
        let a = region.alerts().await;
        (!a.iter().any(|a| a.labels["alertname"] == "AppInstDown")).then_some(())
    })
    .await;
    let resolved = tokio::time::timeout(Duration::from_secs(30), hooked.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    wait_for(
        "the resolved mail",
        Duration::from_secs(30),
        mailed("RESOLVED"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_wait_out_an_influxdb_outage_in_a_bounded_queue() {
    let influx = testenv::Influx::start().await.unwrap();
    let mut region = Region::start(
        crm::PlatformKind::Fake {
            delay: Duration::from_millis(10),
        },
        influx,
    )
    .await;
    region.deploy(app("acme", "web", "tcp:80")).await;
    const CAP: usize = 60;
    let shepherd = region.shepherd(shepherd::PlatformKind::Fake, CAP).await;
    let count = async |region: &Region| {
        let rows = region
            .rows(
                "metrics",
                "SELECT count(cpu) FROM \"appinst-cpu\" WHERE app = 'web'",
            )
            .await;
        rows.first().and_then(|r| r[1].as_i64()).unwrap_or(0)
    };
    wait_for("first points", Duration::from_secs(30), async || {
        (count(&region).await > 0).then_some(())
    })
    .await;

    region.influx.stop();
    let down_at = edge_common::now_ms();
    // Points pile up to the cap, then the oldest are dropped: memory stays bounded.
    wait_for(
        "points dropped at the cap",
        Duration::from_secs(60),
        async || (metric(shepherd.http_addr, "shepherd_points_dropped_total") > 0.0).then_some(()),
    )
    .await;
    assert!(metric(shepherd.http_addr, "shepherd_points_queued") <= CAP as f64);
    assert!(
        metric(
            shepherd.http_addr,
            "shepherd_influx_writes_total{result=\"failed\"}"
        ) > 0.0
    );
    let up_at = edge_common::now_ms();
    region.influx.resume().await.unwrap();
    wait_for("the queue to drain", Duration::from_secs(60), async || {
        (metric(shepherd.http_addr, "shepherd_points_queued") == 0.0).then_some(())
    })
    .await;
    // Points taken while InfluxDB was down arrived afterwards.
    let during = region
        .rows(
            "metrics",
            &format!("SELECT count(cpu) FROM \"appinst-cpu\" WHERE time >= {down_at}ms AND time <= {up_at}ms"),
        )
        .await;
    assert!(
        during.first().and_then(|r| r[1].as_i64()).unwrap_or(0) > 0,
        "{during:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_policy_fires_on_its_apps_instances_and_clears() {
    use edge_proto::edge::alert_policy_api_client::AlertPolicyApiClient;
    let influx = testenv::Influx::start().await.unwrap();
    let region = Region::start(
        crm::PlatformKind::Fake {
            delay: Duration::from_millis(10),
        },
        influx,
    )
    .await;
    let mut policies = AlertPolicyApiClient::new(region.channel.clone());
    let policy = |mem: u32, trigger: &str| AlertPolicy {
        key: Some(AlertPolicyKey {
            organization: "acme".into(),
            name: "hungry".into(),
        }),
        mem_utilization_limit: mem,
        severity: "error".into(),
        trigger_time: trigger.into(),
        labels: [("team".to_string(), "web".to_string())].into(),
        description: "memory above the limit".into(),
        ..Default::default()
    };
    for (bad, msg) in [
        (
            policy(150, "1s"),
            "mem_utilization_limit 150 is a percentage: at most 100",
        ),
        (
            policy(0, "1s"),
            "at least one of cpu_utilization_limit, mem_utilization_limit, disk_utilization_limit or active_conn_limit must be set",
        ),
        (
            policy(1, "1d"),
            "invalid trigger_time \"1d\": a duration such as 30s, 5m or 1h, at most 72h",
        ),
    ] {
        assert_code(
            policies.create_alert_policy(bad).await,
            tonic::Code::InvalidArgument,
            msg,
        );
    }
    // The fake platform's instances use at least 64 MiB of the small flavor's 2 GiB: over 1 %.
    policies.create_alert_policy(policy(1, "1s")).await.unwrap();
    let mut app = app("acme", "web", "tcp:80");
    app.alert_policies = vec!["nosuch".into()];
    app.key.as_mut().unwrap().version = "1.0".into();
    assert_code(
        AppApiClient::new(region.channel.clone())
            .create_app(app.clone())
            .await,
        tonic::Code::NotFound,
        "AlertPolicy \"acme/nosuch\"",
    );
    app.alert_policies = vec!["hungry".into()];
    region.deploy(app).await;
    let _shepherd = region.shepherd(shepherd::PlatformKind::Fake, 10_000).await;
    let alert = wait_for("the policy's alert", Duration::from_secs(30), async || {
        region
            .alerts()
            .await
            .into_iter()
            .find(|a| a.labels["alertname"] == "hungry")
    })
    .await;
    for (k, v) in [
        ("type", "UserDefined"),
        ("team", "web"),
        ("severity", "error"),
        ("app", "web"),
        ("apporg", "acme"),
        ("scope", "Application"),
    ] {
        assert_eq!(alert.labels[k], v, "{alert:?}");
    }
    assert_eq!(alert.annotations["description"], "memory above the limit");
    assert!(alert.value > 1.0, "{alert:?}");
    assert_code(
        policies.delete_alert_policy(policy(1, "1s")).await,
        tonic::Code::FailedPrecondition,
        "in use",
    );
    // Raised above what the app uses: the alert clears.
    policies
        .update_alert_policy(AlertPolicyUpdate {
            alert_policy: Some(policy(90, "1s")),
            fields: vec!["mem_utilization_limit".into()],
        })
        .await
        .unwrap();
    wait_for(
        "the policy's alert to clear",
        Duration::from_secs(30),
        async || {
            (!region
                .alerts()
                .await
                .iter()
                .any(|a| a.labels["alertname"] == "hungry"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_port_must_answer_http_not_just_accept() {
    let (docker, region) = docker_region().await;
    // Accepts connections on port 80 but never answers: a TCP check passes, an HTTP check does not.
    let mut app = app("acme", "web", "tcp:80:http");
    app.image_path = IMAGE.into();
    app.command = "while true; do nc -l -p 80 > /dev/null; done".into();
    let inst = region.deploy(app).await;
    assert!(inst.mapped_ports[0].http);
    let id = &inst.runtime_info.as_ref().unwrap().container_ids[0];
    let out = docker
        .cli()
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
        .output()
        .unwrap();
    let ip: IpAddr = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    wait_for("the port to accept", Duration::from_secs(30), async || {
        tokio::net::TcpStream::connect((ip, 80)).await.ok()
    })
    .await;
    let _shepherd = region
        .shepherd(
            shepherd::PlatformKind::Docker {
                host: docker.host.clone(),
            },
            10_000,
        )
        .await;
    wait_for("health SERVER_FAIL", Duration::from_secs(30), async || {
        (region.app_inst().await.health_check() == HealthCheck::FailServerFail).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_app_is_measured_and_checked() {
    let influx = testenv::Influx::start().await.unwrap();
    let region = Region::start(
        crm::PlatformKind::Vm {
            images: VM_IMAGES.into(),
            boot_timeout: Duration::from_secs(90),
            image_engine: None,
        },
        influx,
    )
    .await;
    let app = vm_app("acme", "vmweb", "tcp:80:http", &vm_web_image(VM_IMAGES));
    AppApiClient::new(region.channel.clone())
        .create_app(app)
        .await
        .unwrap();
    let inst = vm_app_inst("acme", "v1", "vmweb", cloudlet_key());
    let mut s = AppInstApiClient::new(region.channel.clone())
        .create_app_inst(inst)
        .await
        .unwrap()
        .into_inner();
    drain(&mut s).await.expect("VM app instance ready");
    let _shepherd = region
        .shepherd(
            shepherd::PlatformKind::Vm {
                dir: region._dir.path().join("crm/vms"),
            },
            10_000,
        )
        .await;
    // The HTTP check reaches the guest through qemu's forward and through the LB.
    wait_for("health OK", Duration::from_secs(60), async || {
        (region.app_inst().await.health_check() == HealthCheck::Ok).then_some(())
    })
    .await;
    // qemu's own memory and CPU: a booted guest holds tens of MiB.
    wait_for("VM memory and CPU points", Duration::from_secs(60), async || {
        let mem = region
            .rows("metrics", "SELECT mem FROM \"appinst-mem\" WHERE app = 'vmweb' ORDER BY time DESC LIMIT 1")
            .await;
        let cpu = region
            .rows("metrics", "SELECT cpu FROM \"appinst-cpu\" WHERE app = 'vmweb' AND cpu > 0 LIMIT 1")
            .await;
        let mem = mem.first().and_then(|r| r[1].as_i64())?;
        (mem > 32 << 20 && !cpu.is_empty()).then_some(())
    })
    .await;
    // Its network is what went through the LB (the health checks, at least).
    wait_for("VM network points", Duration::from_secs(60), async || {
        let net = region
            .rows("metrics", "SELECT recvBytes, sendBytes FROM \"appinst-network\" WHERE app = 'vmweb' AND sendBytes > 0 LIMIT 1")
            .await;
        (!net.is_empty()).then_some(())
    })
    .await;
}
