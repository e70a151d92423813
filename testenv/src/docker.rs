//! The project's own Docker Engine: a private `dockerd` with its own socket, data root and address pool,
//! so parallel test runs never share containers, networks or names. Only bridge networks on this
//! machine; no iptables rules, no default bridge.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ServerProcess, require, run, temp_dir};
use crate::{Error, Result};

const NAME: &str = "dockerd";
/// Tests take their container networks from 10.<N>.0.0/16, N in this range, one N per daemon.
const POOL_SECOND_OCTETS: std::ops::Range<u8> = 140..200;

/// A running private Docker daemon.
pub struct Docker {
    /// `unix:///tmp/edge-dockerd-XXXX/docker.sock`, for `DOCKER_HOST` or bollard.
    pub host: String,
    pub socket: PathBuf,
    /// Address pool for this daemon's networks, e.g. `10.140.0.0/16`.
    pub address_pool: String,
    // Field order matters: the daemon stops before the pool lock is released and the dir removed.
    process: Option<ServerProcess>,
    _pool_lock: File,
    dir: tempfile::TempDir,
}

impl Docker {
    pub async fn start() -> Result<Self> {
        let dockerd = require("dockerd")?;
        require("docker")?;
        let dir = temp_dir(NAME)?;
        let (pool, pool_lock) = lock_address_pool()?;
        let socket = dir.path().join("docker.sock");
        let mut cmd = Command::new(dockerd);
        cmd.args([
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--log-level=warn",
        ])
        .args(["--shutdown-timeout", "3"])
        .arg(format!("--default-address-pool=base={pool},size=24"))
        .arg(format!("--data-root={}", dir.path().join("data").display()))
        .arg(format!("--exec-root={}", dir.path().join("exec").display()))
        .arg(format!(
            "--pidfile={}",
            dir.path().join("docker.pid").display()
        ))
        .arg(format!("--host=unix://{}", socket.display()));
        let mut process = ServerProcess::spawn(NAME, cmd, &dir.path().join("dockerd.log"))?;
        let host = format!("unix://{}", socket.display());
        process
            .wait_ready(Duration::from_secs(60), || {
                docker_cli(&host)
                    .arg("info")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .await?;
        Ok(Self {
            host,
            socket,
            address_pool: pool,
            process: Some(process),
            _pool_lock: pool_lock,
            dir,
        })
    }

    /// A `docker` CLI command talking to this daemon.
    pub fn cli(&self) -> Command {
        docker_cli(&self.host)
    }

    /// Imports a tiny image `name` (e.g. `edge-busybox:test`) holding a static busybox with every applet
    /// (`sh`, `httpd`, `nc`, `sleep`, ...) linked in `/bin` — no registry needed. Idempotent.
    pub fn busybox_image(&self, name: &str) -> Result<()> {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or(Error::Missing("busybox"))?;
        if self
            .cli()
            .args(["image", "inspect", name])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(());
        }
        let io = |what: &str, source| Error::Io {
            server: NAME,
            what: what.into(),
            source,
        };
        let root = self
            .dir
            .path()
            .join(format!("rootfs-{}", name.replace(['/', ':'], "_")));
        let bin = root.join("bin");
        for d in [
            &bin,
            &root.join("www"),
            &root.join("tmp"),
            &root.join("etc"),
        ] {
            std::fs::create_dir_all(d).map_err(|e| io("creating rootfs", e))?;
        }
        std::fs::copy(busybox, bin.join("busybox")).map_err(|e| io("copying busybox", e))?;
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")
            .map_err(|e| io("writing passwd", e))?;
        let applets = run(NAME, Command::new(busybox).arg("--list"))?;
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let link = bin.join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", &link)
                    .map_err(|e| io("linking applet", e))?;
            }
        }
        let tar = self.dir.path().join("rootfs.tar");
        run(
            NAME,
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        run(
            NAME,
            self.cli()
                .args(["import", "--change", "CMD [\"/bin/sh\"]"])
                .arg(&tar)
                .arg(name),
        )?;
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_file(&tar);
        Ok(())
    }

    /// Last lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail())
            .unwrap_or_default()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Containers and networks first: a network's bridge would outlive the daemon otherwise.
        let ids = self
            .cli()
            .args(["ps", "-aq"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let ids: Vec<String> = String::from_utf8_lossy(&ids)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = self.cli().args(["rm", "-f"]).args(&ids).output();
        }
        let _ = self.cli().args(["network", "prune", "-f"]).output();
        // The CRMs' cluster isolation tables of this engine (`crm::platform::isolation`): they live in
        // the host's kernel, not in the daemon.
        let prefix = format!("edge_{:08x}", edge_common::fnv1a(&self.host));
        let tables = Command::new("nft")
            .args(["list", "tables", "inet"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for t in tables.lines().filter_map(|l| l.strip_prefix("table inet ")) {
            if t.starts_with(&prefix) {
                let _ = Command::new("nft")
                    .args(["delete", "table", "inet", t])
                    .output();
            }
        }
        if let Some(mut p) = self.process.take() {
            let _ = p.stop(Duration::from_secs(15));
        }
        // dockerd leaves its default netns bind-mounted; unmount so the dir can be removed.
        let netns = self.dir.path().join("exec/netns/default");
        if netns.exists() {
            let _ = Command::new("umount").arg(&netns).output();
        }
    }
}

fn docker_cli(host: &str) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", host)
        .env_remove("DOCKER_CONTEXT")
        .env("DOCKER_CONFIG", "/nonexistent");
    c
}

/// Picks a 10.N.0.0/16 pool no other test daemon holds (an exclusive lock on a file per N, released
/// when the process dies) and no host route overlaps.
fn lock_address_pool() -> Result<(String, File)> {
    let io = |what: &str, source| Error::Io {
        server: NAME,
        what: what.into(),
        source,
    };
    let lock_dir = Path::new("/tmp/edge-testenv-pools");
    std::fs::create_dir_all(lock_dir).map_err(|e| io("creating pool lock dir", e))?;
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for n in POOL_SECOND_OCTETS {
        if route_overlaps(&routes, Ipv4Addr::new(10, n, 0, 0)) {
            continue;
        }
        let f = File::create(lock_dir.join(format!("10.{n}.lock")))
            .map_err(|e| io("creating pool lock", e))?;
        if f.try_lock().is_ok() {
            return Ok((format!("10.{n}.0.0/16"), f));
        }
    }
    Err(Error::Io {
        server: NAME,
        what: "picking an address pool".into(),
        source: std::io::Error::other("every test address pool 10.140-199.0.0/16 is in use"),
    })
}

/// Whether a /16 starting at `base` overlaps a route in `/proc/net/route` (other than the default).
fn route_overlaps(routes: &str, base: Ipv4Addr) -> bool {
    let base = u32::from(base);
    routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(dst), Some(mask)) = (f.get(1), f.get(7)) else {
            return false;
        };
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(dst, 16), u32::from_str_radix(mask, 16))
        else {
            return false;
        };
        // /proc/net/route prints the in-memory (network order) address as a host-order hex number.
        let dst = u32::from(Ipv4Addr::from(dst.to_le_bytes()));
        let mask = u32::from(Ipv4Addr::from(mask.to_le_bytes()));
        let common = mask & 0xffff_0000;
        mask != 0 && (dst & common) == (base & common)
    })
}
