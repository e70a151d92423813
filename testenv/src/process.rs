//! Spawning, readiness polling and teardown shared by every server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Finds `bin` in PATH (or the Debian locations install.sh links from).
pub(crate) fn require(bin: &'static str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .ok_or(Error::Missing(bin))
}

/// A loopback address of this process's own (`127.<10 + pid / 65536>.<pid / 256 % 256>.<pid % 256>`), for
/// servers that listen on fixed ports (a cloudlet's LB from 10000 on): tests running at once, and the
/// servers one test leaves stopping, never share it. Unique for every pid below 2^22 (Linux's maximum).
pub fn loopback_ip() -> std::net::IpAddr {
    loopback_ip_nth(0)
}

/// The `n`-th (0, 1 or 2) of this process's own loopback addresses: [`loopback_ip`] with 64 × `n` added
/// to its second byte.
pub fn loopback_ip_nth(n: u8) -> std::net::IpAddr {
    assert!(n < 3, "a process has 3 loopback addresses of its own");
    let pid = std::process::id();
    std::net::IpAddr::from([
        127,
        10 + 64 * n + (pid >> 16) as u8,
        (pid >> 8) as u8,
        pid as u8,
    ])
}

/// A free TCP port on 127.0.0.1 (bound once and released, so the server can take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A free port `p` with `p + 1` also free (OpenBao's dev server binds both).
pub(crate) fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let p = l.local_addr().expect("local addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Pids of the processes whose command line contains `program` and names `dir` (e.g. the qemu VMs a
/// test's CRM started under its temp dir).
pub fn processes_in(dir: &Path, program: &str) -> Vec<u32> {
    let dir = dir.to_string_lossy();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains(program) && cmdline.contains(&*dir)).then_some(pid)
        })
        .collect()
}

/// Kills (SIGKILL) every process whose command line names `dir`: what a test started that outlives its
/// parent by design (a CRM's VMs, its load balancer) ends with the test.
pub fn kill_processes_in(dir: &Path) {
    let pids: Vec<String> = processes_in(dir, "").iter().map(u32::to_string).collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
    }
}

/// A plain HTTP/1.0 GET against loopback: `(status, body)`, or `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of the first line starting with `line_start` (e.g. `name{label="x"}`) on the Prometheus page
/// at `addr`'s `/metrics`; 0 when the page or the line is missing.
pub fn metric(addr: SocketAddr, line_start: &str) -> f64 {
    http_get(addr, "/metrics")
        .and_then(|(_, text)| {
            text.lines()
                .find(|l| l.starts_with(line_start))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        })
        .unwrap_or(0.0)
}

/// A server process with its log file; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct ServerProcess {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
    /// Signal that asks for a prompt clean shutdown (SIGTERM unless the server wants another).
    stop_signal: libc::c_int,
}

impl ServerProcess {
    /// Starts `cmd` with output going to `log` (truncated) and the parent-death signal set.
    pub fn spawn(name: &'static str, cmd: Command, log: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(log);
        Self::spawn_appending(name, cmd, log)
    }

    /// Like `spawn`, appending to `log` (a restarted server keeps its earlier log).
    pub fn spawn_appending(name: &'static str, mut cmd: Command, log: &Path) -> Result<Self> {
        let io = |what: &str, source| Error::Io {
            server: name,
            what: what.to_string(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| io("opening log file", e))?;
        let err = out.try_clone().map_err(|e| io("creating log file", e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| io(&format!("spawning {:?}", cmd.get_program()), e))?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
            stop_signal: libc::SIGTERM,
        })
    }

    /// Uses `signal` instead of SIGTERM to stop the server.
    pub fn with_stop_signal(mut self, signal: libc::c_int) -> Self {
        self.stop_signal = signal;
        self
    }

    /// Polls `ready` every 50 ms until it holds, the process exits, or `timeout` passes.
    pub async fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited {
                    server: self.name,
                    status,
                    log: self.log_tail(),
                });
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    server: self.name,
                    secs: timeout.as_secs(),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last 20 lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop and waits up to `grace`, then kills it; whether it stopped by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall on our own child's pid, which has not been reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, self.stop_signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(10));
    }
}

/// Creates a fresh temporary directory for one server.
pub(crate) fn temp_dir(server: &'static str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("edge-{server}-"))
        .tempdir_in("/tmp")
        .map_err(|source| Error::Io {
            server,
            what: "creating temp dir".into(),
            source,
        })
}

/// Runs a short command to completion, mapping failure to an error with its output.
pub(crate) fn run(server: &'static str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|source| Error::Io {
        server,
        what: format!("running {:?}", cmd.get_program()),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            server,
            command: format!("{cmd:?}"),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a server again on fresh ports when another process took one of its ports between
/// [`free_port`] choosing it and the server binding it (rare, but many tests pick ports at once).
pub(crate) async fn retry_port_clash<T, Fut: Future<Output = Result<T>>>(
    start: impl Fn() -> Fut,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        match start().await {
            Err(Error::Exited { log, .. })
                if attempt < 3 && log.to_ascii_lowercase().contains("address already in use") =>
            {
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_install_script() {
        let err = require("edge-no-such-server").expect_err("must be missing");
        assert!(err.to_string().contains("infra/install.sh"), "{err}");
    }
}
