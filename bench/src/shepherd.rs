//! `edge-bench shepherd`: Shepherd's own CPU and memory, and what it writes to InfluxDB, with many app
//! instances on the fake platform (target: < 5 % of one core and < 100 MiB RSS with 1,000 instances at a
//! 10 s interval).
//!
//! A real etcd, InfluxDB, the controller and a fake-platform CRM run in this process; Shepherd runs in a
//! child process (this binary again, `shepherd-child`) so its CPU time and RSS can be read from /proc
//! alone. CPU is measured over whole sampling rounds after the first one has been written.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edge_common::notify_client::CloudletAgent;
use edge_proto::edge::ClientType;
use testenv::fixtures::*;
use testenv::metric;

use crate::region::{REGION, Region, cloudlet_key};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// App instances on the cloudlet.
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Shepherd's sampling interval, seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Length of the measurement, seconds (bounded to 600).
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

#[derive(clap::Args, Debug)]
pub struct Child {
    #[arg(long)]
    controller: String,
    #[arg(long)]
    key_file: PathBuf,
    #[arg(long)]
    influxdb: String,
    #[arg(long)]
    interval: u64,
    #[arg(long)]
    http_addr: std::net::SocketAddr,
}

/// Runs Shepherd (fake platform) until killed.
pub async fn child(c: Child) -> anyhow::Result<()> {
    let _s = shepherd::Shepherd::start(shepherd::Config {
        agent: CloudletAgent {
            client_type: ClientType::Shepherd,
            region: REGION.into(),
            cloudlet: cloudlet_key(),
            controller: c.controller,
            access_key: std::fs::read_to_string(&c.key_file)?.trim().to_string(),
            tls: None,
        },
        platform: shepherd::PlatformKind::Fake,
        influx: shepherd::influx::InfluxConfig {
            url: c.influxdb,
            database: "metrics".into(),
            events_database: "events".into(),
            retention_days: 1,
            max_queued: 200_000,
        },
        interval: Duration::from_secs(c.interval),
        health_interval: Duration::from_secs(5),
        health_failures: 3,
        public_addr: [127, 0, 0, 1].into(),
        lb_metrics: None,
        http_addr: c.http_addr,
        resource_alert_percent: 80,
    })
    .await?;
    std::future::pending::<()>().await;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.instances.max(1);
    eprintln!("starting etcd, InfluxDB, the controller and a fake-platform CRM on loopback ...");
    let (region, influx) = tokio::join!(Region::game(), testenv::Influx::start());
    let (region, influx) = (region?, influx?);
    let (api, ctrl, key, dir) = (&region.api, &region.ctrl, &region.access_key, &region.dir);
    eprintln!("creating {n} app instances ...");
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (api, next) = (api.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n || started.elapsed() > Duration::from_secs(900) {
                        return anyhow::Ok(());
                    }
                    let inst = app_inst("dev", &format!("g{i}"), "game", "k1");
                    // Concurrent creates contend for the lowest free LB port: retry what was aborted.
                    for attempt in 1.. {
                        match api.app_insts().create_app_inst(inst.clone()).await {
                            Ok(s) => {
                                drain(&mut s.into_inner()).await?;
                                break;
                            }
                            Err(e) if e.code() == tonic::Code::Aborted && attempt < 10 => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    eprintln!("{n} app instances READY in {:.1?}", started.elapsed());

    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key)?;
    let http: std::net::SocketAddr = ([127, 0, 0, 1], testenv::free_port()).into();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("shepherd-child")
        .args(["--controller", &ctrl.notify_addr.to_string()])
        .arg("--key-file")
        .arg(&key_file)
        .args(["--influxdb", &influx.url])
        .args(["--interval", &args.interval.to_string()])
        .args(["--http-addr", &http.to_string()])
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = child.id();
    let result = async {
        // Measure from the end of the first written round, over whole rounds.
        let deadline = Instant::now() + Duration::from_secs(120);
        while metric(http, "shepherd_influx_writes_total{result=\"ok\"}") < 1.0 {
            anyhow::ensure!(Instant::now() < deadline, "Shepherd wrote nothing within 120 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let secs = args.secs.clamp(args.interval, 600);
        let (cpu0, _) = edge_common::process_usage(pid).ok_or_else(|| anyhow::anyhow!("Shepherd exited"))?;
        let bytes0 = metric(http, "shepherd_influx_bytes_total");
        let count = async || -> anyhow::Result<i64> {
            let v = influx
                .query("metrics", "SELECT count(cpu) FROM \"appinst-cpu\"")
                .await?;
            Ok(v["results"][0]["series"][0]["values"][0][1].as_i64().unwrap_or(0))
        };
        let points0 = count().await?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu1, rss) = edge_common::process_usage(pid).ok_or_else(|| anyhow::anyhow!("Shepherd exited"))?;
        let wall = t0.elapsed().as_secs_f64();
        let bytes = metric(http, "shepherd_influx_bytes_total") - bytes0;
        let rounds = count().await? - points0;
        let cpu_pct = (cpu1 - cpu0) / wall * 100.0;
        let per_min = 60.0 / wall / n as f64;
        println!("shepherd with {n} app instances, {} s interval, measured over {wall:.0} s:", args.interval);
        println!("  CPU            {cpu_pct:>8.2} % of one core   (target < 5 %)");
        println!("  RSS            {:>8.1} MiB             (target < 100 MiB)", rss as f64 / (1 << 20) as f64);
        println!(
            "  InfluxDB       {:>8.0} bytes and {:.1} appinst-cpu points per app instance per minute",
            bytes * per_min,
            rounds as f64 * per_min
        );
        println!("(ratio: the larger of CPU/5 % and RSS/100 MiB)");
        crate::ratio(
            "shepherd",
            (cpu_pct / 5.0).max(rss as f64 / (100.0 * (1 << 20) as f64)),
            1.0,
            serde_json::json!({"instances": n, "cpu_percent": cpu_pct, "rss_bytes": rss,
                "influx_bytes_per_inst_min": bytes * per_min}),
        );
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
