//! Fault injection: the controller or the CRM is killed right after a client call chosen by the seed in
//! CreateClusterInst → CreateAppInst → DeleteAppInst → DeleteClusterInst on the docker platform, and
//! restarted once its absence is seen. A client that
//! retries as users do (call again; a CREATE_ERROR is retried by creating again) must see every operation
//! complete, with no orphan (container, network, LB route, etcd key) and no duplicate container.
//!
//! `EDGE_FAULT_SEEDS` (default 4) sets how many seeds run; the victim alternates with the seed. The
//! report (one line per seed, totals) goes to stdout and as JSON to `EDGE_FAULT_REPORT` (default
//! `<target dir>/fault-report.json`). The README's "Reliability" table comes from a long run:
//! `EDGE_FAULT_SEEDS=40 cargo nextest run -p crm --test faults --no-capture`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_proto::edge::*;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Present,
    Absent,
}

/// The object's state, `None` when it does not exist; `Err` when the controller does not answer.
async fn state_of(
    ch: &Channel,
    cluster: bool,
    name: &str,
) -> std::result::Result<Option<i32>, tonic::Status> {
    let first = if cluster {
        let mut s = ch
            .clusters()
            .show_cluster_inst(common::cluster("acme", name, "", ""))
            .await?
            .into_inner();
        s.next().await.transpose()?.map(|c| c.state)
    } else {
        let mut s = ch
            .app_insts()
            .show_app_inst(app_inst("acme", name, "", ""))
            .await?
            .into_inner();
        s.next().await.transpose()?.map(|i| i.state)
    };
    Ok(first)
}

/// Drives the object to `want` as a user's retrying client does, counting its calls in `issued`.
async fn converge(
    ch: &Channel,
    issued: &AtomicU32,
    cluster: bool,
    name: &str,
    app: &str,
    want: Want,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    let mut last_err = None;
    let in_progress = [
        TrackedState::CreateRequested,
        TrackedState::Creating,
        TrackedState::UpdateRequested,
        TrackedState::Updating,
        TrackedState::DeleteRequested,
        TrackedState::Deleting,
    ]
    .map(|s| s as i32);
    loop {
        assert!(
            Instant::now() < deadline,
            "{name} did not reach {want:?} in 120 s; it stays {:?} (last error: {last_err:?})",
            last.map(TrackedState::try_from)
        );
        let state = match state_of(ch, cluster, name).await {
            Ok(s) => {
                last = s;
                s
            }
            // The controller is down: call again shortly, as a client does.
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let create = match (want, state) {
            (Want::Present, Some(s)) if s == TrackedState::Ready as i32 => return,
            (Want::Absent, None) => return,
            (_, Some(s)) if in_progress.contains(&s) => {
                // Someone is working on it: follow, by asking again.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            (Want::Present, None) => true,
            // CREATE_ERROR is retried by creating again; any other error state by deleting first.
            (Want::Present, Some(s)) => s == TrackedState::CreateError as i32,
            (Want::Absent, Some(_)) => false,
        };
        issued.fetch_add(1, Ordering::Relaxed);
        let stream = match (cluster, create) {
            (true, true) => {
                ch.clusters()
                    .create_cluster_inst(common::cluster("acme", name, "tmus", "berlin"))
                    .await
            }
            (true, false) => {
                ch.clusters()
                    .delete_cluster_inst(common::cluster("acme", name, "", ""))
                    .await
            }
            (false, true) => {
                ch.app_insts()
                    .create_app_inst(app_inst("acme", name, app, &cluster_of(name)))
                    .await
            }
            (false, false) => {
                ch.app_insts()
                    .delete_app_inst(app_inst("acme", name, "", ""))
                    .await
            }
        };
        // The stream's end is only a hint: the loop checks the state it left.
        match stream {
            Ok(s) => {
                let mut s = s.into_inner();
                if let Err(e) = async {
                    while s.message().await?.is_some() {}
                    Ok::<_, tonic::Status>(())
                }
                .await
                {
                    last_err = Some(e);
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
}

fn cluster_of(inst: &str) -> String {
    format!("c{}", inst.trim_start_matches('a'))
}

/// What one seed found.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    seed: u64,
    victim: &'static str,
    /// the victim died once this many calls had gone out
    killed_after_call: u32,
    /// from the kill until the outage was seen and the victim restarted
    down_ms: u64,
    /// from the kill until the whole sequence completed
    recovery_ms: u64,
    calls: u32,
    duplicates: usize,
    orphans: Vec<String>,
}

/// The objects of `tag` (`c7`, `a7`) still somewhere: containers, networks, LB routes, etcd keys.
async fn leftovers(cloud: &Cloud, inst: &str, cluster: &str) -> Vec<String> {
    let mut found = Vec::new();
    for c in cloud.containers(inst) {
        found.push(format!("container {c}"));
    }
    for n in cloud.networks(cluster) {
        found.push(format!("network {n}"));
    }
    let routes = std::fs::read_to_string(cloud.dir.path().join("berlin-state/lb/routes.json"))
        .unwrap_or_default();
    if routes.contains(&format!("\"acme/{inst}\"")) {
        found.push(format!("LB route of acme/{inst}"));
    }
    let mut etcd = etcd_client::Client::connect([cloud.etcd.url.as_str()], None)
        .await
        .unwrap();
    let kvs = etcd
        .get("/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    for kv in kvs.kvs() {
        let (k, v) = (kv.key_str().unwrap_or(""), kv.value_str().unwrap_or(""));
        let mine = |s: &str| {
            s.ends_with(&format!("acme/{inst}")) || s.ends_with(&format!("acme/{cluster}"))
        };
        if mine(k) || mine(v.trim_matches('"')) {
            found.push(format!("etcd key {k}"));
        }
    }
    found
}

/// Containers of the instance, counted by label on the engine at `docker_host`.
fn containers_of(docker_host: &str, inst: &str) -> usize {
    let out = std::process::Command::new("docker")
        .env("DOCKER_HOST", docker_host)
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=edge.appinst=acme/{inst}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

async fn one_seed(cloud: &mut Cloud, crm: &mut Option<CrmProcess>, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let victim = if seed.is_multiple_of(2) {
        "controller"
    } else {
        "crm"
    };
    let kill_after = 1 + rng.below(4) as u32;
    let (inst, cluster) = (format!("a{seed}"), format!("c{seed}"));

    let ch = cloud.channel.clone();
    let docker = cloud.docker.host.clone();
    let issued = Arc::new(AtomicU32::new(0));
    let (i, c, n) = (inst.clone(), cluster.clone(), issued.clone());
    let run = tokio::spawn(async move {
        converge(&ch, &n, true, &c, "", Want::Present).await;
        converge(&ch, &n, false, &i, "web", Want::Present).await;
        let running = containers_of(&docker, &i);
        converge(&ch, &n, false, &i, "", Want::Absent).await;
        converge(&ch, &n, true, &c, "", Want::Absent).await;
        running
    });
    // The fault: the victim dies as soon as the client's `kill_after`-th call has gone out, and comes
    // back once its absence is seen (the controller's port refuses; the controller lost the CRM).
    testenv::wait_for(
        &format!("call {kill_after} to go out"),
        Duration::from_secs(120),
        async || (issued.load(Ordering::Relaxed) >= kill_after).then_some(()),
    )
    .await;
    let killed = Instant::now();
    if victim == "controller" {
        cloud.stop_controller();
        let api = cloud.config.api_addr;
        testenv::wait_for(
            "the controller's port to refuse",
            Duration::from_secs(30),
            async || {
                tokio::net::TcpStream::connect(api)
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
        cloud.restart_controller().await;
    } else {
        drop(crm.take());
        let http = cloud.config.http_addr;
        testenv::wait_for(
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
        *crm = Some(cloud.start_crm("berlin"));
    }
    let down = killed.elapsed();
    let running = run.await.expect("the retrying client");
    let recovery = killed.elapsed();
    // Deletes completed: nothing of the seed may remain. Asynchronous cleanup gets 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let orphans = loop {
        let now = leftovers(cloud, &inst, &cluster).await;
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
async fn operations_complete_without_orphans_when_the_controller_or_the_crm_is_killed() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let first = var("EDGE_FAULT_FIRST_SEED", 0);
    let seeds = first..first + var("EDGE_FAULT_SEEDS", 4);
    let mut cloud = Cloud::start().await;
    let mut crm = Some(cloud.onboard("berlin", vec![]).await);
    cloud.apps().create_app(web_app("web", "hi")).await.unwrap();
    let mut outcomes = Vec::new();
    for seed in seeds {
        let o = one_seed(&mut cloud, &mut crm, seed).await;
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
    let mut recovery: Vec<u64> = outcomes.iter().map(|o| o.recovery_ms).collect();
    recovery.sort();
    let report = serde_json::json!({
        "faults": outcomes.len(),
        "operations": outcomes.len() * 4,
        "lost": 0,
        "orphans": orphans,
        "duplicates": duplicates,
        "recovery_ms_median": recovery[recovery.len() / 2],
        "recovery_ms_max": recovery.last(),
        "runs": outcomes,
    });
    let path = std::env::var("EDGE_FAULT_REPORT")
        .unwrap_or_else(|_| format!("{}/fault-report.json", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!("report: {path}");
    assert_eq!((orphans, duplicates), (0, 0), "{report:#}");
}
