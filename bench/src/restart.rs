//! `edge-bench restart`: a regional controller restarting on a large region. The region is written
//! straight into a real etcd the way the controller stores it (each AppInst as its JSON, three reference
//! keys and a public port), then the time from `Controller::start` to ready (the region loaded, ports
//! served) and the memory the loaded region takes are measured, twice. Targets (the scale issue):
//! restart-to-ready ≤ 30 s and controller RSS ≤ 2 GiB at 10,000 cloudlets and 100,000 AppInsts.

use std::time::{Duration, Instant};

use edge_common::Keyed;
use edge_proto::edge::*;
use etcd_client::{Txn, TxnOp};
use testenv::fixtures::*;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// App instances in the region.
    #[arg(long, default_value_t = 100_000)]
    app_insts: usize,
    /// Cloudlets (one docker cluster each) the instances are spread over.
    #[arg(long, default_value_t = 10_000)]
    cloudlets: usize,
}

const REGION: &str = "scale";
/// Keys per etcd transaction while writing the region.
const BATCH: usize = 128;

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("objects serialize")
}

/// RSS of this process in MiB.
fn rss_mib() -> u64 {
    edge_common::process_usage(std::process::id()).map_or(0, |(_, rss)| rss >> 20)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.cloudlets > 0, "--cloudlets must be at least 1");
    let etcd = testenv::Etcd::start().await?;
    let client = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
    let store = regional_controller::store::Store::new(client.clone(), REGION);
    let mut kv = client.kv_client();

    // The region: flavor, app, cloudlets with a READY cluster each, READY instances with refs and a port.
    let started = Instant::now();
    let mut ops: Vec<TxnOp> = Vec::new();
    let mut keys = 0usize;
    let flavor = flavor("small");
    let app = app("dev", "game", "tcp:80");
    let mut pending = vec![
        (store.path_of(&flavor), json(&flavor)),
        (store.path_of(&app), json(&app)),
    ];
    let cloudlet_keys: Vec<CloudletKey> = (0..args.cloudlets)
        .map(|c| CloudletKey {
            organization: "op".into(),
            name: format!("c{c}"),
        })
        .collect();
    for (c, key) in cloudlet_keys.iter().enumerate() {
        let mut cl = cloudlet("op", &key.name);
        cl.state = TrackedState::Ready as i32;
        pending.push((store.path_of(&cl), json(&cl)));
        let mut k = cluster("dev", &format!("k{c}"), "op", &key.name);
        k.state = TrackedState::Ready as i32;
        pending.push((store.path_of(&k), json(&k)));
    }
    let ref_prefix = |kind: &str, key: &str| store.refs_prefix(kind, key);
    let mut flush = async |pending: &mut Vec<(String, Vec<u8>)>, all: bool| -> anyhow::Result<()> {
        while pending.len() >= BATCH || (all && !pending.is_empty()) {
            let n = pending.len().min(BATCH);
            ops.clear();
            ops.extend(pending.drain(..n).map(|(k, v)| TxnOp::put(k, v, None)));
            kv.txn(Txn::new().and_then(ops.clone())).await?;
            keys += n;
        }
        Ok(())
    };
    for i in 0..args.app_insts {
        let c = i % args.cloudlets;
        let mut inst = app_inst("dev", &format!("g{i}"), "game", &format!("k{c}"));
        inst.cloudlet_key = Some(cloudlet_keys[c].clone());
        inst.state = TrackedState::Ready as i32;
        let port = 10_000 + (i / args.cloudlets) as i32;
        inst.mapped_ports = vec![AppPort {
            proto: LProto::Tcp as i32,
            internal_port: 80,
            public_port: port,
            ..Default::default()
        }];
        let key = inst.key_string();
        pending.push((store.path_of(&inst), json(&inst)));
        for (kind, target) in [
            ("App", "dev/game/1.0".to_string()),
            ("ClusterInst", format!("dev/k{c}")),
            ("Cloudlet", format!("op/c{c}")),
        ] {
            pending.push((
                format!("{}AppInst/{key}", ref_prefix(kind, &target)),
                Vec::new(),
            ));
        }
        pending.push((
            format!("{}tcp/{port}", store.ports_prefix(&format!("op/c{c}"))),
            key.into_bytes(),
        ));
        flush(&mut pending, false).await?;
        if (i + 1) % 20_000 == 0 {
            eprintln!(
                "  {} app instances written ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    flush(&mut pending, true).await?;
    let written = started.elapsed();
    println!(
        "region: {} cloudlets, {} app instances, {keys} keys written in {:.1} s",
        args.cloudlets,
        args.app_insts,
        written.as_secs_f64()
    );

    let mut times = Vec::new();
    for round in 1..=2 {
        let before = rss_mib();
        let t = Instant::now();
        let ctrl = regional_controller::Controller::start(regional_controller::Config::local(
            REGION, &etcd.url,
        ))
        .await?;
        let ready = t.elapsed();
        let loaded = rss_mib();
        println!(
            "restart {round}: ready in {:.2} s; RSS {before} MiB before, {loaded} MiB loaded (+{} MiB)",
            ready.as_secs_f64(),
            loaded.saturating_sub(before)
        );
        times.push(ready);
        drop(ctrl);
        // Let the dropped controller's tasks wind down before the next start.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    println!("restart_to_ready_s={:.2} target=30", worst.as_secs_f64());
    println!("ratio={:.3} target=1", worst.as_secs_f64() / 30.0);
    Ok(())
}
