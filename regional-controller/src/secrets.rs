//! App env values live in Vault, not in etcd: etcd keeps each variable's name with a reference
//! `vault:<tag>` as its value, and the values are written to KV v2 at
//! `secret/<region>/apps/<org>/<name>/<version>/<tag>` (a new tag per write, so a failed or concurrent
//! create never overwrites the values another App version refers to). The controller resolves the
//! references only when it sends an App to its cloudlet's CRM; Show and DMEs see the references.
//!
//! Pull credentials of image registries live at `secret/registry/<host:port>` (fields `username` and
//! `password`, written by the platform's operator); they go only into the App copies sent to CRMs.

use std::collections::HashMap;
use std::sync::Mutex;

use edge_common::Keyed;
use edge_common::vault::Kv;
use edge_proto::edge::{App, RegistryAuth};

use crate::error::{CtrlError, Result};

const PREFIX: &str = "vault:";

pub struct AppSecrets {
    kv: Kv,
    region: String,
    /// path → values, for the Apps sent since start (each path is written once)
    cache: Mutex<HashMap<String, HashMap<String, String>>>,
    /// registry host → its credentials and when they were read (re-read after `REGISTRY_TTL`, so a
    /// rotated password reaches CRMs without a restart)
    registries: Mutex<HashMap<String, (std::time::Instant, Option<RegistryAuth>)>>,
}

const REGISTRY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

fn tag_of(app: &App) -> Option<&str> {
    app.env.values().next()?.strip_prefix(PREFIX)
}

impl AppSecrets {
    pub fn new(kv: Kv, region: &str) -> Self {
        Self {
            kv,
            region: region.into(),
            cache: Mutex::default(),
            registries: Mutex::default(),
        }
    }

    fn path(&self, app: &App, tag: &str) -> String {
        format!("{}/apps/{}/{tag}", self.region, app.key_string())
    }

    fn unavailable(e: impl std::fmt::Display) -> CtrlError {
        tracing::error!(error = %e, "Vault");
        CtrlError::Unavailable("the region's secret store is unavailable, retry later".into())
    }

    /// Moves `app`'s env values to Vault and leaves references in their place.
    pub async fn store(&self, app: &mut App) -> Result<()> {
        if app.env.is_empty() {
            return Ok(());
        }
        let tag = edge_common::vault::hex(&edge_common::vault::random_bytes(8));
        let path = self.path(app, &tag);
        self.kv
            .write_all(&path, &app.env)
            .await
            .map_err(Self::unavailable)?;
        let values = std::mem::take(&mut app.env);
        app.env = values
            .keys()
            .map(|k| (k.clone(), format!("{PREFIX}{tag}")))
            .collect();
        self.cache
            .lock()
            .expect("secrets cache")
            .insert(path, values);
        Ok(())
    }

    /// Puts the values back into a copy of `app` for its CRM.
    pub async fn resolve(&self, app: &mut App) -> Result<()> {
        let Some(tag) = tag_of(app).map(str::to_string) else {
            return Ok(());
        };
        let path = self.path(app, &tag);
        let cached = self
            .cache
            .lock()
            .expect("secrets cache")
            .get(&path)
            .cloned();
        let values = match cached {
            Some(v) => v,
            None => {
                let v = self
                    .kv
                    .read_all(&path)
                    .await
                    .map_err(Self::unavailable)?
                    .ok_or_else(|| {
                        CtrlError::FailedPrecondition(format!(
                            "env of App \"{}\" is missing from the secret store",
                            app.key_string()
                        ))
                    })?;
                self.cache
                    .lock()
                    .expect("secrets cache")
                    .insert(path, v.clone());
                v
            }
        };
        for (k, v) in app.env.iter_mut() {
            if let Some(real) = values.get(k) {
                *v = real.clone();
            }
        }
        Ok(())
    }

    /// The credentials for pulling `image`, when it names a registry Vault has credentials for.
    pub async fn registry_auth(&self, image: &str) -> Result<Option<RegistryAuth>> {
        let Some(host) = edge_common::image_registry(image) else {
            return Ok(None);
        };
        if let Some((at, auth)) = self.registries.lock().expect("registry cache").get(host)
            && at.elapsed() < REGISTRY_TTL
        {
            return Ok(auth.clone());
        }
        let values = self
            .kv
            .read_all(&format!("registry/{host}"))
            .await
            .map_err(Self::unavailable)?;
        let auth = values.map(|mut v| RegistryAuth {
            username: v.remove("username").unwrap_or_default(),
            password: v.remove("password").unwrap_or_default(),
        });
        self.registries
            .lock()
            .expect("registry cache")
            .insert(host.to_string(), (std::time::Instant::now(), auth.clone()));
        Ok(auth)
    }

    /// Deletes the values `app` referred to (after an update replaced them, or the App was deleted).
    pub async fn forget(&self, app: &App) {
        if let Some(tag) = tag_of(app) {
            let path = self.path(app, tag);
            self.cache.lock().expect("secrets cache").remove(&path);
            if let Err(e) = self.kv.delete(&path).await {
                tracing::warn!(error = %e, path, "deleting old App env from Vault failed");
            }
        }
    }
}
