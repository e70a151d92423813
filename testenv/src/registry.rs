//! A private image registry (Debian's `docker-registry`, Distribution 2.8) on a free loopback port, with
//! TLS (a self-signed certificate for 127.0.0.1) and one htpasswd user. Docker Engines treat registries on
//! 127.0.0.0/8 as trusted without the CA, so the project's dockerd pulls from it as it would from a
//! registry whose CA sits in `/etc/docker/certs.d/<host:port>/ca.crt`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::{ServerProcess, free_port, require, run, temp_dir};
use crate::{Docker, Error, Result};

const NAME: &str = "docker-registry";

/// A running registry and the one account it accepts.
pub struct Registry {
    /// `127.0.0.1:PORT`, the host part of image paths on this registry
    pub host: String,
    pub username: String,
    pub password: String,
    dir: tempfile::TempDir,
    _process: ServerProcess,
}

impl Registry {
    pub async fn start() -> Result<Self> {
        let bin = require(NAME)?;
        require("htpasswd")?;
        require("openssl")?;
        let dir = temp_dir(NAME)?;
        let d = dir.path();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let (username, password) = (
            "pusher".to_string(),
            edge_common::vault::hex(&edge_common::vault::random_bytes(12)),
        );
        run(
            NAME,
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem")),
        )?;
        let htpasswd = run(
            NAME,
            Command::new("htpasswd").args(["-Bbn", &username, &password]),
        )?;
        let io = |what: &str, source| Error::Io {
            server: NAME,
            what: what.into(),
            source,
        };
        std::fs::write(d.join("htpasswd"), htpasswd).map_err(|e| io("writing htpasswd", e))?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: {secret}\n  tls:\n    certificate: {dir}/cert.pem\n    key: {dir}/key.pem\nauth:\n  htpasswd:\n    realm: edge-registry\n    path: {dir}/htpasswd\n",
            root = d.join("data").display(),
            dir = d.display(),
            secret = edge_common::vault::hex(&edge_common::vault::random_bytes(16)),
        );
        std::fs::write(d.join("config.yml"), config).map_err(|e| io("writing config", e))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(d.join("config.yml"));
        let mut process = ServerProcess::spawn(NAME, cmd, &d.join("registry.log"))?;
        process
            .wait_ready(Duration::from_secs(30), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await?;
        Ok(Self {
            host: addr.to_string(),
            username,
            password,
            dir,
            _process: process,
        })
    }

    /// Pushes `docker`'s local image `local` to this registry as `<host>/<repository>` (e.g.
    /// `demo/hello:1.0`), logging in with the registry's account in a private Docker CLI config.
    /// Returns the image path.
    pub fn push(&self, docker: &Docker, local: &str, repository: &str) -> Result<String> {
        let path = format!("{}/{repository}", self.host);
        let config = self.dir.path().join("cli");
        let cli = || {
            let mut c = docker.cli();
            c.arg("--config").arg(&config);
            c
        };
        run(
            NAME,
            cli().args([
                "login",
                "-u",
                &self.username,
                "-p",
                &self.password,
                &self.host,
            ]),
        )?;
        run(NAME, cli().args(["tag", local, &path]))?;
        run(NAME, cli().args(["push", "-q", &path]))?;
        Ok(path)
    }
}
