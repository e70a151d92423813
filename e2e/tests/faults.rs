//! Fault injection on the platform as an operator runs it: `regional-controller`, `crm` (docker
//! platform, with its `edge-lb`), `dme` and `master-controller` are separate processes on real etcd,
//! PostgreSQL, OpenBao and dockerd. A developer drives CreateClusterInst → CreateAppInst → (the DME finds
//! the app and it answers through the LB) → DeleteAppInst → (the DME stops finding it) →
//! DeleteClusterInst through the MC's REST API, retrying as users do: call again when a call fails, and
//! create again after a CREATE_ERROR. Each seed kills one component with SIGKILL right after the client
//! call the seed chooses, and starts it again once its absence is seen. Every operation must complete,
//! with no orphan (container, network, LB route, etcd key) and no duplicate container.
//!
//! `EDGE_FAULT_SEEDS` (default 4: one per component) sets how many seeds run, from
//! `EDGE_FAULT_FIRST_SEED` (default 0); the victim cycles controller, CRM, DME, MC with the seed. The
//! report (a line per seed, then totals) goes to stdout and as JSON to `EDGE_FAULT_REPORT` (default
//! `<target>/tmp/fault-report.json`). The README's "Reliability" table comes from a long run:
//! `EDGE_FAULT_SEEDS=80 cargo nextest run -p e2e --test faults --no-capture` (20 seeds per component).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edge_proto::edge::TrackedState;
use futures::StreamExt;
use serde_json::{Value, json};
use testenv::fixtures::*;
use testenv::{Component, free_port, http_get, wait_for};

const REGION: &str = "EU";
const PASSWORD: &str = "Faults-Passw0rd!";
const VICTIMS: [&str; 4] = ["controller", "crm", "dme", "mc"];

/// A small deterministic generator (xorshift64*), so a seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn addr() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

fn answers(addr: SocketAddr, path: &str) -> bool {
    matches!(http_get(addr, path), Some((200, _)))
}

/// A user of the MC's REST API.
#[derive(Clone)]
struct Mc {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Mc {
    /// POSTs `body` to `/api/v1<path>`: the reply's JSON documents (one per line for streamed calls), or
    /// why the call failed (unreachable, an error status, or an error line ending the stream).
    async fn post(&self, path: &str, body: Value) -> Result<Vec<Value>, String> {
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

    async fn ctrl(&self, method: &str, kind: &str, obj: Value) -> Result<Vec<Value>, String> {
        self.post(
            &format!("/auth/ctrl/{method}"),
            json!({"Region": REGION, kind: obj}),
        )
        .await
    }

    async fn login(base: &str, user: &str) -> Self {
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

/// Command-line arguments from one line of text (no argument here contains a space).
fn args(line: String) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

/// The region: real servers, and the platform's binaries as processes.
struct Region {
    etcd: testenv::Etcd,
    docker: testenv::Docker,
    _pg: testenv::Postgres,
    _bao: testenv::OpenBao,
    dir: tempfile::TempDir,
    ctrl: Component,
    crm: Component,
    dme: Component,
    mc: Component,
    ctrl_http: SocketAddr,
    crm_http: SocketAddr,
    dme_grpc: SocketAddr,
    dme_http: SocketAddr,
    mc_http: SocketAddr,
    dev: Mc,
}

impl Region {
    async fn start() -> Self {
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

        let (api, notify, ctrl_http) = (addr(), addr(), addr());
        let ctrl = Component::start(
            "regional-controller",
            args(format!(
                "--region {REGION} --etcd {} --insecure-plaintext --api-addr {api} --notify-addr {notify} \
                 --http-addr {ctrl_http} --lifecycle-timeout-secs 60 --offline-after-secs 3",
                etcd.url
            )),
            no_env,
            &log("controller"),
            || answers(ctrl_http, "/readyz"),
        )
        .await
        .unwrap();
        let (dme_grpc, dme_rest, dme_http) = (addr(), addr(), addr());
        let dme = Component::start(
            "dme",
            args(format!(
                "--region {REGION} --controller-notify {notify} --grpc-addr {dme_grpc} --rest-addr {dme_rest} \
                 --http-addr {dme_http} --carrier tmus --public-plaintext --insecure-plaintext"
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

        // Tenancy through the MC: the admin registers the region and a flavor; a developer and an
        // operator each create their organization.
        let base = format!("http://{mc_http}/api/v1");
        let admin = Mc::login(&base, "mexadmin").await;
        admin
            .post(
                "/auth/controller/create",
                json!({"Region": REGION, "Address": api.to_string()}),
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
        dev.ctrl("CreateApp", "App", json!(web_app("web", "hi")))
            .await
            .unwrap();

        // The operator onboards cloudlet tmus/berlin. Its LB serves on this test's own loopback address,
        // which is also the name clients are given.
        let public_ip = testenv::loopback_ip();
        let key_file = dir.path().join("berlin.key");
        let crm_http = addr();
        let crm_args = args(format!(
            "--region {REGION} --cloudlet-org tmus --cloudlet-name berlin --controller-notify {notify} \
             --insecure-plaintext --platform docker --docker-host {} --http-addr {crm_http} \
             --public-addr {public_ip} --lb-http-addr {} --access-key {} --state-dir {}",
            docker.host,
            addr(),
            key_file.display(),
            dir.path().join("crm").display()
        ));
        let mut c = cloudlet("tmus", "berlin");
        c.public_addr = public_ip.to_string();
        c.root_lb_fqdn = public_ip.to_string();
        // The first streamed line carries the CRM's key; the stream ends once the CRM has brought the
        // cloudlet up.
        let r = op
            .http
            .post(format!("{base}/auth/ctrl/CreateCloudlet"))
            .bearer_auth(&op.token)
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
        std::fs::write(&key_file, key).unwrap();
        let crm = Component::start("crm", crm_args, no_env, &log("crm"), || {
            answers(crm_http, "/healthz")
        })
        .await
        .unwrap();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let shown = op
            .ctrl(
                "ShowCloudlet",
                "Cloudlet",
                json!(cloudlet("tmus", "berlin")),
            )
            .await
            .unwrap();
        assert_eq!(
            shown[0]["data"]["state"],
            TrackedState::Ready as i32,
            "the cloudlet did not come up: {}",
            String::from_utf8_lossy(&text)
        );
        Self {
            etcd,
            docker,
            _pg: pg,
            _bao: bao,
            dir,
            ctrl,
            crm,
            dme,
            mc,
            ctrl_http,
            crm_http,
            dme_grpc,
            dme_http,
            mc_http,
            dev,
        }
    }

    /// Kills `victim` with SIGKILL, waits until its absence is seen (for the CRM: until the controller
    /// has lost it), and starts it again.
    async fn crash_and_restart(&mut self, victim: &str) {
        let ready = |addr: SocketAddr, path: &'static str| move || answers(addr, path);
        let restarted = match victim {
            "controller" => {
                self.ctrl.kill();
                self.ctrl.restart(ready(self.ctrl_http, "/readyz")).await
            }
            "crm" => {
                self.crm.kill();
                let http = self.ctrl_http;
                wait_for(
                    "the controller to lose the CRM",
                    Duration::from_secs(30),
                    async || {
                        let crms = testenv::metric(
                            http,
                            "controller_notify_clients{client_type=\"CLIENT_TYPE_CRM\"}",
                        );
                        (crms == 0.0).then_some(())
                    },
                )
                .await;
                self.crm.restart(ready(self.crm_http, "/healthz")).await
            }
            "dme" => {
                self.dme.kill();
                self.dme.restart(ready(self.dme_http, "/readyz")).await
            }
            _ => {
                self.mc.kill();
                self.mc.restart(ready(self.mc_http, "/readyz")).await
            }
        };
        restarted.unwrap_or_else(|e| panic!("restarting the {victim}: {e}"));
    }

    /// What is left of AppInst `acme/<inst>` and ClusterInst `acme/<cluster>`: containers, networks,
    /// LB routes, etcd keys.
    async fn leftovers(&self, inst: &str, cluster: &str) -> Vec<String> {
        let mut found = Vec::new();
        for c in docker_ids(
            &self.docker.host,
            "ps -aq",
            &format!("edge.appinst=acme/{inst}"),
        ) {
            found.push(format!("container {c}"));
        }
        let label = format!("edge.clusterinst=acme/{cluster}");
        for n in docker_ids(&self.docker.host, "network ls -q", &label) {
            found.push(format!("network {n}"));
        }
        let routes =
            std::fs::read_to_string(self.dir.path().join("crm/lb/routes.json")).unwrap_or_default();
        if routes.contains(&format!("\"acme/{inst}\"")) {
            found.push(format!("LB route of acme/{inst}"));
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
}

/// Ids of the docker objects listed by `docker <list> --filter label=<label>` on the engine at `host`.
fn docker_ids(host: &str, list: &str, label: &str) -> Vec<String> {
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Present,
    Absent,
}

/// One object as the MC's JSON: its kind (`ClusterInst`, `AppInst`), the body a create sends and the
/// body naming it (show, delete).
struct Object {
    kind: &'static str,
    create: Value,
    key: Value,
}

/// The object's state, `None` when it does not exist; `Err` when the call fails.
async fn state_of(mc: &Mc, o: &Object) -> Result<Option<i64>, String> {
    let lines = mc
        .ctrl(&format!("Show{}", o.kind), o.kind, o.key.clone())
        .await?;
    Ok(lines.iter().find_map(|l| l["data"]["state"].as_i64()))
}

/// Drives the object to `want` as a user's retrying client does, counting its calls in `issued`.
async fn converge(mc: &Mc, issued: &AtomicU32, o: &Object, want: Want) {
    let in_progress = [
        TrackedState::CreateRequested,
        TrackedState::Creating,
        TrackedState::UpdateRequested,
        TrackedState::Updating,
        TrackedState::DeleteRequested,
        TrackedState::Deleting,
    ]
    .map(|s| s as i64);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut last_err) = (None, None);
    loop {
        assert!(
            Instant::now() < deadline,
            "{} {} did not reach {want:?} in 120 s; it stays {last:?} (last error: {last_err:?})",
            o.kind,
            o.key["key"]
        );
        let state = match state_of(mc, o).await {
            Ok(s) => s,
            // A component is down: call again shortly, as a client does.
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        last = state.and_then(|s| TrackedState::try_from(s as i32).ok());
        let create = match (want, state) {
            (Want::Present, Some(s)) if s == TrackedState::Ready as i64 => return,
            (Want::Absent, None) => return,
            // Someone is working on it: follow, by asking again.
            (_, Some(s)) if in_progress.contains(&s) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            (Want::Present, None) => true,
            // CREATE_ERROR is retried by creating again; any other error state by deleting first.
            (Want::Present, Some(s)) => s == TrackedState::CreateError as i64,
            (Want::Absent, Some(_)) => false,
        };
        issued.fetch_add(1, Ordering::Relaxed);
        let (method, body) = if create {
            ("Create", o.create.clone())
        } else {
            ("Delete", o.key.clone())
        };
        // The reply is only a hint: the loop checks the state the call left.
        if let Err(e) = mc.ctrl(&format!("{method}{}", o.kind), o.kind, body).await {
            last_err = Some(e);
        }
    }
}

/// What a mobile client gets from the DME for App `acme/web`: the address of port 80 of the closest
/// instance, or `None`.
async fn dme_finds(dme: SocketAddr) -> Result<Option<SocketAddr>, String> {
    let mut c = dme_client::DmeClient::connect(&format!("http://{dme}"))
        .await
        .map_err(|e| e.to_string())?;
    c.register("acme", "web", "1.0", None)
        .await
        .map_err(|e| e.to_string())?;
    let found = c
        .find_cloudlet("", 52.52, 13.40)
        .await
        .map_err(|e| e.to_string())?;
    Ok(found.and_then(|f| f.address(80)?.parse().ok()))
}

/// Polls the DME, as a retrying client, until the app is found and answers "hi" through the LB
/// (`present`) or is no longer found.
async fn dme_converge(dme: SocketAddr, issued: &AtomicU32, present: bool) {
    issued.fetch_add(1, Ordering::Relaxed);
    let what = if present {
        "the DME to find acme/web and it to answer through the LB"
    } else {
        "the DME to stop finding acme/web"
    };
    wait_for(what, Duration::from_secs(120), async || {
        match dme_finds(dme).await {
            Ok(Some(addr)) if present => {
                matches!(http_get(addr, "/"), Some((200, b)) if b.trim() == "hi").then_some(())
            }
            Ok(None) if !present => Some(()),
            _ => None,
        }
    })
    .await;
}

/// What one seed found.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    seed: u64,
    victim: &'static str,
    /// the victim died once this many calls had gone out
    killed_after_call: u32,
    /// from the kill until the victim was seen gone and had started again
    down_ms: u64,
    /// from the kill until the whole sequence completed
    recovery_ms: u64,
    calls: u32,
    duplicates: usize,
    orphans: Vec<String>,
}

async fn one_seed(region: &mut Region, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let victim = VICTIMS[(seed % 4) as usize];
    let kill_after = 1 + rng.below(6) as u32;
    let (inst, cl) = (format!("a{seed}"), format!("c{seed}"));
    let c = Object {
        kind: "ClusterInst",
        create: json!(cluster("acme", &cl, "tmus", "berlin")),
        key: json!(cluster("acme", &cl, "", "")),
    };
    let a = Object {
        kind: "AppInst",
        create: json!(app_inst("acme", &inst, "web", &cl)),
        key: json!(app_inst("acme", &inst, "", "")),
    };
    let (mc, dme, docker) = (
        region.dev.clone(),
        region.dme_grpc,
        region.docker.host.clone(),
    );
    let issued = AtomicU32::new(0);
    let label = format!("edge.appinst=acme/{inst}");
    let run = async {
        converge(&mc, &issued, &c, Want::Present).await;
        converge(&mc, &issued, &a, Want::Present).await;
        dme_converge(dme, &issued, true).await;
        let running = docker_ids(&docker, "ps -q", &label).len();
        converge(&mc, &issued, &a, Want::Absent).await;
        dme_converge(dme, &issued, false).await;
        converge(&mc, &issued, &c, Want::Absent).await;
        running
    };
    let fault = async {
        wait_for(
            &format!("call {kill_after} to go out"),
            Duration::from_secs(120),
            async || (issued.load(Ordering::Relaxed) >= kill_after).then_some(()),
        )
        .await;
        let killed = Instant::now();
        region.crash_and_restart(victim).await;
        (killed, killed.elapsed())
    };
    let (running, (killed, down)) = tokio::join!(run, fault);
    let recovery = killed.elapsed();
    // The deletes completed: nothing of the seed may remain. Asynchronous cleanup gets 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let orphans = loop {
        let now = region.leftovers(&inst, &cl).await;
        if now.is_empty() || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Outcome {
        seed,
        victim,
        killed_after_call: kill_after,
        down_ms: down.as_millis() as u64,
        recovery_ms: recovery.as_millis() as u64,
        calls: issued.load(Ordering::Relaxed),
        duplicates: running.saturating_sub(1),
        orphans,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_complete_without_orphans_when_any_component_is_killed() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let first = var("EDGE_FAULT_FIRST_SEED", 0);
    let seeds = first..first + var("EDGE_FAULT_SEEDS", 4);
    let mut region = Region::start().await;
    let mut outcomes = Vec::new();
    for seed in seeds {
        let o = one_seed(&mut region, seed).await;
        println!(
            "seed {:>3}: killed the {:<10} after call {} for {:>4} ms; done {:>5} ms later, {} calls, {} duplicates, orphans {:?}",
            o.seed,
            o.victim,
            o.killed_after_call,
            o.down_ms,
            o.recovery_ms,
            o.calls,
            o.duplicates,
            o.orphans
        );
        outcomes.push(o);
    }
    let orphans: usize = outcomes.iter().map(|o| o.orphans.len()).sum();
    let duplicates: usize = outcomes.iter().map(|o| o.duplicates).sum();
    let per_victim: serde_json::Map<String, Value> = VICTIMS
        .iter()
        .map(|v| {
            let mut ms: Vec<u64> = outcomes
                .iter()
                .filter(|o| o.victim == *v)
                .map(|o| o.recovery_ms)
                .collect();
            ms.sort();
            let stats = json!({
                "faults": ms.len(),
                "recovery_ms_median": ms.get(ms.len() / 2),
                "recovery_ms_max": ms.last(),
            });
            (v.to_string(), stats)
        })
        .collect();
    let report = json!({
        "faults": outcomes.len(),
        "operations": outcomes.len() * 6,
        "lost": 0,
        "orphans": orphans,
        "duplicates": duplicates,
        "by_victim": per_victim,
        "runs": outcomes,
    });
    let path = std::env::var("EDGE_FAULT_REPORT")
        .unwrap_or_else(|_| format!("{}/fault-report.json", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!(
        "{}\nreport: {path}",
        serde_json::to_string_pretty(&report["by_victim"]).unwrap()
    );
    assert_eq!((orphans, duplicates), (0, 0), "{report:#}");
}
