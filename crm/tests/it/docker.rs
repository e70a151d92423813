//! The CRM with the real docker platform: onboarding, apps reachable through the shared root LB,
//! failures, crash recovery, controller outages and quotas.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use edge_proto::edge::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_answer_through_the_shared_lb_and_deletes_clean_up() {
    let cloud = Cloud::start().await;
    let _crm = cloud.onboard("berlin", vec![]).await;
    let infos = show(
        cloud
            .cloudlets()
            .show_cloudlet_info(CloudletInfo::default()),
    )
    .await;
    assert_eq!(infos[0].state, CloudletState::Ready as i32);
    assert!(infos[0].features.as_ref().unwrap().supports_docker_clusters);
    assert!(
        infos[0]
            .resources
            .iter()
            .any(|r| r.name == "vCPUs" && r.total > 0),
        "{:?}",
        infos[0].resources
    );

    // Two apps in two clusters, both on port 80 inside, each on its own public port.
    cloud.cluster("c1", "berlin").await;
    cloud.cluster("c2", "berlin").await;
    assert_eq!(cloud.networks("c1").len(), 1);
    cloud
        .apps()
        .create_app(web_app("web-a", "hello-a"))
        .await
        .unwrap();
    cloud
        .apps()
        .create_app(web_app("web-b", "hello-b"))
        .await
        .unwrap();
    for (inst, app, c) in [("a", "web-a", "c1"), ("b", "web-b", "c2")] {
        let p = cloud.app_inst_ready(inst, app, c).await;
        assert!(
            p.iter()
                .any(|m| m.message.starts_with("Creating container")),
            "{p:?}"
        );
    }
    let (addr_a, addr_b) = (cloud.public_addr("a").await, cloud.public_addr("b").await);
    assert_ne!(addr_a, addr_b);
    assert_eq!(get_until_ok(addr_a).await, "hello-a");
    assert_eq!(get_until_ok(addr_b).await, "hello-b");
    assert_eq!(cloud.containers("a").len(), 1);
    let shown = show(
        cloud
            .app_insts()
            .show_app_inst(app_inst("acme", "a", "", "")),
    )
    .await;
    assert_eq!(
        shown[0].runtime_info.as_ref().unwrap().container_ids.len(),
        1
    );

    // Delete removes the container and the route; the cluster delete removes the network.
    let mut s = cloud
        .app_insts()
        .delete_app_inst(app_inst("acme", "a", "", ""))
        .await
        .unwrap()
        .into_inner();
    drain(&mut s).await.expect("app instance deleted");
    assert!(cloud.containers("a").is_empty());
    assert!(
        testenv::http_get(addr_a, "/").is_none(),
        "route still answers after delete"
    );
    assert_eq!(get_until_ok(addr_b).await, "hello-b");
    let mut s = cloud
        .clusters()
        .delete_cluster_inst(cluster("acme", "c1", "", ""))
        .await
        .unwrap()
        .into_inner();
    drain(&mut s).await.expect("cluster deleted");
    assert!(cloud.networks("c1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_in_create_error_and_leave_nothing_behind() {
    let cloud = Cloud::start().await;
    let cpus = |n| {
        vec![ResourceQuota {
            name: "vCPUs".into(),
            value: n,
        }]
    };
    let _crm = cloud.onboard("berlin", cpus(2)).await;
    cloud.cluster("c1", "berlin").await;

    let mut missing = web_app("missing", "x");
    missing.image_path = "edge-missing:1".into();
    let mut exits = web_app("exits", "x");
    exits.command = "echo giving up; exit 3".into();
    for (app, want) in [
        (missing, "image \"edge-missing:1\" is not present"),
        (exits, "container exited with code 3"),
    ] {
        let name = app.key.clone().unwrap().name;
        cloud.apps().create_app(app).await.unwrap();
        let mut s = cloud
            .app_insts()
            .create_app_inst(app_inst("acme", &name, &name, "c1"))
            .await
            .unwrap()
            .into_inner();
        let err = drain(&mut s).await.unwrap_err();
        assert!(err.message().contains(want), "{}", err.message());
        let shown = show(
            cloud
                .app_insts()
                .show_app_inst(app_inst("acme", &name, "", "")),
        )
        .await;
        assert_eq!(shown[0].state, TrackedState::CreateError as i32);
        assert!(
            cloud.containers(&name).is_empty(),
            "{name} left containers behind"
        );
    }
    let err = show(
        cloud
            .app_insts()
            .show_app_inst(app_inst("acme", "exits", "", "")),
    )
    .await;
    assert!(
        err[0].errors[0].contains("giving up"),
        "{:?}",
        err[0].errors
    );

    // A container of someone else under the name the CRM would give the instance: refused, left alone.
    let squatted = crm::platform::resource_name(
        &format!("edge-{:08x}", edge_common::fnv1a("tmus/berlin")),
        "acme/squat",
    );
    let made = cloud
        .docker
        .cli()
        .args(["create", "--name", &squatted, IMAGE, "true"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    cloud
        .apps()
        .create_app(web_app("squat", "x"))
        .await
        .unwrap();
    let mut s = cloud
        .app_insts()
        .create_app_inst(app_inst("acme", "squat", "squat", "c1"))
        .await
        .unwrap()
        .into_inner();
    let err = drain(&mut s).await.unwrap_err();
    assert!(
        err.message().contains(&format!(
            "a container named {squatted} exists on the Docker Engine but is not acme/squat"
        )),
        "{}",
        err.message()
    );
    let kept = cloud
        .docker
        .cli()
        .args(["inspect", &squatted])
        .output()
        .unwrap();
    assert!(kept.status.success(), "the other container was removed");

    // Quota: the second 2-vCPU cluster does not fit in 2 vCPUs.
    let mut s = cloud
        .clusters()
        .create_cluster_inst(cluster("acme", "c2", "tmus", "berlin"))
        .await
        .unwrap()
        .into_inner();
    let err = drain(&mut s).await.unwrap_err();
    assert!(
        err.message().contains("not enough vCPUs on Cloudlet \"tmus/berlin\": ClusterInst \"acme/c2\" needs 2, 2 of the quota of 2 are in use"),
        "{}",
        err.message()
    );
    assert!(cloud.networks("c2").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_killed_mid_create_finishes_with_exactly_one_container() {
    let cloud = Cloud::start().await;
    let crm = cloud.onboard("berlin", vec![]).await;
    cloud.cluster("c1", "berlin").await;
    cloud
        .apps()
        .create_app(web_app("web", "survivor"))
        .await
        .unwrap();
    let mut s = cloud
        .app_insts()
        .create_app_inst(app_inst("acme", "w", "web", "c1"))
        .await
        .unwrap()
        .into_inner();
    // Kill -9 as soon as the CRM reports its first step.
    while s.message().await.unwrap().unwrap().state != TrackedState::Creating as i32 {}
    drop(crm);
    let _crm = cloud.start_crm("berlin");
    let p = drain(&mut s).await.expect("ready after restart");
    assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
    assert_eq!(cloud.containers("w").len(), 1);
    assert_eq!(get_until_ok(cloud.public_addr("w").await).await, "survivor");
}

/// Cloudlet `berlin` with its CRM, cluster `c1`, App `web` answering "steady", and READY instances `insts`.
async fn steady(cloud: &Cloud, insts: &[&str]) -> CrmProcess {
    let crm = cloud.onboard("berlin", vec![]).await;
    cloud.cluster("c1", "berlin").await;
    cloud
        .apps()
        .create_app(web_app("web", "steady"))
        .await
        .unwrap();
    for inst in insts {
        cloud.app_inst_ready(inst, "web", "c1").await;
    }
    crm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_keep_running_while_the_controller_is_down_and_states_resync() {
    let mut cloud = Cloud::start().await;
    let crm = steady(&cloud, &["w"]).await;
    let addr = cloud.public_addr("w").await;
    assert_eq!(get_until_ok(addr).await, "steady");

    // Controller gone: nothing is torn down.
    cloud.stop_controller();
    testenv::wait_for(
        "the CRM to notice the controller is gone",
        Duration::from_secs(30),
        async || {
            let (_, m) = testenv::http_get(crm.http, "/metrics")?;
            m.contains("crm_controller_connected 0").then_some(())
        },
    )
    .await;
    assert_eq!(get_until_ok(addr).await, "steady");
    assert_eq!(cloud.containers("w").len(), 1);

    // Back on the same addresses: the CRM redials, resyncs and reports; the app is still the same one.
    cloud.restart_controller().await;
    testenv::wait_for(
        "the CRM to reconnect",
        Duration::from_secs(30),
        async || {
            let infos = show(
                cloud
                    .cloudlets()
                    .show_cloudlet_info(CloudletInfo::default()),
            )
            .await;
            infos
                .first()
                .is_some_and(|i| i.state == CloudletState::Ready as i32)
                .then_some(())
        },
    )
    .await;
    let shown = show(cloud.app_insts().show_app_inst(AppInst::default())).await;
    assert_eq!(shown[0].state, TrackedState::Ready as i32);
    assert_eq!(cloud.containers("w").len(), 1);
    assert_eq!(get_until_ok(addr).await, "steady");
}

/// Sends a GET on an open connection and returns the answer's body.
fn get_on(mut conn: std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").unwrap().1.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lb_outlives_crm_crashes_and_comes_back_with_its_routes() {
    let mut cloud = Cloud::start().await;
    let crm = steady(&cloud, &["w"]).await;
    let addr = cloud.public_addr("w").await;
    assert_eq!(get_until_ok(addr).await, "steady");
    let lb = cloud.lb_pid("berlin").expect("the CRM started its LB");
    assert_eq!(testenv::metric(crm.http, "crm_lb_starts_total"), 1.0);

    // kill -9 of the CRM: a connection opened before stays open, new ones are served.
    let open = std::net::TcpStream::connect(addr).unwrap();
    drop(crm);
    assert_eq!(get_on(open), "steady");
    assert_eq!(
        testenv::http_get(addr, "/").map(|(_, b)| b.trim().to_string()),
        Some("steady".into()),
        "a new connection while the CRM is down"
    );

    // The restarted CRM adopts the running LB: no second one.
    let crm = cloud.start_crm("berlin");
    testenv::wait_for(
        "the restarted CRM to reach its LB",
        Duration::from_secs(30),
        async || (testenv::metric(crm.http, "crm_lb_up") == 1.0).then_some(()),
    )
    .await;
    assert_eq!(testenv::metric(crm.http, "crm_lb_starts_total"), 0.0);
    assert_eq!(cloud.lb_pid("berlin"), Some(lb));

    // kill -9 of the LB: the CRM starts it again, with the saved route.
    std::process::Command::new("kill")
        .args(["-9", &lb.to_string()])
        .status()
        .unwrap();
    testenv::wait_for(
        "the CRM to start a new LB",
        Duration::from_secs(30),
        async || cloud.lb_pid("berlin").filter(|p| *p != lb),
    )
    .await;
    assert_eq!(get_until_ok(addr).await, "steady");
    assert_eq!(testenv::metric(crm.http, "crm_lb_starts_total"), 1.0);

    // Controller, CRM and LB all gone: the CRM alone brings the LB back with its routes.
    cloud.stop_controller();
    let lb = cloud.lb_pid("berlin").unwrap();
    drop(crm);
    std::process::Command::new("kill")
        .args(["-9", &lb.to_string()])
        .status()
        .unwrap();
    testenv::wait_for("the LB to die", Duration::from_secs(10), async || {
        cloud.lb_pid("berlin").is_none().then_some(())
    })
    .await;
    let _crm = cloud.start_crm("berlin");
    assert_eq!(get_until_ok(addr).await, "steady");
}

/// Address and gateway (the host's address on the bridge) of a container on its cluster network.
fn container_net(cloud: &Cloud, id: &str) -> (String, String) {
    let out = cloud
        .docker
        .cli()
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}",
            id,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (ip, gw) = text.trim().split_once(' ').unwrap();
    (ip.to_string(), gw.to_string())
}

/// What `http://<target>/` answers inside container `id` (None: no answer within 3 s).
fn fetch_from(cloud: &Cloud, id: &str, target: &str) -> Option<String> {
    let out = cloud
        .docker
        .cli()
        .args(["exec", id, "timeout", "3", "wget", "-q", "-O", "-"])
        .arg(format!("http://{target}/"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_reach_neither_each_other_nor_the_host() {
    let cloud = Cloud::start().await;
    let _crm = cloud.onboard("berlin", vec![]).await;
    cloud.cluster("c1", "berlin").await;
    cloud.cluster("c2", "berlin").await;
    for (app, greeting) in [("web-a", "hello-a"), ("web-b", "hello-b")] {
        cloud
            .apps()
            .create_app(web_app(app, greeting))
            .await
            .unwrap();
    }
    for (inst, app, c) in [
        ("a1", "web-a", "c1"),
        ("a2", "web-a", "c1"),
        ("b", "web-b", "c2"),
    ] {
        cloud.app_inst_ready(inst, app, c).await;
    }
    let id = |inst: &str| cloud.containers(inst).pop().unwrap();
    let (a1, a2, b) = (id("a1"), id("a2"), id("b"));
    let (a2_ip, gw1) = container_net(&cloud, &a2);
    let (b_ip, gw2) = container_net(&cloud, &b);
    let (a1_ip, _) = container_net(&cloud, &a1);

    // A service of the host on every address, answering the host itself.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in host.incoming().flatten() {
            // The whole request first: closing on unread bytes would reset the connection.
            let (mut request, mut buf) = (Vec::new(), [0u8; 1024]);
            while !request.ends_with(b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost");
        }
    });
    assert_eq!(
        testenv::http_get(([127, 0, 0, 1], host_port).into(), "/").map(|(_, b)| b),
        Some("host".into())
    );

    // Inside a cluster: allowed. Across clusters, either way, and to the host: nothing answers.
    assert_eq!(fetch_from(&cloud, &a1, &a2_ip).as_deref(), Some("hello-a"));
    assert_eq!(
        fetch_from(&cloud, &a1, &b_ip),
        None,
        "cluster c1 reached c2"
    );
    assert_eq!(
        fetch_from(&cloud, &b, &a1_ip),
        None,
        "cluster c2 reached c1"
    );
    for gw in [&gw1, &gw2] {
        assert_eq!(
            fetch_from(&cloud, &a1, &format!("{gw}:{host_port}")),
            None,
            "a container reached the host's service at {gw}"
        );
    }
    // The LB (the host) still reaches both.
    assert_eq!(get_until_ok(cloud.public_addr("a1").await).await, "hello-a");
    assert_eq!(get_until_ok(cloud.public_addr("b").await).await, "hello-b");

    // It is the CRM's table that holds them apart: where the host forwards packets (it does on this
    // machine kind), removing the table lets c1 reach c2.
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forwarding.trim() == "1" {
        let out = std::process::Command::new("nft")
            .args(["list", "tables", "inet"])
            .output()
            .unwrap();
        let prefix = format!("edge_{:08x}", edge_common::fnv1a(&cloud.docker.host));
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let table = listed
            .lines()
            .filter_map(|l| l.strip_prefix("table inet "))
            .find(|t| t.starts_with(&prefix))
            .expect("the CRM's isolation table");
        std::process::Command::new("nft")
            .args(["delete", "table", "inet", table])
            .status()
            .unwrap();
        assert_eq!(fetch_from(&cloud, &a1, &b_ip).as_deref(), Some("hello-b"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_restarted_while_partitioned_keeps_its_apps_and_converges_when_it_heals() {
    let cloud = Cloud::start().await;
    let crm = steady(&cloud, &["w1", "w2"]).await;
    let (w1, w2) = (cloud.public_addr("w1").await, cloud.public_addr("w2").await);

    // From now on the CRM reaches its controller only through a link the test can cut.
    let link = testenv::Proxy::start(cloud.config.notify_addr)
        .await
        .unwrap();
    drop(crm);
    let crm = cloud.start_crm_via("berlin", link.addr);
    let connected = |crm: &CrmProcess, want: f64| {
        let http = crm.http;
        async move {
            testenv::wait_for(
                &format!("crm_controller_connected {want}"),
                Duration::from_secs(30),
                async || (testenv::metric(http, "crm_controller_connected") == want).then_some(()),
            )
            .await
        }
    };
    connected(&crm, 1.0).await;
    link.cut();
    connected(&crm, 0.0).await;

    // While it is cut off, the region changes: w2 is deleted, w3 is created.
    let mut deleting = cloud
        .app_insts()
        .delete_app_inst(app_inst("acme", "w2", "", ""))
        .await
        .unwrap()
        .into_inner();
    deleting.message().await.unwrap();
    let mut creating = cloud
        .app_insts()
        .create_app_inst(app_inst("acme", "w3", "web", "c1"))
        .await
        .unwrap()
        .into_inner();
    creating.message().await.unwrap();
    drop((deleting, creating));

    // The partition lasts `EDGE_PARTITION_SECS` (default 0; the long run holds it for minutes, past the
    // controller's 60 s lifecycle timeout): the apps answer all along.
    let hold = Duration::from_secs(
        std::env::var("EDGE_PARTITION_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let cut = std::time::Instant::now();
    while cut.elapsed() < hold {
        assert_eq!(get_until_ok(w1).await, "steady");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Restarted while still cut off, the CRM serves what it last knew from its ledger.
    drop(crm);
    let crm = cloud.start_crm_via("berlin", link.addr);
    testenv::wait_for(
        "the restarted CRM to reconcile",
        Duration::from_secs(30),
        async || (testenv::metric(crm.http, "crm_reconcile_passes_total") >= 2.0).then_some(()),
    )
    .await;
    assert_eq!(testenv::metric(crm.http, "crm_controller_connected"), 0.0);
    assert_eq!(get_until_ok(w1).await, "steady");
    assert_eq!(get_until_ok(w2).await, "steady");
    assert_eq!(cloud.containers("w2").len(), 1);

    // Healed: it converges to the controller's state, and the controller's to it (the requests'
    // streams may have timed out during a long partition; the objects' states are what counts).
    link.heal();
    connected(&crm, 1.0).await;
    testenv::wait_for(
        "w2 deleted and w3 READY in the controller",
        Duration::from_secs(60),
        async || {
            let shown = show(cloud.app_insts().show_app_inst(AppInst::default())).await;
            let mut states: Vec<_> = shown
                .iter()
                .map(|i| (i.key.as_ref().unwrap().name.clone(), i.state))
                .collect();
            states.sort();
            let ready = TrackedState::Ready as i32;
            (states == [("w1".to_string(), ready), ("w3".to_string(), ready)]).then_some(())
        },
    )
    .await;
    testenv::wait_for(
        "w2's container to go",
        Duration::from_secs(30),
        async || cloud.containers("w2").is_empty().then_some(()),
    )
    .await;
    assert_eq!(cloud.containers("w3").len(), 1);
    assert_eq!(get_until_ok(cloud.public_addr("w3").await).await, "steady");
    assert_eq!(get_until_ok(w1).await, "steady");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_named_by_an_earlier_release_is_adopted_by_its_labels() {
    let cloud = Cloud::start().await;
    let made = cloud
        .docker
        .cli()
        .args(["network", "create"])
        .args(["--label", "edge.managed=true"])
        .args(["--label", "edge.cloudlet=tmus/berlin"])
        .args(["--label", "edge.clusterinst=acme/c1"])
        .arg("edge-acme.c1-1234abcd")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let _crm = steady(&cloud, &["w"]).await;
    assert_eq!(cloud.networks("c1").len(), 1, "a second network was made");
    assert_eq!(get_until_ok(cloud.public_addr("w").await).await, "steady");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_logs_reads_an_instances_output_on_its_cloudlet_and_refuses_bad_requests() {
    let cloud = Cloud::start().await;
    let crm = steady(&cloud, &["w"]).await;
    let logs = |log: ShowLog| {
        let cloud = &cloud;
        async move { cloud.exec().show_logs(logs_of("acme", "w", log)).await }
    };
    let out = testenv::wait_for("the app's output", Duration::from_secs(30), async || {
        let r = logs(ShowLog::default()).await.unwrap().into_inner();
        r.output.contains("serving steady").then_some(r)
    })
    .await;
    assert!(out.answered && out.err.is_empty(), "{out:?}");
    // One line, with its time.
    let last = logs(ShowLog {
        tail: 1,
        timestamps: true,
        since: "10m".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .output;
    assert_eq!(last.lines().count(), 1, "{last:?}");
    assert!(
        last.starts_with("20") && last.contains("serving steady"),
        "{last:?}"
    );

    // Bad requests name what is wrong.
    let follow = ShowLog {
        follow: true,
        ..Default::default()
    };
    assert_code(logs(follow).await, Code::InvalidArgument, "log.follow");
    let since = ShowLog {
        since: "yesterday".into(),
        ..Default::default()
    };
    assert_code(
        logs(since).await,
        Code::InvalidArgument,
        "log.since \"yesterday\"",
    );
    let missing = cloud
        .exec()
        .show_logs(logs_of("acme", "nosuch", ShowLog::default()))
        .await;
    assert_code(missing, Code::NotFound, "AppInst \"acme/nosuch\"");
    let mut other = logs_of("acme", "w", ShowLog::default());
    other.container_id = "someone-else".into();
    assert_code(
        cloud.exec().show_logs(other).await,
        Code::FailedPrecondition,
        "container \"someone-else\" is not part of AppInst \"acme/w\"",
    );
    let long = ExecRequest {
        timeout: 61_000_000_000,
        ..logs_of("acme", "w", ShowLog::default())
    };
    assert_code(
        cloud.exec().show_logs(long).await,
        Code::InvalidArgument,
        "timeout",
    );
    assert_code(
        cloud
            .exec()
            .run_command(logs_of("acme", "w", ShowLog::default()))
            .await,
        Code::Unimplemented,
        "ShowLogs",
    );

    // Every request went with its answer: nothing is left in etcd.
    let mut etcd = etcd_client::Client::connect([cloud.etcd.url.as_str()], None)
        .await
        .unwrap();
    let prefix = format!("/edge/{REGION}/ExecRequest/");
    let left = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "{:?}", left.kvs());

    // Without its CRM the cloudlet cannot be read: a clear error, not a wait.
    drop(crm);
    testenv::wait_for(
        "ShowLogs to say the CRM is away",
        Duration::from_secs(30),
        async || match logs(ShowLog::default()).await {
            Err(s) if s.code() == Code::Unavailable => {
                assert!(s.message().contains("not connected"), "{s:?}");
                Some(())
            }
            _ => None,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_cluster_has_its_own_lb_on_its_own_address_until_it_is_deleted() {
    let mut cloud = Cloud::start().await;
    let own = testenv::loopback_ip_nth(1);
    cloud
        .platform_args
        .extend(["--dedicated-ips".into(), own.to_string()]);
    let crm = cloud.onboard("berlin", vec![]).await;
    let dedicated = |name: &str| {
        let mut c = cluster("acme", name, "tmus", "berlin");
        c.ip_access = IpAccess::Dedicated as i32;
        c
    };
    let create = async |c: ClusterInst| {
        let mut s = cloud.clusters().create_cluster_inst(c).await?.into_inner();
        drain(&mut s).await
    };
    let p = create(dedicated("d1")).await.unwrap();
    assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
    let shown = show(
        cloud
            .clusters()
            .show_cluster_inst(cluster("acme", "d1", "", "")),
    )
    .await;
    assert_eq!(shown[0].allocated_ip, own.to_string());

    // Its app keeps its own port number, on the cluster's address; the shared LB knows nothing of it.
    let mut app = web_app("web", "own");
    app.access_ports = "tcp:8080".into();
    app.command = app.command.replace("-p 80 ", "-p 8080 ");
    cloud.apps().create_app(app).await.unwrap();
    cloud.app_inst_ready("w", "web", "d1").await;
    let inst = show(
        cloud
            .app_insts()
            .show_app_inst(app_inst("acme", "w", "", "")),
    )
    .await;
    assert_eq!(inst[0].uri, own.to_string());
    assert_eq!(inst[0].mapped_ports[0].public_port, 8080);
    let addr = SocketAddr::new(own, 8080);
    assert_eq!(get_until_ok(addr).await, "own");
    let shared = std::fs::read_to_string(cloud.dir.path().join("berlin-state/lb/routes.json"))
        .unwrap_or_default();
    assert!(!shared.contains("acme/w"), "{shared}");

    // The only address is taken: a second dedicated cluster fails, naming why.
    assert_code(
        create(dedicated("d2")).await,
        Code::FailedPrecondition,
        "no dedicated address is free: all 1 of the cloudlet's --dedicated-ips are in use",
    );

    // A restarted CRM adopts the cluster's LB and address; the app answers throughout.
    drop(crm);
    let crm = cloud.start_crm("berlin");
    assert_eq!(get_until_ok(addr).await, "own");
    testenv::wait_for(
        "the restarted CRM to reconcile",
        Duration::from_secs(30),
        async || (testenv::metric(crm.http, "crm_reconcile_passes_total") >= 2.0).then_some(()),
    )
    .await;
    let shown = show(
        cloud
            .clusters()
            .show_cluster_inst(cluster("acme", "d1", "", "")),
    )
    .await;
    assert_eq!(shown[0].allocated_ip, own.to_string());

    // Deleted, the cluster's LB goes with its address, which the next dedicated cluster gets.
    for (kind, name) in [("app", "w"), ("cluster", "d1"), ("cluster", "d2")] {
        let mut s = if kind == "app" {
            cloud
                .app_insts()
                .delete_app_inst(app_inst("acme", name, "", ""))
                .await
        } else {
            cloud
                .clusters()
                .delete_cluster_inst(cluster("acme", name, "", ""))
                .await
        }
        .unwrap()
        .into_inner();
        drain(&mut s).await.unwrap();
    }
    testenv::wait_for(
        "the dedicated LB to stop listening",
        Duration::from_secs(30),
        async || std::net::TcpStream::connect(addr).is_err().then_some(()),
    )
    .await;
    let p = create(dedicated("d3")).await.unwrap();
    assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
}
