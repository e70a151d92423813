//! The region the benchmarks run against: a real etcd, the regional controller, flavor `small`, and the
//! cloudlet `op/c1` with a CRM on the platform the benchmark needs; `game` adds the App `dev/game` and the
//! docker cluster `dev/k1`.

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

/// The `edge-lb` the CRM starts, next to this benchmark's executable.
pub fn lb_binary() -> anyhow::Result<std::path::PathBuf> {
    let bin = crm::lb::default_binary();
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release --bins`",
        bin.display()
    );
    Ok(bin)
}

/// A regional controller of `region` on the etcd at `etcd`, and a channel to its API.
pub async fn controller(
    region: &str,
    etcd: &str,
) -> anyhow::Result<(regional_controller::Controller, Channel)> {
    let ctrl =
        regional_controller::Controller::start(regional_controller::Config::local(region, etcd))
            .await?;
    let api = crate::channel(ctrl.api_addr).await?;
    Ok((ctrl, api))
}

pub struct Region {
    pub ctrl: regional_controller::Controller,
    /// loopback address of the cloudlet's load balancer (its own, so a demo region's LB ports do not
    /// collide)
    pub public_ip: std::net::IpAddr,
    /// the controller's API
    pub api: Channel,
    /// the cloudlet's access key
    pub access_key: String,
    pub dir: tempfile::TempDir,
    _crm: crm::Crm,
    _etcd: testenv::Etcd,
}

impl Region {
    pub async fn start(platform: crm::PlatformKind) -> anyhow::Result<Self> {
        let etcd = testenv::Etcd::start().await?;
        let (ctrl, api) = controller(REGION, &etcd.url).await?;
        api.flavors().create_flavor(flavor("small")).await?;
        let public_ip = testenv::loopback_ip();
        let mut c = cloudlet("op", "c1");
        c.public_addr = public_ip.to_string();
        let mut s = api.cloudlets().create_cloudlet(c).await?.into_inner();
        let access_key = s
            .message()
            .await?
            .and_then(|p| p.access)
            .map(|a| a.access_private_key)
            .unwrap_or_default();
        let dir = tempfile::tempdir()?;
        let mut cfg = crm::Config::fake(
            REGION,
            cloudlet_key(),
            ctrl.notify_addr.to_string(),
            access_key.clone(),
            Duration::ZERO,
            dir.path().join("crm"),
        );
        if !matches!(platform, crm::PlatformKind::Fake { .. }) {
            cfg.lb_binary = lb_binary()?;
        }
        cfg.platform = platform;
        cfg.public_addr = public_ip;
        let crm = crm::Crm::start(cfg).await?;
        drain(&mut s).await?;
        Ok(Self {
            public_ip,
            ctrl,
            api,
            access_key,
            dir,
            _crm: crm,
            _etcd: etcd,
        })
    }

    /// On the fake platform: the region of the shepherd benchmark, with `dev/game` on `dev/k1`.
    pub async fn game() -> anyhow::Result<Self> {
        let platform = crm::PlatformKind::Fake {
            delay: Duration::ZERO,
        };
        Self::with_app(platform, app("dev", "game", "tcp:80")).await
    }

    /// A region on `platform` with App `a` and a READY docker cluster `dev/k1` for its instances.
    pub async fn with_app(
        platform: crm::PlatformKind,
        a: edge_proto::edge::App,
    ) -> anyhow::Result<Self> {
        let r = Self::start(platform).await?;
        r.api.apps().create_app(a).await?;
        drain(
            &mut r
                .api
                .clusters()
                .create_cluster_inst(cluster("dev", "k1", "op", "c1"))
                .await?
                .into_inner(),
        )
        .await?;
        Ok(r)
    }
}
