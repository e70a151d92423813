//! AlertPolicyApi: thresholds on an App's instances, per developer organization (MobiledgeX's
//! AlertPolicy). Apps name the policies their instances are checked against (`App.alert_policies`);
//! a policy in use cannot be deleted.

use edge_proto::edge::alert_policy_api_server::AlertPolicyApi;
use edge_proto::edge::{AlertPolicy, AlertPolicyKey, AlertPolicyUpdate, Result as ApiResult};
use tonic::{Request, Response, Status};

use super::{Api, ObjectStream, matches, result};
use crate::error::{Result, invalid};
use crate::validate;

pub struct AlertPolicyService(pub Api);

const UPDATABLE: &[&str] = &[
    "cpu_utilization_limit",
    "mem_utilization_limit",
    "disk_utilization_limit",
    "active_conn_limit",
    "severity",
    "trigger_time",
    "labels",
    "annotations",
    "description",
];

/// Longest `trigger_time`.
const MAX_TRIGGER_SECS: u64 = 72 * 3600;

fn validate_key(k: &AlertPolicyKey) -> Result<()> {
    validate::name("key.organization", &k.organization)?;
    validate::name("key.name", &k.name)
}

fn validate(p: &AlertPolicy) -> Result<()> {
    validate_key(&p.key.clone().unwrap_or_default())?;
    for (field, v) in [
        ("cpu_utilization_limit", p.cpu_utilization_limit),
        ("mem_utilization_limit", p.mem_utilization_limit),
        ("disk_utilization_limit", p.disk_utilization_limit),
    ] {
        if v > 100 {
            return Err(invalid(format!("{field} {v} is a percentage: at most 100")));
        }
    }
    if p.cpu_utilization_limit == 0
        && p.mem_utilization_limit == 0
        && p.disk_utilization_limit == 0
        && p.active_conn_limit == 0
    {
        return Err(invalid(
            "at least one of cpu_utilization_limit, mem_utilization_limit, disk_utilization_limit or active_conn_limit must be set",
        ));
    }
    if !["info", "warning", "error"].contains(&p.severity.as_str()) {
        return Err(invalid(format!(
            "invalid severity \"{}\": one of info, warning, error",
            p.severity
        )));
    }
    let trigger = match p.trigger_time.as_str() {
        "" => Some(std::time::Duration::ZERO),
        t => edge_common::parse_duration(t),
    };
    match trigger {
        Some(d) if d.as_secs() <= MAX_TRIGGER_SECS => {}
        _ => {
            return Err(invalid(format!(
                "invalid trigger_time \"{}\": a duration such as 30s, 5m or 1h, at most 72h",
                p.trigger_time
            )));
        }
    }
    for (k, v) in p.labels.iter().chain(&p.annotations) {
        validate::name("labels/annotations key", k)?;
        if v.len() > 256 || v.contains('/') || v.chars().any(char::is_control) {
            return Err(invalid(format!(
                "label or annotation \"{k}\": at most 256 characters without '/' or control characters"
            )));
        }
    }
    if p.description.len() > 1024 {
        return Err(invalid("description: at most 1024 characters"));
    }
    Ok(())
}

#[tonic::async_trait]
impl AlertPolicyApi for AlertPolicyService {
    async fn create_alert_policy(
        &self,
        req: Request<AlertPolicy>,
    ) -> Result<Response<ApiResult>, Status> {
        let mut p = req.into_inner();
        if p.severity.is_empty() {
            p.severity = "warning".into();
        }
        validate(&p)?;
        self.0.create_plain(&p).await?;
        Ok(Response::new(result("AlertPolicy created")))
    }

    async fn update_alert_policy(
        &self,
        req: Request<AlertPolicyUpdate>,
    ) -> Result<Response<ApiResult>, Status> {
        let AlertPolicyUpdate {
            alert_policy,
            fields,
        } = req.into_inner();
        let new = alert_policy.ok_or_else(|| invalid("alert_policy is required"))?;
        let fields = validate::check_fields(&fields, UPDATABLE)?;
        let key = new.key.clone().unwrap_or_default();
        validate_key(&key)?;
        self.0
            .update_plain::<AlertPolicy>(&format!("{}/{}", key.organization, key.name), |p| {
                for field in &fields {
                    match field.as_str() {
                        "cpu_utilization_limit" => {
                            p.cpu_utilization_limit = new.cpu_utilization_limit
                        }
                        "mem_utilization_limit" => {
                            p.mem_utilization_limit = new.mem_utilization_limit
                        }
                        "disk_utilization_limit" => {
                            p.disk_utilization_limit = new.disk_utilization_limit
                        }
                        "active_conn_limit" => p.active_conn_limit = new.active_conn_limit,
                        "severity" => p.severity = new.severity.clone(),
                        "trigger_time" => p.trigger_time = new.trigger_time.clone(),
                        "labels" => p.labels = new.labels.clone(),
                        "annotations" => p.annotations = new.annotations.clone(),
                        _ => p.description = new.description.clone(),
                    }
                }
                validate(p)
            })
            .await?;
        Ok(Response::new(result("AlertPolicy updated")))
    }

    async fn delete_alert_policy(
        &self,
        req: Request<AlertPolicy>,
    ) -> Result<Response<ApiResult>, Status> {
        let key = req.into_inner().key.unwrap_or_default();
        validate_key(&key)?;
        self.0
            .delete_plain::<AlertPolicy>(&format!("{}/{}", key.organization, key.name))
            .await?;
        Ok(Response::new(result("AlertPolicy deleted")))
    }

    type ShowAlertPolicyStream = ObjectStream<AlertPolicy>;
    async fn show_alert_policy(
        &self,
        req: Request<AlertPolicy>,
    ) -> Result<Response<Self::ShowAlertPolicyStream>, Status> {
        let filter = req.into_inner().key.unwrap_or_default();
        Ok(Response::new(self.0.show(|p: &AlertPolicy| {
            let k = p.key.clone().unwrap_or_default();
            matches(&filter.organization, &k.organization) && matches(&filter.name, &k.name)
        })))
    }
}
