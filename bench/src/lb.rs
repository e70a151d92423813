//! `edge-bench lb`: the shared root load balancer (`edge-lb`, the real process, programmed like the CRM
//! does) against a direct connection to the same backend, measured in the same run: TCP throughput of one
//! and of several streams, and connections per second (connect, one byte each way, close). Target: ≥ 0.8
//! of direct throughput.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crm::lb::client::{LbClient, LbConfig};
use crm::lb::{Proto, RouteKey, RouteSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of each throughput measurement.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Rounds of every measurement, direct and through the LB in turn; medians are printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Parallel streams in the second throughput measurement.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Connections in each connection-rate measurement (at most `--secs` long).
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Concurrent connectors in the connection-rate measurement.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// A backend on a thread of its own (so its work never queues behind the measuring client's), serving
/// each connection with `serve`.
fn backend<F, Fut>(serve: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(tokio::task::LocalSet::new().run_until(async move {
            let l = TcpListener::from_std(l).expect("listener");
            while let Ok((s, _)) = l.accept().await {
                tokio::task::spawn_local(serve(s));
            }
        }))
    });
    Ok(addr)
}

/// Reads and drops everything of every connection.
fn discard() -> anyhow::Result<SocketAddr> {
    backend(|mut s| async move {
        let mut buf = vec![0u8; 256 * 1024];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
}

/// Answers the first byte of every connection and closes it.
fn echo_one() -> anyhow::Result<SocketAddr> {
    backend(|mut s| async move {
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).await.is_ok() {
            let _ = s.write_all(&b).await;
        }
    })
}

/// Medians of `rounds` measurements of `direct` and `via`, taken in turn.
async fn medians<F, Fut>(rounds: usize, measure: F) -> anyhow::Result<(f64, f64)>
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = anyhow::Result<f64>>,
{
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        direct.push(measure(false).await?);
        via.push(measure(true).await?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(direct), median(via)))
}

/// Bytes per second written to `addr` by `streams` connections for `secs`.
async fn throughput(addr: SocketAddr, streams: usize, secs: u64) -> anyhow::Result<f64> {
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            let chunk = vec![7u8; 256 * 1024];
            let mut sent = 0u64;
            while Instant::now() < end {
                s.write_all(&chunk).await?;
                sent += chunk.len() as u64;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Connections per second to `addr`: connect, one byte there and back, close.
async fn connection_rate(addr: SocketAddr, args: &Args) -> anyhow::Result<f64> {
    let end = Instant::now() + Duration::from_secs(args.secs);
    let start = Instant::now();
    let per_task = args.connections.div_ceil(args.concurrency);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while done < per_task && Instant::now() < end {
                let mut s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lb = LbClient::new(
        LbConfig {
            binary: crate::region::lb_binary()?,
            dir: dir.path().join("lb"),
            public_addr: [127, 0, 0, 1].into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
        },
        &prometheus::Registry::new(),
    )?;
    let (sink, echo) = (discard()?, echo_one()?);
    let mut through = Vec::new();
    for (backend, owner) in [(sink, "bench/sink"), (echo, "bench/echo")] {
        let port = testenv::free_port();
        lb.ensure(RouteSpec {
            key: RouteKey {
                proto: Proto::Tcp,
                port,
            },
            backend,
            owner: owner.into(),
        })
        .await?;
        through.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let mut ratios = Vec::new();
    for streams in [1, args.streams] {
        let (direct, via) = medians(args.rounds, |lb| {
            throughput(if lb { through[0] } else { sink }, streams, args.secs)
        })
        .await?;
        println!(
            "throughput, {streams} stream(s): direct {:.0} MiB/s, through the LB {:.0} MiB/s ({:.2})",
            mib(direct),
            mib(via),
            via / direct
        );
        ratios.push(via / direct);
    }
    let (direct, via) = medians(args.rounds, |lb| {
        connection_rate(if lb { through[1] } else { echo }, &args)
    })
    .await?;
    println!(
        "connections/s ({} at once): direct {direct:.0}, through the LB {via:.0} ({:.2})",
        args.concurrency,
        via / direct
    );
    if let Some(s) = lb.status().await? {
        println!(
            "edge-lb RSS after the run: {} MiB",
            edge_common::process_usage(s.pid).map_or(0, |(_, rss)| rss / (1024 * 1024))
        );
        std::process::Command::new("kill")
            .args(["-TERM", &s.pid.to_string()])
            .status()?;
    }
    crate::ratio("lb", ratios[0], 0.8, serde_json::json!({"ratios": ratios}));
    Ok(())
}
