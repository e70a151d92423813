//! Fixtures for tests that drive the region API: object builders and stream helpers.

use std::time::Duration;

use edge_proto::edge::*;
use std::result::Result;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Reads a progress stream to its end: the messages, or the final error.
pub async fn drain(stream: &mut Streaming<Progress>) -> Result<Vec<Progress>, tonic::Status> {
    let mut all = Vec::new();
    while let Some(p) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("stream stalled")?
    {
        all.push(p);
    }
    Ok(all)
}

/// Runs a Show call and reads its stream into a Vec.
pub async fn show<T>(
    call: impl Future<Output = Result<tonic::Response<Streaming<T>>, tonic::Status>>,
) -> Vec<T> {
    let mut stream = call.await.expect("show call").into_inner();
    let mut items = Vec::new();
    while let Some(x) = stream.next().await {
        items.push(x.expect("show item"));
    }
    items
}

pub fn flavor(name: &str) -> Flavor {
    Flavor {
        key: Some(FlavorKey { name: name.into() }),
        vcpus: 2,
        ram: 2048,
        disk: 20,
        gpu: String::new(),
    }
}

pub fn cloudlet(org: &str, name: &str) -> Cloudlet {
    Cloudlet {
        key: Some(CloudletKey {
            organization: org.into(),
            name: name.into(),
        }),
        location: Some(Loc {
            latitude: 52.52,
            longitude: 13.40,
        }),
        platform_type: PlatformType::Docker as i32,
        ..Default::default()
    }
}

pub fn app(org: &str, name: &str, ports: &str) -> App {
    App {
        key: Some(AppKey {
            organization: org.into(),
            name: name.into(),
            version: "1.0".into(),
        }),
        image_type: ImageType::Docker as i32,
        image_path: "edge-busybox:test".into(),
        deployment: "docker".into(),
        access_ports: ports.into(),
        default_flavor: Some(FlavorKey {
            name: "small".into(),
        }),
        ..Default::default()
    }
}

/// App `acme/<name>` serving `greeting` over HTTP on port 80 with busybox httpd.
pub fn web_app(name: &str, greeting: &str) -> App {
    let mut a = app("acme", name, "tcp:80");
    a.command =
        "mkdir -p /www && echo $GREETING > /www/index.html && echo serving $GREETING && exec httpd -f -p 80 -h /www".into();
    a.env.insert("GREETING".into(), greeting.into());
    a
}

pub fn cluster(org: &str, name: &str, cloudlet_org: &str, cloudlet_name: &str) -> ClusterInst {
    ClusterInst {
        key: Some(ClusterInstKey {
            organization: org.into(),
            name: name.into(),
        }),
        cloudlet_key: Some(CloudletKey {
            organization: cloudlet_org.into(),
            name: cloudlet_name.into(),
        }),
        flavor: Some(FlavorKey {
            name: "small".into(),
        }),
        deployment: "docker".into(),
        ..Default::default()
    }
}

pub fn app_inst(org: &str, name: &str, app_name: &str, cluster_name: &str) -> AppInst {
    AppInst {
        key: Some(AppInstKey {
            organization: org.into(),
            name: name.into(),
        }),
        app_key: Some(AppKey {
            organization: org.into(),
            name: app_name.into(),
            version: "1.0".into(),
        }),
        cluster_key: Some(ClusterInstKey {
            organization: org.into(),
            name: cluster_name.into(),
        }),
        ..Default::default()
    }
}

/// Where `infra/vm-images.sh` puts the VM images (`infra/install.sh` runs it).
pub const VM_IMAGES: &str = "/opt/edge-platform/images";

/// `edge-web.qcow2#sha256:<hex>`: the web disk of the VM images in `dir`, as `infra/vm-images.sh` recorded
/// it in `SHA256SUMS`.
pub fn vm_web_image(dir: &str) -> String {
    let sums = std::fs::read_to_string(std::path::Path::new(dir).join("SHA256SUMS"))
        .unwrap_or_else(|e| panic!("VM images in {dir}: {e} (run infra/install.sh)"));
    let hex = sums
        .lines()
        .find(|l| l.ends_with("edge-web.qcow2"))
        .and_then(|l| l.split_whitespace().next())
        .expect("edge-web.qcow2 in SHA256SUMS");
    format!("edge-web.qcow2#sha256:{hex}")
}

/// A VM App `org/name` 1.0 with ports `ports` booting `image_path`.
pub fn vm_app(org: &str, name: &str, ports: &str, image_path: &str) -> App {
    let mut a = app(org, name, ports);
    a.image_type = ImageType::Qcow as i32;
    a.deployment = "vm".into();
    a.image_path = image_path.into();
    a
}

/// A VM AppInst `org/name` of App `app` 1.0 on `cloudlet` (a VM has no cluster).
pub fn vm_app_inst(org: &str, name: &str, app: &str, cloudlet: CloudletKey) -> AppInst {
    let mut i = app_inst(org, name, app, "");
    i.cluster_key = None;
    i.cloudlet_key = Some(cloudlet);
    i
}

pub fn assert_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, msg: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} containing {msg:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{}", s.message());
            assert!(
                s.message().contains(msg),
                "message {:?} does not contain {msg:?}",
                s.message()
            );
        }
    }
}

/// Clients of a regional controller's API services, from a channel to it.
pub trait RegionApi {
    fn channel(&self) -> Channel;

    fn flavors(&self) -> flavor_api_client::FlavorApiClient<Channel> {
        flavor_api_client::FlavorApiClient::new(self.channel())
    }
    fn operator_codes(&self) -> operator_code_api_client::OperatorCodeApiClient<Channel> {
        operator_code_api_client::OperatorCodeApiClient::new(self.channel())
    }
    fn cloudlets(&self) -> cloudlet_api_client::CloudletApiClient<Channel> {
        cloudlet_api_client::CloudletApiClient::new(self.channel())
    }
    fn clusters(&self) -> cluster_inst_api_client::ClusterInstApiClient<Channel> {
        cluster_inst_api_client::ClusterInstApiClient::new(self.channel())
    }
    fn apps(&self) -> app_api_client::AppApiClient<Channel> {
        app_api_client::AppApiClient::new(self.channel())
    }
    fn app_insts(&self) -> app_inst_api_client::AppInstApiClient<Channel> {
        app_inst_api_client::AppInstApiClient::new(self.channel())
    }
    fn exec(&self) -> exec_api_client::ExecApiClient<Channel> {
        exec_api_client::ExecApiClient::new(self.channel())
    }
}

/// A ShowLogs request for AppInst `<org>/<name>` with `log` options.
pub fn logs_of(org: &str, name: &str, log: ShowLog) -> ExecRequest {
    ExecRequest {
        app_inst_key: Some(AppInstKey {
            organization: org.into(),
            name: name.into(),
        }),
        log: Some(log),
        ..Default::default()
    }
}

impl RegionApi for Channel {
    fn channel(&self) -> Channel {
        self.clone()
    }
}

/// Onboards a cloudlet with `edgectl` as an operator does: runs `create` (an `edgectl ... create
/// cloudlet ...` command), hands the access key it prints to `start_crm` (which starts the cloudlet's
/// CRM), and checks the command then ends with the cloudlet `org/name` READY. Returns what `start_crm`
/// returned.
pub async fn onboard_with_edgectl<T>(
    mut create: std::process::Command,
    cloudlet: &str,
    start_crm: impl AsyncFnOnce(String) -> T,
) -> T {
    use std::io::{BufRead, BufReader};
    let mut child = create
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting edgectl");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let key = loop {
        let line = lines
            .next()
            .expect("the access key line")
            .expect("edgectl output");
        if let Some(k) = line.trim().strip_prefix("access_private_key: ") {
            break k.to_string();
        }
    };
    let started = start_crm(key).await;
    let rest: Vec<String> = lines.map(|l| l.expect("edgectl output")).collect();
    assert!(child.wait().expect("edgectl").success(), "{rest:?}");
    let ready = format!("Cloudlet {cloudlet}: READY");
    assert!(rest.last().is_some_and(|l| l.contains(&ready)), "{rest:?}");
    started
}
