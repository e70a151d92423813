//! The stored kinds as one enum (the notify `Change.object` oneof), and what each kind references.

use edge_common::Keyed;
use edge_proto::edge::change::Object as AnyObject;
use edge_proto::edge::{
    Alert, AlertPolicy, App, AppInst, Cloudlet, CloudletInfo, ClusterInst, ExecRequest, Flavor,
    OperatorCode, TrackedState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use edge_proto::edge::change::Object as Any;

/// A kind stored under `/edge/<region>/<KIND>/`.
pub trait Object: Keyed + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    fn into_any(self) -> AnyObject;
    fn from_any(o: &AnyObject) -> Option<&Self>;
    /// Objects this one refers to: `(kind, key string)`. Each is kept as a reference key in etcd so a
    /// referenced object cannot be deleted in the same transaction that checks it is unused.
    fn references(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

macro_rules! object {
    ($t:ident) => {
        impl Object for $t {
            fn into_any(self) -> AnyObject {
                AnyObject::$t(self)
            }
            fn from_any(o: &AnyObject) -> Option<&Self> {
                match o {
                    AnyObject::$t(x) => Some(x),
                    _ => None,
                }
            }
            fn references(&self) -> Vec<(&'static str, String)> {
                refs_of(&AnyObject::$t(self.clone()))
            }
        }
    };
}
object!(Flavor);
object!(OperatorCode);
object!(Cloudlet);
object!(CloudletInfo);
object!(ClusterInst);
object!(App);
object!(AppInst);
object!(Alert);
object!(AlertPolicy);
object!(ExecRequest);

fn refs_of(o: &AnyObject) -> Vec<(&'static str, String)> {
    let mut refs = Vec::new();
    let mut add = |kind, key: String| {
        if !key.is_empty() && !key.split('/').all(str::is_empty) {
            refs.push((kind, key));
        }
    };
    match o {
        AnyObject::ClusterInst(c) => {
            add(
                "Cloudlet",
                c.cloudlet_key.clone().unwrap_or_default().key_string(),
            );
            add("Flavor", c.flavor.clone().unwrap_or_default().key_string());
        }
        AnyObject::App(a) => {
            add(
                "Flavor",
                a.default_flavor.clone().unwrap_or_default().key_string(),
            );
            let org = a.key.clone().unwrap_or_default().organization;
            for p in &a.alert_policies {
                add("AlertPolicy", format!("{org}/{p}"));
            }
        }
        AnyObject::AppInst(i) => {
            add("App", i.app_key.clone().unwrap_or_default().key_string());
            add(
                "ClusterInst",
                i.cluster_key.clone().unwrap_or_default().key_string(),
            );
            add(
                "Cloudlet",
                i.cloudlet_key.clone().unwrap_or_default().key_string(),
            );
            add("Flavor", i.flavor.clone().unwrap_or_default().key_string());
        }
        _ => {}
    }
    refs
}

/// Kind name of a stored object.
pub fn kind_of(o: &AnyObject) -> &'static str {
    match o {
        AnyObject::Flavor(_) => Flavor::KIND,
        AnyObject::OperatorCode(_) => OperatorCode::KIND,
        AnyObject::Cloudlet(_) => Cloudlet::KIND,
        AnyObject::CloudletInfo(_) => CloudletInfo::KIND,
        AnyObject::ClusterInst(_) => ClusterInst::KIND,
        AnyObject::App(_) => App::KIND,
        AnyObject::AppInst(_) => AppInst::KIND,
        AnyObject::Alert(_) => Alert::KIND,
        AnyObject::AlertPolicy(_) => AlertPolicy::KIND,
        AnyObject::ExecRequest(_) => ExecRequest::KIND,
    }
}

/// Order in which a full sync sends kinds: what others refer to comes first.
pub fn sync_rank(kind: &str) -> u8 {
    match kind {
        "Flavor" => 0,
        "OperatorCode" => 1,
        "Cloudlet" => 2,
        "CloudletInfo" => 3,
        "AlertPolicy" => 4,
        "App" => 5,
        "ClusterInst" => 6,
        _ => 7,
    }
}

/// Decodes the JSON value stored under `/edge/<region>/<kind>/...`; `None` for kinds that are not objects
/// (reference, port and connection keys).
pub fn decode(kind: &str, value: &[u8]) -> Option<serde_json::Result<AnyObject>> {
    fn de<T: Object>(v: &[u8]) -> serde_json::Result<AnyObject> {
        serde_json::from_slice::<T>(v).map(T::into_any)
    }
    Some(match kind {
        "Flavor" => de::<Flavor>(value),
        "OperatorCode" => de::<OperatorCode>(value),
        "Cloudlet" => de::<Cloudlet>(value),
        "CloudletInfo" => de::<CloudletInfo>(value),
        "ClusterInst" => de::<ClusterInst>(value),
        "App" => de::<App>(value),
        "AppInst" => de::<AppInst>(value),
        "Alert" => de::<Alert>(value),
        "AlertPolicy" => de::<AlertPolicy>(value),
        "ExecRequest" => de::<ExecRequest>(value),
        _ => return None,
    })
}

/// Tracked state of kinds that have one.
pub trait Tracked: Object {
    fn state(&self) -> TrackedState;
    fn set_state(&mut self, s: TrackedState);
    fn errors(&self) -> &[String];
    fn status(&self) -> &[String];
    /// Errors and progress messages reported by the CRM for the current operation.
    fn set_progress(&mut self, errors: Vec<String>, status: Vec<String>);
    /// Starts a new operation: the state the controller requests, with fresh status and errors, and a new
    /// `updated_at`, which tells the CRM this is a new request (e.g. a retry after CREATE_ERROR).
    fn request(&mut self, s: TrackedState);
    /// When the current request was made (its identity for reports).
    fn updated_at(&self) -> i64;
}

macro_rules! tracked {
    ($($t:ident),*) => {$(
        impl Tracked for $t {
            fn state(&self) -> TrackedState {
                TrackedState::try_from(self.state).unwrap_or(TrackedState::Unknown)
            }
            fn set_state(&mut self, s: TrackedState) {
                self.state = s as i32;
            }
            fn errors(&self) -> &[String] {
                &self.errors
            }
            fn status(&self) -> &[String] {
                &self.status
            }
            fn set_progress(&mut self, errors: Vec<String>, status: Vec<String>) {
                self.errors = errors;
                self.status = status;
            }
            fn request(&mut self, s: TrackedState) {
                self.updated_at = edge_common::now_ms();
                self.set_state(s);
                self.errors.clear();
                self.status.clear();
            }
            fn updated_at(&self) -> i64 {
                self.updated_at
            }
        }
    )*};
}
tracked!(Cloudlet, ClusterInst, AppInst);
