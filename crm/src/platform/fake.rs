//! The `fake` platform: clusters and app instances simulated in memory, with a configurable delay per
//! operation and a fixed capacity. Seen from the CRM it behaves like a real driver (idempotent
//! operations, observable state), except that its resources live only as long as the process and apps
//! have no network backend. Meant for large-scale simulation and benchmarks, never in place of a real
//! driver's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use edge_common::Keyed;
use edge_proto::edge::{App, AppInst, ClusterInst, Flavor, PlatformFeatures};

use super::{
    Capacity, ClusterOps, LogOptions, ObservedAppInst, Platform, PlatformError, Progress, Result,
    last_lines,
};

pub struct FakePlatform {
    delay: Duration,
    capacity: Capacity,
    clusters: Mutex<BTreeSet<String>>,
    apps: Mutex<BTreeMap<String, ObservedAppInst>>,
}

impl FakePlatform {
    pub fn new(delay: Duration, capacity: Capacity) -> Self {
        Self {
            delay,
            capacity,
            clusters: Mutex::default(),
            apps: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Platform for FakePlatform {
    fn features(&self) -> PlatformFeatures {
        PlatformFeatures {
            supports_docker_clusters: true,
            supports_kubernetes_clusters: true,
            supports_shared_root_lb: true,
            supports_dedicated_ips: true,
            ..Default::default()
        }
    }

    async fn check(&self) -> Result<Capacity> {
        Ok(self.capacity)
    }

    fn clusters(&self) -> Option<&dyn ClusterOps> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl ClusterOps for FakePlatform {
    async fn list_clusters(&self) -> Result<Vec<String>> {
        Ok(self
            .clusters
            .lock()
            .expect("fake lock")
            .iter()
            .cloned()
            .collect())
    }

    async fn create_cluster(
        &self,
        c: &ClusterInst,
        _flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.step("Creating simulated cluster");
        tokio::time::sleep(self.delay).await;
        self.clusters
            .lock()
            .expect("fake lock")
            .insert(c.key_string());
        Ok(())
    }

    async fn delete_cluster(&self, key: &str) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.clusters.lock().expect("fake lock").remove(key);
        Ok(())
    }

    async fn list_app_insts(&self) -> Result<Vec<ObservedAppInst>> {
        Ok(self
            .apps
            .lock()
            .expect("fake lock")
            .values()
            .cloned()
            .collect())
    }

    async fn deploy_app(
        &self,
        cluster: &ClusterInst,
        app: &App,
        inst: &AppInst,
        _flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<ObservedAppInst> {
        if !self
            .clusters
            .lock()
            .expect("fake lock")
            .contains(&cluster.key_string())
        {
            return Err(PlatformError::transient(format!(
                "cluster {} is not there yet",
                cluster.key_string()
            )));
        }
        if app.image_path.is_empty() {
            return Err(PlatformError::permanent("image_path is empty"));
        }
        progress.step("Deploying simulated app");
        tokio::time::sleep(self.delay).await;
        let key = inst.key_string();
        let o = ObservedAppInst {
            key: key.clone(),
            container_ids: vec![format!("fake-{key}")],
            running: true,
            backend: None,
            ports: Default::default(),
        };
        self.apps.lock().expect("fake lock").insert(key, o.clone());
        Ok(o)
    }

    async fn delete_app(&self, key: &str) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.apps.lock().expect("fake lock").remove(key);
        Ok(())
    }

    async fn app_logs(&self, key: &str, _container: &str, opts: LogOptions) -> Result<String> {
        if !self.apps.lock().expect("fake lock").contains_key(key) {
            return Err(PlatformError::permanent(format!(
                "AppInst \"{key}\" has no simulated app (not deployed yet)"
            )));
        }
        Ok(last_lines(
            &format!("simulated app {key} started\nsimulated app {key} serving\n"),
            opts.tail,
        ))
    }
}
