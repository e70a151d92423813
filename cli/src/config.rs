//! Contexts `edgectl login` saves, as kubectl's: which master controller, as whom (the token), and the
//! default region. Kept in `$EDGECTL_CONFIG`, else `$XDG_CONFIG_HOME/edgectl/config.yaml`, else
//! `~/.config/edgectl/config.yaml`; the file is mode 0600 and its directory 0700 (a token is a
//! credential).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// the MC's URL, e.g. `https://localhost:9900`
    pub url: String,
    /// PEM of the CA of the MC's HTTPS certificate (else the system's roots)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    pub user: String,
    pub token: String,
    /// region used when a command names none
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// the context used when a command names none
    #[serde(default)]
    pub current: String,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the configuration lives.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGECTL_CONFIG") {
        return p.into();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".config")
        });
    base.join("edgectl").join("config.yaml")
}

impl Config {
    /// The configuration at `path`; empty when there is none yet.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_norway::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is not an edgectl configuration: {e}", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the configuration atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let failed = |e: std::io::Error| anyhow::anyhow!("writing {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(failed)?;
        }
        let tmp = path.with_extension("yaml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(failed)?;
        f.write_all(serde_norway::to_string(self)?.as_bytes())
            .map_err(failed)?;
        f.sync_all().map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(failed)
    }

    /// The context named `name`, else the current one.
    pub fn context(&self, name: Option<&str>) -> anyhow::Result<(&str, &Context)> {
        let name = name.unwrap_or(&self.current);
        self.contexts
            .get_key_value(name)
            .map(|(k, c)| (k.as_str(), c))
            .ok_or_else(|| match name {
                "" => anyhow::anyhow!(
                    "not logged in: run `edgectl login --mc-url URL --user NAME` first"
                ),
                n => anyhow::anyhow!(
                    "no context \"{n}\" (contexts: {}); `edgectl login --context {n} ...` creates it",
                    self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_configuration_reads_back_and_only_its_owner_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.yaml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let mut c = Config {
            current: "eu".into(),
            ..Default::default()
        };
        c.contexts.insert(
            "eu".into(),
            Context {
                url: "https://mc:9900".into(),
                user: "dev".into(),
                token: "t".into(),
                region: "EU".into(),
                ca: None,
            },
        );
        c.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), c);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            c.context(Some("us"))
                .unwrap_err()
                .to_string()
                .contains("no context \"us\"")
        );
        assert_eq!(c.context(None).unwrap().1.region, "EU");
    }
}
