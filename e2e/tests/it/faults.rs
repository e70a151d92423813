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
//! `EDGE_FAULT_SEEDS=80 cargo nextest run -p e2e faults:: --no-capture` (20 seeds per component).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use e2e::{Mc, Region, answers, dme_finds, docker_ids};
use edge_common::proto_json;
use edge_proto::edge::TrackedState;
use serde_json::{Value, json};
use testenv::fixtures::*;
use testenv::{http_get, wait_for};

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

/// Kills `victim` with SIGKILL, waits until its absence is seen (for the CRM: until the controller has
/// lost it), and starts it again.
async fn crash_and_restart(region: &mut Region, victim: &str) {
    let ready = |addr: SocketAddr, path: &'static str| move || answers(addr, path);
    let restarted = match victim {
        "controller" => {
            region.ctrl.kill();
            region
                .ctrl
                .restart(ready(region.ctrl_http, "/readyz"))
                .await
        }
        "crm" => {
            let crm = region.crms.get_mut("berlin").expect("the CRM of berlin");
            crm.process.kill();
            let http = region.ctrl_http;
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
            crm.process.restart(ready(crm.http, "/healthz")).await
        }
        "dme" => {
            region.dme.kill();
            region.dme.restart(ready(region.dme_http, "/readyz")).await
        }
        _ => {
            region.mc.kill();
            region.mc.restart(ready(region.mc_http, "/readyz")).await
        }
    };
    restarted.unwrap_or_else(|e| panic!("restarting the {victim}: {e}"));
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
    let states = proto_json::pool()
        .get_enum_by_name("edge.TrackedState")
        .expect("TrackedState");
    // The MC writes the state by name, as MobiledgeX's MC does ("Ready").
    Ok(lines
        .iter()
        .find_map(|l| proto_json::parse_enum(&states, &l["data"]["state"]).ok())
        .map(i64::from))
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
        match dme_finds(dme, "web", 52.52, 13.40).await {
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
        crash_and_restart(region, victim).await;
        (killed, killed.elapsed())
    };
    let (running, (killed, down)) = tokio::join!(run, fault);
    let recovery = killed.elapsed();
    // The deletes completed: nothing of the seed may remain. Asynchronous cleanup gets 30 s.
    let orphans = region.leftovers_after_cleanup(&inst, &cl).await;
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
    region.onboard("berlin", 0, 52.52, 13.40).await;
    region
        .dev
        .ctrl("CreateApp", "App", json!(web_app("web", "hi")))
        .await
        .unwrap();
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
