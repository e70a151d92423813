//! Real servers for tests: PostgreSQL, etcd, OpenBao (Vault API), InfluxDB 1.x, a private `dockerd` and an
//! SMTP server, each on free loopback ports in its own temporary directory.
//!
//! Every `start()` waits until the server answers and returns its connection info. Dropping the handle
//! stops the server and removes its directory — also when the test panics. Servers are started with
//! `PR_SET_PDEATHSIG`, so they also die when the test process is killed (e.g. by a test timeout); they
//! are tied to the thread that starts them, so start them from the test's own task, not from a
//! short-lived thread. To start several at once, `tokio::join!` their `start()` futures.
//!
//! Binaries come from `infra/install.sh`; a missing one fails with a message naming that script.

mod browser;
mod component;
mod docker;
mod etcd;
pub mod fixtures;
pub mod fuzz;
mod influx;
mod load;
mod openbao;
mod postgres;
mod process;
mod proxy;
mod registry;
mod smtp;

pub use browser::Browser;
pub use component::{Component, workspace_binary};
pub use docker::Docker;
pub use etcd::Etcd;
pub use influx::Influx;
pub use load::WriteLoad;
pub use openbao::OpenBao;
pub use postgres::Postgres;
pub use process::{
    free_port, http_get, kill_processes_in, loopback_ip, loopback_ip_nth, metric, processes_in,
};
pub use proxy::Proxy;
pub use registry::Registry;
pub use smtp::Smtp;

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`{0}` not found in PATH: run `sudo infra/install.sh` to install the servers the tests need"
    )]
    Missing(&'static str),
    #[error(
        "`{0}` is not built next to this test: run `cargo build --bins` (the workspace test run builds it)"
    )]
    NotBuilt(&'static str),
    #[error("{server}: {what}: {source}")]
    Io {
        server: &'static str,
        what: String,
        source: std::io::Error,
    },
    #[error("{server} did not become ready within {secs} s; last lines of its log:\n{log}")]
    NotReady {
        server: &'static str,
        secs: u64,
        log: String,
    },
    #[error("{server} exited during start-up ({status}); last lines of its log:\n{log}")]
    Exited {
        server: &'static str,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("{server}: `{command}` failed: {output}")]
    Command {
        server: &'static str,
        command: String,
        output: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Polls `check` every 50 ms until it gives `Some`, and panics naming `what` when `within` has passed:
/// tests wait for a state, never for a fixed time.
pub async fn wait_for<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {} s waiting for {what}",
            within.as_secs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
