//! Canonical key strings of region objects, used for etcd keys, logs and error messages.
//!
//! A key string is the key's fields joined by `/` (organization first), e.g. `tmus/berlin-1` for a
//! Cloudlet or `acme/game/1.0` for an App. Names are validated by the controller to exclude `/`, so the
//! string is unambiguous. The etcd key of an object is `/edge/<region>/<Kind>/<key string>`.

use edge_proto::edge::{
    Alert, AlertPolicy, AlertPolicyKey, App, AppInst, AppInstKey, AppKey, Cloudlet, CloudletInfo,
    CloudletKey, ClusterInst, ClusterInstKey, ExecRequest, Flavor, FlavorKey, OperatorCode,
};

/// An object (or a key) with a kind name and a canonical key string.
pub trait Keyed {
    /// Kind name as used in store keys and messages, e.g. `"AppInst"`.
    const KIND: &'static str;
    /// Canonical key string, e.g. `"acme/game-eu"`.
    fn key_string(&self) -> String;
    /// `Kind "key"` for messages and logs, e.g. `AppInst "acme/game-eu"`.
    fn describe(&self) -> String {
        format!("{} \"{}\"", Self::KIND, self.key_string())
    }
}

/// etcd prefix holding every object of `kind` in `region`, ending in `/`.
pub fn store_prefix(region: &str, kind: &str) -> String {
    format!("/edge/{region}/{kind}/")
}

/// etcd key of one object.
pub fn store_key<T: Keyed>(region: &str, obj: &T) -> String {
    format!("{}{}", store_prefix(region, T::KIND), obj.key_string())
}

fn join(parts: &[&str]) -> String {
    parts.join("/")
}

macro_rules! keyed {
    ($kind:literal, $key:ty, |$k:ident| $body:expr, $($obj:ty),*) => {
        impl Keyed for $key {
            const KIND: &'static str = $kind;
            fn key_string(&self) -> String {
                let $k = self;
                $body
            }
        }
        $(
            impl Keyed for $obj {
                const KIND: &'static str = $kind;
                fn key_string(&self) -> String {
                    self.key.clone().unwrap_or_default().key_string()
                }
            }
        )*
    };
}

keyed!("Flavor", FlavorKey, |k| k.name.clone(), Flavor);
keyed!(
    "Cloudlet",
    CloudletKey,
    |k| join(&[&k.organization, &k.name]),
    Cloudlet
);
keyed!(
    "ClusterInst",
    ClusterInstKey,
    |k| join(&[&k.organization, &k.name]),
    ClusterInst
);
keyed!(
    "App",
    AppKey,
    |k| join(&[&k.organization, &k.name, &k.version]),
    App
);
keyed!(
    "AlertPolicy",
    AlertPolicyKey,
    |k| join(&[&k.organization, &k.name]),
    AlertPolicy
);
keyed!(
    "AppInst",
    AppInstKey,
    |k| join(&[&k.organization, &k.name]),
    AppInst
);

impl Keyed for OperatorCode {
    const KIND: &'static str = "OperatorCode";
    fn key_string(&self) -> String {
        self.code.clone()
    }
}

/// CloudletInfo is keyed like its Cloudlet but stored under its own kind.
impl Keyed for CloudletInfo {
    const KIND: &'static str = "CloudletInfo";
    fn key_string(&self) -> String {
        self.key.clone().unwrap_or_default().key_string()
    }
}

/// An ExecRequest is keyed by the id the controller gives it.
impl Keyed for ExecRequest {
    const KIND: &'static str = "ExecRequest";
    fn key_string(&self) -> String {
        self.id.clone()
    }
}

/// An Alert is keyed by its labels: `k=v` pairs sorted by key and joined by `/` (label values never
/// hold a `/`, which the controller checks; keys hold no `=`).
impl Keyed for Alert {
    const KIND: &'static str = "Alert";
    fn key_string(&self) -> String {
        let mut labels: Vec<_> = self.labels.iter().collect();
        labels.sort();
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_strings_are_flat_and_prefixed_by_kind() {
        let app = App {
            key: Some(AppKey {
                organization: "acme".into(),
                name: "game".into(),
                version: "1.0".into(),
            }),
            ..Default::default()
        };
        assert_eq!(store_key("EU", &app), "/edge/EU/App/acme/game/1.0");
        assert_eq!(app.describe(), "App \"acme/game/1.0\"");
        let info = CloudletInfo {
            key: Some(CloudletKey {
                organization: "tmus".into(),
                name: "berlin".into(),
            }),
            ..Default::default()
        };
        assert_eq!(store_key("EU", &info), "/edge/EU/CloudletInfo/tmus/berlin");
        let code = OperatorCode {
            code: "26201".into(),
            organization: "tmus".into(),
        };
        assert_eq!(store_key("EU", &code), "/edge/EU/OperatorCode/26201");
        assert_eq!(store_prefix("EU", "Flavor"), "/edge/EU/Flavor/");
    }
}
