//! `edge-bench appinst-docker`: CreateAppInst on the docker platform until the app answers HTTP through
//! the shared LB, against `docker run` of the same image and command on the same engine until it answers
//! on its own address (target ≤ 1.5×).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use testenv::fixtures::*;

use crate::region::Region;
use crate::vm::{median, until_http};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runs of each (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let docker = testenv::Docker::start().await?;
    let app = web_app("web", "hi");
    docker.busybox_image(&app.image_path)?;

    // The baseline: docker run on a network of its own, until the container answers.
    let out = docker.cli().args(["network", "create", "bench"]).output()?;
    anyhow::ensure!(out.status.success(), "docker network create: {out:?}");
    let mut bare = Vec::new();
    for run in 0..args.runs {
        let name = format!("bare{run}");
        let start = Instant::now();
        let out = docker
            .cli()
            .args(["run", "-d", "--network", "bench", "--name", &name])
            .args([
                "-e",
                "GREETING=hi",
                &app.image_path,
                "sh",
                "-c",
                &app.command,
            ])
            .output()?;
        anyhow::ensure!(out.status.success(), "docker run: {out:?}");
        let ip = docker
            .cli()
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &name,
            ])
            .output()?;
        let ip: IpAddr = String::from_utf8_lossy(&ip.stdout).trim().parse()?;
        until_http(SocketAddr::new(ip, 80)).await?;
        bare.push(start.elapsed());
        docker.cli().args(["rm", "-f", &name]).output()?;
    }
    let bare = median(bare);

    eprintln!("starting etcd, the controller and a docker-platform CRM on loopback ...");
    let mut app = app;
    app.key = Some(edge_proto::edge::AppKey {
        organization: "dev".into(),
        name: "web".into(),
        version: "1.0".into(),
    });
    let platform = crm::PlatformKind::Docker {
        host: docker.host.clone(),
    };
    let region = Region::with_app(platform, app).await?;
    let mut platform = Vec::new();
    for run in 0..args.runs {
        let inst = app_inst("dev", &format!("w{run}"), "web", "k1");
        let start = Instant::now();
        let mut s = region
            .api
            .app_insts()
            .create_app_inst(inst.clone())
            .await?
            .into_inner();
        drain(&mut s).await?;
        let shown = show(region.api.app_insts().show_app_inst(inst.clone())).await;
        let port = shown[0].mapped_ports[0].public_port as u16;
        until_http((region.public_ip, port).into()).await?;
        platform.push(start.elapsed());
        let mut s = region
            .api
            .app_insts()
            .delete_app_inst(inst)
            .await?
            .into_inner();
        drain(&mut s).await?;
    }
    let platform = median(platform);
    let ratio = platform.as_secs_f64() / bare.as_secs_f64();
    println!(
        "docker run until it answers: {bare:.2?}; CreateAppInst until it answers through the LB: {platform:.2?} (medians of {})",
        args.runs
    );
    crate::ratio(
        "appinst-docker",
        ratio,
        1.5,
        serde_json::json!({"bare_s": bare.as_secs_f64(), "platform_s": platform.as_secs_f64()}),
    );
    Ok(())
}
