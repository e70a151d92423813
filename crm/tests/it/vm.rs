//! The CRM with the real `vm` platform (qemu, software emulation on this machine): a VM AppInst boots
//! from the project's images, answers through the shared root LB, is adopted by a restarted CRM, and leaves
//! nothing behind; bad images and quotas end in CREATE_ERROR.

use crate::common::*;
use edge_proto::edge::*;

/// A region whose CRMs run the vm platform.
async fn vm_cloud() -> Cloud {
    let mut cloud = Cloud::start().await;
    cloud.platform_args = [
        "--platform",
        "vm",
        "--vm-images",
        VM_IMAGES,
        "--vm-boot-timeout-secs",
        "90",
    ]
    .map(String::from)
    .to_vec();
    cloud
}

/// A VM AppInst `acme/<name>` of App `<app>` on `tmus/berlin`.
fn vm_inst(name: &str, app: &str) -> AppInst {
    let berlin = CloudletKey {
        organization: "tmus".into(),
        name: "berlin".into(),
    };
    vm_app_inst("acme", name, app, berlin)
}

/// App `acme/vmweb` on the project's web image and its instance `acme/v1`: the create's progress stream.
async fn create_web_vm(cloud: &Cloud) -> tonic::Streaming<Progress> {
    cloud
        .apps()
        .create_app(vm_app("acme", "vmweb", "tcp:80", &vm_web_image(VM_IMAGES)))
        .await
        .unwrap();
    cloud
        .app_insts()
        .create_app_inst(vm_inst("v1", "vmweb"))
        .await
        .unwrap()
        .into_inner()
}

/// The VM directories of the CRM of `berlin`.
fn vm_dirs(cloud: &Cloud) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cloud.dir.path().join("berlin-state/vms"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// qemu processes running a VM of this test's CRM.
fn qemus(cloud: &Cloud) -> usize {
    testenv::processes_in(cloud.dir.path(), "qemu-system").len()
}

/// kill -9 of every qemu of this test's CRM (a node losing power).
fn kill_qemus(cloud: &Cloud) {
    for pid in testenv::processes_in(cloud.dir.path(), "qemu-system") {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_app_boots_answers_through_the_lb_survives_a_crm_crash_and_deletes_clean() {
    let cloud = vm_cloud().await;
    let crm = cloud.onboard("berlin", vec![]).await;
    let info = show(
        cloud
            .cloudlets()
            .show_cloudlet_info(CloudletInfo::default()),
    )
    .await;
    assert!(info[0].features.as_ref().unwrap().supports_vms);
    let mut s = create_web_vm(&cloud).await;
    let p = drain(&mut s).await.expect("VM app instance becomes ready");
    assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
    assert!(p.iter().any(|m| m.message == "Booting VM"), "{p:?}");
    let addr = cloud.public_addr("v1").await;
    assert_eq!(get_until_ok(addr).await, "Hello from an edge VM");
    assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (1, 1));
    // Its owner reads the VM's serial console through the API.
    let console = async || {
        cloud
            .exec()
            .show_logs(logs_of("acme", "v1", ShowLog::default()))
            .await
            .unwrap()
            .into_inner()
            .output
    };
    let text = console().await;
    assert!(text.contains("edge-vm: booted"), "{text}");

    // Power off, on and reboot through UpdateAppInst, as MobiledgeX's PowerState.
    let power = async |p: PowerState| {
        let mut i = vm_inst("v1", "");
        i.power_state = p as i32;
        let mut s = cloud
            .app_insts()
            .update_app_inst(AppInstUpdate {
                app_inst: Some(i),
                fields: vec!["power_state".into()],
            })
            .await?
            .into_inner();
        drain(&mut s).await
    };
    assert_code(
        power(PowerState::PowerOn).await,
        tonic::Code::InvalidArgument,
        "power_state: one of POWER_ON_REQUESTED, POWER_OFF_REQUESTED, REBOOT_REQUESTED",
    );
    let p = power(PowerState::PowerOffRequested).await.unwrap();
    assert!(p.iter().any(|m| m.message == "Powering off"), "{p:?}");
    let shown = show(cloud.app_insts().show_app_inst(vm_inst("v1", ""))).await;
    assert_eq!(shown[0].power_state(), PowerState::PowerOff);
    assert_eq!(qemus(&cloud), 0);
    assert!(
        testenv::http_get(addr, "/").is_none(),
        "a VM powered off answers"
    );
    // It was powered off as a machine is: by its ACPI power button, which the guest obeyed.
    let text = console().await;
    assert!(
        text.contains("edge-vm: power button, powering off"),
        "{text}"
    );
    power(PowerState::PowerOnRequested).await.unwrap();
    assert_eq!(get_until_ok(addr).await, "Hello from an edge VM");
    let p = power(PowerState::RebootRequested).await.unwrap();
    assert!(p.iter().any(|m| m.message == "Rebooting"), "{p:?}");
    assert_eq!(get_until_ok(addr).await, "Hello from an edge VM");
    let shown = show(cloud.app_insts().show_app_inst(vm_inst("v1", ""))).await;
    assert_eq!(shown[0].power_state(), PowerState::PowerOn);
    assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (1, 1));

    // kill -9 of the CRM: the VM keeps running; the restarted CRM adopts it (no second VM).
    drop(crm);
    let _crm = cloud.start_crm("berlin");
    assert_eq!(get_until_ok(addr).await, "Hello from an edge VM");
    assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (1, 1));

    let mut s = cloud
        .app_insts()
        .delete_app_inst(vm_inst("v1", ""))
        .await
        .unwrap()
        .into_inner();
    drain(&mut s).await.expect("VM app instance deleted");
    assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (0, 0));
    assert!(
        testenv::http_get(addr, "/").is_none(),
        "route still answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_quotas_end_in_create_error_and_leave_nothing() {
    let cloud = vm_cloud().await;
    let quota = vec![ResourceQuota {
        name: "RAM".into(),
        value: 3000,
    }];
    let _crm = cloud.onboard("berlin", quota).await;
    let mut large = flavor("large");
    large.ram = 4096;
    cloud.flavors().create_flavor(large).await.unwrap();
    let zeros = "0".repeat(64);
    let cases = [
        (
            "missing",
            format!("nosuch.qcow2#sha256:{zeros}"),
            "small",
            "nosuch.qcow2 not found".to_string(),
        ),
        (
            "tampered",
            format!("edge-web.qcow2#sha256:{zeros}"),
            "small",
            format!("the App names {zeros}"),
        ),
        (
            "big",
            vm_web_image(VM_IMAGES),
            "large",
            "not enough RAM on Cloudlet \"tmus/berlin\": AppInst \"acme/big\" needs 4096 MB"
                .to_string(),
        ),
    ];
    for (name, image, flavor, msg) in cases {
        let mut a = vm_app("acme", name, "tcp:80", &image);
        a.default_flavor = Some(FlavorKey {
            name: flavor.into(),
        });
        cloud.apps().create_app(a).await.unwrap();
        let mut s = cloud
            .app_insts()
            .create_app_inst(vm_inst(name, name))
            .await
            .unwrap()
            .into_inner();
        let e = drain(&mut s).await.expect_err("CREATE_ERROR");
        assert!(
            e.message().contains("CREATE_ERROR") && e.message().contains(&msg),
            "{name}: {} lacks {msg:?}",
            e.message()
        );
        assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (0, 0), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_killed_while_a_vm_boots_finishes_with_exactly_that_vm() {
    let cloud = vm_cloud().await;
    let crm = cloud.onboard("berlin", vec![]).await;
    let mut s = create_web_vm(&cloud).await;
    // kill -9 as soon as qemu runs, while the guest boots.
    testenv::wait_for(
        "the VM to start",
        std::time::Duration::from_secs(60),
        async || (qemus(&cloud) == 1).then_some(()),
    )
    .await;
    drop(crm);
    let _crm = cloud.start_crm("berlin");
    let p = drain(&mut s).await.expect("the create finishes");
    assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
    assert_eq!(
        get_until_ok(cloud.public_addr("v1").await).await,
        "Hello from an edge VM"
    );
    assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_cluster_on_the_vm_platform_is_a_node_vm_whose_containers_answer_through_the_lb() {
    let mut cloud = vm_cloud().await;
    // Images of docker apps are pulled to, and copied from, the cloudlet's Docker Engine (the test's).
    let engine = cloud.docker.host.clone();
    cloud
        .platform_args
        .extend(["--docker-host".to_string(), engine]);
    let crm = cloud.onboard("berlin", vec![]).await;
    let info = show(
        cloud
            .cloudlets()
            .show_cloudlet_info(CloudletInfo::default()),
    )
    .await;
    assert!(info[0].features.as_ref().unwrap().supports_docker_clusters);

    // The node boots with its container engine; on this machine (no KVM) that takes tens of seconds, so
    // the create's stream may end at the controller's wait while the CRM goes on: READY is polled.
    let mut s = cloud
        .clusters()
        .create_cluster_inst(cluster("acme", "c1", "tmus", "berlin"))
        .await
        .unwrap()
        .into_inner();
    let progress = drain(&mut s).await;
    let key = cluster("acme", "c1", "", "").key;
    testenv::wait_for(
        "the cluster's node to be READY",
        std::time::Duration::from_secs(300),
        async || {
            let c = show(cloud.clusters().show_cluster_inst(ClusterInst {
                key: key.clone(),
                ..Default::default()
            }))
            .await;
            assert_ne!(
                c[0].state(),
                TrackedState::CreateError,
                "{:?} {progress:?}",
                c[0].errors
            );
            (c[0].state() == TrackedState::Ready).then_some(())
        },
    )
    .await;
    let node = testenv::processes_in(cloud.dir.path(), "qemu-system");
    assert_eq!(node.len(), 1);

    // Only the CRM can use the node's engine: it speaks TLS only and takes only a client certificate of
    // the node's own CA, which the CRM keeps in the node's directory (mode 0600).
    let dir = vm_dirs(&cloud).pop().unwrap();
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("spec.json")).unwrap()).unwrap();
    let port = spec["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f[1] == 2376)
        .expect("the engine's forward")[2]
        .as_u64()
        .unwrap();
    let stranger = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let refused = stranger
        .get(format!("https://127.0.0.1:{port}/version"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    let plain = testenv::http_get(([127, 0, 0, 1], port as u16).into(), "/version");
    assert!(plain.as_ref().is_none_or(|(s, _)| *s != 200), "{plain:?}");
    for f in ["engine-key.pem", "user-data"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let crm_side = bollard::Docker::connect_with_ssl(
        &format!("tcp://127.0.0.1:{port}"),
        &dir.join("engine-key.pem"),
        &dir.join("engine-cert.pem"),
        &dir.join("engine-ca.pem"),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    crm_side
        .version()
        .await
        .expect("the CRM's certificate is taken");

    // An app on it: its image copied into the node, its container there (not on the cloudlet's engine),
    // its port answering through the shared LB.
    cloud
        .apps()
        .create_app(web_app("web", "hi from the node"))
        .await
        .unwrap();
    let p = cloud.app_inst_ready("w1", "web", "c1").await;
    assert!(
        p.iter().any(|m| m.message.starts_with("Copying image")),
        "{p:?}"
    );
    let addr = cloud.public_addr("w1").await;
    assert_eq!(get_until_ok(addr).await, "hi from the node");
    assert!(
        cloud.containers("w1").is_empty(),
        "it ran on the cloudlet's engine"
    );
    let logs = cloud
        .exec()
        .show_logs(logs_of("acme", "w1", ShowLog::default()))
        .await
        .unwrap()
        .into_inner()
        .output;
    assert!(logs.contains("serving hi from the node"), "{logs}");

    // kill -9 of the CRM: the node and its app keep running and are adopted, not made again.
    drop(crm);
    let crm = cloud.start_crm("berlin");
    assert_eq!(get_until_ok(addr).await, "hi from the node");
    assert_eq!(testenv::processes_in(cloud.dir.path(), "qemu-system"), node);

    // A node that dies (kill -9 of its qemu) is started again, with its app and the same route.
    kill_qemus(&cloud);
    testenv::wait_for(
        "the app to answer again after its node was killed",
        std::time::Duration::from_secs(420),
        async || match testenv::http_get(addr, "/") {
            Some((200, body)) => Some(body),
            _ => None,
        },
    )
    .await;
    assert_eq!(qemus(&cloud), 1);

    // The app deleted while its CRM and its node are both down, then made again under the same name:
    // one container on the node at the end (an old one would hold the name and the port).
    drop(crm);
    kill_qemus(&cloud);
    testenv::wait_for(
        "the node to be gone",
        std::time::Duration::from_secs(30),
        async || (qemus(&cloud) == 0).then_some(()),
    )
    .await;
    let delete_w1 = async || {
        cloud
            .app_insts()
            .delete_app_inst(app_inst("acme", "w1", "web", "c1"))
            .await
            .unwrap()
            .into_inner()
    };
    let mut s = delete_w1().await;
    let _crm = cloud.start_crm("berlin");
    drain(&mut s).await.expect("app instance deleted");
    cloud.app_inst_ready("w1", "web", "c1").await;
    let addr = cloud.public_addr("w1").await;
    assert_eq!(get_until_ok(addr).await, "hi from the node");
    let on_node = crm_side
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .build(),
        ))
        .await
        .expect("the node's containers");
    assert_eq!(on_node.len(), 1, "{on_node:?}");

    // Deleting the app removes its route; deleting the cluster stops the node and leaves nothing.
    drain(&mut delete_w1().await)
        .await
        .expect("app instance deleted");
    assert!(
        testenv::http_get(addr, "/").is_none(),
        "route still answers"
    );
    let mut s = cloud
        .clusters()
        .delete_cluster_inst(cluster("acme", "c1", "tmus", "berlin"))
        .await
        .unwrap()
        .into_inner();
    drain(&mut s).await.expect("cluster deleted");
    assert_eq!((vm_dirs(&cloud).len(), qemus(&cloud)), (0, 0));
}
