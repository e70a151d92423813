//! A region for tests: a real etcd from testenv and a controller replica in-process on free ports, plus
//! a test CRM that speaks notify the way a real CRM does.
#![allow(dead_code)]

use std::time::Duration;

use edge_common::access_key;
use edge_proto::edge::*;
use regional_controller::{Config, Controller};
use std::result::Result;
pub use testenv::fixtures::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

pub const REGION: &str = "EU";

pub struct Region {
    pub etcd: testenv::Etcd,
    pub ctrl: Controller,
    pub channel: Channel,
}

pub fn config(etcd: &testenv::Etcd) -> Config {
    let mut c = Config::local(REGION, &etcd.url);
    c.lifecycle_timeout = Duration::from_secs(20);
    c.offline_after = Duration::from_secs(3);
    c.heartbeat_interval = Duration::from_secs(2);
    c.port_range = (20000, 20099);
    c
}

impl Region {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let etcd = testenv::Etcd::start().await.expect("etcd");
        let mut cfg = config(&etcd);
        f(&mut cfg);
        let ctrl = Controller::start(cfg).await.expect("controller");
        let channel = connect(ctrl.api_addr).await;
        Self {
            etcd,
            ctrl,
            channel,
        }
    }

    /// Creates ClusterInst `acme/<name>` on `crm`'s cloudlet, which reports it READY; returns once it is.
    pub async fn ready_cluster(&self, crm: &mut TestCrm, name: &str) {
        let c = cluster("acme", name, &crm.key.organization, &crm.key.name);
        let mut s = self
            .clusters()
            .create_cluster_inst(c)
            .await
            .unwrap()
            .into_inner();
        crm.wait_for(
            |o| matches!(o, change::Object::ClusterInst(c) if c.key.as_ref().unwrap().name == name),
        )
        .await;
        crm.report_cluster(name, "acme", TrackedState::Ready, &[], &[])
            .await;
        drain(&mut s).await.unwrap();
    }

    pub async fn create_flavor(&self, name: &str) {
        self.flavors()
            .create_flavor(flavor(name))
            .await
            .expect("create flavor");
    }

    /// Creates cloudlet `org/name` and returns its access private key plus the create stream (still
    /// waiting for the CRM).
    pub async fn create_cloudlet(&self, org: &str, name: &str) -> (String, Streaming<Progress>) {
        let mut stream = self
            .cloudlets()
            .create_cloudlet(cloudlet(org, name))
            .await
            .expect("create cloudlet")
            .into_inner();
        let first = stream
            .message()
            .await
            .expect("first progress")
            .expect("a message");
        let access = first.access.expect("access key in the first message");
        assert_eq!(access.region, REGION);
        assert_eq!(access.notify_addr, self.ctrl.notify_addr.to_string());
        (access.access_private_key, stream)
    }

    /// Creates a cloudlet, connects its test CRM and reports it READY; the create stream ends READY.
    pub async fn onboard(&self, org: &str, name: &str) -> TestCrm {
        let (private, mut stream) = self.create_cloudlet(org, name).await;
        let mut crm = TestCrm::connect(self.ctrl.notify_addr, org, name, &private)
            .await
            .expect("crm connects");
        crm.sync().await;
        crm.report_cloudlet(CloudletState::Ready).await;
        let progress = drain(&mut stream).await.expect("cloudlet becomes ready");
        assert_eq!(
            progress.last().unwrap().state,
            TrackedState::Ready as i32,
            "{progress:?}"
        );
        crm
    }
}

pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to controller")
}

/// A test CRM: connects to notify with a cloudlet access key and reports like a real CRM.
pub struct TestCrm {
    pub tx: mpsc::Sender<NotifyUp>,
    pub rx: Streaming<NotifyDown>,
    pub key: CloudletKey,
}

pub fn up(msg: notify_up::Msg) -> NotifyUp {
    NotifyUp {
        trace_context: Default::default(),
        msg: Some(msg),
    }
}

impl TestCrm {
    pub async fn connect(
        notify: std::net::SocketAddr,
        org: &str,
        name: &str,
        private: &str,
    ) -> Result<Self, tonic::Status> {
        Self::connect_since(notify, org, name, private, 0).await
    }

    /// [`TestCrm::connect`] saying it is up to date with revision `since` (a reconnect).
    pub async fn connect_since(
        notify: std::net::SocketAddr,
        org: &str,
        name: &str,
        private: &str,
        since: i64,
    ) -> Result<Self, tonic::Status> {
        let key = CloudletKey {
            organization: org.into(),
            name: name.into(),
        };
        let now = edge_common::now_ms();
        let hello = Hello {
            client_type: ClientType::Crm as i32,
            region: REGION.into(),
            cloudlet_key: Some(key.clone()),
            signed_at: now,
            signature: access_key::sign(private, REGION, org, name, now).unwrap_or_default(),
            client_name: format!("test-crm-{name}"),
            last_revision: since,
            ..Default::default()
        };
        let (tx, rx) = open(notify, hello).await?;
        Ok(Self { tx, rx, key })
    }

    /// Reads the initial sync up to SendAllEnd; returns the objects.
    pub async fn sync(&mut self) -> Vec<change::Object> {
        read_sync(&mut self.rx).await
    }

    /// The next change, within 10 s.
    pub async fn next_change(&mut self) -> Change {
        next_change(&mut self.rx).await
    }

    /// Waits for a change of an AppInst/ClusterInst with the given state.
    pub async fn wait_for(&mut self, pred: impl Fn(&change::Object) -> bool) -> change::Object {
        loop {
            let c = self.next_change().await;
            if let Some(o) = c.object
                && pred(&o)
            {
                return o;
            }
        }
    }

    pub async fn send(&self, msg: notify_up::Msg) {
        self.tx.send(up(msg)).await.expect("notify stream open");
    }

    pub async fn report_cloudlet(&self, state: CloudletState) {
        let info = CloudletInfo {
            key: Some(self.key.clone()),
            state: state as i32,
            features: Some(PlatformFeatures {
                supports_docker_clusters: true,
                supports_shared_root_lb: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.send(notify_up::Msg::CloudletInfo(info)).await;
    }

    pub async fn report_cluster(
        &self,
        name: &str,
        org: &str,
        state: TrackedState,
        status: &[&str],
        errors: &[&str],
    ) {
        let info = ClusterInstInfo {
            key: Some(ClusterInstKey {
                organization: org.into(),
                name: name.into(),
            }),
            state: state as i32,
            status: status.iter().map(|s| s.to_string()).collect(),
            errors: errors.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.send(notify_up::Msg::ClusterInstInfo(info)).await;
    }

    pub async fn report_app_inst(
        &self,
        name: &str,
        org: &str,
        state: TrackedState,
        status: &[&str],
        errors: &[&str],
    ) {
        let info = AppInstInfo {
            key: Some(AppInstKey {
                organization: org.into(),
                name: name.into(),
            }),
            state: state as i32,
            status: status.iter().map(|s| s.to_string()).collect(),
            errors: errors.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.send(notify_up::Msg::AppInstInfo(info)).await;
    }
}

/// Opens a notify stream with `hello`; fails with the server's status (e.g. Unauthenticated).
pub async fn open(
    notify: std::net::SocketAddr,
    hello: Hello,
) -> Result<(mpsc::Sender<NotifyUp>, Streaming<NotifyDown>), tonic::Status> {
    let channel = connect(notify).await;
    let (tx, rx) = mpsc::channel(64);
    tx.send(up(notify_up::Msg::Hello(hello))).await.unwrap();
    // Heartbeats while the caller holds the sender, like a real client.
    let weak = tx.downgrade();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(tx) = weak.upgrade() else { return };
            if tx
                .send(up(notify_up::Msg::Heartbeat(Heartbeat {
                    sent_at: edge_common::now_ms(),
                })))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut client = notify_client::NotifyClient::new(channel);
    let mut down = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    // The first message is the HelloReply, or the refusal.
    match down.message().await? {
        Some(NotifyDown {
            msg: Some(notify_down::Msg::HelloReply(_)),
            ..
        }) => Ok((tx, down)),
        other => panic!("expected HelloReply, got {other:?}"),
    }
}

/// A DME-style client that sees the whole region; keep the sender to keep the stream open.
pub async fn open_dme(
    notify: std::net::SocketAddr,
) -> (mpsc::Sender<NotifyUp>, Streaming<NotifyDown>) {
    let hello = Hello {
        client_type: ClientType::Dme as i32,
        region: REGION.into(),
        ..Default::default()
    };
    open(notify, hello).await.expect("dme connects")
}

pub async fn read_sync(rx: &mut Streaming<NotifyDown>) -> Vec<change::Object> {
    read_sync_changes(rx)
        .await
        .0
        .into_iter()
        .filter_map(|c| c.object)
        .collect()
}

/// The changes of a sync and its `SendAllEnd`.
pub async fn read_sync_changes(rx: &mut Streaming<NotifyDown>) -> (Vec<Change>, SendAllEnd) {
    let mut changes = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.message())
            .await
            .expect("sync stalled");
        match m.expect("stream ok").expect("stream open").msg {
            Some(notify_down::Msg::Change(c)) => changes.push(c),
            Some(notify_down::Msg::SendAllEnd(end)) => return (changes, end),
            other => panic!("unexpected during sync: {other:?}"),
        }
    }
}

pub async fn next_change(rx: &mut Streaming<NotifyDown>) -> Change {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.message())
            .await
            .expect("no change within 10 s");
        match m.expect("stream ok").expect("stream open").msg {
            Some(notify_down::Msg::Change(c)) => return c,
            Some(notify_down::Msg::SendAllEnd(_)) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
}

pub fn name_of(o: &change::Object) -> String {
    match o {
        change::Object::Flavor(x) => format!("Flavor {}", x.key.clone().unwrap_or_default().name),
        change::Object::OperatorCode(x) => format!("OperatorCode {}", x.code),
        change::Object::Cloudlet(x) => {
            format!("Cloudlet {}", x.key.clone().unwrap_or_default().name)
        }
        change::Object::CloudletInfo(x) => {
            format!("CloudletInfo {}", x.key.clone().unwrap_or_default().name)
        }
        change::Object::ClusterInst(x) => {
            format!("ClusterInst {}", x.key.clone().unwrap_or_default().name)
        }
        change::Object::App(x) => format!("App {}", x.key.clone().unwrap_or_default().name),
        change::Object::AppInst(x) => format!("AppInst {}", x.key.clone().unwrap_or_default().name),
        change::Object::Alert(x) => format!("Alert {}", x.labels["alertname"]),
        change::Object::AlertPolicy(x) => {
            format!("AlertPolicy {}", x.key.clone().unwrap_or_default().name)
        }
        change::Object::ExecRequest(x) => format!("ExecRequest {}", x.id),
    }
}

impl RegionApi for Region {
    fn channel(&self) -> Channel {
        self.channel.clone()
    }
}
