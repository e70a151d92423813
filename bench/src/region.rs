//! The region the benchmarks run against: a real etcd, the regional controller, flavor `small`, and the
//! cloudlet `op/c1` with a fake-platform CRM, the App `dev/game` and the cluster `dev/k1` on it.

use std::time::Duration;

use edge_proto::edge::CloudletKey;
use testenv::fixtures::*;
use tonic::transport::Channel;

pub const REGION: &str = "bench";

pub fn cloudlet_key() -> CloudletKey {
    CloudletKey {
        organization: "op".into(),
        name: "c1".into(),
    }
}

pub struct FakeRegion {
    pub ctrl: regional_controller::Controller,
    /// the controller's API
    pub api: Channel,
    /// the cloudlet's access key
    pub access_key: String,
    pub dir: tempfile::TempDir,
    _crm: crm::Crm,
    _etcd: testenv::Etcd,
}

impl FakeRegion {
    pub async fn start() -> anyhow::Result<Self> {
        let etcd = testenv::Etcd::start().await?;
        let ctrl = regional_controller::Controller::start(regional_controller::Config::local(
            REGION, &etcd.url,
        ))
        .await?;
        let api = Channel::from_shared(format!("http://{}", ctrl.api_addr))?
            .connect()
            .await?;
        api.flavors().create_flavor(flavor("small")).await?;
        let mut s = api
            .cloudlets()
            .create_cloudlet(cloudlet("op", "c1"))
            .await?
            .into_inner();
        let access_key = s
            .message()
            .await?
            .and_then(|p| p.access)
            .map(|a| a.access_private_key)
            .unwrap_or_default();
        let dir = tempfile::tempdir()?;
        let crm = crm::Crm::start(crm::Config::fake(
            REGION,
            cloudlet_key(),
            ctrl.notify_addr.to_string(),
            access_key.clone(),
            Duration::ZERO,
            dir.path().join("crm"),
        ))
        .await?;
        drain(&mut s).await?;
        api.apps().create_app(app("dev", "game", "tcp:80")).await?;
        drain(
            &mut api
                .clusters()
                .create_cluster_inst(cluster("dev", "k1", "op", "c1"))
                .await?
                .into_inner(),
        )
        .await?;
        Ok(Self {
            ctrl,
            api,
            access_key,
            dir,
            _crm: crm,
            _etcd: etcd,
        })
    }
}
