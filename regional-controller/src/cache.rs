//! In-memory mirror of the region's objects, fed by one etcd watch.
//!
//! API reads (Show), notify syncs and progress streams read from here; writes go to etcd and come back
//! through the watch, so every replica sees exactly what was committed. The watch resumes from the last
//! revision after an error or an etcd restart, and reloads everything when that revision was compacted
//! (subscribers then get [`Event::Reset`] and resync).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use edge_proto::edge::ChangeAction;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::{broadcast, watch};

use crate::objects::{Any, Object, decode};
use crate::store::Store;

/// One committed change of an object.
#[derive(Clone, Debug)]
pub struct Change {
    pub action: ChangeAction,
    pub revision: i64,
    /// etcd key of the object
    pub path: String,
    /// the object after the change, or as it was before a delete (the cache's own copy, shared)
    pub object: Arc<Any>,
}

#[derive(Clone, Debug)]
pub enum Event {
    Change(Arc<Change>),
    /// The cache was reloaded from scratch: resync from a new snapshot.
    Reset,
}

/// Keys per etcd read while loading the region; a page too large for one gRPC reply (large objects) is
/// read again in smaller pages. Large on purpose: etcd (3.4) walks the whole rest of the range for every
/// page to count it, so loading costs keys² / (2 × page) key visits. With 256, 100,000 AppInsts (520,000
/// keys) took 164 s to load; with 4,096, see the README (`edge-bench restart`).
pub const LOAD_PAGE: i64 = 4096;

#[derive(Default)]
struct State {
    /// etcd key → the revision of the object's last change (what a delta resync compares with) and one
    /// copy of the object, shared with the changes and snapshots that carry it
    objects: BTreeMap<String, (i64, Arc<Any>)>,
    /// cloudlet key strings whose CRM holds a notify connection (on any replica)
    connected: BTreeSet<String>,
    /// etcd keys of the public ports held on the cloudlets' shared LBs
    ports: BTreeSet<String>,
    revision: i64,
}

/// Objects by etcd path with the revision of their last change (the cache's shared copies), the revision
/// they reflect, and the changes after it.
pub type Snapshot = (
    Vec<(String, i64, Arc<Any>)>,
    i64,
    broadcast::Receiver<Event>,
);

pub struct Cache {
    store: Store,
    state: RwLock<State>,
    events: broadcast::Sender<Event>,
    revision: watch::Sender<i64>,
    /// false until the first load, and while the watch is broken
    healthy: watch::Sender<bool>,
    /// true once the region was loaded: until then the controller serves nothing (an empty cache is not
    /// an empty region)
    loaded: watch::Sender<bool>,
}

impl Cache {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            state: RwLock::default(),
            events: broadcast::channel(4096).0,
            revision: watch::channel(0).0,
            healthy: watch::channel(false).0,
            loaded: watch::channel(false).0,
        })
    }

    /// Whether the region has been loaded since start.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Waits until the region has been loaded (retries continue in [`run`](Self::run) meanwhile).
    pub async fn wait_loaded(&self) {
        let _ = self.loaded.subscribe().wait_for(|l| *l).await;
    }

    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    pub fn revision(&self) -> i64 {
        self.state.read().expect("cache lock").revision
    }

    /// Waits until the cache reflects etcd revision `rev` (read-your-writes for API callers).
    pub async fn wait_for(&self, rev: i64) {
        let mut rx = self.revision.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r >= rev)).await;
    }

    /// Subscribes to changes and takes a consistent snapshot: every change after the snapshot's revision
    /// arrives on the receiver, none before. Each object comes with the revision of its last change.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.read().expect("cache lock");
        let rx = self.events.subscribe();
        let objs = st
            .objects
            .iter()
            .map(|(k, (rev, o))| (k.clone(), *rev, o.clone()))
            .collect();
        (objs, st.revision, rx)
    }

    /// The objects deleted after revision `since` up to `until`, as they were before their delete, from
    /// etcd's history; `None` when etcd no longer has it (compacted) or cannot be asked. The history is read
    /// with a watch from `since + 1` up to a mark this call writes (so its end is known).
    pub async fn deleted_between(&self, since: i64, until: i64) -> Option<Vec<(String, i64, Any)>> {
        if since >= until {
            return Some(Vec::new());
        }
        let mark = format!("{}Mark/{}", self.store.root(), std::process::id());
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(since + 1)
            .with_prev_key();
        let mut client = self.store.client.clone();
        let mut stream = client.watch(self.store.root(), Some(opts)).await.ok()?;
        let mark_rev = client
            .put(mark.clone(), "", None)
            .await
            .ok()?
            .header()
            .map(|h| h.revision())?;
        let mut out = Vec::new();
        let read = async {
            while let Some(resp) = stream.message().await.ok()? {
                if resp.compact_revision() > 0 || resp.canceled() {
                    return None;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    if kv.mod_revision() >= mark_rev {
                        return Some(());
                    }
                    if ev.event_type() != EventType::Delete || kv.mod_revision() > until {
                        continue;
                    }
                    let path = String::from_utf8_lossy(kv.key()).into_owned();
                    if let (Some(Entry::Object(kind)), Some(prev)) =
                        (self.classify(&path), ev.prev_kv())
                        && let Some(Ok(obj)) = decode(kind, prev.value())
                    {
                        out.push((path, kv.mod_revision(), obj));
                    }
                }
            }
            None
        };
        let done = tokio::time::timeout(Duration::from_secs(10), read).await;
        let _ = client.delete(mark, None).await;
        done.ok()??;
        Some(out)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The revision of the last change of the object at etcd `path`, as far as the cache has seen.
    pub fn revision_of(&self, path: &str) -> Option<i64> {
        let st = self.state.read().expect("cache lock");
        st.objects.get(path).map(|(rev, _)| *rev)
    }

    /// The cache's copy of `key` with the revision of its last change, read together (a guard on that
    /// revision holds exactly when the copy is still what etcd has).
    pub fn get_versioned<T: Object>(&self, key: &str) -> Option<crate::store::Versioned<T>> {
        let st = self.state.read().expect("cache lock");
        let (rev, obj) = st.objects.get(&self.store.path(T::KIND, key))?;
        Some(crate::store::Versioned {
            obj: T::from_any(obj)?.clone(),
            rev: *rev,
        })
    }

    pub fn get<T: Object>(&self, key: &str) -> Option<T> {
        let st = self.state.read().expect("cache lock");
        st.objects
            .get(&self.store.path(T::KIND, key))
            .and_then(|(_, a)| T::from_any(a))
            .cloned()
    }

    pub fn get_path(&self, path: &str) -> Option<Any> {
        self.state
            .read()
            .expect("cache lock")
            .objects
            .get(path)
            .map(|(_, a)| Any::clone(a))
    }

    /// Every object of kind `T`.
    pub fn list<T: Object>(&self) -> Vec<T> {
        self.list_where(|_: &T| true)
    }

    /// Copies of the objects of kind `T` that pass `keep` (the others are not copied).
    pub fn list_where<T: Object>(&self, keep: impl Fn(&T) -> bool) -> Vec<T> {
        let prefix = edge_common::store_prefix(&self.store.region, T::KIND);
        let st = self.state.read().expect("cache lock");
        st.objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, (_, v))| T::from_any(v).filter(|o| keep(o)).cloned())
            .collect()
    }

    /// Whether an object of kind `T` passes `pred` (read in place, nothing copied). `pred` must not use
    /// the cache.
    pub fn any<T: Object>(&self, pred: impl Fn(&T) -> bool) -> bool {
        let prefix = edge_common::store_prefix(&self.store.region, T::KIND);
        let st = self.state.read().expect("cache lock");
        st.objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, (_, v))| T::from_any(v))
            .any(pred)
    }

    /// Number of objects of kind `T` of organization `org`.
    pub fn count_in_org<T: Object>(&self, org: &str) -> usize {
        let prefix = format!(
            "{}{org}/",
            edge_common::store_prefix(&self.store.region, T::KIND)
        );
        let st = self.state.read().expect("cache lock");
        st.objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .count()
    }

    /// The held public-port keys that start with `prefix` (one cloudlet's), as far as the cache has seen.
    pub fn ports_under(&self, prefix: &str) -> Vec<String> {
        let st = self.state.read().expect("cache lock");
        st.ports
            .range(prefix.to_string()..)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn is_connected(&self, cloudlet: &str) -> bool {
        self.state
            .read()
            .expect("cache lock")
            .connected
            .contains(cloudlet)
    }

    /// Number of objects per kind, for metrics.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for (_, o) in self.state.read().expect("cache lock").objects.values() {
            *counts.entry(crate::objects::kind_of(o)).or_default() += 1;
        }
        counts
    }

    /// Keeps the cache in sync with etcd until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut resume_from = None;
        loop {
            let from = match resume_from {
                Some(rev) => rev,
                None => match self.load().await {
                    Ok(rev) => rev,
                    Err(e) => {
                        tracing::warn!(error = %e, "loading the region from etcd failed; retrying");
                        self.healthy.send_replace(false);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            match self.watch_from(from + 1).await {
                WatchEnd::Compacted => {
                    tracing::warn!(
                        revision = from,
                        "watch revision was compacted; reloading the region"
                    );
                    resume_from = None;
                }
                WatchEnd::Error(e) => {
                    tracing::warn!(error = %e, "etcd watch broke; resuming from revision {}", self.revision());
                    self.healthy.send_replace(false);
                    resume_from = Some(self.revision());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Loads every key of the region, in pages of [`LOAD_PAGE`] keys all read at the revision of the first
    /// page (one consistent snapshot however large the region: no single reply grows with it); returns
    /// that revision.
    async fn load(&self) -> Result<i64, etcd_client::Error> {
        let root = self.store.root();
        let mut end = root.clone().into_bytes();
        // The key just past every key with the prefix: the root ends in '/', whose successor is '0'.
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut kv = self.store.client.kv_client();
        let mut from = root.clone().into_bytes();
        let mut rev = 0;
        let mut page = LOAD_PAGE;
        let mut fresh = State::default();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(page);
            if rev > 0 {
                opts = opts.with_revision(rev);
            }
            let resp = match kv.get(from.clone(), Some(opts)).await {
                Ok(r) => r,
                // A page of large objects exceeds one gRPC reply: read fewer keys at a time.
                Err(e) if page > 1 && e.to_string().contains("message length too large") => {
                    page /= 4;
                    tracing::info!(page, "large objects: loading the region in smaller pages");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if rev == 0 {
                rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            for kv in resp.kvs() {
                let path = String::from_utf8_lossy(kv.key()).into_owned();
                match self.classify(&path) {
                    Some(Entry::Object(kind)) => match decode(kind, kv.value()) {
                        Some(Ok(obj)) => {
                            fresh
                                .objects
                                .insert(path, (kv.mod_revision(), Arc::new(obj)));
                        }
                        Some(Err(e)) => {
                            tracing::error!(key = %path, error = %e, "skipping unreadable stored object")
                        }
                        None => {}
                    },
                    Some(Entry::Conn(c)) => {
                        fresh.connected.insert(c);
                    }
                    Some(Entry::Port) => {
                        fresh.ports.insert(path);
                    }
                    None => {}
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        fresh.revision = rev;
        {
            let mut st = self.state.write().expect("cache lock");
            *st = fresh;
            // Subscribers (none at the first load) resync from a new snapshot.
            let _ = self.events.send(Event::Reset);
        }
        self.revision.send_replace(rev);
        self.healthy.send_replace(true);
        self.loaded.send_replace(true);
        tracing::info!(
            revision = rev,
            objects = self.state.read().expect("cache lock").objects.len(),
            "region loaded"
        );
        Ok(rev)
    }

    async fn watch_from(&self, start: i64) -> WatchEnd {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start)
            .with_progress_notify();
        let mut stream = match self
            .store
            .client
            .watch_client()
            .watch(self.store.root(), Some(opts))
            .await
        {
            Ok(s) => s,
            Err(e) => return WatchEnd::Error(e.to_string()),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return WatchEnd::Error("watch stream ended".into()),
                Err(e) => return WatchEnd::Error(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return WatchEnd::Compacted;
            }
            if resp.canceled() {
                return WatchEnd::Error(format!("watch canceled: {}", resp.cancel_reason()));
            }
            self.healthy.send_replace(true);
            let header_rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            let mut st = self.state.write().expect("cache lock");
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let path = String::from_utf8_lossy(kv.key()).into_owned();
                let rev = kv.mod_revision();
                st.revision = st.revision.max(rev);
                match (self.classify(&path), ev.event_type()) {
                    (Some(Entry::Object(kind)), EventType::Put) => match decode(kind, kv.value()) {
                        Some(Ok(obj)) => {
                            let obj = Arc::new(obj);
                            st.objects.insert(path.clone(), (rev, obj.clone()));
                            let c = Change {
                                action: ChangeAction::Update,
                                revision: rev,
                                path,
                                object: obj,
                            };
                            let _ = self.events.send(Event::Change(Arc::new(c)));
                        }
                        Some(Err(e)) => {
                            tracing::error!(key = %path, error = %e, "ignoring unreadable stored object")
                        }
                        None => {}
                    },
                    (Some(Entry::Object(_)), EventType::Delete) => {
                        if let Some((_, obj)) = st.objects.remove(&path) {
                            let c = Change {
                                action: ChangeAction::Delete,
                                revision: rev,
                                path,
                                object: obj,
                            };
                            let _ = self.events.send(Event::Change(Arc::new(c)));
                        }
                    }
                    (Some(Entry::Conn(c)), EventType::Put) => {
                        st.connected.insert(c);
                    }
                    (Some(Entry::Conn(c)), EventType::Delete) => {
                        st.connected.remove(&c);
                    }
                    (Some(Entry::Port), EventType::Put) => {
                        st.ports.insert(path);
                    }
                    (Some(Entry::Port), EventType::Delete) => {
                        st.ports.remove(&path);
                    }
                    (None, _) => {}
                }
            }
            // A progress notification (no events) says everything up to its header revision was seen. With
            // events, or in the watch-created reply, the header may be ahead of events still to come.
            if resp.events().is_empty() && !resp.created() {
                st.revision = st.revision.max(header_rev);
            }
            let rev = st.revision;
            drop(st);
            self.revision.send_replace(rev);
        }
    }

    fn classify<'a>(&self, path: &'a str) -> Option<Entry<'a>> {
        let rest = path.strip_prefix(&self.store.root())?;
        let (kind, key) = rest.split_once('/')?;
        match kind {
            "Conn" => Some(Entry::Conn(key.to_string())),
            "Port" => Some(Entry::Port),
            "Ref" | "Mark" => None,
            k => Some(Entry::Object(k)),
        }
    }
}

enum Entry<'a> {
    Object(&'a str),
    Conn(String),
    Port,
}

enum WatchEnd {
    Compacted,
    Error(String),
}
