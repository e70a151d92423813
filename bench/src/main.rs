//! `edge-bench`: speed measured against baselines of the same run.
//!
//! `dme` (the default): starts a real etcd (testenv), the regional controller, a fake-platform CRM with
//! one app instance and a DME, all on loopback, plus an echo server. Then it times sequential calls
//! (latency percentiles) and concurrent calls (throughput) of each, bounded in count and time, and prints
//! the ratios. `shepherd`: Shepherd's own CPU and memory with many app instances ([`shepherd`]). `vm`:
//! a VM AppInst against a bare qemu boot ([`vm`]). `lb`: the shared root LB against direct connections
//! ([`lb`]). `restart`: a controller restarting on a region of 100,000 AppInsts ([`restart`]).

mod lb;
mod region;
mod restart;
mod shepherd;
mod vm;

use std::time::{Duration, Instant};

use clap::Parser;
use edge_proto::bench::EchoMessage;
use edge_proto::bench::echo_client::EchoClient;
use edge_proto::bench::echo_server::{Echo, EchoServer};
use edge_proto::dme::match_engine_api_client::MatchEngineApiClient;
use edge_proto::dme::{FindCloudletRequest, Loc};
use testenv::fixtures::*;
use tonic::transport::Channel;

/// Benchmarks that print ratios against baselines measured in the same run.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Option<Bench>,
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
    /// (internal) the Shepherd process the `shepherd` benchmark measures.
    #[command(hide = true)]
    ShepherdChild(shepherd::Child),
}

#[derive(Parser, Debug)]
struct Args {
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
struct Measured {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

async fn measure<F, Fut>(args: &Args, call: F) -> Measured
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
    match Cli::parse().bench {
        None => dme(Args::parse_from(["dme"])).await,
        Some(Bench::Dme(a)) => dme(a).await,
        Some(Bench::Shepherd(a)) => shepherd::run(a).await,
        Some(Bench::Vm(a)) => vm::run(a).await,
        Some(Bench::Lb(a)) => lb::run(a).await,
        Some(Bench::Restart(a)) => restart::run(a).await,
        Some(Bench::ShepherdChild(c)) => shepherd::child(c).await,
    }
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

    // A region: etcd, controller, one fake cloudlet with a READY app instance, a DME.
    eprintln!("starting etcd, controller, CRM (fake platform) and DME on loopback ...");
    let region = region::Region::game().await?;
    let (api, ctrl) = (&region.api, &region.ctrl);
    drain(
        &mut api
            .app_insts()
            .create_app_inst(app_inst("dev", "g1", "game", "k1"))
            .await?
            .into_inner(),
    )
    .await?;
    let dme = dme::Dme::start(dme::Config::local(
        region::REGION,
        &ctrl.notify_addr.to_string(),
    ))
    .await?;
    let mut sdk = dme_client::DmeClient::connect(&format!("http://{}", dme.grpc_addr)).await?;
    let mut registered = false;
    for _ in 0..100 {
        if sdk.register("dev", "game", "1.0", None).await.is_ok()
            && sdk.find_cloudlet("", 1.0, 1.0).await?.is_some()
        {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(registered, "the DME never saw the app instance");
    let cookie = sdk.session_cookie().to_string();

    let echo = EchoClient::new(channel(echo_addr).await?);
    let base = measure(&args, move || {
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
    let dme_api = MatchEngineApiClient::new(channel(dme.grpc_addr).await?);
    let find = measure(&args, move || {
        let mut c = dme_api.clone();
        let req = FindCloudletRequest {
            session_cookie: cookie.clone(),
            gps_location: Some(Loc {
                latitude: 52.5,
                longitude: 13.4,
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            c.find_cloudlet(req).await.expect("find");
        }
    })
    .await;

    println!(
        "{:<16} {:>10} {:>10} {:>12}",
        "call", "p50", "p99", "calls/s"
    );
    for (name, m) in [("grpc echo", &base), ("FindCloudlet", &find)] {
        println!(
            "{name:<16} {:>10.1?} {:>10.1?} {:>12.0}",
            m.p50, m.p99, m.per_sec
        );
    }
    println!(
        "ratio FindCloudlet/echo: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
        find.p50.as_secs_f64() / base.p50.as_secs_f64(),
        find.p99.as_secs_f64() / base.p99.as_secs_f64(),
        find.per_sec / base.per_sec
    );
    Ok(())
}
