//! Lifecycle of ClusterInst and AppInst driven by a test CRM over notify: progress streams, error
//! states and retries, public port allocation and release.

use std::time::Duration;

use crate::common::*;
use edge_proto::edge::*;
use tonic::Code;

/// A region with cloudlet tmus/berlin (CRM connected), flavor small, App acme/game and a READY docker
/// cluster acme/c1.
/// The CRM, once it holds AppInst `acme/<name>`, reports it READY; returns when the controller stored it.
async fn app_inst_ready(r: &Region, crm: &mut TestCrm, name: &str) {
    crm.wait_for(
        |o| matches!(o, change::Object::AppInst(i) if i.key.as_ref().unwrap().name == name),
    )
    .await;
    crm.report_app_inst(name, "acme", TrackedState::Ready, &[], &[])
        .await;
    testenv::wait_for(
        "the AppInst to be READY",
        Duration::from_secs(10),
        async || {
            let shown = show(r.app_insts().show_app_inst(app_inst("acme", name, "", ""))).await;
            (shown[0].state == TrackedState::Ready as i32).then_some(())
        },
    )
    .await;
}

async fn region_with_cluster() -> (Region, TestCrm) {
    let r = Region::start().await;
    r.create_flavor("small").await;
    let mut crm = r.onboard("tmus", "berlin").await;
    r.apps()
        .create_app(app("acme", "game", "tcp:80,udp:5000-5002"))
        .await
        .unwrap();

    let mut stream = r
        .clusters()
        .create_cluster_inst(cluster("acme", "c1", "tmus", "berlin"))
        .await
        .unwrap()
        .into_inner();
    let c = crm
        .wait_for(|o| matches!(o, change::Object::ClusterInst(_)))
        .await;
    let change::Object::ClusterInst(c) = c else {
        unreachable!()
    };
    assert_eq!(c.state, TrackedState::CreateRequested as i32);
    crm.report_cluster(
        "c1",
        "acme",
        TrackedState::Creating,
        &["creating network"],
        &[],
    )
    .await;
    crm.report_cluster(
        "c1",
        "acme",
        TrackedState::Ready,
        &["creating network", "network ready"],
        &[],
    )
    .await;
    let progress = drain(&mut stream).await.unwrap();
    let messages: Vec<&str> = progress.iter().map(|p| p.message.as_str()).collect();
    assert!(messages.contains(&"creating network"), "{messages:?}");
    assert!(messages.contains(&"network ready"), "{messages:?}");
    assert_eq!(progress.last().unwrap().state, TrackedState::Ready as i32);
    crm.wait_for(
        |o| matches!(o, change::Object::ClusterInst(c) if c.state == TrackedState::Ready as i32),
    )
    .await;
    (r, crm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_inst_create_ready_with_ports_then_delete_releases_them() {
    let (r, mut crm) = region_with_cluster().await;
    let mut insts = r.app_insts();

    let mut stream = insts
        .create_app_inst(app_inst("acme", "game-1", "game", "c1"))
        .await
        .unwrap()
        .into_inner();
    // The CRM gets the App before the AppInst that uses it.
    let first = crm.next_change().await.object.unwrap();
    assert_eq!(name_of(&first), "App game");
    let change::Object::AppInst(inst) = crm.next_change().await.object.unwrap() else {
        panic!("expected AppInst")
    };
    assert_eq!(inst.state, TrackedState::CreateRequested as i32);
    assert_eq!(inst.cloudlet_key.as_ref().unwrap().name, "berlin");
    assert_eq!(inst.flavor.as_ref().unwrap().name, "small");
    assert_eq!(inst.uri, "berlin.tmus.eu.edgecloud.local");
    let ports: Vec<(i32, i32, i32, i32)> = inst
        .mapped_ports
        .iter()
        .map(|p| (p.proto, p.internal_port, p.public_port, p.end_port))
        .collect();
    assert_eq!(
        ports,
        vec![
            (LProto::Tcp as i32, 80, 20000, 0),
            (LProto::Udp as i32, 5000, 20000, 5002)
        ]
    );

    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::Creating,
        &["pulling image"],
        &[],
    )
    .await;
    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::Creating,
        &["pulling image", "starting container"],
        &[],
    )
    .await;
    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::Ready,
        &["pulling image", "starting container"],
        &[],
    )
    .await;
    let progress = drain(&mut stream).await.unwrap();
    let messages: Vec<&str> = progress.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages.iter().filter(|m| **m == "pulling image").count(),
        1,
        "{messages:?}"
    );
    assert!(messages.contains(&"starting container"), "{messages:?}");
    assert_eq!(progress.last().unwrap().state, TrackedState::Ready as i32);

    // A second instance gets the next free ports; the App and cluster are in use.
    let mut s2 = insts
        .create_app_inst(app_inst("acme", "game-2", "game", "c1"))
        .await
        .unwrap()
        .into_inner();
    let change::Object::AppInst(i2) = crm
        .wait_for(
            |o| matches!(o, change::Object::AppInst(i) if i.key.as_ref().unwrap().name == "game-2"),
        )
        .await
    else {
        unreachable!()
    };
    assert_eq!(i2.mapped_ports[0].public_port, 20001);
    assert_eq!(i2.mapped_ports[1].public_port, 20003);
    crm.report_app_inst("game-2", "acme", TrackedState::Ready, &[], &[])
        .await;
    drain(&mut s2).await.unwrap();
    assert_code(
        r.apps().delete_app(app("acme", "game", "")).await,
        Code::FailedPrecondition,
        "App \"acme/game/1.0\" is in use by AppInst",
    );
    assert_code(
        r.clusters()
            .delete_cluster_inst(cluster("acme", "c1", "", ""))
            .await,
        Code::FailedPrecondition,
        "is in use by AppInst",
    );
    assert_code(
        insts
            .create_app_inst(app_inst("acme", "game-1", "game", "c1"))
            .await,
        Code::AlreadyExists,
        "AppInst \"acme/game-1\" already exists",
    );

    // Delete: DELETE_REQUESTED reaches the CRM; its NOT_PRESENT report removes the object and its ports.
    let mut del = insts
        .delete_app_inst(app_inst("acme", "game-1", "", ""))
        .await
        .unwrap()
        .into_inner();
    crm.wait_for(|o| matches!(o, change::Object::AppInst(i) if i.state == TrackedState::DeleteRequested as i32)).await;
    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::Deleting,
        &["removing container"],
        &[],
    )
    .await;
    crm.report_app_inst("game-1", "acme", TrackedState::NotPresent, &[], &[])
        .await;
    let progress = drain(&mut del).await.unwrap();
    assert_eq!(
        progress.last().unwrap().state,
        TrackedState::NotPresent as i32,
        "{progress:?}"
    );
    let shown = show(insts.show_app_inst(AppInst::default())).await;
    assert_eq!(shown.len(), 1);

    // game-1's ports are free again: a new instance takes them.
    let _s3 = insts
        .create_app_inst(app_inst("acme", "game-3", "game", "c1"))
        .await
        .unwrap()
        .into_inner();
    let change::Object::AppInst(i3) = crm
        .wait_for(
            |o| matches!(o, change::Object::AppInst(i) if i.key.as_ref().unwrap().name == "game-3"),
        )
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        (
            i3.mapped_ports[0].public_port,
            i3.mapped_ports[1].public_port
        ),
        (20000, 20000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_inst_create_error_stays_for_retry_or_delete() {
    let (r, mut crm) = region_with_cluster().await;
    let mut insts = r.app_insts();
    let mut stream = insts
        .create_app_inst(app_inst("acme", "game-1", "game", "c1"))
        .await
        .unwrap()
        .into_inner();
    crm.wait_for(|o| matches!(o, change::Object::AppInst(_)))
        .await;
    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::CreateError,
        &[],
        &["image \"edge-busybox:test\" not found"],
    )
    .await;
    let err = drain(&mut stream).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message()
            .contains("CREATE_ERROR: image \"edge-busybox:test\" not found"),
        "{}",
        err.message()
    );
    let shown = show(insts.show_app_inst(AppInst::default())).await;
    assert_eq!(shown[0].state, TrackedState::CreateError as i32);
    assert_eq!(
        shown[0].errors,
        vec!["image \"edge-busybox:test\" not found".to_string()]
    );

    // Create again retries with the stored spec.
    let mut retry = insts
        .create_app_inst(app_inst("acme", "game-1", "game", "c1"))
        .await
        .unwrap()
        .into_inner();
    let change::Object::AppInst(i) = crm
        .wait_for(|o| matches!(o, change::Object::AppInst(i) if i.state == TrackedState::CreateRequested as i32))
        .await
    else {
        unreachable!()
    };
    assert!(i.errors.is_empty());
    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::CreateError,
        &[],
        &["still broken"],
    )
    .await;
    assert!(
        drain(&mut retry)
            .await
            .unwrap_err()
            .message()
            .contains("still broken")
    );

    // A CRM report that does not fit the state is ignored.
    crm.report_app_inst("game-1", "acme", TrackedState::Ready, &[], &[])
        .await;
    // Reports are handled in order: once a later one is stored, the one before was handled too.
    crm.send(notify_up::Msg::CloudletInfo(CloudletInfo {
        key: Some(crm.key.clone()),
        state: CloudletState::Ready as i32,
        status: vec!["marker".into()],
        ..Default::default()
    }))
    .await;
    testenv::wait_for(
        "the later report to be stored",
        Duration::from_secs(10),
        async || {
            let infos = show(r.cloudlets().show_cloudlet_info(CloudletInfo::default())).await;
            infos
                .first()
                .is_some_and(|i| i.status == ["marker"])
                .then_some(())
        },
    )
    .await;
    let shown = show(insts.show_app_inst(AppInst::default())).await;
    assert_eq!(shown[0].state, TrackedState::CreateError as i32);

    let mut del = insts
        .delete_app_inst(app_inst("acme", "game-1", "", ""))
        .await
        .unwrap()
        .into_inner();
    crm.wait_for(|o| matches!(o, change::Object::AppInst(i) if i.state == TrackedState::DeleteRequested as i32)).await;
    crm.report_app_inst("game-1", "acme", TrackedState::NotPresent, &[], &[])
        .await;
    drain(&mut del).await.unwrap();
    assert!(
        show(insts.show_app_inst(AppInst::default()))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_going_away_does_not_cancel_and_validation_of_app_insts() {
    let (r, mut crm) = region_with_cluster().await;
    let mut insts = r.app_insts();
    for (inst, code, msg) in [
        (
            app_inst("acme", "x", "nope", "c1"),
            Code::NotFound,
            "App \"acme/nope/1.0\" not found",
        ),
        (
            app_inst("acme", "x", "game", "nope"),
            Code::NotFound,
            "ClusterInst \"acme/nope\" not found",
        ),
        (
            app_inst("acme", "x/y", "game", "c1"),
            Code::InvalidArgument,
            "invalid key.name \"x/y\"",
        ),
        (
            AppInst {
                app_key: Some(AppKey {
                    organization: "other".into(),
                    name: "game".into(),
                    version: "1.0".into(),
                }),
                ..app_inst("acme", "x", "game", "c1")
            },
            Code::InvalidArgument,
            "app_key.organization \"other\" must match key.organization \"acme\"",
        ),
        (
            AppInst {
                cluster_key: None,
                ..app_inst("acme", "x", "game", "c1")
            },
            Code::InvalidArgument,
            "cluster_key is required for a docker App",
        ),
        (
            AppInst {
                cloudlet_key: Some(CloudletKey {
                    organization: "tmus".into(),
                    name: "paris".into(),
                }),
                ..app_inst("acme", "x", "game", "c1")
            },
            Code::InvalidArgument,
            "differs from the cloudlet of its cluster",
        ),
    ] {
        assert_code(insts.create_app_inst(inst).await, code, msg);
    }

    let stream = insts
        .create_app_inst(app_inst("acme", "game-1", "game", "c1"))
        .await
        .unwrap();
    drop(stream);
    app_inst_ready(&r, &mut crm, "game-1").await;

    // Update re-deploys: UPDATE_REQUESTED → CRM → READY.
    let mut up = insts
        .update_app_inst(AppInstUpdate {
            app_inst: Some(app_inst("acme", "game-1", "", "")),
            fields: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    crm.wait_for(|o| matches!(o, change::Object::AppInst(i) if i.state == TrackedState::UpdateRequested as i32)).await;
    crm.report_app_inst(
        "game-1",
        "acme",
        TrackedState::Updating,
        &["restarting"],
        &[],
    )
    .await;
    crm.report_app_inst("game-1", "acme", TrackedState::Ready, &["restarting"], &[])
        .await;
    let progress = drain(&mut up).await.unwrap();
    assert!(progress.iter().any(|p| p.message == "restarting"));
    assert_code(
        insts
            .update_app_inst(AppInstUpdate {
                app_inst: Some(app_inst("acme", "game-1", "", "")),
                fields: vec!["uri".into()],
            })
            .await,
        Code::InvalidArgument,
        "field \"uri\" cannot be updated",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_run_out_with_a_clear_message() {
    let r = Region::start_with(|c| c.port_range = (20000, 20002)).await;
    r.create_flavor("small").await;
    let mut crm = r.onboard("tmus", "berlin").await;
    r.apps()
        .create_app(app("acme", "big", "tcp:8000-8001"))
        .await
        .unwrap();
    r.ready_cluster(&mut crm, "c1").await;
    let _a = r
        .app_insts()
        .create_app_inst(app_inst("acme", "a", "big", "c1"))
        .await
        .unwrap();
    assert_code(
        r.app_insts()
            .create_app_inst(app_inst("acme", "b", "big", "c1"))
            .await,
        Code::FailedPrecondition,
        "no 2 free public tcp port(s) left on Cloudlet \"tmus/berlin\" (range 20000-20002)",
    );
    // Nothing half-created.
    let shown = show(r.app_insts().show_app_inst(AppInst::default())).await;
    assert_eq!(shown.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_port_updates_and_instance_creates_never_disagree() {
    let r = Region::start_with(|c| c.port_range = (20000, 20999)).await;
    r.create_flavor("small").await;
    let mut crm = r.onboard("tmus", "berlin").await;
    r.ready_cluster(&mut crm, "c1").await;
    // 100 rounds: an App's ports change while an instance of it is created. Whichever commits first, the
    // instance's ports are the App's ports afterwards (or the update was refused).
    let (mut violations, mut refused, mut created) = (0, 0, 0);
    for i in 0..100 {
        let name = format!("app{i}");
        r.apps()
            .create_app(app("acme", &name, "tcp:80"))
            .await
            .unwrap();
        let (mut apps, mut insts) = (r.apps(), r.app_insts());
        // The update starts 0-9 ms after the create, to hit every interleaving.
        let update = async {
            tokio::time::sleep(Duration::from_millis(i % 10)).await;
            apps.update_app(AppUpdate {
                app: Some(app("acme", &name, "tcp:81")),
                fields: vec!["access_ports".into()],
            })
            .await
        };
        let create = insts.create_app_inst(app_inst("acme", &format!("i{i}"), &name, "c1"));
        let (update, create) = tokio::join!(update, create);
        refused += usize::from(update.is_err());
        created += usize::from(create.is_ok());
        let ports = show(r.apps().show_app(app("acme", &name, ""))).await[0]
            .access_ports
            .clone();
        let inst = show(
            r.app_insts()
                .show_app_inst(app_inst("acme", &format!("i{i}"), "", "")),
        )
        .await;
        if let Some(inst) = inst.first()
            && format!("tcp:{}", inst.mapped_ports[0].internal_port) != ports
        {
            violations += 1;
        }
    }
    println!("100 rounds: {created} instances created, {refused} port updates refused");
    assert_eq!(violations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_deletes_and_instance_creates_never_disagree() {
    let r = Region::start_with(|c| c.port_range = (20000, 20999)).await;
    r.create_flavor("small").await;
    let mut crm = r.onboard("tmus", "berlin").await;
    r.apps()
        .create_app(app("acme", "game", "tcp:80"))
        .await
        .unwrap();
    // 100 rounds: a READY cluster is deleted while an instance is created on it. Afterwards an instance
    // exists only on a cluster that is not being deleted (or the delete was refused).
    let (mut violations, mut refused, mut created) = (0, 0, 0);
    for i in 0..100 {
        let c = format!("c{i}");
        r.ready_cluster(&mut crm, &c).await;
        let (mut clusters, mut insts) = (r.clusters(), r.app_insts());
        let delete = async {
            tokio::time::sleep(Duration::from_millis(i % 10)).await;
            clusters
                .delete_cluster_inst(cluster("acme", &c, "tmus", "berlin"))
                .await
        };
        let create = insts.create_app_inst(app_inst("acme", &format!("i{i}"), "game", &c));
        let (delete, create) = tokio::join!(delete, create);
        refused += usize::from(delete.is_err());
        created += usize::from(create.is_ok());
        let state =
            show(r.clusters().show_cluster_inst(cluster("acme", &c, "", ""))).await[0].state;
        let inst = show(
            r.app_insts()
                .show_app_inst(app_inst("acme", &format!("i{i}"), "", "")),
        )
        .await;
        if !inst.is_empty() && state != TrackedState::Ready as i32 {
            violations += 1;
        }
    }
    println!("100 rounds: {created} instances created, {refused} cluster deletes refused");
    assert_eq!(violations, 0);
}

/// Public-port holds in the region's store.
async fn held_ports(r: &Region) -> i64 {
    let mut etcd = etcd_client::Client::connect([r.etcd.url.as_str()], None)
        .await
        .unwrap();
    etcd.get(
        format!("/edge/{REGION}/Port/"),
        Some(
            etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only(),
        ),
    )
    .await
    .unwrap()
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_a_crm_gone_for_good_are_deleted_with_crm_override() {
    let (r, mut crm) = region_with_cluster().await;
    let mut insts = r.app_insts();
    let _create = insts
        .create_app_inst(app_inst("acme", "game-1", "game", "c1"))
        .await
        .unwrap();
    app_inst_ready(&r, &mut crm, "game-1").await;
    // The CRM is gone for good.
    drop(crm);
    // The cluster is still used: no override skips that.
    let mut forced = cluster("acme", "c1", "tmus", "berlin");
    forced.crm_override = CrmOverride::IgnoreCrm as i32;
    assert_code(
        r.clusters().delete_cluster_inst(forced.clone()).await,
        Code::FailedPrecondition,
        "in use",
    );
    assert_eq!(
        held_ports(&r).await,
        4,
        "tcp:80 and the three udp ports are held"
    );
    let mut inst = app_inst("acme", "game-1", "", "");
    inst.crm_override = CrmOverride::IgnoreCrm as i32;
    let done = drain(&mut insts.delete_app_inst(inst).await.unwrap().into_inner())
        .await
        .unwrap();
    assert_eq!(done.last().unwrap().state, TrackedState::NotPresent as i32);
    assert!(
        done[0].message.starts_with("deleted without its CRM"),
        "{done:?}"
    );
    assert!(
        show(insts.show_app_inst(AppInst::default()))
            .await
            .is_empty()
    );
    // Its public ports are released with it.
    assert_eq!(held_ports(&r).await, 0);
    let done = drain(
        &mut r
            .clusters()
            .delete_cluster_inst(forced)
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        show(r.clusters().show_cluster_inst(ClusterInst::default()))
            .await
            .is_empty()
    );
    drain(
        &mut r
            .cloudlets()
            .delete_cloudlet(cloudlet("tmus", "berlin"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert!(
        show(r.cloudlets().show_cloudlet(Cloudlet::default()))
            .await
            .is_empty()
    );
}

/// Creates AppInsts `acme/p0` … `acme/p<n-1>` of App game on cluster c1 all at once, `p<i>` through
/// `client(i)`; every create must be accepted.
async fn create_at_once(
    n: usize,
    client: impl Fn(usize) -> app_inst_api_client::AppInstApiClient<tonic::transport::Channel>,
) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut insts = client(i);
            tokio::spawn(async move {
                insts
                    .create_app_inst(app_inst("acme", &format!("p{i}"), "game", "c1"))
                    .await
                    .map(drop)
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().expect("every create is accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_one_cloudlet_all_get_distinct_ports() {
    let (r, _crm) = region_with_cluster().await;
    // 16 callers at once all want the lowest free port: the losers of each race try again, spread out.
    create_at_once(16, |_| r.app_insts()).await;
    let shown = show(r.app_insts().show_app_inst(AppInst::default())).await;
    let mut tcp: Vec<i32> = shown
        .iter()
        .flat_map(|i| i.mapped_ports.iter())
        .filter(|p| p.proto == LProto::Tcp as i32)
        .map(|p| p.public_port)
        .collect();
    tcp.sort();
    tcp.dedup();
    assert_eq!(tcp.len(), 16, "{tcp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_holds_stay_exact_through_two_replicas() {
    // A create picks its ports by its replica's cache, which learns of holds made through the other
    // replica a moment later: the commit's guards refuse a port held meanwhile and the retry reads etcd.
    // A delete releases exactly the ports its instance holds.
    let (r, _crm) = region_with_cluster().await;
    let b = regional_controller::Controller::start(config(&r.etcd))
        .await
        .unwrap();
    let b_insts = app_inst_api_client::AppInstApiClient::new(connect(b.api_addr).await);
    let replica = |i: usize| {
        if i.is_multiple_of(2) {
            r.app_insts()
        } else {
            b_insts.clone()
        }
    };
    create_at_once(12, replica).await;
    let shown = show(r.app_insts().show_app_inst(AppInst::default())).await;
    let starts = |proto: LProto| {
        let mut s: Vec<i32> = shown
            .iter()
            .flat_map(|i| i.mapped_ports.iter())
            .filter(|p| p.proto == proto as i32)
            .map(|p| p.public_port)
            .collect();
        s.sort();
        s
    };
    let (tcp, udp) = (starts(LProto::Tcp), starts(LProto::Udp));
    assert_eq!(tcp.len(), 12);
    assert!(tcp.windows(2).all(|w| w[0] < w[1]), "{tcp:?}");
    assert!(udp.windows(2).all(|w| w[1] - w[0] >= 3), "{udp:?}");
    assert_eq!(
        held_ports(&r).await,
        12 * 4,
        "tcp:80 and three udp ports each"
    );

    // Deleted through the replica that did not create it; the first half while the second half stays.
    for i in 0..12 {
        let mut inst = app_inst("acme", &format!("p{i}"), "", "");
        inst.crm_override = CrmOverride::IgnoreCrm as i32;
        let mut insts = replica(i + 1);
        drain(&mut insts.delete_app_inst(inst).await.unwrap().into_inner())
            .await
            .unwrap();
        assert_eq!(
            held_ports(&r).await,
            (11 - i as i64) * 4,
            "after deleting p{i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_through_another_replica_sees_a_cluster_just_made_ready() {
    // Replica B judges a create on its cache first, and a cluster made READY through replica A reaches
    // that cache a moment later: B must not refuse the create for that.
    let (r, mut crm) = region_with_cluster().await;
    let b = regional_controller::Controller::start(config(&r.etcd))
        .await
        .unwrap();
    let mut b_insts = app_inst_api_client::AppInstApiClient::new(connect(b.api_addr).await);
    for i in 2..7 {
        let name = format!("c{i}");
        r.ready_cluster(&mut crm, &name).await;
        b_insts
            .create_app_inst(app_inst("acme", &format!("on-{name}"), "game", &name))
            .await
            .expect("replica B accepts the create at once");
    }
}
