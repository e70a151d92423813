//! The gRPC API (port 55001): one tonic service per kind, sharing the helpers below.
//!
//! Writes are etcd transactions built from what the handler read (create: key absent; update: revision
//! unchanged; references: target revision unchanged and a reference key written). A transaction that
//! loses a race is rebuilt from fresh reads a few times before the caller gets `Aborted`.

pub(crate) mod alert;
pub mod alert_policy;
mod app;
mod app_inst;
mod cloudlet;
mod cluster_inst;
mod exec;
mod flavor;
mod operator_code;

use edge_proto::edge::{ChangeAction, Progress, Result as ApiResult, TrackedState};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::Config;
use crate::cache::{Cache, Event};
use crate::error::{CtrlError, Result};
use crate::objects::{Object, Tracked};
use crate::store::{Store, Write};

pub use alert::AlertService;
pub use alert_policy::AlertPolicyService;
pub use app::AppService;
pub use app_inst::AppInstService;
pub use app_inst::held_ports;
pub use cloudlet::CloudletService;
pub use cluster_inst::ClusterInstService;
pub use exec::ExecService;
pub use flavor::FlavorService;
pub use operator_code::OperatorCodeService;

/// How many times a write is rebuilt after losing a race.
const RETRIES: usize = 8;

pub type ProgressStream = ReceiverStream<Result<Progress, Status>>;

/// A progress stream of one final message: the object is gone.
pub(crate) fn progress_done(message: &str) -> ProgressStream {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Ok(Progress {
        message: message.into(),
        state: edge_proto::edge::TrackedState::NotPresent as i32,
        access: None,
    }));
    ReceiverStream::new(rx)
}
pub type ObjectStream<T> = ReceiverStream<Result<T, Status>>;

/// State shared by every API service.
#[derive(Clone)]
pub struct Api {
    pub store: Store,
    pub cache: Arc<Cache>,
    pub config: Arc<Config>,
    /// PEM of the region's CA when the controller serves mTLS (given to CRMs at onboarding)
    pub ca: Option<String>,
    /// where App env values are kept (Vault), with PKI; without, they stay in etcd
    pub secrets: Option<Arc<crate::secrets::AppSecrets>>,
}

impl Api {
    /// Refuses a create that would take organization `org` past its quota of `T`.
    pub(crate) fn check_org_quota<T: Object>(&self, org: &str) -> Result<()> {
        let n = self.cache.count_in_org::<T>(org);
        if n >= self.config.org_quota {
            return Err(CtrlError::QuotaExceeded(format!(
                "organization \"{org}\" has {n} {} objects in this region, its quota is {}: delete some first",
                T::KIND,
                self.config.org_quota
            )));
        }
        Ok(())
    }

    /// Runs `attempt` until it commits (`Some(revision)`) or fails; `None` means "lost a race, rebuild".
    /// Waits until the cache reflects the write, so a following Show sees it.
    pub(crate) async fn write<F, Fut>(&self, what: &str, mut attempt: F) -> Result<i64>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<i64>>>,
    {
        for lost in 0..RETRIES {
            if let Some(rev) = attempt().await? {
                self.cache.wait_for(rev).await;
                return Ok(rev);
            }
            // Callers that lost the same race (all taking the lowest free port, say) would meet again
            // at once: each waits a random while, up to 2, 4, ... 64 ms, before it reads afresh.
            let max = std::time::Duration::from_millis(2 << lost.min(5));
            tokio::time::sleep(edge_common::notify_client::jitter(max)).await;
        }
        Err(CtrlError::Conflict(what.to_string()))
    }

    /// `key` of kind `T` and the revision to guard a write with: from the cache with `cached` when it
    /// holds it (if the cache is behind, the guard fails the transaction and the next attempt reads
    /// etcd), else from etcd.
    pub(crate) async fn read<T: Object>(
        &self,
        key: &str,
        cached: bool,
    ) -> Result<crate::store::Versioned<T>> {
        match self.cache.get_versioned(key).filter(|_| cached) {
            Some(v) => Ok(v),
            None => self.store.must_get(key).await,
        }
    }

    /// Guards the write with the revisions of the targets of `refs`, failing with NotFound for the first
    /// missing one. With `cached`, a revision comes from the cache when it holds the target (no read
    /// from etcd; if the cache is behind, the transaction fails and the next attempt reads etcd); a
    /// target the cache does not hold is always read from etcd (another replica may have just made it).
    /// A target the write guards already (read by the caller) is not guarded again.
    pub(crate) async fn guard_refs(
        &self,
        w: &mut Write,
        refs: &[(&'static str, String)],
        cached: bool,
    ) -> Result<()> {
        for (kind, key) in refs {
            let path = self.store.path(kind, key);
            if w.guards(&path) {
                continue;
            }
            if let Some(rev) = self.cache.revision_of(&path).filter(|_| cached) {
                w.unchanged(&path, rev);
                continue;
            }
            let resp = self
                .store
                .client
                .kv_client()
                .get(path.as_str(), None)
                .await?;
            let kv = resp
                .kvs()
                .first()
                .ok_or_else(|| CtrlError::NotFound(format!("{kind} \"{key}\"")))?;
            w.unchanged(&path, kv.mod_revision());
        }
        Ok(())
    }

    /// Creates `obj` with its reference keys; `AlreadyExists` if the key is taken.
    pub(crate) async fn create_plain<T: Object>(&self, obj: &T) -> Result<i64> {
        let path = self.store.path_of(obj);
        let refs = obj.references();
        let mut attempts = 0;
        self.write(&obj.describe(), || {
            attempts += 1;
            let first = attempts == 1;
            let (path, refs) = (&path, &refs);
            async move {
                let mut w = Write::default();
                self.guard_refs(&mut w, refs, first).await?;
                w.absent(path);
                self.store.put_obj(&mut w, obj);
                self.store.put_refs(&mut w, obj, refs);
                let done = self.store.commit(w).await?;
                if done.is_none() && self.store.get::<T>(&obj.key_string()).await?.is_some() {
                    return Err(CtrlError::AlreadyExists(obj.describe()));
                }
                Ok(done)
            }
        })
        .await
    }

    /// Reads `key`, lets `change` edit it (it may fail), and writes it back guarded by its revision,
    /// moving reference keys if the references changed.
    pub(crate) async fn update_plain<T: Object>(
        &self,
        key: &str,
        change: impl Fn(&mut T) -> Result<()>,
    ) -> Result<T> {
        self.update_guarded(key, false, change).await
    }

    /// [`update_plain`](Self::update_plain); with `unused`, only while nothing refers to the object,
    /// checked inside the same transaction (a concurrent create of a referrer makes it retry and fail).
    pub(crate) async fn update_guarded<T: Object>(
        &self,
        key: &str,
        unused: bool,
        change: impl Fn(&mut T) -> Result<()>,
    ) -> Result<T> {
        let result = std::sync::Mutex::new(None);
        self.write(&format!("{} \"{key}\"", T::KIND), || {
            let result = &result;
            let change = &change;
            async move {
                let cur = self.store.must_get::<T>(key).await?;
                let mut obj = cur.obj.clone();
                change(&mut obj)?;
                let (old_refs, new_refs) = (cur.obj.references(), obj.references());
                let mut w = Write::default();
                w.unchanged(&self.store.path_of(&obj), cur.rev);
                if unused {
                    self.guard_unused::<T>(&mut w, key).await?;
                }
                if old_refs != new_refs {
                    // Only the references that change move: a key may appear once per transaction.
                    let gone: Vec<_> = old_refs
                        .iter()
                        .filter(|r| !new_refs.contains(r))
                        .cloned()
                        .collect();
                    let added: Vec<_> = new_refs
                        .iter()
                        .filter(|r| !old_refs.contains(r))
                        .cloned()
                        .collect();
                    self.guard_refs(&mut w, &added, false).await?;
                    self.store.delete_refs(&mut w, &obj, &gone);
                    self.store.put_refs(&mut w, &obj, &added);
                }
                self.store.put_obj(&mut w, &obj);
                let done = self.store.commit(w).await?;
                *result.lock().expect("not poisoned") = Some(obj);
                Ok(done)
            }
        })
        .await?;
        Ok(result
            .into_inner()
            .expect("not poisoned")
            .expect("set by the committed attempt"))
    }

    /// Deletes `key` unless something refers to it (FailedPrecondition naming the referrers).
    pub(crate) async fn delete_plain<T: Object>(&self, key: &str) -> Result<i64> {
        self.write(&format!("{} \"{key}\"", T::KIND), || async {
            let cur = self.store.must_get::<T>(key).await?;
            let mut w = Write::default();
            self.guard_unused::<T>(&mut w, key).await?;
            w.unchanged(&self.store.path_of(&cur.obj), cur.rev);
            w.delete(&self.store.path_of(&cur.obj));
            self.store
                .delete_refs(&mut w, &cur.obj, &cur.obj.references());
            self.store.commit(w).await
        })
        .await
    }

    /// Fails if anything refers to `T key`; otherwise guards that nothing starts to in the same write.
    pub(crate) async fn guard_unused<T: Object>(&self, w: &mut Write, key: &str) -> Result<()> {
        let users = self.store.referrers(T::KIND, key).await?;
        if !users.is_empty() {
            return Err(CtrlError::FailedPrecondition(format!(
                "{} \"{key}\" is in use by {}",
                T::KIND,
                users.join(", ")
            )));
        }
        w.empty_prefix(&self.store.refs_prefix(T::KIND, key));
        Ok(())
    }

    /// Objects of kind `T` matching `filter` (every key field set in the filter must match).
    pub(crate) fn show<T: Object>(&self, keep: impl Fn(&T) -> bool) -> ObjectStream<T> {
        let objs: Vec<T> = self.cache.list_where(keep);
        let (tx, rx) = mpsc::channel(objs.len().max(1));
        for o in objs {
            let _ = tx.try_send(Ok(o));
        }
        ReceiverStream::new(rx)
    }

    /// Streams the progress of a tracked object until `goal`, an error state, or the lifecycle timeout.
    /// `events` must be subscribed before the write that started the operation.
    pub(crate) fn follow<T: Tracked>(
        &self,
        key: String,
        events: broadcast::Receiver<Event>,
        goal: Goal,
        first: Vec<Progress>,
    ) -> ProgressStream {
        let (tx, rx) = mpsc::channel(64);
        let cache = self.cache.clone();
        let path = self.store.path(T::KIND, &key);
        let timeout = self.config.lifecycle_timeout;
        // The follower runs on its own: a caller that goes away stops only the stream, never the work.
        tokio::spawn(async move {
            let mut f = Follower {
                tx,
                sent_status: 0,
                state: None,
                desc: format!("{} \"{key}\"", T::KIND),
            };
            for p in first {
                if f.tx.send(Ok(p)).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut events = events;
            // The write may already be followed by reports: start from the cache's current view. Only a
            // new view of this object is looked at (`fresh`): other objects' changes leave it as it was.
            let mut current = cache.get_path(&path);
            let mut fresh = true;
            loop {
                if std::mem::take(&mut fresh) {
                    match &current {
                        Some(obj) => match T::from_any(obj) {
                            Some(o) => {
                                if f.observe(o, goal).await {
                                    return;
                                }
                            }
                            None => return,
                        },
                        None if goal == Goal::Gone => {
                            let msg = format!("{} deleted", f.desc);
                            f.send(msg, TrackedState::NotPresent).await;
                            return;
                        }
                        None => {}
                    }
                }
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(Event::Change(c)) if c.path == path => {
                            current = match c.action {
                                ChangeAction::Delete => None,
                                _ => Some(crate::objects::Any::clone(&c.object)),
                            };
                            fresh = true;
                            if current.is_none() && goal != Goal::Gone {
                                let _ = f.tx.send(Err(Status::not_found(format!("{} was deleted", f.desc)))).await;
                                return;
                            }
                        }
                        Ok(Event::Change(_)) => {}
                        Ok(Event::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            current = cache.get_path(&path);
                            fresh = true;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // Nobody follows any more: stop looking at every change of the region for it.
                    () = f.tx.closed() => return,
                    _ = &mut deadline => {
                        let state = f.state.map(|s| s.as_str_name()).unwrap_or("unknown");
                        let msg = format!(
                            "timed out after {} s waiting for {}; it is {state}, the cloudlet's CRM continues \
                             the work when it is connected: show the object to follow it, or retry",
                            timeout.as_secs(), f.desc
                        );
                        let _ = f.tx.send(Err(CtrlError::Timeout(msg).into())).await;
                        return;
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

/// What a followed operation waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Goal {
    Ready,
    Gone,
}

struct Follower {
    tx: mpsc::Sender<Result<Progress, Status>>,
    sent_status: usize,
    state: Option<TrackedState>,
    desc: String,
}

impl Follower {
    async fn send(&mut self, message: String, state: TrackedState) {
        let _ = self
            .tx
            .send(Ok(Progress {
                message,
                state: state as i32,
                access: None,
            }))
            .await;
    }

    /// Sends what is new in `o`; true when the operation is over.
    async fn observe<T: Tracked>(&mut self, o: &T, goal: Goal) -> bool {
        let state = o.state();
        if o.status().len() < self.sent_status {
            self.sent_status = 0;
        }
        for m in o.status()[self.sent_status..].iter().cloned() {
            self.send(m, state).await;
        }
        self.sent_status = o.status().len();
        let changed = self.state != Some(state);
        self.state = Some(state);
        match state {
            TrackedState::Ready if goal == Goal::Ready => {
                self.send(format!("{} is ready", self.desc), state).await;
                true
            }
            TrackedState::CreateError | TrackedState::UpdateError | TrackedState::DeleteError => {
                let errors = o.errors().join("; ");
                self.send(format!("{} failed: {errors}", self.desc), state)
                    .await;
                let msg = format!("{} is {}: {errors}", self.desc, state.as_str_name());
                let _ = self.tx.send(Err(Status::failed_precondition(msg))).await;
                true
            }
            _ => {
                if changed {
                    self.send(format!("{} is {}", self.desc, state.as_str_name()), state)
                        .await;
                }
                false
            }
        }
    }
}

fn result(message: impl Into<String>) -> ApiResult {
    ApiResult {
        message: message.into(),
    }
}

/// Whether the key field `filter` is empty or equal to `value`.
fn matches(filter: &str, value: &str) -> bool {
    filter.is_empty() || filter == value
}

/// Applies a CRM report for a tracked object: legal transitions only.
pub fn legal_transition(from: TrackedState, to: TrackedState) -> bool {
    use TrackedState::*;
    match from {
        CreateRequested | Creating => matches!(to, Creating | Ready | CreateError),
        UpdateRequested | Updating => matches!(to, Updating | Ready | UpdateError),
        DeleteRequested | Deleting => matches!(to, Deleting | NotPresent | DeleteError),
        Ready => to == Ready,
        _ => false,
    }
}

/// Time for `created_at` / `updated_at`.
fn now() -> i64 {
    edge_common::now_ms()
}

impl Api {
    /// Create of an object that already exists: one in CREATE_ERROR gets its creation retried with its
    /// stored spec; anything else is `AlreadyExists`.
    pub(crate) async fn retry_create<T: Tracked>(
        &self,
        key: &str,
        exists: CtrlError,
    ) -> Result<()> {
        match self.store.get::<T>(key).await? {
            Some(cur) if cur.obj.state() == TrackedState::CreateError => {
                self.update_plain::<T>(key, |o| {
                    if o.state() != TrackedState::CreateError {
                        return Err(CtrlError::FailedPrecondition(format!(
                            "{} changed state meanwhile",
                            o.describe()
                        )));
                    }
                    o.request(TrackedState::CreateRequested);
                    Ok(())
                })
                .await?;
                Ok(())
            }
            _ => Err(exists),
        }
    }

    /// Creates a tracked object (`CREATE_REQUESTED`) with `create`, or retries one in CREATE_ERROR, and
    /// streams its progress.
    pub(crate) async fn create_tracked<T: Tracked>(
        &self,
        key: String,
        create: impl Future<Output = Result<i64>>,
    ) -> Result<ProgressStream> {
        let events = self.cache.subscribe();
        let mut first = Vec::new();
        match create.await {
            Ok(_) => {}
            Err(e @ CtrlError::AlreadyExists(_)) => {
                self.retry_create::<T>(&key, e).await?;
                let message = format!(
                    "{} \"{key}\" was in CREATE_ERROR: retrying its creation",
                    T::KIND
                );
                first.push(Progress {
                    message,
                    state: TrackedState::CreateRequested as i32,
                    access: None,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(self.follow::<T>(key, events, Goal::Ready, first))
    }

    /// Moves a READY tracked object to `UPDATE_REQUESTED` after `change`, and streams its progress.
    pub(crate) async fn update_tracked<T: Tracked>(
        &self,
        key: String,
        change: impl Fn(&mut T),
    ) -> Result<ProgressStream> {
        let events = self.cache.subscribe();
        self.update_plain::<T>(&key, |o| {
            if o.state() != TrackedState::Ready {
                return Err(CtrlError::FailedPrecondition(format!(
                    "{} is {}: only a READY object can be updated",
                    o.describe(),
                    o.state().as_str_name()
                )));
            }
            change(o);
            o.request(TrackedState::UpdateRequested);
            Ok(())
        })
        .await?;
        // The cache may still hold the object as it was (READY): follow from the update on.
        if let Some(cur) = self.store.get::<T>(&key).await? {
            self.cache.wait_for(cur.rev).await;
        }
        Ok(self.follow::<T>(key, events, Goal::Ready, Vec::new()))
    }

    /// Moves a tracked object that nothing refers to to `DELETE_REQUESTED` (the CRM's NOT_PRESENT report
    /// removes it), and streams its progress. A delete already under way is only followed.
    pub(crate) async fn delete_tracked<T: Tracked>(&self, key: String) -> Result<ProgressStream> {
        let events = self.cache.subscribe();
        self.write(&format!("{} \"{key}\"", T::KIND), || async {
            let cur = self.store.must_get::<T>(&key).await?;
            if matches!(
                cur.obj.state(),
                TrackedState::DeleteRequested | TrackedState::Deleting
            ) {
                return Ok(Some(cur.rev));
            }
            let mut w = Write::default();
            self.guard_unused::<T>(&mut w, &key).await?;
            w.unchanged(&self.store.path_of(&cur.obj), cur.rev);
            let mut obj = cur.obj;
            obj.request(TrackedState::DeleteRequested);
            self.store.put_obj(&mut w, &obj);
            self.store.commit(w).await
        })
        .await?;
        Ok(self.follow::<T>(key, events, Goal::Gone, Vec::new()))
    }
}
