//! etcd: a one-member cluster on free loopback ports; can be restarted on the same ports and data.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::Result;
use crate::process::{ServerProcess, free_port, http_get, require, temp_dir};

const NAME: &str = "etcd";

/// A running etcd server.
pub struct Etcd {
    /// `http://127.0.0.1:PORT`, the client URL.
    pub url: String,
    pub client_addr: SocketAddr,
    peer_port: u16,
    process: Option<ServerProcess>,
    dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Result<Self> {
        crate::process::retry_port_clash(Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        let dir = temp_dir(NAME)?;
        let client_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut etcd = Self {
            url: format!("http://{client_addr}"),
            client_addr,
            peer_port: free_port(),
            process: None,
            dir,
        };
        etcd.launch().await?;
        Ok(etcd)
    }

    async fn launch(&mut self) -> Result<()> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(require("etcd")?);
        cmd.arg("--name=edge")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url))
            .arg(format!("--advertise-client-urls={}", self.url))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=edge={peer}"))
            // Values up to 10 MiB: a test can store an object larger than a client's 4 MiB reply limit.
            .arg("--max-request-bytes=10485760")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        let mut p = ServerProcess::spawn(NAME, cmd, &self.dir.path().join("etcd.log"))?;
        let addr = self.client_addr;
        p.wait_ready(Duration::from_secs(30), || {
            http_get(addr, "/health").is_some_and(|(s, b)| s == 200 && b.contains("true"))
        })
        .await?;
        self.process = Some(p);
        Ok(())
    }

    /// Stops the server (data is kept); clients see connection errors until `resume`.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same ports and data after `stop`.
    pub async fn resume(&mut self) -> Result<()> {
        self.stop();
        self.launch().await
    }
}
