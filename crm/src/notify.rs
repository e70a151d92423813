//! The CRM's side of notify: the [`Sink`] that writes what the controller sends into the persisted
//! mirror and wakes the reconciler after each sync, and hands ExecRequests to [`Exec`].

use std::collections::HashSet;
use std::sync::Arc;

use edge_common::Keyed;
use edge_common::notify_client::Sink;
use edge_proto::edge::{ChangeAction, change};
use prometheus::IntGauge;
use tokio::sync::Notify;

use crate::exec::Exec;
use crate::mirror::Mirror;
use crate::report::Reporter;

pub struct CrmSink {
    pub mirror: Arc<Mirror>,
    pub reporter: Arc<Reporter>,
    /// wakes the reconciler for a full pass after a (re)sync
    pub resync: Arc<Notify>,
    pub connected: IntGauge,
    pub exec: Arc<Exec>,
}

impl Sink for CrmSink {
    fn apply(&self, action: ChangeAction, revision: i64, object: change::Object) {
        if let change::Object::ExecRequest(r) = object {
            if action == ChangeAction::Update {
                self.exec.answer(r);
            }
            return;
        }
        self.mirror.update(|d| d.apply(action, revision, object));
    }

    fn last_revision(&self) -> i64 {
        let d = self.mirror.snapshot();
        if d.complete { d.revision } else { 0 }
    }

    fn sync_end(&self, revision: i64, keep: Option<&HashSet<String>>) {
        self.mirror.update(|d| {
            let kept = |kind: &str, k: &String| {
                keep.is_none_or(|keep| keep.contains(&format!("{kind}/{k}")))
            };
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
