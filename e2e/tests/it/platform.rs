//! The platform end to end, as its users drive it: every component a process (see [`e2e::Region`]), an
//! operator and a developer with `edgectl`, mobile clients with the Rust SDK through the DME.

use std::process::Command;
use std::time::Duration;

use e2e::{PASSWORD, REGION, Region, addr, controller, reached_through_the_dme};
use serde_json::json;
use testenv::fixtures::*;
use testenv::wait_for;

/// `edgectl` with the region's MC and a configuration file of the test's own.
fn edgectl(region: &Region, args: &[&str]) -> Command {
    let mut c = Command::new(testenv::workspace_binary("edgectl").unwrap());
    c.env_clear()
        .env("EDGECTL_CONFIG", region.dir.path().join("edgectl.yaml"))
        .env("EDGE_MC_URL", format!("http://{}", region.mc_http))
        .args(args);
    c
}

fn run(region: &Region, args: &[&str]) -> String {
    let out = edgectl(region, args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "edgectl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudlet_onboarded_with_edgectl_serves_an_app_applied_from_yaml_and_leaves_nothing() {
    let mut region = Region::start().await;
    for user in ["op", "dev"] {
        run(
            &region,
            &[
                "login",
                "--as",
                user,
                "--user",
                user,
                "--password",
                PASSWORD,
                "--region",
                REGION,
            ],
        );
    }

    // The operator onboards the cloudlet; its CRM starts with the key edgectl printed.
    let ip = testenv::loopback_ip().to_string();
    let (public, fqdn) = (format!("public_addr={ip}"), format!("root_lb_fqdn={ip}"));
    onboard_with_edgectl(
        edgectl(
            &region,
            &[
                "--context",
                "op",
                "create",
                "cloudlet",
                "org=tmus",
                "name=berlin",
                "platform_type=DOCKER",
                "location.latitude=52.52",
                "location.longitude=13.40",
                &public,
                &fqdn,
            ],
        ),
        "tmus/berlin",
        async |key| region.start_crm("berlin", 0, &key).await,
    )
    .await;

    // The developer applies a directory of YAML.
    let deploy = tempfile::tempdir().unwrap();
    let app = web_app("web", "hi");
    std::fs::write(
        deploy.path().join("web.yaml"),
        format!(
            "kind: App\nkey: {{organization: acme, name: web, version: '1.0'}}\nimage_type: DOCKER\nimage_path: {}\n\
             deployment: docker\naccess_ports: tcp:80\ndefault_flavor: {{name: small}}\ncommand: {}\nenv: {{GREETING: hi}}\n\
             ---\nkind: ClusterInst\nkey: {{organization: acme, name: c1}}\ncloudlet_key: {{organization: tmus, name: berlin}}\n\
             flavor: {{name: small}}\ndeployment: docker\n---\nkind: AppInst\nkey: {{organization: acme, name: w1}}\n\
             app_key: {{organization: acme, name: web, version: '1.0'}}\ncluster_key: {{organization: acme, name: c1}}\n",
            app.image_path,
            serde_json::to_string(&app.command).unwrap()
        ),
    )
    .unwrap();
    let dir = deploy.path().to_str().unwrap();
    let out = run(&region, &["--context", "dev", "apply", "-f", dir]);
    assert!(out.contains("AppInst acme/w1: READY"), "{out}");

    // A mobile client finds it through the DME and reaches it through the cloudlet's LB.
    let at = reached_through_the_dme(region.dme_grpc, "web", 52.5, 13.4, "hi").await;
    assert_eq!(at.ip().to_string(), ip);

    // Everything deleted: no container, network, LB route or etcd key of it is left.
    let out = run(&region, &["--context", "dev", "delete", "-f", dir]);
    assert!(out.contains("AppInst acme/w1: deleted"), "{out}");
    assert_eq!(
        region.leftovers_after_cleanup("w1", "c1").await,
        Vec::<String>::new()
    );
    let apps = region.dev.ctrl("ShowApp", "App", json!({})).await.unwrap();
    assert!(apps.is_empty(), "{apps:?}");
    // The region holds nothing of the developer's org any more, so the org goes, and with it every
    // PostgreSQL row naming it (only the audit log keeps the history).
    region
        .dev
        .post("/auth/org/delete", json!({"Name": "acme"}))
        .await
        .unwrap();
    let db = sqlx::PgPool::connect(&region.pg.url).await.unwrap();
    let (rows,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM organizations WHERE name = 'acme')
              + (SELECT count(*) FROM roles WHERE org = 'acme')
              + (SELECT count(*) FROM api_keys WHERE org = 'acme')
              + (SELECT count(*) FROM alert_receivers)
              + (SELECT count(*) FROM alerts_seen WHERE alert::text LIKE '%acme%')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dme_sends_clients_to_the_nearer_cloudlet_and_to_the_other_once_it_is_offline() {
    let mut region = Region::start().await;
    region.onboard("berlin", 0, 52.52, 13.40).await;
    region.onboard("paris", 1, 48.86, 2.35).await;
    let dev = &region.dev;
    dev.ctrl("CreateApp", "App", json!(web_app("web", "hi")))
        .await
        .unwrap();
    for cloudlet in ["berlin", "paris"] {
        let c = format!("c-{cloudlet}");
        dev.ctrl(
            "CreateClusterInst",
            "ClusterInst",
            json!(cluster("acme", &c, "tmus", cloudlet)),
        )
        .await
        .unwrap();
        dev.ctrl(
            "CreateAppInst",
            "AppInst",
            json!(app_inst("acme", &format!("w-{cloudlet}"), "web", &c)),
        )
        .await
        .unwrap();
    }
    let (berlin, paris) = (
        region.crms["berlin"].public_ip,
        region.crms["paris"].public_ip,
    );
    let near_berlin = reached_through_the_dme(region.dme_grpc, "web", 52.0, 13.0, "hi").await;
    let near_paris = reached_through_the_dme(region.dme_grpc, "web", 48.0, 2.0, "hi").await;
    assert_eq!((near_berlin.ip(), near_paris.ip()), (berlin, paris));

    // Berlin's CRM dies: once the controller marks the cloudlet Offline, Berlin's clients go to Paris.
    region.crms.get_mut("berlin").unwrap().process.kill();
    let dme = region.dme_grpc;
    wait_for(
        "Berlin's clients to be sent to Paris",
        Duration::from_secs(60),
        async || {
            let a = e2e::dme_finds(dme, "web", 52.0, 13.0).await.ok()??;
            (a.ip() == paris).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_keep_their_objects_apart() {
    let region = Region::start().await;
    // A second region: its own controller (and etcd prefix) on the same etcd, registered with the MC.
    let (api, notify, http) = (addr(), addr(), addr());
    let _us = controller(
        "US",
        &region.etcd.url,
        api,
        notify,
        http,
        &region.dir.path().join("us.log"),
    )
    .await;
    region
        .admin
        .post(
            "/auth/controller/create",
            json!({"Region": "US", "Address": api.to_string()}),
        )
        .await
        .unwrap();
    region
        .admin
        .region_ctrl("US", "CreateFlavor", "Flavor", json!(flavor("small")))
        .await
        .unwrap();

    let dev = &region.dev;
    dev.ctrl("CreateApp", "App", json!(web_app("web", "from EU")))
        .await
        .unwrap();
    // Invisible from the other region, and untouchable there.
    let us = dev
        .region_ctrl("US", "ShowApp", "App", json!({}))
        .await
        .unwrap();
    assert!(us.is_empty(), "{us:?}");
    let del = dev
        .region_ctrl("US", "DeleteApp", "App", json!(web_app("web", "")))
        .await
        .unwrap_err();
    assert!(del.contains("404") && del.contains("not found"), "{del}");
    // The same name in the other region is another object.
    dev.region_ctrl("US", "CreateApp", "App", json!(web_app("web", "from US")))
        .await
        .unwrap();
    dev.region_ctrl("US", "DeleteApp", "App", json!(web_app("web", "")))
        .await
        .unwrap();
    let eu = dev.ctrl("ShowApp", "App", json!({})).await.unwrap();
    assert_eq!(eu.len(), 1, "{eu:?}");
    assert_eq!(eu[0]["data"]["env"]["GREETING"], "from EU");
    // A region the MC does not know is refused by name.
    let nowhere = dev
        .region_ctrl("Mars", "ShowApp", "App", json!({}))
        .await
        .unwrap_err();
    assert!(
        nowhere.contains("Region \\\"Mars\\\" not found"),
        "{nowhere}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_stops_on_sigterm_as_a_service_manager_stops_it() {
    let mut region = Region::start().await;
    region.onboard("berlin", 0, 52.52, 13.40).await;
    let within = Duration::from_secs(10);
    assert!(region.mc.terminate(within), "the MC ignored SIGTERM");
    assert!(region.dme.terminate(within), "the DME ignored SIGTERM");
    let crm = region.crms.get_mut("berlin").unwrap();
    assert!(crm.process.terminate(within), "the CRM ignored SIGTERM");
    assert!(
        region.ctrl.terminate(within),
        "the controller ignored SIGTERM"
    );
}
