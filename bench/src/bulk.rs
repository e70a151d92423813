//! A large region written straight into etcd the way the controller stores it, for the benchmarks that
//! need thousands of objects (`restart`, `dme`): faster than creating them through the API by orders of
//! magnitude, and the same bytes.

use std::time::Instant;

use edge_common::Keyed;
use edge_proto::edge::*;
use etcd_client::{Txn, TxnOp};
use testenv::fixtures::*;

/// Keys per etcd transaction.
const BATCH: usize = 128;

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("objects serialize")
}

/// Where cloudlet `c` of `n` stands: a grid over Europe (35–60° N, 10° W–30° E).
pub fn position(c: usize, n: usize) -> (f64, f64) {
    let side = (n as f64).sqrt().ceil().max(1.0) as usize;
    let (row, col) = (c / side, c % side);
    (
        35.0 + 25.0 * row as f64 / side as f64,
        -10.0 + 40.0 * col as f64 / side as f64,
    )
}

/// Writes flavor `small`, App `dev/game/1.0`, `cloudlets` cloudlets (READY, spread by [`position`]) with
/// a READY docker cluster each, and `app_insts` READY instances of the App spread over them, each with
/// its three reference keys and a public port. With `online`, each cloudlet also has a CloudletInfo
/// READY and a connection key on an hour's lease, as if its CRM were connected (the DME only sends
/// clients to such cloudlets). `on_first` more instances (`s0`, `s1`, ...) go on the first cloudlet `op/c0`.
/// Returns the keys written.
pub async fn write_region(
    etcd: &str,
    region: &str,
    app_insts: usize,
    cloudlets: usize,
    online: bool,
    on_first: usize,
) -> anyhow::Result<usize> {
    anyhow::ensure!(cloudlets > 0, "--cloudlets must be at least 1");
    let client = etcd_client::Client::connect([etcd], None).await?;
    let store = regional_controller::store::Store::new(client.clone(), region);
    let mut kv = client.kv_client();
    let started = Instant::now();
    let mut keys = 0usize;
    let flavor = flavor("small");
    let app = app("dev", "game", "tcp:80");
    let mut pending = vec![
        (store.path_of(&flavor), json(&flavor)),
        (store.path_of(&app), json(&app)),
    ];
    let cloudlet_keys: Vec<CloudletKey> = (0..cloudlets)
        .map(|c| CloudletKey {
            organization: "op".into(),
            name: format!("c{c}"),
        })
        .collect();
    for (c, key) in cloudlet_keys.iter().enumerate() {
        let mut cl = cloudlet("op", &key.name);
        cl.state = TrackedState::Ready as i32;
        let (latitude, longitude) = position(c, cloudlets);
        cl.location = Some(Loc {
            latitude,
            longitude,
        });
        pending.push((store.path_of(&cl), json(&cl)));
        if online {
            let info = CloudletInfo {
                key: Some(key.clone()),
                state: CloudletState::Ready as i32,
                ..Default::default()
            };
            pending.push((store.path_of(&info), json(&info)));
        }
        let mut k = cluster("dev", &format!("k{c}"), "op", &key.name);
        k.state = TrackedState::Ready as i32;
        pending.push((store.path_of(&k), json(&k)));
    }
    let lease = match online {
        true => Some(client.lease_client().grant(3600, None).await?.id()),
        false => None,
    };
    let mut flush = async |pending: &mut Vec<(String, Vec<u8>)>, all: bool| -> anyhow::Result<()> {
        while pending.len() >= BATCH || (all && !pending.is_empty()) {
            let n = pending.len().min(BATCH);
            let ops: Vec<TxnOp> = pending
                .drain(..n)
                .map(|(k, v)| {
                    let leased = lease.filter(|_| k.contains("/Conn/"));
                    TxnOp::put(
                        k,
                        v,
                        leased.map(|l| etcd_client::PutOptions::new().with_lease(l)),
                    )
                })
                .collect();
            kv.txn(Txn::new().and_then(ops)).await?;
            keys += n;
        }
        Ok(())
    };
    if online {
        for key in &cloudlet_keys {
            pending.push((store.conn_key(&key.key_string()), b"bench".to_vec()));
        }
    }
    let spread = (0..app_insts).map(|i| (format!("g{i}"), i % cloudlets, 10_000 + i / cloudlets));
    let first = (0..on_first).map(|i| (format!("s{i}"), 0, 40_000 + i));
    for (i, (name, c, port)) in spread.chain(first).enumerate() {
        let mut inst = app_inst("dev", &name, "game", &format!("k{c}"));
        inst.cloudlet_key = Some(cloudlet_keys[c].clone());
        inst.state = TrackedState::Ready as i32;
        let port = port as i32;
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
                format!("{}AppInst/{key}", store.refs_prefix(kind, &target)),
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
    println!(
        "region: {cloudlets} cloudlets, {} app instances, {keys} keys written in {:.1} s",
        app_insts + on_first,
        started.elapsed().as_secs_f64()
    );
    Ok(keys)
}
