//! Applies what CRMs report (CloudletInfo, ClusterInstInfo, AppInstInfo) to the stored objects, and the
//! health a Shepherd measured for an AppInst.
//!
//! Only legal transitions of the tracked state are applied (see [`legal_transition`]); a report that
//! does not fit the stored state is dropped with a warning, since the CRM re-reports on its next pass.
//! A NOT_PRESENT report for an object being deleted removes it, with its reference keys and ports.

use edge_common::Keyed;
use edge_proto::edge::{
    AppInst, AppInstInfo, Cloudlet, CloudletInfo, CloudletKey, CloudletState, ClusterInst,
    ClusterInstInfo, TrackedState,
};

use crate::api::{Api, held_ports, legal_transition};
use crate::error::Result;
use crate::objects::Tracked;
use crate::store::Write;

/// Fields a CRM reports for one tracked object.
pub struct Report {
    pub state: TrackedState,
    pub errors: Vec<String>,
    pub status: Vec<String>,
    /// the object's `updated_at` the report answers (0: a CRM that does not say)
    pub stamp: i64,
}

impl Api {
    /// Stores a CRM's CloudletInfo (keyed by the CRM's authenticated cloudlet, whatever it claims) and
    /// moves the Cloudlet to READY on the first READY report.
    pub async fn apply_cloudlet_info(
        &self,
        cloudlet: &CloudletKey,
        mut info: CloudletInfo,
        replica: &str,
    ) -> Result<()> {
        info.key = Some(cloudlet.clone());
        info.heartbeat_at = edge_common::now_ms();
        info.controller = replica.to_string();
        let ck = cloudlet.key_string();
        self.write(&format!("CloudletInfo \"{ck}\""), || async {
            let Some(cur) = self.store.get::<Cloudlet>(&ck).await? else {
                return Ok(Some(0));
            };
            let mut w = Write::default();
            w.unchanged(&self.store.path_of(&cur.obj), cur.rev);
            self.store.put_obj(&mut w, &info);
            let ready = info.state == CloudletState::Ready as i32;
            if ready {
                let down = crate::api::alert::cloudlet_down(&self.store.region, cloudlet, replica);
                w.delete(&self.store.path_of(&down));
            }
            if ready
                && matches!(
                    cur.obj.state(),
                    TrackedState::CreateRequested | TrackedState::Creating
                )
            {
                let mut c = cur.obj;
                c.set_state(TrackedState::Ready);
                self.store.put_obj(&mut w, &c);
            }
            self.store.commit(w).await
        })
        .await?;
        Ok(())
    }

    pub async fn apply_cluster_inst_info(
        &self,
        cloudlet: &CloudletKey,
        info: ClusterInstInfo,
    ) -> Result<()> {
        let key = info.key.clone().unwrap_or_default().key_string();
        let ip = info.allocated_ip.clone();
        let report = Report {
            state: info.state(),
            errors: info.errors,
            status: info.status,
            stamp: info.updated_at,
        };
        self.apply_report::<ClusterInst>(cloudlet, &key, report, |c| {
            if !ip.is_empty() {
                c.allocated_ip = ip.clone();
            }
        })
        .await
    }

    pub async fn apply_app_inst_info(
        &self,
        cloudlet: &CloudletKey,
        info: AppInstInfo,
    ) -> Result<()> {
        let key = info.key.clone().unwrap_or_default().key_string();
        let runtime = info.runtime_info.clone();
        let power = info.power_state;
        let report = Report {
            state: info.state(),
            errors: info.errors,
            status: info.status,
            stamp: info.updated_at,
        };
        self.apply_report::<AppInst>(cloudlet, &key, report, |i| {
            if runtime.is_some() {
                i.runtime_info = runtime.clone();
            }
            if power != 0 {
                i.power_state = power;
            }
        })
        .await
    }

    /// Stores the health a Shepherd of `cloudlet` measured for one of its READY AppInsts (the only
    /// field of its AppInstInfo that counts).
    pub async fn apply_app_inst_health(
        &self,
        cloudlet: &CloudletKey,
        info: AppInstInfo,
    ) -> Result<()> {
        let key = info.key.clone().unwrap_or_default().key_string();
        let health = info.health_check;
        self.write(&format!("AppInst \"{key}\""), || async {
            let Some(cur) = self.store.get::<AppInst>(&key).await? else {
                return Ok(Some(0));
            };
            if cur.obj.cloudlet_key.as_ref() != Some(cloudlet)
                || cur.obj.state() != TrackedState::Ready
                || cur.obj.health_check == health
            {
                return Ok(Some(0));
            }
            let mut w = Write::default();
            w.unchanged(&self.store.path_of(&cur.obj), cur.rev);
            let mut i = cur.obj;
            i.health_check = health;
            self.store.put_obj(&mut w, &i);
            self.store.commit(w).await
        })
        .await?;
        Ok(())
    }

    async fn apply_report<T: Tracked + OnCloudlet>(
        &self,
        cloudlet: &CloudletKey,
        key: &str,
        report: Report,
        extra: impl Fn(&mut T),
    ) -> Result<()> {
        self.write(&format!("{} \"{key}\"", T::KIND), || async {
            let Some(cur) = self.store.get::<T>(key).await? else {
                tracing::debug!(
                    kind = T::KIND,
                    key,
                    "report for an object that no longer exists"
                );
                return Ok(Some(0));
            };
            if cur.obj.cloudlet() != Some(cloudlet) {
                tracing::warn!(
                    kind = T::KIND,
                    key,
                    "report from the CRM of another cloudlet ignored"
                );
                return Ok(Some(0));
            }
            // A report made for an earlier request (sent just before a new one was stored) says nothing
            // about the new one.
            if report.stamp != 0 && report.stamp != cur.obj.updated_at() {
                tracing::debug!(kind = T::KIND, key, "report for an earlier request ignored");
                return Ok(Some(0));
            }
            let from = cur.obj.state();
            if !legal_transition(from, report.state) {
                tracing::warn!(
                    kind = T::KIND,
                    key,
                    from = from.as_str_name(),
                    to = report.state.as_str_name(),
                    "illegal state report ignored"
                );
                return Ok(Some(0));
            }
            let path = self.store.path_of(&cur.obj);
            let mut w = Write::default();
            w.unchanged(&path, cur.rev);
            if report.state == TrackedState::NotPresent {
                self.remove_tracked(&mut w, &cur.obj).await?;
            } else {
                let mut obj = cur.obj;
                obj.set_state(report.state);
                obj.set_progress(report.errors.clone(), report.status.clone());
                extra(&mut obj);
                self.store.put_obj(&mut w, &obj);
            }
            self.store.commit(w).await
        })
        .await?;
        Ok(())
    }
}

impl Api {
    /// Adds to `w` the removal of `obj` with its reference keys and public-port holds.
    pub(crate) async fn remove_tracked<T: Tracked + OnCloudlet>(
        &self,
        w: &mut Write,
        obj: &T,
    ) -> Result<()> {
        w.delete(&self.store.path_of(obj));
        self.store.delete_refs(w, obj, &obj.references());
        for port in obj.held_ports(self).await? {
            w.delete(&port);
        }
        Ok(())
    }

    /// Removes `key` at once without its CRM (`IGNORE_CRM`: the cloudlet's CRM is gone for good), unless
    /// something refers to it.
    pub(crate) async fn force_delete<T: Tracked + OnCloudlet>(&self, key: &str) -> Result<i64> {
        self.write(&format!("{} \"{key}\"", T::KIND), || async {
            let cur = self.store.must_get::<T>(key).await?;
            let mut w = Write::default();
            self.guard_unused::<T>(&mut w, key).await?;
            w.unchanged(&self.store.path_of(&cur.obj), cur.rev);
            self.remove_tracked(&mut w, &cur.obj).await?;
            let done = self.store.commit(w).await?;
            if done.is_some() {
                tracing::warn!(
                    kind = T::KIND,
                    key,
                    "deleted without its CRM (crm_override IGNORE_CRM)"
                );
            }
            Ok(done)
        })
        .await
    }
}

/// Tracked objects that live on one cloudlet.
pub(crate) trait OnCloudlet {
    fn cloudlet(&self) -> Option<&CloudletKey>;
    /// Public-port keys the object holds (released with it).
    async fn held_ports(&self, api: &Api) -> Result<Vec<String>>;
}

impl OnCloudlet for ClusterInst {
    fn cloudlet(&self) -> Option<&CloudletKey> {
        self.cloudlet_key.as_ref()
    }
    async fn held_ports(&self, _: &Api) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

impl OnCloudlet for AppInst {
    fn cloudlet(&self) -> Option<&CloudletKey> {
        self.cloudlet_key.as_ref()
    }
    async fn held_ports(&self, api: &Api) -> Result<Vec<String>> {
        held_ports(&api.store, self).await
    }
}
