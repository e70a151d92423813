//! The protobuf descriptors of every message, and enum values in JSON the way MobiledgeX's clients write
//! them: a number, the proto name (`IP_ACCESS_DEDICATED`), its CamelCase (`IpAccessDedicated`, what
//! MobiledgeX's Go structs marshal to), either of those in any case, or the CamelCase without the enum's
//! common prefix (`Dedicated`, what its DME gateway prints).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, EnumDescriptor, Kind, MessageDescriptor};
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

/// The number of enum value `v` of `e`, given as a number or by one of its names.
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
    let prefix = enum_prefix(e);
    e.values()
        .find(|x| {
            let n = x.name();
            n == s
                || camel(n) == s
                || camel(n) == camel(s)
                || camel(n.strip_prefix(&prefix).unwrap_or(n)) == s
        })
        .map(|x| x.number())
        .ok_or_else(|| format!("unknown {} value \"{s}\"", e.name()))
}

/// Replaces the enum values given by name in `v`, an object of message `m`, with their numbers (in
/// nested messages, lists and maps too); fields `m` does not have are left as they are. The error names
/// the field by its path from `path`.
pub fn enum_names_to_numbers(
    m: &MessageDescriptor,
    v: &mut Json,
    path: &str,
) -> Result<(), String> {
    let Json::Object(obj) = v else {
        return Ok(());
    };
    for (name, value) in obj.iter_mut() {
        let Some(f) = m.get_field_by_name(name) else {
            continue;
        };
        let path = format!("{path}.{name}");
        match (value, f.kind()) {
            (Json::Object(items), Kind::Message(entry)) if f.is_map() => {
                let kind = entry.map_entry_value_field().kind();
                for (k, item) in items.iter_mut() {
                    convert(&kind, item, &format!("{path}.{k}"))?;
                }
            }
            (Json::Array(items), kind) if f.is_list() => {
                for (i, item) in items.iter_mut().enumerate() {
                    convert(&kind, item, &format!("{path}[{i}]"))?;
                }
            }
            (value, kind) => convert(&kind, value, &path)?,
        }
    }
    Ok(())
}

fn convert(kind: &Kind, v: &mut Json, path: &str) -> Result<(), String> {
    match kind {
        Kind::Enum(e) if v.is_string() => {
            *v = Json::from(parse_enum(e, v).map_err(|why| format!("{path}: {why}"))?);
        }
        Kind::Message(m) => enum_names_to_numbers(m, v, path)?,
        _ => {}
    }
    Ok(())
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
        for given in ["ready", "Ready", "READY", "5", "TrackedStateReady"] {
            let e = pool().get_enum_by_name("edge.TrackedState").unwrap();
            let want = if given == "TrackedStateReady" {
                Err("unknown TrackedState value \"TrackedStateReady\"".to_string())
            } else {
                Ok(5)
            };
            assert_eq!(parse_enum(&e, &json!(given)), want, "{given}");
        }
        let mut bad = json!({"ip_access": "Sometimes"});
        assert_eq!(
            enum_names_to_numbers(&m, &mut bad, "ClusterInst"),
            Err("ClusterInst.ip_access: unknown IpAccess value \"Sometimes\"".into())
        );
        // In messages of a list.
        let inst = pool().get_message_by_name("edge.AppInst").unwrap();
        let mut v = json!({"mapped_ports": [{"proto": "LProtoTcp"}, {"proto": "LProtoUdp"}]});
        enum_names_to_numbers(&inst, &mut v, "AppInst").unwrap();
        assert_eq!(v["mapped_ports"], json!([{"proto": 1}, {"proto": 2}]));
        let mut bad = json!({"mapped_ports": [{"proto": "LProtoSctp"}]});
        assert_eq!(
            enum_names_to_numbers(&inst, &mut bad, "AppInst"),
            Err("AppInst.mapped_ports[0].proto: unknown LProto value \"LProtoSctp\"".into())
        );
    }
}
