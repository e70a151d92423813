//! `edge-bench vm`: a VM AppInst end to end (CreateAppInst until it answers HTTP through the shared LB)
//! against a bare `qemu-system-x86_64` boot of the same images to an answer on a forwarded port, measured
//! in the same run (target ≤ 1.3×); the RSS of an idle VM; and how many bare VMs boot at once before the
//! boot time doubles (at most `--max-parallel`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testenv::fixtures::*;

use crate::region::{Region, cloudlet_key};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Boots measured for each figure (the median is printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Most VMs started at once in the parallel measurement.
    #[arg(long, default_value_t = 8)]
    max_parallel: usize,
    /// The image directory of infra/vm-images.sh.
    #[arg(long, default_value = "/opt/edge-platform/images")]
    images: String,
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A bare qemu of the project's images sized like the benchmark's App (flavor `small`: 2 vCPUs, 2 GiB)
/// on an overlay of its own, port 80 forwarded to `port`.
fn bare_qemu(images: &str, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let disk = dir.join(format!("disk-{port}.qcow2"));
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(format!("{images}/edge-web.qcow2"))
        .arg(&disk)
        .status()?
        .success();
    anyhow::ensure!(ok, "qemu-img failed");
    Ok(Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi,tb-size=64",
            "-cpu",
            "max",
            "-machine",
            "q35",
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "256",
            "-smp",
            "1",
        ])
        .args(["-kernel", &format!("{images}/edge-vm.kernel")])
        .args(["-initrd", &format!("{images}/edge-vm.initrd")])
        .args(["-append", "console=ttyS0 quiet panic=-1", "-serial", "null"])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
        .args([
            "-netdev",
            &format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:80"),
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Waits (at most 120 s) until `addr` answers HTTP 200. Each try gives up after 300 ms: before the guest
/// listens, qemu holds a forwarded connection open without an answer.
pub async fn until_http(addr: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
            let mut b = [0u8; 12];
            s.read_exact(&mut b).await.ok()?;
            (&b[9..12] == b"200").then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(300), attempt).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{addr} did not answer within 120 s")
}

fn rss_mib(pid: u32) -> f64 {
    edge_common::process_usage(pid).map_or(0.0, |(_, rss)| rss as f64 / f64::from(1 << 20))
}

/// Boots `n` bare VMs at once; the time until all answer, and the RSS of the first once idle.
async fn bare_boot(images: &str, dir: &Path, n: usize) -> anyhow::Result<(Duration, f64)> {
    let ports: Vec<u16> = (0..n).map(|_| testenv::free_port()).collect();
    let start = Instant::now();
    let mut vms = Vec::new();
    for p in &ports {
        vms.push(bare_qemu(images, dir, *p)?);
    }
    let result = async {
        for p in &ports {
            until_http((Ipv4Addr::LOCALHOST, *p).into()).await?;
        }
        let took = start.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, anyhow::Error>((took, rss_mib(vms[0].id())))
    }
    .await;
    for mut vm in vms {
        let _ = vm.kill();
        let _ = vm.wait();
    }
    result
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let images = args.images.as_str();
    anyhow::ensure!(
        Path::new(images).join("edge-vm.kernel").is_file(),
        "no VM images in {images}: run infra/install.sh"
    );
    let runs = args.runs.max(1);
    let scratch = tempfile::tempdir()?;
    eprintln!("bare qemu boots ...");
    let mut bare = Vec::new();
    let mut rss = 0.0;
    for _ in 0..runs {
        let (t, r) = bare_boot(images, scratch.path(), 1).await?;
        bare.push(t);
        rss = r;
    }
    let bare = median(bare);

    eprintln!("starting etcd, the controller and a vm-platform CRM on loopback ...");
    let region = Region::start(crm::PlatformKind::Vm {
        images: images.into(),
        boot_timeout: Duration::from_secs(120),
        image_engine: None,
    })
    .await?;
    let a = vm_app("dev", "vmweb", "tcp:80", &vm_web_image(images));
    region.api.apps().create_app(a).await?;
    let mut platform = Vec::new();
    for run in 0..runs {
        let inst = vm_app_inst("dev", &format!("v{run}"), "vmweb", cloudlet_key());
        let start = Instant::now();
        drain(
            &mut region
                .api
                .app_insts()
                .create_app_inst(inst.clone())
                .await?
                .into_inner(),
        )
        .await?;
        let shown = show(region.api.app_insts().show_app_inst(inst.clone())).await;
        let port = shown[0].mapped_ports[0].public_port as u16;
        until_http((region.public_ip, port).into()).await?;
        platform.push(start.elapsed());
        drain(
            &mut region
                .api
                .app_insts()
                .delete_app_inst(inst)
                .await?
                .into_inner(),
        )
        .await?;
    }
    let platform = median(platform);

    eprintln!("parallel bare boots ...");
    let mut parallel = Vec::new();
    let mut n = 1;
    while n <= args.max_parallel {
        let (t, _) = bare_boot(images, scratch.path(), n).await?;
        parallel.push((n, t));
        if t >= bare * 2 {
            break;
        }
        n *= 2;
    }

    println!("VM boot to a first HTTP answer, median of {runs}:");
    println!("  bare qemu                 {bare:>10.2?}");
    println!("  CreateAppInst through LB  {platform:>10.2?}");
    println!("  idle VM RSS               {rss:>8.0} MiB (-m 2048, as the flavor)");
    for (n, t) in &parallel {
        println!("  {n} VMs at once            {t:>10.2?}");
    }
    crate::ratio(
        "vm",
        platform.as_secs_f64() / bare.as_secs_f64(),
        1.3,
        serde_json::json!({"bare_s": bare.as_secs_f64(), "platform_s": platform.as_secs_f64(), "idle_vm_rss_mib": rss}),
    );
    Ok(())
}
