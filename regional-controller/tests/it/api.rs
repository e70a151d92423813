//! The object API against a real etcd: CRUD of each kind, validation messages, reference rules,
//! concurrent creates.

use crate::common::*;
use edge_proto::edge::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flavor_crud_and_validation() {
    let r = Region::start().await;
    let mut api = r.flavors();
    api.create_flavor(flavor("small")).await.unwrap();
    assert_code(
        api.create_flavor(flavor("small")).await,
        Code::AlreadyExists,
        "Flavor \"small\" already exists",
    );
    assert_code(
        api.create_flavor(flavor("bad/name")).await,
        Code::InvalidArgument,
        "Invalid flavor name",
    );
    assert_code(
        api.create_flavor(flavor("")).await,
        Code::InvalidArgument,
        "Invalid flavor name",
    );
    let mut zero = flavor("zero");
    zero.ram = 0;
    assert_code(
        api.create_flavor(zero).await,
        Code::InvalidArgument,
        "Ram cannot be 0",
    );

    let shown = show(api.show_flavor(Flavor::default())).await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].vcpus, 2);

    let mut bigger = flavor("small");
    bigger.vcpus = 8;
    bigger.ram = 1; // not in the field list: must stay
    api.update_flavor(FlavorUpdate {
        flavor: Some(bigger.clone()),
        fields: vec!["vcpus".into()],
    })
    .await
    .unwrap();
    let shown = show(api.show_flavor(flavor("small"))).await;
    assert_eq!((shown[0].vcpus, shown[0].ram), (8, 2048));
    assert_code(
        api.update_flavor(FlavorUpdate {
            flavor: Some(bigger.clone()),
            fields: vec!["name".into()],
        })
        .await,
        Code::InvalidArgument,
        "field \"name\" cannot be updated; updatable fields: vcpus, ram, disk, gpu",
    );
    bigger.vcpus = 0;
    assert_code(
        api.update_flavor(FlavorUpdate {
            flavor: Some(bigger),
            fields: vec!["vcpus".into()],
        })
        .await,
        Code::InvalidArgument,
        "Vcpus cannot be 0",
    );
    assert_code(
        api.delete_flavor(flavor("nope")).await,
        Code::NotFound,
        "Flavor \"nope\" not found",
    );
    api.delete_flavor(flavor("small")).await.unwrap();
    assert!(show(api.show_flavor(Flavor::default())).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_code_crud() {
    let r = Region::start().await;
    let mut api = r.operator_codes();
    let code = OperatorCode {
        code: "26201".into(),
        organization: "tmus".into(),
    };
    api.create_operator_code(code.clone()).await.unwrap();
    assert_code(
        api.create_operator_code(code.clone()).await,
        Code::AlreadyExists,
        "OperatorCode \"26201\"",
    );
    assert_code(
        api.create_operator_code(OperatorCode {
            code: "12ab".into(),
            organization: "x".into(),
        })
        .await,
        Code::InvalidArgument,
        "must be 5 or 6 digits",
    );
    let moved = OperatorCode {
        code: "26201".into(),
        organization: "vodafone".into(),
    };
    api.update_operator_code(OperatorCodeUpdate {
        operator_code: Some(moved),
        fields: vec![],
    })
    .await
    .unwrap();
    let shown = show(api.show_operator_code(OperatorCode::default())).await;
    assert_eq!(shown[0].organization, "vodafone");
    api.delete_operator_code(code).await.unwrap();
}

fn config_file(kind: &str, config: &str) -> ConfigFile {
    ConfigFile {
        kind: kind.into(),
        config: config.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_validation_and_flavor_reference() {
    let r = Region::start().await;
    let mut apps = r.apps();
    assert_code(
        apps.create_app(app("acme", "game", "tcp:80")).await,
        Code::NotFound,
        "Flavor \"small\" not found",
    );
    r.create_flavor("small").await;

    for (mutate, code, msg) in [
        (
            (|a: &mut App| a.access_ports = "tcp:99999".into()) as fn(&mut App),
            Code::InvalidArgument,
            "App ports out of range",
        ),
        (
            |a| a.access_ports = "tcp:80,tcp:80".into(),
            Code::InvalidArgument,
            "overlaps tcp port 80",
        ),
        (
            |a| a.deployment = "vm".into(),
            Code::InvalidArgument,
            "does not fit deployment \"vm\"",
        ),
        (
            |a| a.deployment = "swarm".into(),
            Code::InvalidArgument,
            "invalid deployment \"swarm\": allowed are docker, kubernetes, vm, helm",
        ),
        (
            |a| a.image_path = String::new(),
            Code::InvalidArgument,
            "image_path is required",
        ),
        (
            |a| a.key.as_mut().unwrap().version = String::new(),
            Code::InvalidArgument,
            "key.version is required",
        ),
        (
            |a| a.auth_public_key = "nonsense".into(),
            Code::InvalidArgument,
            "invalid auth_public_key",
        ),
        (
            |a| {
                a.image_type = ImageType::Qcow as i32;
                a.deployment = "vm".into();
                a.image_path = "https://x/img.qcow2".into()
            },
            Code::InvalidArgument,
            "#md5:",
        ),
        (
            |a| {
                a.env.insert("1BAD".into(), "x".into());
            },
            Code::InvalidArgument,
            "invalid env name \"1BAD\"",
        ),
        // MobiledgeX's rules and texts.
        (
            |a| a.access_ports = "tcp:22".into(),
            Code::InvalidArgument,
            "App cannot use port tcp:22 - reserved for Platform inter-node SSH",
        ),
        (
            |a| a.access_ports = "http:80".into(),
            Code::InvalidArgument,
            "Unsupported protocol: http",
        ),
        (
            |a| a.access_type = AccessType::Direct as i32,
            Code::InvalidArgument,
            "Access Type Direct no longer supported",
        ),
        (
            |a| a.configs = vec![config_file("appAccesCustomization", "x")],
            Code::InvalidArgument,
            "Invalid Config Kind - appAccesCustomization",
        ),
        (
            |a| a.configs = vec![config_file("envVarsYaml", "X: y")],
            Code::InvalidArgument,
            "Invalid Config Kind(envVarsYaml) for deployment type(docker)",
        ),
        (
            |a| a.configs = vec![config_file("appAccessCustomization", "")],
            Code::InvalidArgument,
            "Empty config for config kind appAccessCustomization",
        ),
    ] {
        let mut a = app("acme", "game", "tcp:80");
        mutate(&mut a);
        assert_code(apps.create_app(a).await, code, msg);
    }
    // Deployment and image type are derived from each other.
    let mut a = app("acme", "game", "tcp:80,udp:10000-10010");
    a.image_type = ImageType::Unknown as i32;
    apps.create_app(a).await.unwrap();
    let shown = show(apps.show_app(App::default())).await;
    assert_eq!(shown[0].image_type, ImageType::Docker as i32);
    assert_eq!(shown[0].access_type, AccessType::LoadBalancer as i32);

    // A flavor in use cannot be deleted; the message names the user.
    assert_code(
        r.flavors().delete_flavor(flavor("small")).await,
        Code::FailedPrecondition,
        "Flavor \"small\" is in use by App \"acme/game/1.0\"",
    );
    // Changing the default flavor moves the reference.
    r.create_flavor("large").await;
    let mut a = app("acme", "game", "");
    a.default_flavor = Some(FlavorKey {
        name: "large".into(),
    });
    apps.update_app(AppUpdate {
        app: Some(a.clone()),
        fields: vec!["default_flavor".into()],
    })
    .await
    .unwrap();
    r.flavors().delete_flavor(flavor("small")).await.unwrap();
    a.default_flavor = Some(FlavorKey {
        name: "gone".into(),
    });
    assert_code(
        apps.update_app(AppUpdate {
            app: Some(a),
            fields: vec!["default_flavor".into()],
        })
        .await,
        Code::NotFound,
        "Flavor \"gone\" not found",
    );
    assert_code(
        r.flavors().delete_flavor(flavor("large")).await,
        Code::FailedPrecondition,
        "in use by App",
    );
    // An alert policy is one more reference beside the flavor, which stays.
    let mut policies = alert_policy_api_client::AlertPolicyApiClient::new(r.channel());
    let policy = AlertPolicy {
        key: Some(AlertPolicyKey {
            organization: "acme".into(),
            name: "busy".into(),
        }),
        active_conn_limit: 100,
        severity: "warning".into(),
        ..Default::default()
    };
    policies.create_alert_policy(policy.clone()).await.unwrap();
    let mut a = app("acme", "game", "");
    a.alert_policies = vec!["busy".into()];
    let with_policies = AppUpdate {
        app: Some(a),
        fields: vec!["alert_policies".into()],
    };
    apps.update_app(with_policies.clone()).await.unwrap();
    assert_code(
        policies.delete_alert_policy(policy.clone()).await,
        Code::FailedPrecondition,
        "in use by App",
    );
    assert_code(
        r.flavors().delete_flavor(flavor("large")).await,
        Code::FailedPrecondition,
        "in use by App",
    );
    apps.update_app(AppUpdate {
        app: Some(app("acme", "game", "")),
        fields: vec!["alert_policies".into()],
    })
    .await
    .unwrap();
    policies.delete_alert_policy(policy).await.unwrap();
    assert_code(
        apps.update_app(with_policies).await,
        Code::NotFound,
        "AlertPolicy \"acme/busy\" not found",
    );
    apps.delete_app(app("acme", "game", "")).await.unwrap();
    r.flavors().delete_flavor(flavor("large")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_key_exactly_one_wins() {
    let r = Region::start().await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut api = r.flavors();
        tasks.push(tokio::spawn(async move {
            api.create_flavor(flavor("race"))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(code) => assert_eq!(code, Code::AlreadyExists),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudlet_onboarding_validation_and_key_rotation() {
    let r = Region::start_with(|c| c.lifecycle_timeout = std::time::Duration::from_secs(2)).await;
    let mut api = r.cloudlets();
    let mut bad = cloudlet("tmus", "berlin");
    bad.location = Some(Loc {
        latitude: 95.0,
        longitude: 13.4,
    });
    assert_code(
        api.create_cloudlet(bad).await,
        Code::InvalidArgument,
        "invalid location.latitude 95: must be -90 to 90",
    );
    let mut bad = cloudlet("tmus", "berlin");
    bad.resource_quotas = vec![ResourceQuota {
        name: "Bananas".into(),
        value: 1,
    }];
    assert_code(
        api.create_cloudlet(bad).await,
        Code::InvalidArgument,
        "invalid resource_quotas name \"Bananas\"",
    );

    // Without a CRM the create stream times out, leaving the cloudlet for its CRM to bring up later.
    let (private, mut stream) = r.create_cloudlet("tmus", "berlin").await;
    let err = drain(&mut stream).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(
        err.message().contains("CREATE_REQUESTED"),
        "{}",
        err.message()
    );
    let shown = show(api.show_cloudlet(Cloudlet::default())).await;
    assert_eq!(shown[0].state, TrackedState::CreateRequested as i32);
    assert_eq!(
        shown[0].access_public_key,
        edge_common::access_key::public_of(&private).unwrap()
    );
    assert_eq!(shown[0].public_addr, "127.0.0.1");
    assert_eq!(shown[0].root_lb_fqdn, "berlin.tmus.eu.edgecloud.local");
    assert_code(
        api.create_cloudlet(cloudlet("tmus", "berlin")).await,
        Code::AlreadyExists,
        "Cloudlet \"tmus/berlin\" already exists",
    );

    // Rotation: the new key works, the old one is refused.
    let access = api
        .rotate_cloudlet_access_key(CloudletKey {
            organization: "tmus".into(),
            name: "berlin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(access.access_private_key, private);
    let old = TestCrm::connect(r.ctrl.notify_addr, "tmus", "berlin", &private).await;
    assert_code(
        old.map(|_| ()),
        Code::Unauthenticated,
        "unknown cloudlet or wrong access key",
    );
    let mut crm = TestCrm::connect(
        r.ctrl.notify_addr,
        "tmus",
        "berlin",
        &access.access_private_key,
    )
    .await
    .unwrap();
    crm.sync().await;
    crm.report_cloudlet(CloudletState::Ready).await;
    testenv::wait_for(
        "the cloudlet to be READY",
        std::time::Duration::from_secs(10),
        async || {
            let shown = show(api.show_cloudlet(Cloudlet::default())).await;
            (shown[0].state == TrackedState::Ready as i32).then_some(())
        },
    )
    .await;
    let infos = show(api.show_cloudlet_info(CloudletInfo::default())).await;
    assert_eq!(infos[0].state, CloudletState::Ready as i32);

    let mut del = api
        .delete_cloudlet(cloudlet("tmus", "berlin"))
        .await
        .unwrap()
        .into_inner();
    let done = drain(&mut del).await.unwrap();
    assert_eq!(done.last().unwrap().state, TrackedState::NotPresent as i32);
    assert!(
        show(api.show_cloudlet(Cloudlet::default()))
            .await
            .is_empty()
    );
    assert!(
        show(api.show_cloudlet_info(CloudletInfo::default()))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_inst_needs_a_ready_capable_cloudlet() {
    let r = Region::start().await;
    r.create_flavor("small").await;
    let mut clusters = r.clusters();
    assert_code(
        clusters
            .create_cluster_inst(cluster("acme", "c1", "tmus", "berlin"))
            .await,
        Code::NotFound,
        "Cloudlet \"tmus/berlin\" not found",
    );
    let (_key, _stream) = r.create_cloudlet("tmus", "berlin").await;
    assert_code(
        clusters
            .create_cluster_inst(cluster("acme", "c1", "tmus", "berlin"))
            .await,
        Code::FailedPrecondition,
        "is CREATE_REQUESTED: start its CRM",
    );
    drop(_stream);
    let _crm = r.onboard("tmus", "paris").await;
    let mut bad = cluster("acme", "c1", "tmus", "paris");
    bad.num_nodes = 2;
    assert_code(
        clusters.create_cluster_inst(bad).await,
        Code::InvalidArgument,
        "num_masters and num_nodes must be 0 for a docker cluster",
    );
    let mut k8s = cluster("acme", "c1", "tmus", "paris");
    k8s.deployment = "kubernetes".into();
    assert_code(
        clusters.create_cluster_inst(k8s).await,
        Code::FailedPrecondition,
        "Cloudlet \"tmus/paris\" does not support kubernetes clusters",
    );
    // The test CRM's platform gives clusters no IP of their own.
    let mut dedicated = cluster("acme", "c1", "tmus", "paris");
    dedicated.ip_access = IpAccess::Dedicated as i32;
    assert_code(
        clusters.create_cluster_inst(dedicated).await,
        Code::FailedPrecondition,
        "Cloudlet \"tmus/paris\" cannot give a cluster its own IP address",
    );
    let mut noflavor = cluster("acme", "c1", "tmus", "paris");
    noflavor.flavor = Some(FlavorKey {
        name: "huge".into(),
    });
    assert_code(
        clusters.create_cluster_inst(noflavor).await,
        Code::NotFound,
        "Flavor \"huge\" not found",
    );
    assert_code(
        r.cloudlets()
            .delete_cloudlet(cloudlet("nobody", "nowhere"))
            .await,
        Code::NotFound,
        "Cloudlet \"nobody/nowhere\" not found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_quotas_and_message_sizes_are_enforced() {
    let r = Region::start_with(|c| c.org_quota = 2).await;
    r.create_flavor("small").await;
    let mut api = r.apps();
    for name in ["a1", "a2"] {
        api.create_app(app("acme", name, "tcp:80")).await.unwrap();
    }
    assert_code(
        api.create_app(app("acme", "a3", "tcp:80")).await,
        Code::ResourceExhausted,
        "organization \"acme\" has 2 App objects in this region, its quota is 2",
    );
    // Another organization has its own quota; a delete makes room.
    api.create_app(app("other", "a1", "tcp:80")).await.unwrap();
    api.delete_app(app("acme", "a1", "tcp:80")).await.unwrap();
    api.create_app(app("acme", "a3", "tcp:80")).await.unwrap();
    // A message beyond the limit is refused with a clear error, and the server goes on.
    let mut huge = app("acme", "huge", "tcp:80");
    huge.command = "x".repeat(edge_common::GRPC_MAX_MESSAGE_BYTES + 1);
    let err = api.create_app(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.message().contains("message length too large"), "{err}");
    assert_eq!(show(api.show_app(App::default())).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_larger_than_one_grpc_message_loads_at_restart() {
    let r = Region::start().await;
    r.create_flavor("small").await;
    let mut api = r.apps();
    // 300 Apps of 16 KiB each: about 4.8 MB, more than one 4 MiB gRPC reply can carry.
    let command = "x".repeat(16 * 1024);
    for i in 0..300 {
        let mut a = app("acme", &format!("a{i}"), "tcp:80");
        a.command = command.clone();
        api.create_app(a).await.unwrap();
    }
    // A restarted replica (a second one on the same etcd) loads the region in pages and serves all of it.
    let started = std::time::Instant::now();
    let again = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        regional_controller::Controller::start(config(&r.etcd)),
    )
    .await
    .expect("the region loads")
    .unwrap();
    println!("loaded 300 large Apps in {:?}", started.elapsed());
    let mut apps = app_api_client::AppApiClient::new(connect(again.api_addr).await);
    assert_eq!(show(apps.show_app(App::default())).await.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_an_etcd_restart_under_load() {
    use std::time::Duration;
    let mut r = Region::start().await;
    r.create_flavor("small").await;
    let api = r.apps();
    let load = testenv::WriteLoad::start(2, 3000, move |name| {
        let mut api = api.clone();
        async move {
            match tokio::time::timeout(
                Duration::from_secs(10),
                api.create_app(app("acme", &name, "tcp:80")),
            )
            .await
            {
                Ok(r) => r.map(drop),
                Err(_) => Err(tonic::Status::deadline_exceeded("no answer in 10 s")),
            }
        }
    });
    load.wait_acked(20).await;
    r.etcd.stop();
    load.wait_refused().await;
    r.etcd.resume().await.unwrap();
    load.wait_acked(20).await;
    let (acked, refused) = load.finish().await;

    // While etcd was down callers were told to retry; nothing they were told was created is missing.
    for e in &refused {
        assert!(
            matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
            "{e:?}"
        );
    }
    let shown: std::collections::HashSet<String> = show(r.apps().show_app(App::default()))
        .await
        .into_iter()
        .map(|a| a.key.unwrap().name)
        .collect();
    let lost: Vec<_> = acked.iter().filter(|n| !shown.contains(*n)).collect();
    println!(
        "{} writes acknowledged, {} refused while etcd restarted, {} lost",
        acked.len(),
        refused.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_on_one_replica_see_reference_changes_made_on_another() {
    // Replica B guards a create with the revisions its cache holds of the references; a write through
    // replica A reaches that cache a moment later. Whatever the timing, B's create sees what etcd holds.
    let r = Region::start().await;
    let b = regional_controller::Controller::start(config(&r.etcd))
        .await
        .unwrap();
    let b_channel = connect(b.api_addr).await;
    let mut b_apps = app_api_client::AppApiClient::new(b_channel.clone());
    let b_flavors = flavor_api_client::FlavorApiClient::new(b_channel);
    let mut a_flavors = r.flavors();
    let app_on = |name: &str, flavor: &str| {
        let mut a = app("acme", name, "tcp:80");
        a.default_flavor = Some(FlavorKey {
            name: flavor.into(),
        });
        a
    };
    for i in 0..10 {
        let (kept, gone) = (format!("kept{i}"), format!("gone{i}"));
        r.create_flavor(&kept).await;
        r.create_flavor(&gone).await;
        testenv::wait_for(
            "replica B to hold both flavors",
            std::time::Duration::from_secs(10),
            async || {
                let mut c = b_flavors.clone();
                let held = show(c.show_flavor(Flavor::default())).await;
                let holds = |n: &str| held.iter().any(|f| f.key.as_ref().unwrap().name == n);
                (holds(&kept) && holds(&gone)).then_some(())
            },
        )
        .await;
        // Changed through A: B's create still succeeds.
        let mut bigger = flavor(&kept);
        bigger.vcpus = 4;
        a_flavors
            .update_flavor(FlavorUpdate {
                flavor: Some(bigger),
                fields: vec!["vcpus".into()],
            })
            .await
            .unwrap();
        b_apps
            .create_app(app_on(&format!("on-kept{i}"), &kept))
            .await
            .unwrap();
        // Deleted through A: B's create fails and leaves nothing.
        a_flavors.delete_flavor(flavor(&gone)).await.unwrap();
        assert_code(
            b_apps
                .create_app(app_on(&format!("on-gone{i}"), &gone))
                .await,
            Code::NotFound,
            &format!("Flavor \"{gone}\" not found"),
        );
    }
    let apps = show(b_apps.show_app(App::default())).await;
    let mut names: Vec<String> = apps.iter().map(|a| a.key.clone().unwrap().name).collect();
    names.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("on-kept{i}")).collect();
    want.sort();
    assert_eq!(names, want);
}
