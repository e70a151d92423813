//! The CRM's copy of its cloudlet's desired state, as last received from the controller.
//!
//! It is persisted in the state dir (JSON written to a temp file and renamed, with a generation number)
//! so the CRM keeps reconciling against it while the controller is unreachable, and across its own
//! restarts. Nothing is removed from it except by the controller. App env values are sealed
//! (AES-256-GCM with a key derived from the cloudlet's access key) before they are written, so the file
//! holds no secret in clear.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

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
            change::Object::OperatorCode(_)
            | change::Object::CloudletInfo(_)
            | change::Object::Alert(_)
            | change::Object::AlertPolicy(_)
            | change::Object::ExecRequest(_) => {}
        }
        self.revision = self.revision.max(revision);
    }
}

/// Seals App env values and registry passwords at rest.
pub struct Seal(aws_lc_rs::aead::LessSafeKey);

const SEALED: &str = "sealed:";

impl Seal {
    /// The key for the desired state of the CRM holding `access_key` (base64 PKCS#8).
    pub fn from_access_key(access_key: &str) -> Self {
        use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
        let d = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("edge-crm-desired-state-v1/{}", access_key.trim()).as_bytes(),
        );
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, d.as_ref()).expect("a 32-byte key"),
        ))
    }

    fn seal(&self, value: &str) -> String {
        use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
        use base64::Engine;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&edge_common::vault::random_bytes(NONCE_LEN));
        let mut buf = value.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("sealing cannot fail");
        let mut out = nonce.to_vec();
        out.extend(buf);
        format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    fn open(&self, value: &str) -> Option<String> {
        use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value.strip_prefix(SEALED)?)
            .ok()?;
        let (nonce, sealed) = raw.split_at_checked(NONCE_LEN)?;
        let mut buf = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.0.open_in_place(nonce, Aad::empty(), &mut buf).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    fn apps(
        &self,
        apps: &BTreeMap<String, App>,
        f: impl Fn(&str) -> String,
    ) -> BTreeMap<String, App> {
        apps.iter()
            .map(|(k, a)| {
                let mut a = a.clone();
                for v in a.env.values_mut() {
                    *v = f(v);
                }
                if let Some(r) = &mut a.registry_auth {
                    r.password = f(&r.password);
                }
                (k.clone(), a)
            })
            .collect()
    }
}

/// The desired state, shared by the notify client (writer) and the reconciler (reader).
pub struct Mirror {
    state: RwLock<Desired>,
    path: PathBuf,
    changed: watch::Sender<u64>,
    seal: Seal,
    /// set by [`Mirror::update`], taken by [`Mirror::run_flusher`]
    dirty: tokio::sync::Notify,
    /// writes of the file so far
    writes: std::sync::atomic::AtomicU64,
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
    pub fn load(dir: &Path, seal: Seal) -> Result<Self, MirrorError> {
        let path = dir.join("desired.json");
        let mut state: Desired = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| MirrorError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Desired::default(),
            Err(source) => return Err(MirrorError::Read { path, source }),
        };
        // A value sealed under an older access key cannot be opened: it is left empty, and the next
        // sync from the controller brings it back.
        state.apps = seal.apps(&state.apps, |v| {
            if v.starts_with(SEALED) {
                seal.open(v).unwrap_or_else(|| {
                    tracing::warn!(
                        "an App secret (env value or registry password) of the saved state cannot be opened (access key rotated?)"
                    );
                    String::new()
                })
            } else {
                v.to_string()
            }
        });
        let generation = state.generation;
        Ok(Self {
            state: RwLock::new(state),
            path,
            changed: watch::channel(generation).0,
            seal,
            dirty: tokio::sync::Notify::new(),
            writes: Default::default(),
        })
    }

    pub fn snapshot(&self) -> Desired {
        self.state.read().expect("mirror lock").clone()
    }

    /// Generation changes wake the reconciler.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Changes the state in memory; [`Mirror::run_flusher`] persists it and then wakes the reconciler.
    pub fn update(&self, f: impl FnOnce(&mut Desired)) {
        {
            let mut st = self.state.write().expect("mirror lock");
            f(&mut st);
            st.generation += 1;
        }
        self.dirty.notify_one();
    }

    /// Writes the current state atomically and wakes the reconciler with its generation.
    pub fn persist(&self) -> Result<(), MirrorError> {
        let (generation, json) = {
            let mut st = self.state.write().expect("mirror lock");
            let sealed = self.seal.apps(&st.apps, |v| self.seal.seal(v));
            let plain = std::mem::replace(&mut st.apps, sealed);
            let json = serde_json::to_vec(&*st).expect("desired state serializes");
            st.apps = plain;
            (st.generation, json)
        };
        crate::write_atomic(&self.path, &json).map_err(|source| MirrorError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.send_replace(generation);
        Ok(())
    }

    /// How many times the state was written.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Persists changes as they come: one write for every burst of changes (a full sync of N objects is
    /// a handful of writes, not N writes of the whole state), off the async workers. The reconciler acts
    /// only on persisted states, so what it did is always in the file a restart reads.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            self.dirty.notified().await;
            let m = self.clone();
            match tokio::task::spawn_blocking(move || m.persist()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "persisting the desired state failed; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    self.dirty.notify_one();
                }
                Err(_) => return,
            }
        }
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
        let seal = || Seal::from_access_key("key-1");
        let m = Mirror::load(dir, seal()).unwrap();
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
        });
        m.persist().unwrap();
        let again = Mirror::load(dir, seal()).unwrap().snapshot();
        assert_eq!(
            (again.generation, again.revision, again.complete),
            (1, 7, true)
        );
        assert_eq!(again.flavors["small"].vcpus, 1);
        m.update(|d| d.apply(ChangeAction::Delete, 8, change::Object::Flavor(f)));
        m.persist().unwrap();
        assert!(
            Mirror::load(dir, seal())
                .unwrap()
                .snapshot()
                .flavors
                .is_empty()
        );
        std::fs::write(dir.join("desired.json"), "{not json").unwrap();
        let err = Mirror::load(dir, seal()).err().unwrap().to_string();
        assert!(err.contains("not a valid desired-state file"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_changes_is_written_a_few_times_not_once_each() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Arc::new(Mirror::load(tmp.path(), Seal::from_access_key("key-1")).unwrap());
        let flusher = tokio::spawn(m.clone().run_flusher());
        let mut persisted = m.subscribe();
        for i in 0..2000 {
            let f = Flavor {
                key: Some(FlavorKey {
                    name: format!("f{i}"),
                }),
                ..Default::default()
            };
            m.update(|d| d.apply(ChangeAction::Update, i, change::Object::Flavor(f)));
        }
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            persisted.wait_for(|g| *g == 2000),
        )
        .await
        .expect("the last change is persisted")
        .unwrap();
        assert!(m.writes() < 200, "{} writes for 2000 changes", m.writes());
        let again = Mirror::load(tmp.path(), Seal::from_access_key("key-1")).unwrap();
        assert_eq!(again.snapshot().flavors.len(), 2000);
        flusher.abort();
    }

    #[test]
    fn app_env_values_are_sealed_at_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let m = Mirror::load(dir, Seal::from_access_key("key-1")).unwrap();
        let mut app = App {
            key: Some(edge_proto::edge::AppKey {
                organization: "acme".into(),
                name: "game".into(),
                version: "1".into(),
            }),
            ..Default::default()
        };
        app.env.insert("DB_PASSWORD".into(), "hunter2".into());
        m.update(|d| d.apply(ChangeAction::Update, 1, change::Object::App(app.clone())));
        m.persist().unwrap();
        assert_eq!(
            m.snapshot().apps["acme/game/1"].env["DB_PASSWORD"],
            "hunter2"
        );
        let file = std::fs::read_to_string(dir.join("desired.json")).unwrap();
        assert!(
            !file.contains("hunter2") && file.contains("DB_PASSWORD"),
            "{file}"
        );
        let again = Mirror::load(dir, Seal::from_access_key("key-1")).unwrap();
        assert_eq!(
            again.snapshot().apps["acme/game/1"].env["DB_PASSWORD"],
            "hunter2"
        );
        // Under another key the value cannot be read back (the controller's next sync restores it).
        let other = Mirror::load(dir, Seal::from_access_key("key-2")).unwrap();
        assert_eq!(other.snapshot().apps["acme/game/1"].env["DB_PASSWORD"], "");
    }
}
