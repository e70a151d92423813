//! `edge-bench lb`: the shared root load balancer (`edge-lb`, the real process, programmed like the CRM
//! does) against a direct connection to the same backend, measured in the same run: TCP throughput of one
//! and of several streams, and connections per second (connect, one byte each way, close), with the CPU
//! time the LB process spends per GiB and per 1,000 connections (what a root LB must be sized for).
//! Target: ≥ 0.8 of direct throughput. `--pin` puts the LB on a core of its own, as on a real root LB
//! whose clients and backends run elsewhere: it tells the LB's own cost from the sharing of two cores.

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
    /// Run the LB on the last core and this process (clients and backends) on the others, in both the
    /// direct and the LB measurements (needs at least two cores and `taskset`).
    #[arg(long)]
    pin: bool,
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

/// One measurement: how much moved (bytes or connections) in how many seconds.
struct Moved {
    count: f64,
    secs: f64,
}

/// Medians of `rounds` measurements of the rate direct and through the LB (`measure(true)`), taken in
/// turn, and the LB's CPU seconds per unit moved through it.
struct Compared {
    direct: f64,
    via: f64,
    lb_cpu_per_unit: f64,
}

async fn compare<F, Fut>(rounds: usize, lb_pid: u32, measure: F) -> anyhow::Result<Compared>
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = anyhow::Result<Moved>>,
{
    let lb_cpu = || edge_common::process_usage(lb_pid).map_or(0.0, |(cpu, _)| cpu);
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    let (mut cpu, mut moved) = (0.0, 0.0);
    for _ in 0..rounds.max(1) {
        let d = measure(false).await?;
        direct.push(d.count / d.secs);
        let before = lb_cpu();
        let v = measure(true).await?;
        cpu += lb_cpu() - before;
        moved += v.count;
        via.push(v.count / v.secs);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Compared {
        direct: median(direct),
        via: median(via),
        lb_cpu_per_unit: cpu / moved.max(1.0),
    })
}

/// Moves every thread of process `pid` onto the CPUs in `list` (taskset's syntax, e.g. `0-2`).
fn pin(pid: u32, list: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", list, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(ok, "taskset could not pin process {pid} to CPUs {list}");
    Ok(())
}

/// Bytes written to `addr` by `streams` connections for `secs`.
async fn throughput(addr: SocketAddr, streams: usize, secs: u64) -> anyhow::Result<Moved> {
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
    Ok(Moved {
        count: total as f64,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Connections made to `addr` in turn by `--concurrency` connectors: connect, one byte there and back,
/// close.
async fn connection_rate(addr: SocketAddr, args: &Args) -> anyhow::Result<Moved> {
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
    Ok(Moved {
        count: total as f64,
        secs: start.elapsed().as_secs_f64(),
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()?.get();
    if args.pin {
        anyhow::ensure!(cores >= 2, "--pin needs at least two cores");
        pin(std::process::id(), &format!("0-{}", cores - 2))?;
    }
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
    let pid = lb
        .status()
        .await?
        .ok_or_else(|| anyhow::anyhow!("edge-lb is not running"))?
        .pid;
    if args.pin {
        pin(pid, &(cores - 1).to_string())?;
        println!(
            "edge-lb on CPU {}, clients and backends on the others",
            cores - 1
        );
    }
    let gib = |b: f64| b / f64::from(1 << 30);
    let mut ratios = Vec::new();
    let mut cpu_per_gib = Vec::new();
    for streams in [1, args.streams] {
        let c = compare(args.rounds, pid, |lb| {
            throughput(if lb { through[0] } else { sink }, streams, args.secs)
        })
        .await?;
        let cpu = c.lb_cpu_per_unit * f64::from(1 << 30);
        println!(
            "throughput, {streams} stream(s): direct {:.2} GiB/s, through the LB {:.2} GiB/s ({:.2}); edge-lb CPU {cpu:.2} s per GiB",
            gib(c.direct),
            gib(c.via),
            c.via / c.direct
        );
        ratios.push(c.via / c.direct);
        cpu_per_gib.push(cpu);
    }
    let c = compare(args.rounds, pid, |lb| {
        connection_rate(if lb { through[1] } else { echo }, &args)
    })
    .await?;
    let cpu_per_1k = c.lb_cpu_per_unit * 1000.0;
    println!(
        "connections/s ({} at once): direct {:.0}, through the LB {:.0} ({:.2}); edge-lb CPU {:.0} ms per 1,000",
        args.concurrency,
        c.direct,
        c.via,
        c.via / c.direct,
        cpu_per_1k * 1000.0
    );
    ratios.push(c.via / c.direct);
    println!(
        "edge-lb RSS after the run: {} MiB",
        edge_common::process_usage(pid).map_or(0, |(_, rss)| rss / (1024 * 1024))
    );
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    crate::ratio(
        "lb",
        ratios[0],
        0.8,
        serde_json::json!({
            "ratios": ratios,
            "lb_cpu_s_per_gib": cpu_per_gib,
            "lb_cpu_s_per_1000_connections": cpu_per_1k,
            "pinned": args.pin,
        }),
    );
    Ok(())
}
