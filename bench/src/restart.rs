//! `edge-bench restart`: a regional controller restarting on a large region. The region is written
//! straight into a real etcd the way the controller stores it (each AppInst as its JSON, three reference
//! keys and a public port), then the time from `Controller::start` to ready (the region loaded, ports
//! served) and the memory the loaded region takes are measured, twice. Targets (the scale issue):
//! restart-to-ready ≤ 30 s and controller RSS ≤ 2 GiB at 10,000 cloudlets and 100,000 AppInsts.

use std::time::{Duration, Instant};

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

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.cloudlets > 0, "--cloudlets must be at least 1");
    let etcd = testenv::Etcd::start().await?;
    crate::bulk::write_region(&etcd.url, REGION, args.app_insts, args.cloudlets, false, 0).await?;

    let mut times = Vec::new();
    for round in 1..=2 {
        let before = crate::rss_mib();
        let t = Instant::now();
        let ctrl = regional_controller::Controller::start(regional_controller::Config::local(
            REGION, &etcd.url,
        ))
        .await?;
        let ready = t.elapsed();
        let loaded = crate::rss_mib();
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
    crate::ratio(
        "restart",
        worst.as_secs_f64() / 30.0,
        1.0,
        serde_json::json!({"app_insts": args.app_insts, "cloudlets": args.cloudlets,
            "restart_to_ready_s": worst.as_secs_f64()}),
    );
    Ok(())
}
