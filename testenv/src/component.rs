//! The platform's own binaries (`regional-controller`, `dme`, `master-controller`, `crm`, ...) run as
//! processes, the way an operator runs them, so that a test can kill one with SIGKILL and start it again.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::ServerProcess;
use crate::{Error, Result};

/// The workspace binary `name`, from the target directory the running test was built in. The workspace
/// test run (`cargo nextest run --workspace`) builds every binary; a test run of one package may need
/// `cargo build --bins` first, which the error says.
pub fn workspace_binary(name: &'static str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        server: name,
        what: "finding the test's own executable".into(),
        source,
    })?;
    // <target>/<profile>/deps/<test>-<hash> → <target>/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .filter(|p| p.is_file());
    path.ok_or(Error::NotBuilt(name))
}

/// One platform binary with its command line and log; SIGKILLed when dropped (a test leaves no process).
pub struct Component {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: PathBuf,
    process: Option<ServerProcess>,
}

impl Component {
    /// Starts workspace binary `name` with `args` and extra environment `envs`, its output appended to
    /// `log`, and polls `ready` (every 50 ms, up to 60 s) until it holds.
    pub async fn start<A, E>(
        name: &'static str,
        args: impl IntoIterator<Item = A>,
        envs: impl IntoIterator<Item = (E, E)>,
        log: &Path,
        ready: impl FnMut() -> bool,
    ) -> Result<Self>
    where
        A: Into<OsString>,
        E: Into<OsString>,
    {
        let mut c = Self {
            name,
            program: workspace_binary(name)?,
            args: args.into_iter().map(Into::into).collect(),
            envs: envs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            log: log.to_path_buf(),
            process: None,
        };
        c.restart(ready).await?;
        Ok(c)
    }

    /// Kills the process with SIGKILL, as a crash or `kill -9` does, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sends SIGTERM, as a service manager stops a server, and waits up to `within` for the process to
    /// exit; whether it did (else it is killed).
    pub fn terminate(&mut self, within: Duration) -> bool {
        self.process.take().is_none_or(|mut p| p.stop(within))
    }

    /// Starts the process again with the same command line (after [`Component::kill`]) and waits for
    /// `ready`.
    pub async fn restart(&mut self, ready: impl FnMut() -> bool) -> Result<()> {
        self.kill();
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info");
        let mut p = ServerProcess::spawn_appending(self.name, cmd, &self.log)?;
        p.wait_ready(Duration::from_secs(60), ready).await?;
        self.process = Some(p);
        Ok(())
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}
