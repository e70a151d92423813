//! PostgreSQL 15: `initdb` into a temp dir and `postgres` on a free loopback port.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::process::{ServerProcess, free_port, require, run, temp_dir};
use crate::{Error, Result};

/// A running PostgreSQL server with trust authentication on 127.0.0.1.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
    pub port: u16,
    process: Option<ServerProcess>,
    user: Option<(u32, u32)>,
    dir: tempfile::TempDir,
}

/// `initdb` refuses to run as root: as root, run the server as the `postgres` user.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        // name:password:uid:gid:...
        let mut f = l.split(':');
        if f.next()? != "postgres" {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

const NAME: &str = "postgres";

impl Postgres {
    pub async fn start() -> Result<Self> {
        crate::process::retry_port_clash(Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        let initdb = require("initdb")?;
        let dir = temp_dir(NAME)?;
        let user = server_user();
        let as_user = |cmd: &mut Command| {
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
        };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|source| {
                Error::Io {
                    server: NAME,
                    what: "chown of the data dir".into(),
                    source,
                }
            })?;
        }
        let data = dir.path().join("data");
        let mut init = Command::new(initdb);
        init.args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
        as_user(&mut init);
        run(NAME, &mut init)?;

        let port = free_port();
        let mut pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            process: None,
            user,
            dir,
        };
        pg.launch().await?;
        Ok(pg)
    }

    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(require("postgres")?);
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string());
        for c in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ] {
            cmd.args(["-c", c]);
        }
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let log = self.dir.path().join("postgres.log");
        // A restart appends to the log; readiness counts the "ready" lines.
        let before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("ready to accept connections")
            .count();
        // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to disconnect.
        let mut process =
            ServerProcess::spawn_appending(NAME, cmd, &log)?.with_stop_signal(libc::SIGINT);
        process
            .wait_ready(Duration::from_secs(30), || {
                std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.matches("ready to accept connections").count() > before)
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (data is kept); clients see connection errors until `resume`.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port and data after `stop`.
    pub async fn resume(&mut self) -> Result<()> {
        self.stop();
        self.launch().await
    }

    /// Last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail())
            .unwrap_or_default()
    }
}
