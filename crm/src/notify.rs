//! The CRM's side of notify: its hello (signed with the cloudlet access key) and the [`Sink`] that
//! writes what the controller sends into the persisted mirror and wakes the reconciler after each sync.

use std::collections::HashSet;
use std::sync::Arc;

use edge_common::Keyed;
use edge_common::access_key;
use edge_common::notify_client::Sink;
use edge_proto::edge::{ChangeAction, ClientType, CloudletKey, Hello, change};
use prometheus::IntGauge;
use tokio::sync::Notify;

use crate::mirror::{Desired, Mirror};
use crate::report::Reporter;

/// A signed hello for `cloudlet` in `region`.
pub fn hello(
    region: &str,
    cloudlet: &CloudletKey,
    private_key: Option<&str>,
) -> Result<Hello, tonic::Status> {
    // Signed only towards a controller without PKI; with mTLS the certificate proves the cloudlet.
    let (signed_at, signature) = match private_key {
        Some(k) => {
            let at = edge_common::now_ms();
            let sig = access_key::sign(k, region, &cloudlet.organization, &cloudlet.name, at)
                .map_err(|e| tonic::Status::unauthenticated(format!("{e}: check --access-key")))?;
            (at, sig)
        }
        None => (0, Vec::new()),
    };
    Ok(Hello {
        client_type: ClientType::Crm as i32,
        region: region.to_string(),
        cloudlet_key: Some(cloudlet.clone()),
        signed_at,
        signature,
        client_name: format!("crm-{}", cloudlet.key_string()),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

pub struct CrmSink {
    pub mirror: Arc<Mirror>,
    pub reporter: Arc<Reporter>,
    /// wakes the reconciler for a full pass after a (re)sync
    pub resync: Arc<Notify>,
    pub connected: IntGauge,
}

impl CrmSink {
    fn store(&self, f: impl FnOnce(&mut Desired)) {
        if let Err(e) = self.mirror.update(f) {
            tracing::error!(error = %e, "persisting the desired state failed");
        }
    }
}

impl Sink for CrmSink {
    fn apply(&self, action: ChangeAction, revision: i64, object: change::Object) {
        self.store(|d| d.apply(action, revision, object));
    }

    fn sync_end(&self, revision: i64, keep: &HashSet<String>) {
        self.store(|d| {
            let kept = |kind: &str, k: &String| keep.contains(&format!("{kind}/{k}"));
            d.flavors.retain(|k, _| kept("Flavor", k));
            d.apps.retain(|k, _| kept("App", k));
            d.clusters.retain(|k, _| kept("ClusterInst", k));
            d.app_insts.retain(|k, _| kept("AppInst", k));
            if d.cloudlet
                .as_ref()
                .is_some_and(|c| !kept("Cloudlet", &c.key_string()))
            {
                d.cloudlet = None;
            }
            d.revision = d.revision.max(revision);
            d.complete = true;
        });
        // Everything is reported again on the next pass: the controller may have missed reports.
        self.reporter.reset();
        self.resync.notify_one();
    }

    fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }
}
