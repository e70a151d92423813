//! The `regional-controller` binary as a process: flags, /healthz, /readyz, /metrics, and the API.

use std::process::{Child, Command};
use std::time::Duration;

use crate::common::*;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regional-controller"))
}

#[test]
fn help_lists_the_flags() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--region",
        "--etcd",
        "--api-addr",
        "--notify-addr",
        "--http-addr",
        "--port-range",
        "EDGE_ETCD_ENDPOINTS",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let out = bin()
        .args(["--region", "EU", "--port-range", "20-10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("LOW must be 1-65535 and not above HIGH")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_serves_api_health_and_metrics() {
    let etcd = testenv::Etcd::start().await.unwrap();
    let (api, notify, http) = (
        testenv::free_port(),
        testenv::free_port(),
        testenv::free_port(),
    );
    let _ctrl = Kill(
        bin()
            .args([
                "--region",
                REGION,
                "--etcd",
                &etcd.url,
                "--insecure-plaintext",
            ])
            .args([
                "--api-addr",
                &format!("127.0.0.1:{api}"),
                "--notify-addr",
                &format!("127.0.0.1:{notify}"),
            ])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .spawn()
            .unwrap(),
    );
    let http = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    testenv::wait_for(
        "the controller to be ready",
        Duration::from_secs(10),
        async || {
            client
                .get(format!("{http}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        client
            .get(format!("{http}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let channel = connect(([127, 0, 0, 1], api).into()).await;
    let mut flavors = edge_proto::edge::flavor_api_client::FlavorApiClient::new(channel);
    flavors.create_flavor(flavor("small")).await.unwrap();
    flavors.create_flavor(flavor("small")).await.unwrap_err();
    let lines = [
        "controller_rpc_requests_total{code=\"0\",method=\"CreateFlavor\"} 1",
        "controller_rpc_requests_total{code=\"6\",method=\"CreateFlavor\"} 1",
        "controller_objects{kind=\"Flavor\"} 1",
        "controller_rpc_seconds_count{method=\"CreateFlavor\"} 2",
    ];
    // The object gauges are refreshed every 500 ms: wait for the metrics to show both calls.
    let metrics = testenv::wait_for(
        "the metrics of both calls",
        Duration::from_secs(10),
        async || {
            let m = client
                .get(format!("{http}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            lines.iter().all(|l| m.contains(l)).then_some(m)
        },
    )
    .await;
    for line in lines {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}
