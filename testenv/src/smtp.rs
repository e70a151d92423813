//! A local SMTP server (aiosmtpd from PyPI) that files every message it receives into a Maildir.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::Result;
use crate::process::{ServerProcess, free_port, require, temp_dir};

/// A running SMTP server; `messages()` reads what it received.
pub struct Smtp {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    _process: ServerProcess,
}

impl Smtp {
    pub async fn start() -> Result<Self> {
        const NAME: &str = "aiosmtpd";
        let bin = require(NAME)?;
        let dir = temp_dir(NAME)?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut cmd = Command::new(bin);
        cmd.args([
            "-n",
            "-l",
            &addr.to_string(),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(dir.path().join("mail"));
        let mut process = ServerProcess::spawn(NAME, cmd, &dir.path().join("aiosmtpd.log"))?;
        process
            .wait_ready(Duration::from_secs(30), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await?;
        Ok(Self {
            addr,
            dir,
            _process: process,
        })
    }

    /// Every message received so far, as raw RFC 5322 text.
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("mail").join("new");
        let mut files: Vec<_> = std::fs::read_dir(new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}
