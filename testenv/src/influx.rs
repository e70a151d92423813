//! InfluxDB 1.x with a generated config: every listener on loopback, reporting off, data in a temp dir.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::{ServerProcess, free_port, http_get, require, temp_dir};
use crate::{Error, Result};

const NAME: &str = "influxdb";

/// A running InfluxDB server (v1 HTTP API: `/ping`, `/write`, `/query`).
pub struct Influx {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    process: Option<ServerProcess>,
    dir: tempfile::TempDir,
}

impl Influx {
    pub async fn start() -> Result<Self> {
        crate::process::retry_port_clash(Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        require("influxd")?;
        let dir = temp_dir(NAME)?;
        let d = dir.path().display();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = format!(
            "reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  bind-address = \"{addr}\"\n  log-enabled = false\n",
            rpc = free_port(),
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).map_err(|source| Error::Io {
            server: NAME,
            what: "writing config".into(),
            source,
        })?;
        let mut influx = Self {
            url: format!("http://{addr}"),
            addr,
            process: None,
            dir,
        };
        influx.launch().await?;
        Ok(influx)
    }

    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(require("influxd")?);
        cmd.arg("run")
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"));
        let mut process =
            ServerProcess::spawn_appending(NAME, cmd, &self.dir.path().join("influxd.log"))?;
        let addr = self.addr;
        process
            .wait_ready(Duration::from_secs(30), || {
                http_get(addr, "/ping").is_some_and(|(s, _)| s == 204)
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (data is kept); writers see connection errors until `resume`.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port and data after `stop`.
    pub async fn resume(&mut self) -> Result<()> {
        self.stop();
        self.launch().await
    }

    /// Runs an InfluxQL query on `db` and returns the JSON answer.
    pub async fn query(&self, db: &str, q: &str) -> Result<serde_json::Value> {
        let fail = |e: String| Error::Io {
            server: NAME,
            what: format!("query {q}"),
            source: std::io::Error::other(e),
        };
        reqwest::Client::new()
            .get(format!("{}/query", self.url))
            .query(&[("db", db), ("q", q)])
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?
            .json()
            .await
            .map_err(|e| fail(e.to_string()))
    }
}
