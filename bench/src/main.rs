//! `edge-bench`: speed measured against baselines of the same run.
//!
//! `dme` (the default): writes a region of `--app-insts` instances of one App on `--cloudlets` cloudlets
//! into a real etcd (testenv), starts the regional controller and a DME on it, plus an echo server, all on
//! loopback. Then it times sequential FindCloudlet calls from points all over Europe (latency
//! percentiles) and concurrent ones (throughput), bounded in count and time, against the echo, and
//! prints the ratios. `shepherd`: Shepherd's own CPU and memory with many app instances ([`shepherd`]). `vm`:
//! a VM AppInst against a bare qemu boot ([`vm`]). `lb`: the shared root LB against direct connections
//! ([`lb`]). `restart`: a controller restarting on a region of 100,000 AppInsts ([`restart`]). `scale`: that
//! region with its DME and a CRM's full sync ([`scale`]).
//! `controller` and `mc`: the controller's creates against raw etcd, the MC against the controller
//! ([`api`]). `appinst-docker`: an AppInst on the docker platform against `docker run` ([`appinst`]).

mod api;
mod appinst;
mod bulk;
mod lb;
mod notify;
mod region;
mod restart;
mod scale;
mod shepherd;
mod vm;

use std::time::{Duration, Instant};

use clap::Parser;
use edge_proto::bench::EchoMessage;
use edge_proto::bench::echo_client::EchoClient;
use edge_proto::bench::echo_server::{Echo, EchoServer};
use edge_proto::dme::match_engine_api_client::MatchEngineApiClient;
use edge_proto::dme::{FindCloudletRequest, Loc};
use tonic::transport::Channel;

/// Benchmarks that print ratios against baselines measured in the same run.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Also write each bench's ratio, target and figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    bench: Option<Bench>,
}

/// What the benches of this run reported ([`ratio`]), for `--json`.
static REPORTS: std::sync::Mutex<Vec<serde_json::Value>> = std::sync::Mutex::new(Vec::new());

/// Prints a bench's last line, `ratio=<x> target=<y>`, and keeps it with its figures for `--json`.
pub fn ratio(bench: &str, ratio: f64, target: f64, figures: serde_json::Value) {
    println!("ratio={ratio:.3} target={target}");
    REPORTS.lock().expect("reports").push(
        serde_json::json!({"bench": bench, "ratio": ratio, "target": target, "figures": figures}),
    );
}

/// A bench's arguments with their defaults.
fn defaults<A: clap::Args + clap::FromArgMatches>(name: &'static str) -> A {
    let matches = A::augment_args(clap::Command::new(name)).get_matches_from([name]);
    A::from_arg_matches(&matches).expect("every argument has a default")
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// FindCloudlet against a plain gRPC echo (the default).
    Dme(Args),
    /// Shepherd's CPU, memory and InfluxDB volume with many app instances on the fake platform.
    Shepherd(shepherd::Args),
    /// A VM AppInst end to end against a bare qemu boot of the same images.
    Vm(vm::Args),
    /// TCP throughput and connections/s through the shared root LB against direct connections.
    Lb(lb::Args),
    /// Restart-to-ready and memory of a controller on a large region written straight into etcd.
    Restart(restart::Args),
    /// A region of 10,000 cloudlets and 100,000 AppInsts: load, memory, restart, DME, a CRM's full sync.
    Scale(scale::Args),
    /// CreateAppInst on the docker platform until it answers through the LB, against `docker run`.
    AppinstDocker(appinst::Args),
    /// CreateFlavor and CreateApp through the controller's API against raw etcd transactions.
    Controller(api::ControllerArgs),
    /// ShowAppInst through the MC against the controller directly; the MC's memory around logins.
    Mc(api::McArgs),
    /// One change until the last of many notify subscribers has it; a CRM's full sync.
    Notify(notify::NotifyArgs),
    /// A CRM's delta resync after a few changes against a full resync.
    Resync(notify::ResyncArgs),
    /// Every benchmark in turn with its defaults (vm only where the VM images are installed), then a table
    /// of the ratios; one that fails is reported and the others still run.
    All,
    /// (internal) the Shepherd process the `shepherd` benchmark measures.
    #[command(hide = true)]
    ShepherdChild(shepherd::Child),
}

/// How hard [`measure`] drives a call.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Load {
    /// Calls per measurement (sequential and concurrent each).
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Concurrent callers in the throughput measurement.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Upper bound on each measurement, seconds.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    load: Load,
    /// Instances of the App in the region.
    #[arg(long, default_value_t = 10_000)]
    app_insts: usize,
    /// Cloudlets they are spread over.
    #[arg(long, default_value_t = 1_000)]
    cloudlets: usize,
}

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(
        &self,
        req: tonic::Request<EchoMessage>,
    ) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
        Ok(tonic::Response::new(req.into_inner()))
    }
}

/// Latencies of sequential calls and throughput of concurrent ones.
pub struct Measured {
    pub p50: Duration,
    pub p99: Duration,
    pub per_sec: f64,
}

impl Measured {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50_ms": self.p50.as_secs_f64() * 1e3, "p99_ms": self.p99.as_secs_f64() * 1e3,
                           "calls_per_s": self.per_sec})
    }
}

/// RSS of this process in MiB. The servers a bench starts in process run in it, and memory freed by
/// earlier benches of `all` is reused, so a difference would understate them: the figures are this
/// process's whole RSS (upper bounds).
pub fn rss_mib() -> u64 {
    edge_common::process_usage(std::process::id()).map_or(0, |(_, rss)| rss >> 20)
}

/// Prints the measurements as a table.
pub fn print_table(rows: &[(&str, &Measured)]) {
    println!(
        "{:<24} {:>10} {:>10} {:>12}",
        "call", "p50", "p99", "calls/s"
    );
    for (name, m) in rows {
        println!(
            "{name:<24} {:>10.1?} {:>10.1?} {:>12.0}",
            m.p50, m.p99, m.per_sec
        );
    }
}

pub async fn measure<F, Fut>(args: &Load, call: F) -> Measured
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let mut lat = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        if Instant::now() > deadline {
            break;
        }
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let per_worker = args.calls / args.concurrency;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_secs);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut done = 0usize;
                while done < per_worker && Instant::now() < deadline {
                    call().await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for w in workers {
        done += w.await.expect("worker");
    }
    let per_sec = done as f64 / start.elapsed().as_secs_f64();
    Measured {
        p50: pct(0.5),
        p99: pct(0.99),
        per_sec,
    }
}

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.bench {
        None => dme(Args::parse_from(["dme"])).await,
        Some(Bench::All) => all().await,
        Some(Bench::Dme(a)) => dme(a).await,
        Some(Bench::Shepherd(a)) => shepherd::run(a).await,
        Some(Bench::Vm(a)) => vm::run(a).await,
        Some(Bench::Lb(a)) => lb::run(a).await,
        Some(Bench::Restart(a)) => restart::run(a).await,
        Some(Bench::Scale(a)) => scale::run(a).await,
        Some(Bench::Notify(a)) => notify::fanout(a).await,
        Some(Bench::Resync(a)) => notify::resync(a).await,
        Some(Bench::AppinstDocker(a)) => appinst::run(a).await,
        Some(Bench::Controller(a)) => api::controller(a).await,
        Some(Bench::Mc(a)) => api::mc(a).await,
        Some(Bench::ShepherdChild(c)) => shepherd::child(c).await,
    };
    if let Some(path) = &cli.json {
        let reports = REPORTS.lock().expect("reports").clone();
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    result
}

/// `edge-bench all`.
async fn all() -> anyhow::Result<()> {
    let mut failed = Vec::new();
    macro_rules! run {
        ($name:literal, $bench:expr) => {
            println!("\n=== {}", $name);
            if let Err(e) = $bench.await {
                println!("{} failed: {e:#}", $name);
                failed.push($name);
            }
        };
    }
    run!("dme", dme(defaults("dme")));
    run!("controller", api::controller(defaults("controller")));
    run!("mc", api::mc(defaults("mc")));
    run!("appinst-docker", appinst::run(defaults("appinst-docker")));
    run!("lb", lb::run(defaults("lb")));
    run!("restart", restart::run(defaults("restart")));
    run!("scale", scale::run(defaults("scale")));
    run!("notify", notify::fanout(defaults("notify")));
    run!("resync", notify::resync(defaults("resync")));
    run!("shepherd", shepherd::run(defaults("shepherd")));
    if std::path::Path::new(testenv::fixtures::VM_IMAGES)
        .join("SHA256SUMS")
        .is_file()
    {
        run!("vm", vm::run(defaults("vm")));
    } else {
        println!(
            "\nvm: skipped, no VM images in {}",
            testenv::fixtures::VM_IMAGES
        );
    }
    println!("\n{:<16} {:>8} {:>8}", "bench", "ratio", "target");
    for r in REPORTS.lock().expect("reports").iter() {
        println!(
            "{:<16} {:>8.3} {:>8}",
            r["bench"].as_str().unwrap_or(""),
            r["ratio"].as_f64().unwrap_or(0.0),
            r["target"]
        );
    }
    anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

async fn dme(args: Args) -> anyhow::Result<()> {
    // The raw baseline: a plain tonic echo on loopback.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = l.local_addr()?;
    let (_running, running) = tokio::sync::watch::channel(false);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(edge_common::grpc_incoming(l, running)),
    );

    // The region, written straight into etcd; then the controller and a DME that loads it.
    eprintln!(
        "writing {} app instances on {} cloudlets into etcd ...",
        args.app_insts, args.cloudlets
    );
    let etcd = testenv::Etcd::start().await?;
    bulk::write_region(
        &etcd.url,
        region::REGION,
        args.app_insts,
        args.cloudlets,
        true,
        0,
    )
    .await?;
    let (ctrl, _) = region::controller(region::REGION, &etcd.url).await?;
    let loading = Instant::now();
    let (dme, cookie) = start_dme(region::REGION, ctrl.notify_addr).await?;
    eprintln!("DME ready in {:.1} s", loading.elapsed().as_secs_f64());

    let echo = EchoClient::new(channel(echo_addr).await?);
    let base = measure(&args.load, move || {
        let mut c = echo.clone();
        async move {
            c.echo(EchoMessage {
                payload: vec![0; 64],
            })
            .await
            .expect("echo");
        }
    })
    .await;
    let find = find_cloudlets(&args.load, dme.grpc_addr, &cookie).await?;

    print_table(&[("grpc echo", &base), ("FindCloudlet", &find)]);
    let (p50, p99, throughput) = (
        find.p50.as_secs_f64() / base.p50.as_secs_f64(),
        find.p99.as_secs_f64() / base.p99.as_secs_f64(),
        find.per_sec / base.per_sec,
    );
    println!(
        "{} app instances on {} cloudlets; FindCloudlet/echo: p50 {p50:.2}x, p99 {p99:.2}x (target <= 2), throughput {throughput:.2}x",
        args.app_insts, args.cloudlets
    );
    ratio(
        "dme",
        throughput,
        0.6,
        serde_json::json!({"app_insts": args.app_insts, "cloudlets": args.cloudlets, "echo": base.json(),
            "find_cloudlet": find.json(), "ratio_p50": p50, "ratio_p99": p99}),
    );
    drop((dme, ctrl, etcd));
    Ok(())
}

/// A DME of `region` fed by the controller at `notify`, once it is ready (the region loaded) and finds
/// the bulk region's App ([`bulk::write_region`]); with the session cookie of a registered client.
pub async fn start_dme(
    region: &str,
    notify: std::net::SocketAddr,
) -> anyhow::Result<(dme::Dme, String)> {
    let dme = dme::Dme::start(dme::Config::local(region, &notify.to_string())).await?;
    let mut sdk = dme_client::DmeClient::connect(&format!("http://{}", dme.grpc_addr)).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    // Ready once the controller's full sync is in.
    while !matches!(testenv::http_get(dme.http_addr, "/readyz"), Some((200, _))) {
        anyhow::ensure!(Instant::now() < deadline, "the DME never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        if sdk.register("dev", "game", "1.0", None).await.is_ok()
            && sdk.find_cloudlet("", 52.5, 13.4).await?.is_some()
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the DME never saw the app instances"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = sdk.session_cookie().to_string();
    Ok((dme, cookie))
}

/// FindCloudlet from points all over the bulk region's area, in a fixed order, driven by `load`.
pub async fn find_cloudlets(
    load: &Load,
    dme: std::net::SocketAddr,
    cookie: &str,
) -> anyhow::Result<Measured> {
    let dme_api = MatchEngineApiClient::new(channel(dme).await?);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cookie = cookie.to_string();
    Ok(measure(load, move || {
        let mut c = dme_api.clone();
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (latitude, longitude) = bulk::position(n.wrapping_mul(7919) % 10_000, 10_000);
        let req = FindCloudletRequest {
            session_cookie: cookie.clone(),
            gps_location: Some(Loc {
                latitude,
                longitude,
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            c.find_cloudlet(req).await.expect("find");
        }
    })
    .await)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_bench_of_all_has_defaults() {
        let dme: super::Args = super::defaults("dme");
        assert_eq!((dme.app_insts, dme.load.calls), (10_000, 2000));
        let _: super::api::ControllerArgs = super::defaults("controller");
        let _: super::api::McArgs = super::defaults("mc");
        let _: super::appinst::Args = super::defaults("appinst-docker");
        let _: super::lb::Args = super::defaults("lb");
        let _: super::restart::Args = super::defaults("restart");
        let _: super::scale::Args = super::defaults("scale");
        let _: super::shepherd::Args = super::defaults("shepherd");
        let _: super::vm::Args = super::defaults("vm");
    }
}
