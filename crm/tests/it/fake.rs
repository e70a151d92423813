//! The fake platform behind a real controller: the same lifecycle as a real driver, in memory. It is for
//! simulation and benchmarks; the docker driver has its own tests against a real dockerd.

use std::time::Duration;

use crm::{Config, Crm};
use edge_proto::edge::*;
use regional_controller::Controller;
use testenv::fixtures::*;
use tonic::transport::Channel;

/// etcd, the controller, flavor `small` and cloudlet `tmus/sim-1` whose fake-platform CRM takes `delay` per
/// operation; ready once the cloudlet is.
struct Sim {
    etcd: testenv::Etcd,
    _ctrl: Controller,
    ch: Channel,
    crm: Crm,
    _state: tempfile::TempDir,
}

async fn sim(delay: Duration) -> Sim {
    let etcd = testenv::Etcd::start().await.unwrap();
    let ctrl = Controller::start(regional_controller::Config::local("EU", &etcd.url))
        .await
        .unwrap();
    let ch = Channel::from_shared(format!("http://{}", ctrl.api_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    flavor_api_client::FlavorApiClient::new(ch.clone())
        .create_flavor(flavor("small"))
        .await
        .unwrap();
    let mut stream = cloudlet_api_client::CloudletApiClient::new(ch.clone())
        .create_cloudlet(cloudlet("tmus", "sim-1"))
        .await
        .unwrap()
        .into_inner();
    let access = stream.message().await.unwrap().unwrap().access.unwrap();
    let state = tempfile::tempdir().unwrap();
    let crm = Crm::start(Config::fake(
        "EU",
        CloudletKey {
            organization: "tmus".into(),
            name: "sim-1".into(),
        },
        ctrl.notify_addr.to_string(),
        access.access_private_key,
        delay,
        state.path().to_path_buf(),
    ))
    .await
    .unwrap();
    assert_eq!(
        drain(&mut stream).await.unwrap().last().unwrap().state,
        TrackedState::Ready as i32
    );
    Sim {
        etcd,
        _ctrl: ctrl,
        ch,
        crm,
        _state: state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_cloudlet_runs_clusters_and_app_insts() {
    let region = sim(Duration::from_millis(10)).await;
    let ch = region.ch.clone();

    // The fake also offers kubernetes clusters.
    let mut k8s = cluster("acme", "k1", "tmus", "sim-1");
    k8s.deployment = "kubernetes".into();
    let mut app = app("acme", "game", "tcp:80");
    app.deployment = "kubernetes".into();
    app_api_client::AppApiClient::new(ch.clone())
        .create_app(app)
        .await
        .unwrap();
    let mut s = cluster_inst_api_client::ClusterInstApiClient::new(ch.clone())
        .create_cluster_inst(k8s)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        drain(&mut s).await.unwrap().last().unwrap().state,
        TrackedState::Ready as i32
    );
    let mut insts = app_inst_api_client::AppInstApiClient::new(ch.clone());
    let mut s = insts
        .create_app_inst(app_inst("acme", "g1", "game", "k1"))
        .await
        .unwrap()
        .into_inner();
    let p = drain(&mut s).await.unwrap();
    assert!(
        p.iter().any(|m| m.message == "Deploying simulated app"),
        "{p:?}"
    );
    assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32);
    let mut s = insts
        .delete_app_inst(app_inst("acme", "g1", "", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        drain(&mut s).await.unwrap().last().unwrap().state,
        TrackedState::NotPresent as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_lost_to_a_failed_write_goes_out_again_and_the_app_reaches_ready() {
    // Each platform operation takes a second: time to lose the report that ends it.
    let Sim {
        mut etcd,
        ch,
        crm,
        _ctrl,
        _state,
    } = sim(Duration::from_secs(1)).await;
    let mut s = cluster_inst_api_client::ClusterInstApiClient::new(ch.clone())
        .create_cluster_inst(cluster("acme", "c1", "tmus", "sim-1"))
        .await
        .unwrap()
        .into_inner();
    drain(&mut s).await.unwrap();
    app_api_client::AppApiClient::new(ch.clone())
        .create_app(app("acme", "game", "tcp:80"))
        .await
        .unwrap();
    let mut insts = app_inst_api_client::AppInstApiClient::new(ch.clone());
    let mut s = insts
        .create_app_inst(app_inst("acme", "g1", "game", "c1"))
        .await
        .unwrap()
        .into_inner();
    s.message().await.unwrap();

    // etcd goes away while the CRM works: its reports cannot be stored, and it notices and sends again.
    etcd.stop();
    testenv::wait_for(
        "the CRM to find its report not stored",
        Duration::from_secs(30),
        async || (testenv::metric(crm.http_addr, "crm_reports_resent_total") >= 1.0).then_some(()),
    )
    .await;
    etcd.resume().await.unwrap();
    testenv::wait_for(
        "the app instance to reach READY",
        Duration::from_secs(60),
        async || {
            let shown = insts
                .show_app_inst(app_inst("acme", "g1", "", ""))
                .await
                .ok()?
                .into_inner()
                .message()
                .await
                .ok()??;
            (shown.state == TrackedState::Ready as i32).then_some(())
        },
    )
    .await;
}
