//! The etcd store of one region.
//!
//! Layout under `/edge/<region>/`:
//! - `<Kind>/<key>`: the object as JSON (readable with `etcdctl get --prefix /edge/`).
//! - `Ref/<TargetKind>/<target key>/<SourceKind>/<source key>`: one key per reference, written and removed
//!   in the same transaction as the referring object, so a delete can check "unused" atomically.
//! - `Port/<cloudlet key>/<tcp|udp>/<port>`: public ports held on a cloudlet's shared root LB.
//! - `Conn/<cloudlet key>`: present while the cloudlet's CRM is connected (bound to an etcd lease).
//!
//! Every write is a transaction: create = key absent, update = unchanged mod revision.

use edge_common::{Keyed, store_prefix};
use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};

use crate::error::{CtrlError, Result};
use crate::objects::Object;

/// An object with the etcd mod revision it was read at.
#[derive(Clone, Debug)]
pub struct Versioned<T> {
    pub obj: T,
    pub rev: i64,
}

/// Compares and operations of one transaction, built up by the API handlers.
#[derive(Default)]
pub struct Write {
    pub when: Vec<Compare>,
    pub ops: Vec<TxnOp>,
    /// keys guarded by [`unchanged`](Self::unchanged)
    guarded: std::collections::HashSet<String>,
}

impl Write {
    pub fn absent(&mut self, key: &str) {
        self.when
            .push(Compare::create_revision(key, CompareOp::Equal, 0));
    }
    pub fn unchanged(&mut self, key: &str, rev: i64) {
        self.when
            .push(Compare::mod_revision(key, CompareOp::Equal, rev));
        self.guarded.insert(key.to_string());
    }
    /// Whether the write already guards `key` at a revision.
    pub fn guards(&self, key: &str) -> bool {
        self.guarded.contains(key)
    }
    /// No key exists under `prefix`.
    pub fn empty_prefix(&mut self, prefix: &str) {
        self.when
            .push(Compare::create_revision(prefix, CompareOp::Equal, 0).with_prefix());
    }
    pub fn put(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.ops.push(TxnOp::put(key, value, None));
    }
    /// Puts `value` and keeps the lease the key is on (an ExecRequest's).
    pub fn put_keeping_lease(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        let opts = etcd_client::PutOptions::new().with_ignore_lease();
        self.ops.push(TxnOp::put(key, value, Some(opts)));
    }
    pub fn delete(&mut self, key: &str) {
        self.ops.push(TxnOp::delete(key, None));
    }
}

#[derive(Clone)]
pub struct Store {
    pub client: Client,
    kv: KvClient,
    pub region: String,
}

impl Store {
    pub fn new(client: Client, region: &str) -> Self {
        Self {
            kv: client.kv_client(),
            client,
            region: region.to_string(),
        }
    }

    /// `/edge/<region>/`
    pub fn root(&self) -> String {
        format!("/edge/{}/", self.region)
    }

    pub fn path(&self, kind: &str, key: &str) -> String {
        format!("{}{key}", store_prefix(&self.region, kind))
    }

    pub fn path_of<T: Keyed>(&self, obj: &T) -> String {
        self.path(T::KIND, &obj.key_string())
    }

    /// Prefix of the reference keys pointing at `kind/key`.
    pub fn refs_prefix(&self, kind: &str, key: &str) -> String {
        format!("{}Ref/{kind}/{key}/", self.root())
    }

    fn ref_key(&self, target: &(&str, String), source_kind: &str, source_key: &str) -> String {
        format!(
            "{}{source_kind}/{source_key}",
            self.refs_prefix(target.0, &target.1)
        )
    }

    /// Prefix of the public ports held on a cloudlet.
    pub fn ports_prefix(&self, cloudlet: &str) -> String {
        format!("{}Port/{cloudlet}/", self.root())
    }

    pub fn conn_key(&self, cloudlet: &str) -> String {
        format!("{}Conn/{cloudlet}", self.root())
    }

    pub async fn get<T: Object>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        let path = self.path(T::KIND, key);
        let resp = self.kv.clone().get(path.as_str(), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let obj = serde_json::from_slice(kv.value())
            .map_err(|source| CtrlError::Corrupt { key: path, source })?;
        Ok(Some(Versioned {
            obj,
            rev: kv.mod_revision(),
        }))
    }

    /// Reads `key` or fails with "Kind "key" not found".
    pub async fn must_get<T: Object>(&self, key: &str) -> Result<Versioned<T>> {
        self.get(key)
            .await?
            .ok_or_else(|| CtrlError::NotFound(format!("{} \"{key}\"", T::KIND)))
    }

    /// Keys (without values) under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let resp = self
            .kv
            .clone()
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    /// Runs the transaction; `Some(revision)` when its compares held, `None` when they did not.
    pub async fn commit(&self, w: Write) -> Result<Option<i64>> {
        let txn = Txn::new().when(w.when).and_then(w.ops);
        let resp = self.kv.clone().txn(txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or_default()))
    }

    /// Adds the object's JSON and its reference keys to `w`.
    pub fn put_obj<T: Object>(&self, w: &mut Write, obj: &T) {
        let json = serde_json::to_vec(obj).expect("protobuf messages always serialize");
        w.put(&self.path_of(obj), json);
    }

    /// Adds reference keys for `refs` of `source` to `w`.
    pub fn put_refs<T: Object>(&self, w: &mut Write, source: &T, refs: &[(&'static str, String)]) {
        for r in refs {
            w.put(&self.ref_key(r, T::KIND, &source.key_string()), "");
        }
    }

    /// Adds removal of `refs` of `source` to `w`.
    pub fn delete_refs<T: Object>(
        &self,
        w: &mut Write,
        source: &T,
        refs: &[(&'static str, String)],
    ) {
        for r in refs {
            w.delete(&self.ref_key(r, T::KIND, &source.key_string()));
        }
    }

    /// What refers to `kind/key`, as `Kind "key"` strings, for "in use" messages.
    pub async fn referrers(&self, kind: &str, key: &str) -> Result<Vec<String>> {
        let prefix = self.refs_prefix(kind, key);
        Ok(self
            .keys(&prefix)
            .await?
            .into_iter()
            .filter_map(|k| {
                let rest = k.strip_prefix(&prefix)?;
                let (kind, key) = rest.split_once('/')?;
                Some(format!("{kind} \"{key}\""))
            })
            .collect())
    }
}
