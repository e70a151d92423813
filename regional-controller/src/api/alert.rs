//! Alerts of the region (MobiledgeX's `Alert`, keyed by its labels). Shepherds raise and clear the
//! alerts of their cloudlet's AppInsts and resources over notify; the controller raises `CloudletDown`
//! while a cloudlet's CRM is offline. `AlertApi.ShowAlert` lists them.

use edge_common::Keyed;
use edge_proto::dme::Timestamp;
use edge_proto::edge::alert_api_server::AlertApi;
use edge_proto::edge::{Alert, AlertPolicy, AppInst, CloudletKey};
use tonic::{Request, Response, Status};

use super::{Api, ObjectStream};
use crate::error::{CtrlError, Result, invalid};
use crate::store::Write;

pub struct AlertService(pub Api);

/// Alert names a Shepherd may raise, besides those of AlertPolicies (label `type` = `UserDefined`).
pub const SHEPHERD_ALERTS: &[&str] = &["AppInstDown", "CloudletResourceUsage"];
/// Labels a Shepherd may set; `region`, `cloudlet` and `cloudletorg` the controller overwrites with its
/// own region and the Shepherd's cloudlet.
const SHEPHERD_LABELS: &[&str] = &[
    "region",
    "cloudlet",
    "cloudletorg",
    "alertname",
    "scope",
    "severity",
    "app",
    "appver",
    "apporg",
    "cluster",
    "clusterorg",
    "status",
    "port",
    "warning",
];
const MAX_LABEL_VALUE: usize = 256;
const MAX_ANNOTATIONS: usize = 8;
const MAX_ANNOTATION_VALUE: usize = 1024;

/// Name of the alert the controller keeps while a cloudlet's CRM is offline.
pub const CLOUDLET_DOWN: &str = "CloudletDown";

/// The `CloudletDown` alert of `cloudlet`.
pub fn cloudlet_down(region: &str, cloudlet: &CloudletKey, replica: &str) -> Alert {
    let mut a = Alert {
        state: "firing".into(),
        active_at: Some(now()),
        controller: replica.into(),
        ..Default::default()
    };
    for (k, v) in [
        ("alertname", CLOUDLET_DOWN),
        ("region", region),
        ("scope", "Cloudlet"),
        ("severity", "error"),
        ("cloudlet", &cloudlet.name),
        ("cloudletorg", &cloudlet.organization),
    ] {
        a.labels.insert(k.into(), v.into());
    }
    a.annotations.insert("title".into(), CLOUDLET_DOWN.into());
    a.annotations.insert(
        "description".into(),
        "Cloudlet resource manager is offline".into(),
    );
    a
}

fn now() -> Timestamp {
    let ms = edge_common::now_ms();
    Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

impl Api {
    /// Stores (`firing`) or deletes an alert a Shepherd of `cloudlet` reports, after checking it names
    /// only its own cloudlet's objects.
    pub async fn apply_shepherd_alert(
        &self,
        cloudlet: &CloudletKey,
        mut alert: Alert,
        firing: bool,
    ) -> Result<()> {
        let name = alert.labels.get("alertname").cloned().unwrap_or_default();
        // An AlertPolicy's alert is named after the policy and may carry the policy's labels.
        let policy = match alert.labels.get("type").map(String::as_str) {
            Some("UserDefined") => {
                let org = alert.labels.get("apporg").cloned().unwrap_or_default();
                let key = format!("{org}/{name}");
                Some(self.cache.get::<AlertPolicy>(&key).ok_or_else(|| {
                    invalid(format!("no AlertPolicy \"{key}\" for a UserDefined alert"))
                })?)
            }
            _ if SHEPHERD_ALERTS.contains(&name.as_str()) => None,
            _ => {
                return Err(invalid(format!(
                    "alertname \"{name}\" is not one a Shepherd raises (one of {}, or an AlertPolicy's)",
                    SHEPHERD_ALERTS.join(", ")
                )));
            }
        };
        for (k, v) in &alert.labels {
            let allowed = SHEPHERD_LABELS.contains(&k.as_str())
                || policy
                    .as_ref()
                    .is_some_and(|p| k == "type" || p.labels.contains_key(k));
            if !allowed {
                return Err(invalid(format!("alert label \"{k}\" is not allowed")));
            }
            if v.len() > MAX_LABEL_VALUE || v.contains('/') || v.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "alert label \"{k}\" must be at most {MAX_LABEL_VALUE} characters without '/' or control characters"
                )));
            }
        }
        if alert.annotations.len() > MAX_ANNOTATIONS
            || alert
                .annotations
                .values()
                .any(|v| v.len() > MAX_ANNOTATION_VALUE)
        {
            return Err(invalid(format!(
                "at most {MAX_ANNOTATIONS} annotations of at most {MAX_ANNOTATION_VALUE} characters"
            )));
        }
        if alert.labels.contains_key("app") {
            let label = |k: &str| alert.labels.get(k).map_or("", String::as_str);
            let mine = self.cache.any(|i: &AppInst| {
                let (Some(a), Some(c)) = (&i.app_key, &i.cluster_key) else {
                    return false;
                };
                i.cloudlet_key.as_ref() == Some(cloudlet)
                    && a.organization == label("apporg")
                    && a.name == label("app")
                    && a.version == label("appver")
                    && c.organization == label("clusterorg")
                    && c.name == label("cluster")
            });
            if !mine && firing {
                return Err(CtrlError::PermissionDenied(format!(
                    "no AppInst of {}/{} {} on cloudlet {}",
                    label("apporg"),
                    label("app"),
                    label("appver"),
                    cloudlet.key_string()
                )));
            }
        }
        for (k, v) in [
            ("region", self.store.region.as_str()),
            ("cloudlet", cloudlet.name.as_str()),
            ("cloudletorg", cloudlet.organization.as_str()),
        ] {
            alert.labels.insert(k.into(), v.into());
        }
        alert.state = "firing".into();
        alert.controller = self.config.replica.clone();
        if alert.active_at.is_none() {
            alert.active_at = Some(now());
        }
        let path = self.store.path_of(&alert);
        self.write(&alert.describe(), || async {
            let mut w = Write::default();
            if firing {
                self.store.put_obj(&mut w, &alert);
            } else {
                w.delete(&path);
            }
            self.store.commit(w).await
        })
        .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl AlertApi for AlertService {
    type ShowAlertStream = ObjectStream<Alert>;
    async fn show_alert(
        &self,
        req: Request<Alert>,
    ) -> Result<Response<Self::ShowAlertStream>, Status> {
        let filter = req.into_inner().labels;
        Ok(Response::new(self.0.show(|a: &Alert| {
            filter
                .iter()
                .all(|(k, v)| v.is_empty() || a.labels.get(k) == Some(v))
        })))
    }
}
