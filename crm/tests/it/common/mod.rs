//! A region with a real etcd, a private dockerd, the controller in-process and the `crm` binary as a
//! process — the way an operator runs it.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command};
use std::time::Duration;

use edge_proto::edge::*;
use regional_controller::{Config, Controller};
pub use testenv::fixtures::*;
use tonic::transport::Channel;

pub const REGION: &str = "EU";
pub const IMAGE: &str = "edge-busybox:test";

pub struct Cloud {
    pub etcd: testenv::Etcd,
    pub docker: testenv::Docker,
    /// None while the test has the controller stopped.
    pub ctrl: Option<Controller>,
    /// The controller's addresses (a restart reuses them).
    pub config: Config,
    pub channel: Channel,
    /// Loopback address of this test's load balancers, so parallel tests never share a port.
    pub public_ip: IpAddr,
    /// `--platform ...` arguments of the CRMs this test starts (docker on the private dockerd unless the
    /// test changes them)
    pub platform_args: Vec<String>,
    pub dir: tempfile::TempDir,
}

/// A running `crm` process; killed with SIGKILL when dropped, like a crash.
pub struct CrmProcess {
    pub child: Child,
    pub http: SocketAddr,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        // VMs (and LBs) outlive their CRM by design; the test's end is theirs.
        testenv::kill_processes_in(self.dir.path());
    }
}

impl Drop for CrmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cloud {
    pub async fn start() -> Self {
        let (etcd, docker) = tokio::join!(testenv::Etcd::start(), testenv::Docker::start());
        let (etcd, docker) = (etcd.expect("etcd"), docker.expect("dockerd"));
        docker.busybox_image(IMAGE).expect("local image");
        let mut config = Config::local(REGION, &etcd.url);
        config.lifecycle_timeout = Duration::from_secs(60);
        config.offline_after = Duration::from_secs(3);
        let ctrl = Controller::start(config.clone()).await.expect("controller");
        config.api_addr = ctrl.api_addr;
        config.notify_addr = ctrl.notify_addr;
        config.http_addr = ctrl.http_addr;
        let channel = Channel::from_shared(format!("http://{}", ctrl.api_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let public_ip = testenv::loopback_ip();
        let dir = tempfile::tempdir().unwrap();
        let platform_args = ["--platform", "docker", "--docker-host", &docker.host]
            .map(String::from)
            .to_vec();
        let cloud = Self {
            platform_args,
            etcd,
            docker,
            ctrl: Some(ctrl),
            config,
            channel,
            public_ip,
            dir,
        };
        cloud
            .flavors()
            .create_flavor(flavor("small"))
            .await
            .unwrap();
        cloud
    }

    pub fn stop_controller(&mut self) {
        self.ctrl = None;
    }

    pub async fn restart_controller(&mut self) {
        self.ctrl = Some(
            Controller::start(self.config.clone())
                .await
                .expect("controller restarts on its ports"),
        );
    }

    /// Starts the `crm` binary for cloudlet `tmus/<name>` with the key in `<dir>/<name>.key`.
    pub fn start_crm(&self, name: &str) -> CrmProcess {
        self.start_crm_via(name, self.config.notify_addr)
    }

    /// [`Cloud::start_crm`] dialling the controller's notify port at `notify` (a proxy of it).
    pub fn start_crm_via(&self, name: &str, notify: SocketAddr) -> CrmProcess {
        let http: SocketAddr = ([127, 0, 0, 1], testenv::free_port()).into();
        let child = Command::new(env!("CARGO_BIN_EXE_crm"))
            .args([
                "--region",
                REGION,
                "--cloudlet-org",
                "tmus",
                "--cloudlet-name",
                name,
            ])
            .args(["--controller-notify", &notify.to_string()])
            .arg("--access-key")
            .arg(self.dir.path().join(format!("{name}.key")))
            .args(&self.platform_args)
            // This region's controller serves plaintext; mTLS is tested in e2e/tests/it/mtls.rs.
            .arg("--insecure-plaintext")
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("{name}-state")))
            .args([
                "--http-addr",
                &http.to_string(),
                "--public-addr",
                &self.public_ip.to_string(),
                "--lb-http-addr",
                &format!("127.0.0.1:{}", testenv::free_port()),
            ])
            .env("RUST_LOG", "info")
            .spawn()
            .expect("starting crm");
        CrmProcess { child, http }
    }

    /// The pid of the load balancer of cloudlet `name`, from its pid file, if that process is alive (not
    /// gone, not a zombie).
    pub fn lb_pid(&self, name: &str) -> Option<u32> {
        let file = self.dir.path().join(format!("{name}-state/lb/pid"));
        let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state != 'Z').then_some(pid)
    }

    /// CreateCloudlet with optional quotas → key file → `crm` started → the create stream ends READY.
    pub async fn onboard(&self, name: &str, quotas: Vec<ResourceQuota>) -> CrmProcess {
        let mut c = cloudlet("tmus", name);
        c.public_addr = self.public_ip.to_string();
        c.resource_quotas = quotas;
        let mut stream = self
            .cloudlets()
            .create_cloudlet(c)
            .await
            .unwrap()
            .into_inner();
        let access = stream
            .message()
            .await
            .unwrap()
            .unwrap()
            .access
            .expect("access key");
        std::fs::write(
            self.dir.path().join(format!("{name}.key")),
            &access.access_private_key,
        )
        .unwrap();
        let crm = self.start_crm(name);
        let progress = drain(&mut stream).await.expect("cloudlet becomes ready");
        assert_eq!(
            progress.last().unwrap().state,
            TrackedState::Ready as i32,
            "{progress:?}"
        );
        crm
    }

    /// A docker ClusterInst `acme/<name>` on `tmus/<cloudlet>`, READY.
    pub async fn cluster(&self, name: &str, cloudlet: &str) {
        let mut s = self
            .clusters()
            .create_cluster_inst(cluster("acme", name, "tmus", cloudlet))
            .await
            .unwrap()
            .into_inner();
        let p = drain(&mut s).await.expect("cluster becomes ready");
        assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
    }

    /// AppInst `acme/<inst>` of App `acme/<app>` on cluster `acme/<cluster>`, READY; its progress.
    pub async fn app_inst_ready(&self, inst: &str, app: &str, cluster: &str) -> Vec<Progress> {
        let mut s = self
            .app_insts()
            .create_app_inst(app_inst("acme", inst, app, cluster))
            .await
            .unwrap()
            .into_inner();
        let p = drain(&mut s).await.expect("app instance becomes ready");
        assert_eq!(p.last().unwrap().state, TrackedState::Ready as i32, "{p:?}");
        p
    }

    /// The shared-LB address of an AppInst's first port.
    pub async fn public_addr(&self, inst: &str) -> SocketAddr {
        let shown = show(
            self.app_insts()
                .show_app_inst(app_inst("acme", inst, "", "")),
        )
        .await;
        SocketAddr::new(self.public_ip, shown[0].mapped_ports[0].public_port as u16)
    }

    /// Containers the CRM made for an AppInst.
    pub fn containers(&self, inst: &str) -> Vec<String> {
        self.docker_ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=edge.appinst=acme/{inst}"),
        ])
    }

    /// Networks the CRM made for a ClusterInst.
    pub fn networks(&self, cluster: &str) -> Vec<String> {
        self.docker_ids(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=edge.clusterinst=acme/{cluster}"),
        ])
    }

    fn docker_ids(&self, args: &[&str]) -> Vec<String> {
        let out = self.docker.cli().args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

/// GETs `/` until it answers 200 (up to 10 s).
pub async fn get_until_ok(addr: SocketAddr) -> String {
    testenv::wait_for(
        &format!("an answer on {addr}"),
        Duration::from_secs(10),
        async || match testenv::http_get(addr, "/") {
            Some((200, body)) => Some(body.trim().to_string()),
            _ => None,
        },
    )
    .await
}

impl RegionApi for Cloud {
    fn channel(&self) -> Channel {
        self.channel.clone()
    }
}
