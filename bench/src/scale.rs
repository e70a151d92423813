//! `edge-bench scale`: the scale issue's region, 10,000 cloudlets and 100,000 AppInsts, written straight
//! into a real etcd as the controller stores them (fake-platform objects, every cloudlet online as if its
//! CRM were connected), plus `--sync-objects` more on one cloudlet. Measured in one run: the time to write
//! the region, the controller's start-to-ready and memory, its restart-to-ready, the DME's time to load
//! the region and its memory, FindCloudlet p50/p99 at that size, and the full sync of that cloudlet's CRM.
//! Targets: controller RSS ≤ 2 GiB, restart-to-ready ≤ 30 s, DME p99 ≤ 5 ms; the last line's ratio is
//! the worst of the three figures against its target (≤ 1: all met).

use std::time::{Duration, Instant};

use crate::{Load, find_cloudlets, print_table, start_dme};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    load: Load,
    /// App instances spread over the cloudlets.
    #[arg(long, default_value_t = 100_000)]
    app_insts: usize,
    /// Cloudlets (online, one docker cluster each).
    #[arg(long, default_value_t = 10_000)]
    cloudlets: usize,
    /// More instances on the cloudlet whose CRM's full sync is timed.
    #[arg(long, default_value_t = 1_000)]
    sync_objects: usize,
}

const REGION: &str = "scale";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let etcd = testenv::Etcd::start().await?;
    let t = Instant::now();
    crate::bulk::write_region(
        &etcd.url,
        REGION,
        args.app_insts,
        args.cloudlets,
        true,
        args.sync_objects,
    )
    .await?;
    let private = crate::notify::c0_access_key(&etcd.url, REGION).await?;
    let written = t.elapsed();

    let t = Instant::now();
    let (ctrl, _) = crate::region::controller(REGION, &etcd.url).await?;
    let start = t.elapsed();
    let ctrl_rss = crate::rss_mib();
    println!(
        "controller: ready in {:.2} s; process RSS {ctrl_rss} MiB",
        start.as_secs_f64()
    );
    drop(ctrl);
    // Let the dropped controller's tasks wind down before it starts again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let (ctrl, _) = crate::region::controller(REGION, &etcd.url).await?;
    let restart = t.elapsed();
    println!(
        "controller: restarted, ready in {:.2} s",
        restart.as_secs_f64()
    );

    let t = Instant::now();
    let (dme, cookie) = start_dme(REGION, ctrl.notify_addr).await?;
    let dme_load = t.elapsed();
    let both_rss = crate::rss_mib();
    println!(
        "DME: ready and finding the app after {:.2} s; process RSS with the controller {both_rss} MiB",
        dme_load.as_secs_f64()
    );
    let find = find_cloudlets(&args.load, dme.grpc_addr, &cookie).await?;
    print_table(&[("FindCloudlet", &find)]);

    let channel = crate::channel(ctrl.notify_addr).await?;
    let (sync, _tx, _down) = crate::notify::sync(&channel, REGION, &private, 0).await?;
    println!(
        "CRM full sync: {} objects ({} bytes) in {:.1} ms",
        sync.objects,
        sync.bytes,
        sync.took.as_secs_f64() * 1e3
    );

    let p99_ms = find.p99.as_secs_f64() * 1e3;
    println!(
        "{} app instances on {} cloudlets written in {:.1} s; controller RSS at most {ctrl_rss} MiB (target <= 2048), \
         restart-to-ready {:.2} s (target <= 30), DME p99 {p99_ms:.2} ms (target <= 5)",
        args.app_insts + args.sync_objects,
        args.cloudlets,
        written.as_secs_f64(),
        restart.as_secs_f64()
    );
    let worst = [
        ctrl_rss as f64 / 2048.0,
        restart.as_secs_f64() / 30.0,
        p99_ms / 5.0,
    ]
    .into_iter()
    .fold(0.0, f64::max);
    crate::ratio(
        "scale",
        worst,
        1.0,
        serde_json::json!({
            "app_insts": args.app_insts + args.sync_objects, "cloudlets": args.cloudlets,
            "write_s": written.as_secs_f64(), "controller_start_s": start.as_secs_f64(),
            "controller_rss_mib": ctrl_rss, "restart_to_ready_s": restart.as_secs_f64(),
            "dme_load_s": dme_load.as_secs_f64(), "controller_and_dme_rss_mib": both_rss,
            "find_cloudlet": find.json(), "crm_sync_objects": sync.objects,
            "crm_sync_ms": sync.took.as_secs_f64() * 1e3,
        }),
    );
    drop((dme, ctrl, etcd));
    Ok(())
}
