//! The CRM's side of the load balancer: programs `edge-lb` over its control socket, and starts it when
//! it is needed and does not answer.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::{Paths, Request, Response, RouteKey, RouteSpec, Status};

#[derive(Clone, Debug)]
pub struct LbConfig {
    /// the `edge-lb` executable
    pub binary: PathBuf,
    /// the LB's directory (`<state dir>/lb`)
    pub dir: PathBuf,
    /// address the routes listen on
    pub public_addr: IpAddr,
    /// where a started LB serves `/metrics`
    pub http_addr: SocketAddr,
}

/// A failed LB operation, worded for the AppInst's errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LbError(pub String);

/// How long a started LB has to answer on its socket, and one request to be answered.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`LbClient::supervise`] checks that the LB answers.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

pub struct LbClient {
    cfg: LbConfig,
    paths: Paths,
    /// one request at a time on one connection
    conn: Mutex<Option<BufReader<UnixStream>>>,
    up: IntGauge,
    starts: IntCounter,
}

impl LbClient {
    pub fn new(cfg: LbConfig, registry: &Registry) -> anyhow::Result<Self> {
        let up = IntGauge::new(
            "crm_lb_up",
            "1 while the load balancer answers on its control socket",
        )?;
        let starts = IntCounter::new(
            "crm_lb_starts_total",
            "load balancer processes started by this CRM (adopting a running one is not a start)",
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(starts.clone()))?;
        Ok(Self {
            paths: Paths::new(&cfg.dir),
            cfg,
            conn: Mutex::default(),
            up,
            starts,
        })
    }

    /// Routes `route.key` to `route.backend`, starting the LB if none runs.
    pub async fn ensure(&self, route: RouteSpec) -> Result<(), LbError> {
        self.call(Request::Ensure { route }, true).await.map(drop)
    }

    pub async fn remove(&self, key: RouteKey) -> Result<(), LbError> {
        self.call(Request::Remove { key }, false).await.map(drop)
    }

    /// The running LB's status; `None` when no LB runs and no saved routes need one.
    pub async fn status(&self) -> Result<Option<Status>, LbError> {
        Ok(self
            .call(Request::Status, false)
            .await?
            .and_then(|r| r.status))
    }

    pub async fn routes(&self) -> Result<Vec<RouteSpec>, LbError> {
        Ok(self.status().await?.map(|s| s.routes).unwrap_or_default())
    }

    /// Keeps the LB running: checks every second that it answers and starts it again (with its saved
    /// routes) when it does not.
    pub async fn supervise(self: Arc<Self>) {
        loop {
            match self.status().await {
                Ok(s) => self.up.set(i64::from(s.is_some())),
                Err(e) => {
                    self.up.set(0);
                    tracing::warn!(error = %e, "load balancer does not answer");
                }
            }
            tokio::time::sleep(SUPERVISE_EVERY).await;
        }
    }

    /// Sends `req` and reads the answer, connecting (and, with `start` or saved routes, starting the
    /// LB) first when needed; a broken connection is retried once on a new one. `None`: no LB runs and
    /// none is needed.
    async fn call(&self, req: Request, start: bool) -> Result<Option<Response>, LbError> {
        let mut line = serde_json::to_vec(&req).expect("request serializes");
        line.push(b'\n');
        let mut conn = self.conn.lock().await;
        let mut last = String::new();
        for _ in 0..2 {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect(start).await? {
                    Some(c) => conn.insert(c),
                    None => return Ok(None),
                },
            };
            match tokio::time::timeout(CALL_TIMEOUT, exchange(c, &line)).await {
                Ok(Ok(r)) => {
                    return match r.error {
                        Some(e) => Err(LbError(e)),
                        None => Ok(Some(r)),
                    };
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
            }
            *conn = None;
        }
        Err(LbError(format!(
            "load balancer at {}: {last}",
            self.paths.socket().display()
        )))
    }

    async fn connect(&self, start: bool) -> Result<Option<BufReader<UnixStream>>, LbError> {
        let socket = self.paths.socket();
        if let Ok(c) = UnixStream::connect(&socket).await {
            return Ok(Some(BufReader::new(c)));
        }
        if !start && !self.paths.routes().exists() {
            return Ok(None);
        }
        if !self.running()? {
            self.spawn()?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(c) = UnixStream::connect(&socket).await {
                return Ok(Some(BufReader::new(c)));
            }
            if Instant::now() > deadline {
                return Err(LbError(format!(
                    "the load balancer did not answer on {} within {} s; see {}",
                    socket.display(),
                    START_TIMEOUT.as_secs(),
                    self.paths.log().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether an LB holds the directory's lock (it may still be starting).
    fn running(&self) -> Result<bool, LbError> {
        std::fs::create_dir_all(&self.paths.dir)
            .and_then(|()| {
                std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(self.paths.lock())
            })
            .map(|f| f.try_lock().is_err())
            .map_err(|e| LbError(format!("{}: {e}", self.paths.lock().display())))
    }

    fn spawn(&self) -> Result<(), LbError> {
        let failed = |e: std::io::Error| {
            LbError(format!(
                "starting the load balancer {}: {e}",
                self.cfg.binary.display()
            ))
        };
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.paths.log())
            .map_err(failed)?;
        let mut child = std::process::Command::new(&self.cfg.binary)
            .arg("--dir")
            .arg(&self.paths.dir)
            .arg("--public-addr")
            .arg(self.cfg.public_addr.to_string())
            .arg("--http-addr")
            .arg(self.cfg.http_addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(failed)?)
            .stderr(log)
            // Its own process group: a signal to the CRM's group (Ctrl-C, a service manager) spares it.
            .process_group(0)
            .spawn()
            .map_err(failed)?;
        self.starts.inc();
        tracing::info!(pid = child.id(), dir = %self.paths.dir.display(), "load balancer process started");
        // Reaped when it exits, so a dead LB never lingers as a zombie of the CRM.
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

async fn exchange(c: &mut BufReader<UnixStream>, line: &[u8]) -> std::io::Result<Response> {
    c.get_mut().write_all(line).await?;
    let mut answer = String::new();
    if c.read_line(&mut answer).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
