//! OpenBao (the Vault API) in dev mode: in-memory storage, unsealed, KV v2 mounted at `secret/`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::Result;
use crate::process::{ServerProcess, free_port_pair, http_get, require, temp_dir};

/// A running OpenBao dev server.
pub struct OpenBao {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    /// Root token of this instance (random per start).
    pub token: String,
    _process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl OpenBao {
    pub async fn start() -> Result<Self> {
        crate::process::retry_port_clash(Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        const NAME: &str = "openbao";
        let bao = require("bao")?;
        let dir = temp_dir(NAME)?;
        // The dev server also binds port + 1 for its cluster listener.
        let port = free_port_pair();
        let token = format!("edge-test-{:016x}", rand_u64());
        let mut cmd = Command::new(bao);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR");
        let mut process = ServerProcess::spawn(NAME, cmd, &dir.path().join("bao.log"))?;
        let sock: SocketAddr = ([127, 0, 0, 1], port).into();
        process
            .wait_ready(Duration::from_secs(30), || {
                http_get(sock, "/v1/sys/health").is_some_and(|(s, _)| s == 200)
            })
            .await?;
        Ok(Self {
            addr: format!("http://{sock}"),
            token,
            _process: process,
            _dir: dir,
        })
    }
}

/// A random number from the kernel, for tokens that differ per instance.
fn rand_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    u64::from_le_bytes(b)
}
