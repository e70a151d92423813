//! ClusterInstApi: a developer's cluster on a cloudlet (docker or kubernetes), built by the CRM.

use edge_common::Keyed;
use edge_proto::edge::cluster_inst_api_server::ClusterInstApi;
use edge_proto::edge::{
    CloudletInfo, ClusterInst, ClusterInstKey, ClusterInstUpdate, IpAccess, TrackedState,
};
use tonic::{Request, Response, Status};

use super::cloudlet::key_matches;
use super::{Api, ObjectStream, ProgressStream, matches, now};
use crate::error::{CtrlError, Result, invalid};
use crate::objects::Tracked;
use crate::validate;

pub struct ClusterInstService(pub Api);

pub fn validate_key(k: &ClusterInstKey) -> Result<()> {
    validate::name("key.organization", &k.organization)?;
    validate::name("key.name", &k.name)
}

/// Fills defaults and checks the fields that need no other object.
fn normalize(c: &mut ClusterInst) -> Result<()> {
    validate_key(&c.key.clone().unwrap_or_default())?;
    let cloudlet = c
        .cloudlet_key
        .clone()
        .ok_or_else(|| invalid("cloudlet_key is required"))?;
    validate::name("cloudlet_key.organization", &cloudlet.organization)?;
    validate::name("cloudlet_key.name", &cloudlet.name)?;
    let flavor = c
        .flavor
        .clone()
        .ok_or_else(|| invalid("flavor is required"))?;
    validate::name("flavor.name", &flavor.name)?;
    if c.deployment.is_empty() {
        c.deployment = "kubernetes".into();
    }
    match c.deployment.as_str() {
        "docker" => {
            if c.num_masters != 0 || c.num_nodes != 0 {
                return Err(invalid(
                    "num_masters and num_nodes must be 0 for a docker cluster",
                ));
            }
        }
        "kubernetes" => {
            if c.num_masters == 0 {
                c.num_masters = 1;
            }
        }
        other => {
            return Err(invalid(format!(
                "invalid deployment \"{other}\": allowed are docker, kubernetes"
            )));
        }
    }
    match IpAccess::try_from(c.ip_access) {
        Ok(IpAccess::Unknown) => c.ip_access = IpAccess::Shared as i32,
        Ok(_) => {}
        Err(_) => {
            return Err(invalid(format!(
                "invalid ip_access {}: use IP_ACCESS_SHARED or IP_ACCESS_DEDICATED",
                c.ip_access
            )));
        }
    }
    Ok(())
}

impl ClusterInstService {
    /// The cloudlet must be READY and, once its CRM reported features, able to run this deployment.
    fn check_cloudlet(&self, c: &ClusterInst) -> Result<()> {
        let ck = c.cloudlet_key.clone().unwrap_or_default().key_string();
        let cloudlet = self
            .0
            .cache
            .get::<edge_proto::edge::Cloudlet>(&ck)
            .ok_or_else(|| CtrlError::NotFound(format!("Cloudlet \"{ck}\"")))?;
        if cloudlet.state() != TrackedState::Ready {
            return Err(CtrlError::FailedPrecondition(format!(
                "Cloudlet \"{ck}\" is {}: start its CRM and wait until it is READY",
                cloudlet.state().as_str_name()
            )));
        }
        if let Some(features) = self
            .0
            .cache
            .get::<CloudletInfo>(&ck)
            .and_then(|i| i.features)
        {
            let ok = match c.deployment.as_str() {
                "docker" => features.supports_docker_clusters,
                _ => features.supports_kubernetes_clusters,
            };
            if !ok {
                return Err(CtrlError::FailedPrecondition(format!(
                    "Cloudlet \"{ck}\" does not support {} clusters",
                    c.deployment
                )));
            }
            if c.ip_access == IpAccess::Shared as i32 && !features.supports_shared_root_lb {
                return Err(CtrlError::FailedPrecondition(format!(
                    "Cloudlet \"{ck}\" has no shared root load balancer: use IP_ACCESS_DEDICATED"
                )));
            }
            if c.ip_access == IpAccess::Dedicated as i32 && !features.supports_dedicated_ips {
                return Err(CtrlError::FailedPrecondition(format!(
                    "Cloudlet \"{ck}\" cannot give a cluster its own IP address: use IP_ACCESS_SHARED"
                )));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ClusterInstApi for ClusterInstService {
    type CreateClusterInstStream = ProgressStream;
    async fn create_cluster_inst(
        &self,
        req: Request<ClusterInst>,
    ) -> Result<Response<ProgressStream>, Status> {
        let mut c = req.into_inner();
        c.crm_override = 0;
        // the CRM gives the address
        c.allocated_ip.clear();
        normalize(&mut c)?;
        self.check_cloudlet(&c)?;
        self.0
            .check_org_quota::<ClusterInst>(&c.key.clone().unwrap_or_default().organization)?;
        c.request(TrackedState::CreateRequested);
        c.created_at = now();
        c.updated_at = c.created_at;
        let key = c.key_string();
        Ok(Response::new(
            self.0
                .create_tracked::<ClusterInst>(key, self.0.create_plain(&c))
                .await?,
        ))
    }

    type UpdateClusterInstStream = ProgressStream;
    async fn update_cluster_inst(
        &self,
        req: Request<ClusterInstUpdate>,
    ) -> Result<Response<ProgressStream>, Status> {
        let ClusterInstUpdate {
            cluster_inst,
            fields,
        } = req.into_inner();
        let new = cluster_inst.ok_or_else(|| invalid("cluster_inst is required"))?;
        let fields = validate::check_fields(&fields, &["num_nodes", "auto_scale_policy"])?;
        let key = new.key.clone().unwrap_or_default();
        validate_key(&key)?;
        let stream = self
            .0
            .update_tracked::<ClusterInst>(key.key_string(), |c| {
                for f in &fields {
                    match f.as_str() {
                        "num_nodes" if c.deployment == "kubernetes" => c.num_nodes = new.num_nodes,
                        "num_nodes" => {}
                        _ => c.auto_scale_policy = new.auto_scale_policy.clone(),
                    }
                }
                c.updated_at = now();
            })
            .await?;
        Ok(Response::new(stream))
    }

    type DeleteClusterInstStream = ProgressStream;
    async fn delete_cluster_inst(
        &self,
        req: Request<ClusterInst>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        let key = req.key.clone().unwrap_or_default();
        validate_key(&key)?;
        if req.crm_override() == edge_proto::edge::CrmOverride::IgnoreCrm {
            self.0
                .force_delete::<ClusterInst>(&key.key_string())
                .await?;
            return Ok(Response::new(crate::api::progress_done(
                "deleted without its CRM (crm_override IGNORE_CRM): what ran on the cloudlet is left as it is",
            )));
        }
        Ok(Response::new(
            self.0
                .delete_tracked::<ClusterInst>(key.key_string())
                .await?,
        ))
    }

    type ShowClusterInstStream = ObjectStream<ClusterInst>;
    async fn show_cluster_inst(
        &self,
        req: Request<ClusterInst>,
    ) -> Result<Response<Self::ShowClusterInstStream>, Status> {
        let f = req.into_inner();
        let fk = f.key.unwrap_or_default();
        let fc = f.cloudlet_key.unwrap_or_default();
        Ok(Response::new(self.0.show(|c: &ClusterInst| {
            let k = c.key.clone().unwrap_or_default();
            matches(&fk.organization, &k.organization)
                && matches(&fk.name, &k.name)
                && key_matches(&fc, c.cloudlet_key.as_ref())
        })))
    }
}
