//! Answers the controller's ExecRequests for this cloudlet: ShowLogs reads an instance's container
//! output, or a VM instance's serial console, through the platform driver.

use std::sync::Arc;

use edge_common::Keyed;
use edge_proto::edge::{ExecRequest, notify_up};

use crate::mirror::Mirror;
use crate::platform::{LogOptions, Platform, PlatformError, Result};
use crate::report::Reporter;

/// Lines returned when the request does not say (`log.tail` 0).
const DEFAULT_TAIL: usize = 1000;

pub struct Exec {
    pub platform: Arc<dyn Platform>,
    pub mirror: Arc<Mirror>,
    pub reporter: Arc<Reporter>,
}

impl Exec {
    /// Reads what `r` asks for in the background and sends the answer (or why it failed) up.
    pub fn answer(self: &Arc<Self>, mut r: ExecRequest) {
        if r.answered {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            // Only the end of a long log travels (a notify message is at most 4 MiB).
            match me.read(&r).await {
                Ok(out) => {
                    r.output = edge_common::tail_bytes(&out, edge_common::MAX_EXEC_OUTPUT).into()
                }
                Err(e) => r.err = e.message,
            }
            r.answered = true;
            let id = format!("ExecRequest/{}", r.id);
            me.reporter.send(&id, notify_up::Msg::ExecReply(r));
        });
    }

    async fn read(&self, r: &ExecRequest) -> Result<String> {
        let key = r.app_inst_key.clone().unwrap_or_default().key_string();
        let desired = self.mirror.snapshot();
        let inst = desired.app_insts.get(&key).ok_or_else(|| {
            PlatformError::permanent(format!("AppInst \"{key}\" is not on this cloudlet"))
        })?;
        let app_key = inst.app_key.clone().unwrap_or_default().key_string();
        let vm = desired
            .apps
            .get(&app_key)
            .is_some_and(|a| a.deployment == "vm");
        let log = r.log.clone().unwrap_or_default();
        let opts = LogOptions {
            tail: usize::try_from(log.tail)
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_TAIL),
            since: Some(log.since.as_str())
                .filter(|s| !s.is_empty())
                .and_then(edge_common::parse_since),
            timestamps: log.timestamps,
        };
        let unsupported =
            || PlatformError::permanent("this cloudlet's platform has no such instances");
        if vm {
            let vms = self.platform.vms().ok_or_else(unsupported)?;
            vms.console_log(&key, opts.tail).await
        } else {
            let clusters = self.platform.clusters().ok_or_else(unsupported)?;
            clusters.app_logs(&key, &r.container_id, opts).await
        }
    }
}
