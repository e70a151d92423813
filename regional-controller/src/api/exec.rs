//! ExecApi (MobiledgeX's): ShowLogs returns an AppInst's container logs, or a VM AppInst's console log,
//! read by the CRM of its cloudlet.
//!
//! The request is stored as `ExecRequest/<id>` on an etcd lease that outlives the caller's wait by a few
//! seconds, so a request whose caller went away disappears by itself. Notify hands it to the CRM of the
//! instance's cloudlet (from whichever replica holds that CRM's stream); the CRM's answer is written into
//! the same key, through which the waiting call (on any replica) gets it. The call then revokes the
//! lease, which deletes the key.

use std::time::Duration;

use edge_common::Keyed;
use edge_proto::edge::exec_api_server::ExecApi;
use edge_proto::edge::{AppInst, CloudletKey, ExecRequest};
use etcd_client::PutOptions;
use tonic::{Request, Response, Status};

use super::Api;
use crate::cache::Event;
use crate::error::{CtrlError, Result, invalid};
use crate::objects::Any;
use crate::store::Write;
use crate::validate;

pub struct ExecService(pub Api);

/// How long ShowLogs waits for the cloudlet by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(15);
const MAX_WAIT: Duration = Duration::from_secs(60);
use edge_common::{MAX_EXEC_OUTPUT, tail_bytes};

fn validate(r: &ExecRequest) -> Result<Duration> {
    let key = r.app_inst_key.clone().unwrap_or_default();
    validate::name("app_inst_key.organization", &key.organization)?;
    validate::name("app_inst_key.name", &key.name)?;
    if r.cmd.is_some() || r.console.is_some() {
        return Err(invalid(
            "ShowLogs takes log options only: leave cmd and console out",
        ));
    }
    if let Some(log) = &r.log {
        if log.follow {
            return Err(invalid(
                "log.follow is not supported: call ShowLogs again (with log.since) for newer lines",
            ));
        }
        if !log.since.is_empty() && edge_common::parse_since(&log.since).is_none() {
            return Err(invalid(format!(
                "log.since \"{}\" is neither a duration (30s, 5m, 3h) nor an RFC 3339 time (2026-11-30T12:00:00Z)",
                log.since
            )));
        }
        if log.tail < 0 {
            return Err(invalid(format!(
                "log.tail must be 0 (the last 1000 lines) or a positive number of lines, not {}",
                log.tail
            )));
        }
    }
    match r.timeout {
        0 => Ok(DEFAULT_WAIT),
        t if t < 0 || t as u128 > MAX_WAIT.as_nanos() => Err(invalid(format!(
            "timeout is in nanoseconds, between 1 and {} (60 s); 0 means 15 s",
            MAX_WAIT.as_nanos()
        ))),
        t => Ok(Duration::from_nanos(t as u64)),
    }
}

#[tonic::async_trait]
impl ExecApi for ExecService {
    async fn run_command(&self, _: Request<ExecRequest>) -> Result<Response<ExecRequest>, Status> {
        Err(Status::unimplemented(
            "RunCommand is not served by this platform: ShowLogs returns an instance's logs",
        ))
    }

    async fn run_console(&self, _: Request<ExecRequest>) -> Result<Response<ExecRequest>, Status> {
        Err(Status::unimplemented(
            "RunConsole is not served by this platform: ShowLogs on a VM AppInst returns its console log",
        ))
    }

    async fn show_logs(&self, req: Request<ExecRequest>) -> Result<Response<ExecRequest>, Status> {
        let mut r = req.into_inner();
        let wait = validate(&r)?;
        let api = &self.0;
        let key = r.app_inst_key.clone().unwrap_or_default().key_string();
        let inst = api
            .cache
            .get::<AppInst>(&key)
            .ok_or_else(|| CtrlError::NotFound(format!("AppInst \"{key}\"")))?;
        let cloudlet = inst.cloudlet_key.clone().unwrap_or_default();
        if !api.cache.is_connected(&cloudlet.key_string()) {
            return Err(CtrlError::Unavailable(format!(
                "the CRM of cloudlet \"{}\" is not connected, and logs are read on the cloudlet: retry once it is online",
                cloudlet.key_string()
            ))
            .into());
        }
        r.id = edge_common::ksuid();
        r.cloudlet_key = Some(cloudlet.clone());
        (r.output, r.err, r.answered) = (String::new(), String::new(), false);
        let answer = ask(api, &r, wait).await?;
        match answer {
            Some(a) if a.err.is_empty() => Ok(Response::new(a)),
            Some(a) => Err(CtrlError::FailedPrecondition(a.err).into()),
            None => Err(CtrlError::Timeout(format!(
                "the CRM of cloudlet \"{}\" did not answer within {} s",
                cloudlet.key_string(),
                wait.as_secs()
            ))
            .into()),
        }
    }
}

/// Stores `r` on a lease, waits up to `wait` for its answer, and removes it.
async fn ask(api: &Api, r: &ExecRequest, wait: Duration) -> Result<Option<ExecRequest>> {
    let path = api.store.path_of(r);
    let mut events = api.cache.subscribe();
    let mut leases = api.store.client.lease_client();
    let lease = leases.grant(wait.as_secs() as i64 + 5, None).await?.id();
    let json = serde_json::to_vec(r).expect("protobuf messages always serialize");
    api.store
        .client
        .kv_client()
        .put(
            path.as_str(),
            json,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    let answered = |o: &Any| match o {
        Any::ExecRequest(a) if a.answered => Some(a.clone()),
        _ => None,
    };
    let answer = tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(Event::Change(c)) if c.path == path => {
                    if let Some(a) = answered(&c.object) {
                        return Some(a);
                    }
                }
                Ok(Event::Change(_)) => {}
                Ok(Event::Reset) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(a) = api.cache.get_path(&path).as_ref().and_then(answered) {
                        return Some(a);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    // The key goes with its lease (and with the lease's expiry, should this fail).
    if let Err(e) = leases.revoke(lease).await {
        tracing::warn!(error = %e, request = %r.id, "revoking an ExecRequest's lease failed; it expires by itself");
    }
    Ok(answer)
}

impl Api {
    /// Stores the answer the CRM of `cloudlet` gives to one of its ExecRequests (keeping the request's
    /// lease). Answers to requests that are gone, answered, or of another cloudlet are dropped.
    pub async fn apply_exec_reply(&self, cloudlet: &CloudletKey, reply: ExecRequest) -> Result<()> {
        if reply.id.is_empty() {
            return Ok(());
        }
        self.write(&format!("ExecRequest \"{}\"", reply.id), || async {
            let Some(cur) = self.store.get::<ExecRequest>(&reply.id).await? else {
                return Ok(Some(0));
            };
            if cur.obj.cloudlet_key.as_ref() != Some(cloudlet) || cur.obj.answered {
                return Ok(Some(0));
            }
            let mut answered = cur.obj;
            answered.output = tail_bytes(&reply.output, MAX_EXEC_OUTPUT).to_string();
            answered.err = tail_bytes(&reply.err, 4096).to_string();
            answered.answered = true;
            let path = self.store.path_of(&answered);
            let mut w = Write::default();
            w.unchanged(&path, cur.rev);
            w.put_keeping_lease(&path, serde_json::to_vec(&answered).expect("serializes"));
            self.store.commit(w).await
        })
        .await
        .map(drop)
    }
}
