//! The CRM's copy of its cloudlet's desired state, as last received from the controller.
//!
//! It is persisted in the state dir (JSON written to a temp file and renamed, with a generation number)
//! so the CRM keeps reconciling against it while the controller is unreachable, and across its own
//! restarts. Nothing is removed from it except by the controller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use edge_common::Keyed;
use edge_proto::edge::{App, AppInst, ChangeAction, Cloudlet, ClusterInst, Flavor, change};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Everything the controller wants on this cloudlet.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Desired {
    /// Increases with every change; persisted with the state.
    pub generation: u64,
    /// etcd revision of the newest change applied.
    pub revision: i64,
    /// True once a full sync (or a persisted copy of one) is held: only then may the CRM remove
    /// resources that are not desired.
    pub complete: bool,
    pub cloudlet: Option<Cloudlet>,
    pub flavors: BTreeMap<String, Flavor>,
    pub apps: BTreeMap<String, App>,
    pub clusters: BTreeMap<String, ClusterInst>,
    pub app_insts: BTreeMap<String, AppInst>,
}

impl Desired {
    /// Applies one change from the controller.
    pub fn apply(&mut self, action: ChangeAction, revision: i64, obj: change::Object) {
        fn set<T: Keyed>(map: &mut BTreeMap<String, T>, action: ChangeAction, o: T) {
            let k = o.key_string();
            match action {
                ChangeAction::Update => {
                    map.insert(k, o);
                }
                ChangeAction::Delete => {
                    map.remove(&k);
                }
            }
        }
        match obj {
            change::Object::Flavor(f) => set(&mut self.flavors, action, f),
            change::Object::App(a) => set(&mut self.apps, action, a),
            change::Object::ClusterInst(c) => set(&mut self.clusters, action, c),
            change::Object::AppInst(i) => set(&mut self.app_insts, action, i),
            change::Object::Cloudlet(c) => {
                self.cloudlet = (action == ChangeAction::Update).then_some(c);
            }
            change::Object::OperatorCode(_) | change::Object::CloudletInfo(_) => {}
        }
        self.revision = self.revision.max(revision);
    }
}

/// The desired state, shared by the notify client (writer) and the reconciler (reader).
pub struct Mirror {
    state: RwLock<Desired>,
    path: PathBuf,
    changed: watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid desired-state file ({source}); move it away to start from the controller's state"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Mirror {
    /// Loads the persisted state from `dir` (an empty, incomplete state when there is none yet).
    pub fn load(dir: &Path) -> Result<Self, MirrorError> {
        let path = dir.join("desired.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| MirrorError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Desired::default(),
            Err(source) => return Err(MirrorError::Read { path, source }),
        };
        let generation = state.generation;
        Ok(Self {
            state: RwLock::new(state),
            path,
            changed: watch::channel(generation).0,
        })
    }

    pub fn snapshot(&self) -> Desired {
        self.state.read().expect("mirror lock").clone()
    }

    /// Generation changes wake the reconciler.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Changes the state, persists it atomically and wakes the reconciler.
    pub fn update(&self, f: impl FnOnce(&mut Desired)) -> Result<(), MirrorError> {
        let (generation, json) = {
            let mut st = self.state.write().expect("mirror lock");
            f(&mut st);
            st.generation += 1;
            (
                st.generation,
                serde_json::to_vec(&*st).expect("desired state serializes"),
            )
        };
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| MirrorError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.changed.send_replace(generation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::edge::FlavorKey;

    #[test]
    fn persists_and_reloads_with_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let m = Mirror::load(dir).unwrap();
        assert!(!m.snapshot().complete);
        let f = Flavor {
            key: Some(FlavorKey {
                name: "small".into(),
            }),
            vcpus: 1,
            ..Default::default()
        };
        m.update(|d| {
            d.apply(ChangeAction::Update, 7, change::Object::Flavor(f.clone()));
            d.complete = true;
        })
        .unwrap();
        let again = Mirror::load(dir).unwrap().snapshot();
        assert_eq!(
            (again.generation, again.revision, again.complete),
            (1, 7, true)
        );
        assert_eq!(again.flavors["small"].vcpus, 1);
        m.update(|d| d.apply(ChangeAction::Delete, 8, change::Object::Flavor(f)))
            .unwrap();
        assert!(Mirror::load(dir).unwrap().snapshot().flavors.is_empty());
        std::fs::write(dir.join("desired.json"), "{not json").unwrap();
        let err = Mirror::load(dir).err().unwrap().to_string();
        assert!(err.contains("not a valid desired-state file"), "{err}");
    }
}
