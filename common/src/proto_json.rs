//! The protobuf descriptors of every message, and enum values in JSON the way MobiledgeX's clients write
//! them: a number, the proto name (`IP_ACCESS_DEDICATED`), its CamelCase (`IpAccessDedicated`, what
//! MobiledgeX's Go structs marshal to), either of those in any case, or the CamelCase without the enum's
//! common prefix (`Dedicated`, what its DME gateway prints). [`WireJson`] writes replies the way
//! MobiledgeX's MC does, straight from protobuf wire bytes.

use std::sync::LazyLock;

mod wire;

pub use wire::WireJson;

use prost_reflect::{DescriptorPool, EnumDescriptor, Kind, MessageDescriptor};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(edge_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors built by edge-proto")
});

/// Every message and enum of `edge-proto`.
pub fn pool() -> &'static DescriptorPool {
    &POOL
}

/// `IP_ACCESS_DEDICATED` → `IpAccessDedicated`.
pub fn camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase()).into_iter();
            first
                .chain(c.map(|x| x.to_ascii_lowercase()))
                .collect::<String>()
        })
        .collect()
}

/// The common prefix of an enum's value names, cut after its last `_` (`IP_ACCESS_`).
pub fn enum_prefix(e: &EnumDescriptor) -> String {
    let values: Vec<_> = e.values().collect();
    let names: Vec<&str> = values.iter().map(|v| v.name()).collect();
    let prefix = crate::common_prefix(&names);
    prefix
        .rfind('_')
        .map(|i| prefix[..=i].to_string())
        .unwrap_or_default()
}

/// The number of enum value `v` of `e`, given as a number or by one of its names. Names are compared
/// without case and `_`, with or without the enum's common prefix: `IP_ACCESS_DEDICATED`,
/// `IpAccessDedicated`, `ip_access_dedicated` and `Dedicated` name the same value. The error lists the
/// names the enum has.
pub fn parse_enum(e: &EnumDescriptor, v: &Json) -> Result<i32, String> {
    if let Some(n) = v.as_i64() {
        return i32::try_from(n).map_err(|_| format!("{} value {n} out of range", e.name()));
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("expected a {} name or number", e.name()))?;
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let norm = |s: &str| s.replace('_', "").to_ascii_uppercase();
    let (given, prefix) = (norm(s), norm(&enum_prefix(e)));
    e.values()
        .find(|x| {
            let n = norm(x.name());
            n == given || n.strip_prefix(&prefix) == Some(&given)
        })
        .map(|x| x.number())
        .ok_or_else(|| {
            let names: Vec<String> = e.values().map(|x| camel(x.name())).collect();
            format!(
                "unknown {} value \"{s}\"; one of {}",
                e.name(),
                names.join(", ")
            )
        })
}

/// The enum value of `e` that `v` names (by a name [`parse_enum`] takes, or by number), as its proto
/// name (`READY`); `v` as it is when it names none.
pub fn enum_proto_name(e: &EnumDescriptor, v: &mut Json) {
    if let Some(x) = parse_enum(e, v).ok().and_then(|n| e.get_value(n)) {
        *v = Json::from(x.name());
    }
}

/// What [`visit_enums`] calls for each enum value: the enum, the value, and its path.
pub type EnumVisit<'a> = dyn FnMut(&EnumDescriptor, &mut Json, &str) -> Result<(), String> + 'a;

/// Calls `f` on each enum value in `v`, an object of message `m` (in nested messages, lists and maps
/// too), with the value's path from `path`; fields `m` does not have are left as they are.
pub fn visit_enums(
    m: &MessageDescriptor,
    v: &mut Json,
    path: &str,
    f: &mut EnumVisit,
) -> Result<(), String> {
    let Json::Object(obj) = v else {
        return Ok(());
    };
    for (name, value) in obj.iter_mut() {
        let Some(field) = m.get_field_by_name(name) else {
            continue;
        };
        let path = format!("{path}.{name}");
        match (value, field.kind()) {
            (Json::Object(items), Kind::Message(entry)) if field.is_map() => {
                let kind = entry.map_entry_value_field().kind();
                for (k, item) in items.iter_mut() {
                    visit(&kind, item, &format!("{path}.{k}"), f)?;
                }
            }
            (Json::Array(items), kind) if field.is_list() => {
                for (i, item) in items.iter_mut().enumerate() {
                    visit(&kind, item, &format!("{path}[{i}]"), f)?;
                }
            }
            (value, kind) => visit(&kind, value, &path, f)?,
        }
    }
    Ok(())
}

fn visit(kind: &Kind, v: &mut Json, path: &str, f: &mut EnumVisit) -> Result<(), String> {
    match kind {
        Kind::Enum(e) => f(e, v, path),
        Kind::Message(m) => visit_enums(m, v, path, f),
        _ => Ok(()),
    }
}

/// Replaces the enum values given by name in `v`, an object of message `m`, with their numbers (see
/// [`visit_enums`]). The error names the field by its path from `path`.
pub fn enum_names_to_numbers(
    m: &MessageDescriptor,
    v: &mut Json,
    path: &str,
) -> Result<(), String> {
    visit_enums(m, v, path, &mut |e, v, path| {
        if v.is_string() {
            *v = Json::from(parse_enum(e, v).map_err(|why| format!("{path}: {why}"))?);
        }
        Ok(())
    })
}

/// Reads `v` as message `T`, its enum values given by name or number (`v` is left with numbers). The
/// error names the field by its path from `path`.
pub fn from_json<T: DeserializeOwned + prost::Name>(v: &mut Json, path: &str) -> Result<T, String> {
    if let Some(m) = pool().get_message_by_name(&T::full_name()) {
        enum_names_to_numbers(&m, v, path)?;
    }
    T::deserialize(&*v).map_err(|e| format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enum_names_become_numbers_where_the_descriptor_says_enum() {
        let m = pool().get_message_by_name("edge.ClusterInst").unwrap();
        let mut v = json!({
            "key": {"name": "c1"},
            "ip_access": "IpAccessDedicated",
            "state": "READY",
            "deployment": "docker",
            "unknown_field": "Ready",
        });
        enum_names_to_numbers(&m, &mut v, "ClusterInst").unwrap();
        assert_eq!(v["ip_access"], 1);
        assert_eq!(v["state"], 5);
        assert_eq!(v["deployment"], "docker", "a string field stays");
        assert_eq!(v["unknown_field"], "Ready", "left for the caller to refuse");
        for given in [
            "ready",
            "Ready",
            "READY",
            "5",
            "TrackedStateReady",
            "re_ady",
        ] {
            let e = pool().get_enum_by_name("edge.TrackedState").unwrap();
            let got = parse_enum(&e, &json!(given));
            if given == "TrackedStateReady" {
                let why = got.unwrap_err();
                assert!(
                    why.starts_with("unknown TrackedState value \"TrackedStateReady\"; one of TrackedStateUnknown, NotPresent,"),
                    "{why}"
                );
            } else {
                assert_eq!(got, Ok(5), "{given}");
            }
        }
        let mut bad = json!({"ip_access": "Sometimes"});
        assert_eq!(
            enum_names_to_numbers(&m, &mut bad, "ClusterInst"),
            Err("ClusterInst.ip_access: unknown IpAccess value \"Sometimes\"; one of IpAccessUnknown, IpAccessDedicated, IpAccessShared".into())
        );
        // In messages of a list.
        let inst = pool().get_message_by_name("edge.AppInst").unwrap();
        let mut v = json!({"mapped_ports": [{"proto": "LProtoTcp"}, {"proto": "LProtoUdp"}]});
        enum_names_to_numbers(&inst, &mut v, "AppInst").unwrap();
        assert_eq!(v["mapped_ports"], json!([{"proto": 1}, {"proto": 2}]));
        let mut bad = json!({"mapped_ports": [{"proto": "LProtoSctp"}]});
        assert_eq!(
            enum_names_to_numbers(&inst, &mut bad, "AppInst"),
            Err("AppInst.mapped_ports[0].proto: unknown LProto value \"LProtoSctp\"; one of LProtoUnknown, LProtoTcp, LProtoUdp".into())
        );
    }
}
