//! `edge-bench controller`: creates through the regional controller's API against raw etcd transactions
//! of the same size on the same etcd; CreateAppInst on a cloudlet that already holds thousands of
//! instances (its cost must not grow with them).
//!
//! `edge-bench mc`: ShowAppInst of a region's instances through the master controller against the same
//! call directly on the controller, and the MC's memory around a burst of logins.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use edge_proto::edge::app_inst_api_client::AppInstApiClient;
use edge_proto::edge::{AppInst, flavor_api_client::FlavorApiClient};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::json;
use testenv::fixtures::*;

use crate::{Load, Measured, measure, print_table, ratio};

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    load: Load,
    /// Instances (each holding a public port) on the cloudlet before CreateAppInst is measured.
    #[arg(long, default_value_t = 5000)]
    held: usize,
}

#[derive(clap::Args, Debug)]
pub struct McArgs {
    #[command(flatten)]
    load: Load,
    /// App instances ShowAppInst returns.
    #[arg(long, default_value_t = 1000)]
    app_insts: usize,
    /// Logins in the memory measurement (16 at a time).
    #[arg(long, default_value_t = 1000)]
    logins: usize,
}

const REGION: &str = "bench";
const PASSWORD: &str = "Bench-Passw0rd!";

/// A unique name per call of a measured closure.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

pub async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let etcd = testenv::Etcd::start().await?;
    // Flavor `small`, App `dev/game/1.0`, cloudlet `op/c0` with cluster `dev/k0` and `held` instances.
    crate::bulk::write_region(&etcd.url, REGION, args.held, 1, false, 0).await?;
    let (_ctrl, api) = crate::region::controller(REGION, &etcd.url).await?;

    // The baseline: the transaction a create is at its core (the key absent → put the JSON), as large.
    let kv = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await?
        .kv_client();
    let value = serde_json::to_vec(&flavor("f0"))?;
    let n = counter();
    let raw = measure(&args.load, move || {
        let (mut kv, value) = (kv.clone(), value.clone());
        let key = format!("/raw/{}", n.fetch_add(1, Ordering::Relaxed));
        async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value, None)]);
            kv.txn(txn).await.expect("etcd transaction");
        }
    })
    .await;
    let n = counter();
    let flavors = FlavorApiClient::new(api.clone());
    let create_flavor = measure(&args.load, move || {
        let mut c = flavors.clone();
        let f = flavor(&format!("f{}", n.fetch_add(1, Ordering::Relaxed)));
        async move {
            c.create_flavor(f).await.expect("CreateFlavor");
        }
    })
    .await;
    let n = counter();
    let apps = edge_proto::edge::app_api_client::AppApiClient::new(api.clone());
    let create_app = measure(&args.load, move || {
        let mut c = apps.clone();
        let a = app(
            "dev",
            &format!("a{}", n.fetch_add(1, Ordering::Relaxed)),
            "tcp:80",
        );
        async move {
            c.create_app(a).await.expect("CreateApp");
        }
    })
    .await;
    // Accepted (stored as CREATE_REQUESTED with its ports held, the first progress line read); no CRM
    // deploys it here. (Dropping the stream before that line arrives makes the line a stream error on
    // the client, and h2 closes a connection after 1,024 of those.)
    let n = counter();
    let insts = AppInstApiClient::new(api.clone());
    let create_app_inst = measure(&args.load, move || {
        let mut c = insts.clone();
        let i = app_inst(
            "dev",
            &format!("n{}", n.fetch_add(1, Ordering::Relaxed)),
            "game",
            "k0",
        );
        async move {
            let mut progress = c.create_app_inst(i).await.expect("CreateAppInst");
            progress.get_mut().message().await.expect("progress");
        }
    })
    .await;
    let held = format!("CreateAppInst ({} held)", args.held);
    print_table(&[
        ("etcd txn (create)", &raw),
        ("CreateFlavor", &create_flavor),
        ("CreateApp", &create_app),
        (&held, &create_app_inst),
    ]);
    let ratio_of = |m: &Measured| m.per_sec / raw.per_sec;
    println!(
        "throughput vs raw etcd: CreateFlavor {:.2}x, CreateApp {:.2}x, CreateAppInst on a cloudlet with {} instances {:.2}x",
        ratio_of(&create_flavor),
        ratio_of(&create_app),
        args.held,
        ratio_of(&create_app_inst)
    );
    ratio(
        "controller",
        ratio_of(&create_flavor)
            .min(ratio_of(&create_app))
            .min(ratio_of(&create_app_inst)),
        0.4,
        json!({"etcd_txn": raw.json(), "create_flavor": create_flavor.json(), "create_app": create_app.json(),
               "ratio_create_flavor": ratio_of(&create_flavor), "ratio_create_app": ratio_of(&create_app),
               "held": args.held, "create_app_inst": create_app_inst.json(),
               "ratio_create_app_inst": ratio_of(&create_app_inst)}),
    );
    Ok(())
}

pub async fn mc(args: McArgs) -> anyhow::Result<()> {
    let (pg, bao, etcd) = tokio::join!(
        testenv::Postgres::start(),
        testenv::OpenBao::start(),
        testenv::Etcd::start()
    );
    let (pg, bao, etcd) = (pg?, bao?, etcd?);
    crate::bulk::write_region(
        &etcd.url,
        REGION,
        args.app_insts,
        args.app_insts.div_ceil(10),
        false,
        0,
    )
    .await?;
    let (ctrl, api) = crate::region::controller(REGION, &etcd.url).await?;
    let mut cfg = master_controller::Config::local(&pg.url, &bao.addr, &bao.token);
    cfg.admin_password = Some(PASSWORD.into());
    cfg.bad_auth_delay = std::time::Duration::ZERO;
    // The login burst below comes from one address and one user: no throttling in a benchmark.
    cfg.throttle_failures = 1_000_000;
    let mc = master_controller::MasterController::start(cfg).await?;
    let base = format!("http://{}/api/v1", mc.addr);
    // Idle connections are dropped before the MC's keep-alive (5 s) ends them, so that no request goes
    // out on a connection the server is closing.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()?;
    let login = |http: reqwest::Client, base: String, user: &'static str| async move {
        let r: serde_json::Value = http
            .post(format!("{base}/login"))
            .json(&json!({"username": user, "password": PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(r["token"].as_str().unwrap_or_default().to_string())
    };
    let post = |path: &str, token: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let token = login(http.clone(), base.clone(), "mexadmin").await?;
    let region = json!({"Region": REGION, "Address": ctrl.api_addr.to_string()});
    post("/auth/controller/create", &token, region)
        .await?
        .error_for_status()?;
    // A developer who may view organization "dev", which owns every instance: the MC keeps what the
    // caller may see of each object.
    let user = json!({"Name": "devuser", "Email": "devuser@example.com", "Passhash": PASSWORD});
    let org = json!({"Name": "dev", "Type": "developer"});
    let role = json!({"org": "dev", "username": "devuser", "role": "DeveloperViewer"});
    post("/usercreate", "", user).await?.error_for_status()?;
    post("/auth/org/create", &token, org)
        .await?
        .error_for_status()?;
    post("/auth/role/adduser", &token, role)
        .await?
        .error_for_status()?;
    let dev_token = login(http.clone(), base.clone(), "devuser").await?;

    // ShowAppInst of every instance: directly, and through the MC (JSON lines over HTTP).
    let direct_api = AppInstApiClient::new(api);
    let want = args.app_insts;
    let direct = measure(&args.load, move || {
        let mut c = direct_api.clone();
        async move {
            let mut s = c
                .show_app_inst(AppInst::default())
                .await
                .expect("ShowAppInst")
                .into_inner();
            let mut n = 0;
            while s.message().await.expect("stream").is_some() {
                n += 1;
            }
            assert_eq!(n, want);
        }
    })
    .await;
    let show = |token: String| {
        let (h, b) = (http.clone(), base.clone());
        measure(&args.load, move || {
            let (h, b, t) = (h.clone(), b.clone(), token.clone());
            async move {
                let text = h
                    .post(format!("{b}/auth/ctrl/ShowAppInst"))
                    .bearer_auth(&t)
                    .json(&json!({"Region": REGION, "AppInst": {}}))
                    .send()
                    .await
                    .expect("MC")
                    .text()
                    .await
                    .expect("body");
                assert_eq!(text.lines().count(), want);
            }
        })
    };
    let through_mc = show(token.clone()).await;
    let as_developer = show(dev_token).await;

    // Memory around a burst of logins, 16 at a time.
    let before = crate::rss_mib();
    let started = Instant::now();
    let done = counter();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, base, done) = (http.clone(), base.clone(), done.clone());
            tokio::spawn(async move {
                while done.fetch_add(1, Ordering::Relaxed) < args.logins {
                    login(http.clone(), base.clone(), "mexadmin")
                        .await
                        .expect("login");
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let logins_s = started.elapsed().as_secs_f64();
    let after = crate::rss_mib();

    print_table(&[
        (&format!("ShowAppInst x{want} direct") as &str, &direct),
        ("ShowAppInst through the MC", &through_mc),
        ("... as a developer of the org", &as_developer),
    ]);
    let show_ratio = through_mc.p50.as_secs_f64() / direct.p50.as_secs_f64();
    println!(
        "{} logins in {logins_s:.1} s ({:.0}/s); RSS of the MC's process {before} MiB before, {after} MiB after",
        args.logins,
        args.logins as f64 / logins_s
    );
    ratio(
        "mc",
        show_ratio,
        1.3,
        json!({"app_insts": want, "direct": direct.json(), "through_mc": through_mc.json(),
               "through_mc_as_developer": as_developer.json(), "logins": args.logins,
               "logins_per_s": args.logins as f64 / logins_s, "rss_mib_before_logins": before,
               "rss_mib_after_logins": after}),
    );
    drop((mc, ctrl));
    Ok(())
}
