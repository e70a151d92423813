//! InfluxDB 1.x with a generated config: every listener on loopback, reporting off, data in a temp dir.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::{ServerProcess, free_port, http_get, require, temp_dir};
use crate::{Error, Result};

/// A running InfluxDB server (v1 HTTP API: `/ping`, `/write`, `/query`).
pub struct Influx {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    _process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Influx {
    pub async fn start() -> Result<Self> {
        const NAME: &str = "influxdb";
        let influxd = require("influxd")?;
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
        let conf_path = dir.path().join("influxdb.conf");
        std::fs::write(&conf_path, config).map_err(|source| Error::Io {
            server: NAME,
            what: "writing config".into(),
            source,
        })?;
        let mut cmd = Command::new(influxd);
        cmd.arg("run").arg("-config").arg(&conf_path);
        let mut process = ServerProcess::spawn(NAME, cmd, &dir.path().join("influxd.log"))?;
        process
            .wait_ready(Duration::from_secs(30), || {
                http_get(addr, "/ping").is_some_and(|(s, _)| s == 204)
            })
            .await?;
        Ok(Self {
            url: format!("http://{addr}"),
            addr,
            _process: process,
            _dir: dir,
        })
    }
}
