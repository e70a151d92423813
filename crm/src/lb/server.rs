//! The `edge-lb` process: the proxy, its control socket and its persisted routes.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use edge_common::ops::{self, Readiness};
use prometheus::Registry;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use super::proxy::{Limits, Proxy};
use super::{Paths, Request, Response, RouteSpec, Status};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// directory of the socket, lock, routes, pid and log
    pub dir: PathBuf,
    /// address the routes listen on
    pub public_addr: IpAddr,
    /// `/metrics` and `/healthz`
    pub http_addr: SocketAddr,
    pub limits: Limits,
}

/// How often the LB checks that its socket still exists.
const WATCHDOG: Duration = Duration::from_secs(1);

/// Runs the LB until SIGTERM, SIGINT or the removal of its socket. Fails at once when another LB holds
/// the directory's lock or the saved routes cannot be read.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let paths = Paths::new(&cfg.dir);
    std::fs::create_dir_all(&paths.dir)
        .and_then(|()| std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("creating {}", paths.dir.display()))?;
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock())
        .with_context(|| format!("opening {}", paths.lock().display()))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another edge-lb already serves {} (it holds {})",
            paths.dir.display(),
            paths.lock().display()
        )
    })?;

    raise_open_files();
    let registry = Registry::new();
    let proxy = Proxy::with_limits(cfg.public_addr, &registry, cfg.limits);
    let saved: Vec<RouteSpec> = match std::fs::read(paths.routes()) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("reading saved routes {}", paths.routes().display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context(format!("reading {}", paths.routes().display())),
    };
    for r in &saved {
        if let Err(e) = proxy.ensure(r.key, r.backend, &r.owner).await {
            // Kept out of the table (and so out of the file at the next change); the CRM adds it again
            // and reports the error on the AppInst.
            tracing::error!(route = %r.key, error = %e, "saved route cannot listen");
        }
    }
    let ready = Readiness::default();
    ready.set(true);
    let ops = ops::serve(cfg.http_addr, registry, ready)
        .await
        .with_context(|| format!("serving /metrics on {}", cfg.http_addr))?;

    let socket = paths.socket();
    // Only a previous LB's leftover: the lock says none runs.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("binding control socket {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let inode = std::fs::metadata(&socket)?.ino();
    std::fs::write(paths.pid(), std::process::id().to_string())?;
    tracing::info!(
        dir = %paths.dir.display(), routes = proxy.routes().len(), http = %ops.addr,
        "load balancer started"
    );

    let server = Arc::new(Server {
        proxy,
        paths: paths.clone(),
        http_addr: ops.addr,
        changes: Mutex::new(()),
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watchdog = tokio::time::interval(WATCHDOG);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((conn, _)) => { tokio::spawn(server.clone().serve(conn)); }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = watchdog.tick() => {
                if std::fs::metadata(&socket).map(|m| m.ino()).ok() != Some(inode) {
                    tracing::info!(socket = %socket.display(), "control socket removed: stopping");
                    break;
                }
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping; routes stay saved"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping; routes stay saved"); break; }
        }
    }
    drop(lock);
    Ok(())
}

/// Raises the soft limit of open files to the hard one: every proxied TCP connection holds two sockets and
/// two pipes (six descriptors), and the usual soft limit of 1,024 would cap the LB at ~170 connections.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
    let limit = getrlimit(Resource::Nofile);
    tracing::info!(open_files = ?limit.current, "open-files limit");
}

struct Server {
    proxy: Arc<Proxy>,
    paths: Paths,
    http_addr: SocketAddr,
    /// one change (and its write of `routes.json`) at a time
    changes: Mutex<()>,
}

impl Server {
    /// Answers the requests of one control connection, one JSON line each.
    async fn serve(self: Arc<Self>, conn: UnixStream) {
        let (read, mut write) = conn.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(req).await,
                Err(e) => Response {
                    error: Some(format!("bad request: {e}")),
                    ..Default::default()
                },
            };
            let mut out = serde_json::to_vec(&response).expect("response serializes");
            out.push(b'\n');
            if write.write_all(&out).await.is_err() {
                break;
            }
        }
    }

    async fn handle(&self, req: Request) -> Response {
        let error = match req {
            Request::Status => {
                return Response {
                    status: Some(Status {
                        pid: std::process::id(),
                        http_addr: self.http_addr,
                        routes: self.proxy.routes(),
                    }),
                    error: None,
                };
            }
            Request::Ensure { route } => {
                let _change = self.changes.lock().await;
                let before = self.proxy.routes();
                match self
                    .proxy
                    .ensure(route.key, route.backend, &route.owner)
                    .await
                {
                    Err(e) => Some(e.to_string()),
                    Ok(()) if before == self.proxy.routes() => None,
                    // Not saved means not promised: the route goes again.
                    Ok(()) => self
                        .save()
                        .inspect_err(|_| self.proxy.remove(route.key))
                        .err(),
                }
            }
            Request::Remove { key } => {
                let _change = self.changes.lock().await;
                if self.proxy.routes().iter().any(|r| r.key == key) {
                    self.proxy.remove(key);
                    self.save().err()
                } else {
                    None
                }
            }
        };
        Response {
            error,
            status: None,
        }
    }

    fn save(&self) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(&self.proxy.routes()).expect("routes serialize");
        crate::write_atomic(&self.paths.routes(), &json)
            .map_err(|e| format!("saving {}: {e}", self.paths.routes().display()))
    }
}
