//! Notify: per-cloudlet filtering, authentication, resync, offline detection, several replicas and an
//! etcd restart — all against real etcd.

use std::time::Duration;

use crate::common::*;
use edge_proto::edge::*;
use regional_controller::Controller;
use tonic::Code;

fn names(objs: &[change::Object]) -> Vec<String> {
    let mut v: Vec<String> = objs.iter().map(name_of).collect();
    v.sort();
    v
}

/// Brings cluster `cluster` on the CRM's cloudlet to READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_sees_only_its_cloudlet_and_changes_live() {
    let r = Region::start().await;
    r.create_flavor("small").await;
    let mut a = r.onboard("tmus", "a").await;
    let mut b = r.onboard("tmus", "b").await;
    r.apps()
        .create_app(app("acme", "app-a", "tcp:80"))
        .await
        .unwrap();
    r.apps()
        .create_app(app("acme", "app-b", "tcp:80"))
        .await
        .unwrap();
    r.ready_cluster(&mut a, "ca").await;
    r.ready_cluster(&mut b, "cb").await;
    let _ = r
        .app_insts()
        .create_app_inst(app_inst("acme", "ia", "app-a", "ca"))
        .await
        .unwrap();
    let _ = r
        .app_insts()
        .create_app_inst(app_inst("acme", "ib", "app-b", "cb"))
        .await
        .unwrap();
    testenv::wait_for(
        "both instances to be stored",
        Duration::from_secs(10),
        async || {
            (show(r.app_insts().show_app_inst(AppInst::default()))
                .await
                .len()
                == 2)
                .then_some(())
        },
    )
    .await;

    // A fresh connection of A's CRM syncs A's objects only.
    let key = r
        .cloudlets()
        .rotate_cloudlet_access_key(a.key.clone())
        .await
        .unwrap()
        .into_inner();
    let mut a2 = TestCrm::connect(r.ctrl.notify_addr, "tmus", "a", &key.access_private_key)
        .await
        .unwrap();
    let synced = a2.sync().await;
    assert_eq!(
        names(&synced),
        [
            "App app-a",
            "AppInst ia",
            "Cloudlet a",
            "ClusterInst ca",
            "Flavor small"
        ]
    );

    // Live: a new AppInst on A arrives (after its App), one on B does not.
    r.apps()
        .create_app(app("acme", "app-c", "tcp:81"))
        .await
        .unwrap();
    let _ = r
        .app_insts()
        .create_app_inst(app_inst("acme", "ib2", "app-c", "cb"))
        .await
        .unwrap();
    let _ = r
        .app_insts()
        .create_app_inst(app_inst("acme", "ia2", "app-a", "ca"))
        .await
        .unwrap();
    let c = a2.next_change().await;
    assert_eq!(name_of(c.object.as_ref().unwrap()), "AppInst ia2");
    assert!(c.revision > 0);

    // A DME sees the whole region.
    let (_tx, mut dme) = open_dme(r.ctrl.notify_addr).await;
    let all = names(&read_sync(&mut dme).await);
    for n in [
        "App app-b",
        "AppInst ib",
        "Cloudlet b",
        "CloudletInfo a",
        "CloudletInfo b",
    ] {
        assert!(all.contains(&n.to_string()), "{n} missing from {all:?}");
    }
    assert!(
        !all.iter().any(|n| n.starts_with("ClusterInst")),
        "DME did not ask for ClusterInsts: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cloudlets_and_wrong_keys_are_refused() {
    let r = Region::start().await;
    let (other_private, _) = edge_common::access_key::generate().unwrap();
    assert_code(
        TestCrm::connect(r.ctrl.notify_addr, "tmus", "ghost", &other_private)
            .await
            .map(|_| ()),
        Code::Unauthenticated,
        "cloudlet \"tmus/ghost\": unknown cloudlet or wrong access key",
    );
    let (private, _s) = r.create_cloudlet("tmus", "berlin").await;
    assert_code(
        TestCrm::connect(r.ctrl.notify_addr, "tmus", "berlin", &other_private)
            .await
            .map(|_| ()),
        Code::Unauthenticated,
        "unknown cloudlet or wrong access key",
    );
    // A hello for another region is refused.
    let hello = Hello {
        client_type: ClientType::Dme as i32,
        region: "US".into(),
        ..Default::default()
    };
    assert_code(
        open(r.ctrl.notify_addr, hello).await.map(|_| ()),
        Code::InvalidArgument,
        "serves region \"EU\", not \"US\"",
    );

    // The right key works; rotating the key ends the live session.
    let mut crm = TestCrm::connect(r.ctrl.notify_addr, "tmus", "berlin", &private)
        .await
        .unwrap();
    crm.sync().await;
    r.cloudlets()
        .rotate_cloudlet_access_key(crm.key.clone())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match crm.rx.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("session must end");
    assert_eq!(end.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_its_revision_gets_only_what_changed_until_history_is_compacted() {
    let r = Region::start().await;
    for f in ["small", "gone", "kept"] {
        r.create_flavor(f).await;
    }
    let (private, _s) = r.create_cloudlet("tmus", "berlin").await;
    let connect =
        |since| TestCrm::connect_since(r.ctrl.notify_addr, "tmus", "berlin", &private, since);
    let mut crm = connect(0).await.unwrap();
    let (full, end) = read_sync_changes(&mut crm.rx).await;
    assert!(!end.delta);
    assert_eq!(full.len(), 4);
    let since = end.revision;
    drop(crm);

    // While away: a flavor goes, one comes, and another cloudlet comes and goes (none of this CRM's
    // business).
    r.flavors().delete_flavor(flavor("gone")).await.unwrap();
    r.create_flavor("new").await;
    let (_, _paris) = r.create_cloudlet("tmus", "paris").await;
    r.cloudlets()
        .delete_cloudlet(cloudlet("tmus", "paris"))
        .await
        .unwrap();

    let mut crm = connect(since).await.unwrap();
    let (delta, end) = read_sync_changes(&mut crm.rx).await;
    let seen: Vec<(i32, String)> = delta
        .iter()
        .map(|c| (c.action, name_of(c.object.as_ref().unwrap())))
        .collect();
    assert_eq!(
        seen,
        [
            (ChangeAction::Delete as i32, "Flavor gone".to_string()),
            (ChangeAction::Update as i32, "Flavor new".to_string()),
        ]
    );
    assert!(end.delta && end.revision > since, "{end:?}");
    // What the CRM held from before is still known to the stream: its delete arrives.
    r.flavors().delete_flavor(flavor("kept")).await.unwrap();
    let c = crm.next_change().await;
    assert_eq!(
        (c.action, name_of(c.object.as_ref().unwrap())),
        (ChangeAction::Delete as i32, "Flavor kept".to_string())
    );
    drop(crm);

    // Once etcd has compacted that history, the reconnect is a full sync.
    let mut etcd = etcd_client::Client::connect([r.etcd.url.as_str()], None)
        .await
        .unwrap();
    let now = etcd
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(now, None).await.unwrap();
    let mut crm = connect(since).await.unwrap();
    let (full, end) = read_sync_changes(&mut crm.rx).await;
    assert!(!end.delta);
    assert_eq!(
        names(
            &full
                .into_iter()
                .filter_map(|c| c.object)
                .collect::<Vec<_>>()
        ),
        ["Cloudlet berlin", "Flavor new", "Flavor small"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resyncs_and_offline_after_grace() {
    let r = Region::start().await;
    r.create_flavor("small").await;
    r.create_flavor("gone").await;
    let (private, _s) = r.create_cloudlet("tmus", "berlin").await;
    let mut crm = TestCrm::connect(r.ctrl.notify_addr, "tmus", "berlin", &private)
        .await
        .unwrap();
    assert_eq!(
        names(&crm.sync().await),
        ["Cloudlet berlin", "Flavor gone", "Flavor small"]
    );
    crm.report_cloudlet(CloudletState::Ready).await;
    let info = || async {
        let infos = show(r.cloudlets().show_cloudlet_info(CloudletInfo::default())).await;
        infos.first().map(|i| i.state).unwrap_or_default()
    };
    let wait_state = |state: CloudletState| async move {
        testenv::wait_for(state.as_str_name(), Duration::from_secs(10), async || {
            (info().await == state as i32).then_some(())
        })
        .await;
        true
    };
    assert!(wait_state(CloudletState::Ready).await, "report not stored");
    drop(crm);

    // While disconnected: one flavor goes, one comes. The resync shows the new truth.
    r.flavors().delete_flavor(flavor("gone")).await.unwrap();
    r.create_flavor("new").await;
    let mut crm = TestCrm::connect(r.ctrl.notify_addr, "tmus", "berlin", &private)
        .await
        .unwrap();
    assert_eq!(
        names(&crm.sync().await),
        ["Cloudlet berlin", "Flavor new", "Flavor small"]
    );
    drop(crm);

    // Offline once the CRM is gone longer than offline_after (3 s here); back to READY on reconnect.
    assert_eq!(info().await, CloudletState::Ready as i32);
    assert!(
        wait_state(CloudletState::Offline).await,
        "cloudlet never went offline"
    );
    let mut crm = TestCrm::connect(r.ctrl.notify_addr, "tmus", "berlin", &private)
        .await
        .unwrap();
    crm.sync().await;
    crm.report_cloudlet(CloudletState::Ready).await;
    assert!(wait_state(CloudletState::Ready).await, "back online");
    // Connected CRMs (heartbeating) are not marked offline: READY throughout more than offline_after (3 s).
    for _ in 0..50 {
        assert_eq!(info().await, CloudletState::Ready as i32);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_is_streamed_by_another() {
    let r = Region::start().await;
    let second = Controller::start(config(&r.etcd)).await.unwrap();
    let (_tx, mut dme) = open_dme(second.notify_addr).await;
    assert!(read_sync(&mut dme).await.is_empty());
    r.operator_codes()
        .create_operator_code(OperatorCode {
            code: "26201".into(),
            organization: "tmus".into(),
        })
        .await
        .unwrap();
    let c = next_change(&mut dme).await;
    assert_eq!(name_of(c.object.as_ref().unwrap()), "OperatorCode 26201");

    // A CRM connected to the second replica reports; the first replica's API shows it.
    let (private, mut create) = r.create_cloudlet("tmus", "berlin").await;
    let mut crm = TestCrm::connect(second.notify_addr, "tmus", "berlin", &private)
        .await
        .unwrap();
    crm.sync().await;
    crm.report_cloudlet(CloudletState::Ready).await;
    let progress = drain(&mut create).await.unwrap();
    assert_eq!(progress.last().unwrap().state, TrackedState::Ready as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_is_survived_without_missing_changes() {
    let mut r = Region::start().await;
    let (_tx, mut dme) = open_dme(r.ctrl.notify_addr).await;
    read_sync(&mut dme).await;
    r.create_flavor("before").await;
    assert_eq!(
        name_of(next_change(&mut dme).await.object.as_ref().unwrap()),
        "Flavor before"
    );

    r.etcd.stop();
    let err = r
        .flavors()
        .create_flavor(flavor("during"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    r.etcd.resume().await.unwrap();

    // The controller reconnects by itself; writes work again and reach the stream.
    testenv::wait_for(
        "the controller to recover from the etcd restart",
        Duration::from_secs(20),
        async || r.flavors().create_flavor(flavor("after")).await.ok(),
    )
    .await;
    assert_eq!(
        name_of(next_change(&mut dme).await.object.as_ref().unwrap()),
        "Flavor after"
    );
    let shown = show(r.flavors().show_flavor(Flavor::default())).await;
    assert_eq!(shown.len(), 2);
}
