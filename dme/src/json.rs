//! MobiledgeX's REST JSON, driven by the protobuf descriptors so every message is handled alike.
//!
//! Output (what MobiledgeX's gateway emitted and its SDKs parse): proto field names (snake_case), every
//! field present (`""`, `0`, `false`, `[]`, `{}`; an unset message is `null`), 64-bit integers as strings,
//! enums as CamelCase with the enum's common prefix removed (`FIND_FOUND` → `"Found"`, `RS_SUCCESS` →
//! `"Success"`). Input is lenient: snake_case or lowerCamelCase names, unknown fields and `null` ignored,
//! 64-bit integers as numbers or strings, enums as numbers or names (`edge_common::proto_json::parse_enum`).

use std::collections::HashMap;

use edge_common::proto_json::{camel, enum_prefix, parse_enum, pool};
use prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};
use serde_json::{Map, Value as Json, json};

/// Descriptor of a DME message by its short name, e.g. `FindCloudletRequest`.
pub fn descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(&format!("distributed_match_engine.{name}"))
        .unwrap_or_else(|| panic!("no descriptor for distributed_match_engine.{name}"))
}

/// How MobiledgeX prints enum value `number` of `e`.
pub fn enum_name(e: &EnumDescriptor, number: i32) -> Json {
    match e.get_value(number) {
        Some(v) => Json::String(camel(
            v.name().strip_prefix(&enum_prefix(e)).unwrap_or(v.name()),
        )),
        None => json!(number),
    }
}

/// A message as MobiledgeX's JSON.
pub fn to_json(m: &DynamicMessage) -> Json {
    let mut out = Map::new();
    for f in m.descriptor().fields() {
        out.insert(f.name().to_string(), field_to_json(m, &f));
    }
    Json::Object(out)
}

fn field_to_json(m: &DynamicMessage, f: &FieldDescriptor) -> Json {
    if f.is_map() {
        let Value::Map(map) = &*m.get_field(f) else {
            return json!({});
        };
        let Kind::Message(entry) = f.kind() else {
            return json!({});
        };
        let vf = entry.map_entry_value_field();
        let obj: Map<String, Json> = map
            .iter()
            .map(|(k, v)| {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                (key, value_to_json(v, &vf.kind()))
            })
            .collect();
        return Json::Object(obj);
    }
    if f.is_list() {
        let Value::List(items) = &*m.get_field(f) else {
            return json!([]);
        };
        return Json::Array(items.iter().map(|v| value_to_json(v, &f.kind())).collect());
    }
    if matches!(f.kind(), Kind::Message(_)) && !m.has_field(f) {
        return Json::Null;
    }
    value_to_json(&m.get_field(f), &f.kind())
}

fn value_to_json(v: &Value, kind: &Kind) -> Json {
    match (v, kind) {
        (Value::EnumNumber(n), Kind::Enum(e)) => enum_name(e, *n),
        (Value::Message(m), _) => to_json(m),
        (Value::Bool(b), _) => json!(b),
        (Value::I32(n), _) => json!(n),
        (Value::U32(n), _) => json!(n),
        (Value::I64(n), _) => json!(n.to_string()),
        (Value::U64(n), _) => json!(n.to_string()),
        (Value::F32(x), _) => json!(x),
        (Value::F64(x), _) => json!(x),
        (Value::String(s), _) => json!(s),
        (Value::Bytes(b), _) => {
            use base64::Engine;
            json!(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (other, _) => json!(format!("{other:?}")),
    }
}

/// Reads a message of type `desc` from MobiledgeX-style JSON; the error names the field.
pub fn from_json(desc: &MessageDescriptor, v: &Json) -> Result<DynamicMessage, String> {
    let mut m = DynamicMessage::new(desc.clone());
    let Some(obj) = v.as_object() else {
        return Err(format!("expected a JSON object for {}", desc.name()));
    };
    for (name, value) in obj {
        let Some(f) = desc
            .get_field_by_name(name)
            .or_else(|| desc.get_field_by_json_name(name))
        else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let parsed = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                continue;
            };
            let vf = entry.map_entry_value_field();
            let o = value.as_object().ok_or("expected an object")?;
            let mut map = HashMap::new();
            for (k, v) in o {
                map.insert(MapKey::String(k.clone()), json_to_value(v, &vf.kind())?);
            }
            Ok(Value::Map(map))
        } else if f.is_list() {
            let items = value.as_array().ok_or("expected an array")?;
            items
                .iter()
                .map(|i| json_to_value(i, &f.kind()))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
        } else {
            json_to_value(value, &f.kind())
        };
        let parsed = parsed.map_err(|e| format!("invalid {}: {e}", f.name()))?;
        m.set_field(&f, parsed);
    }
    Ok(m)
}

fn json_to_value(v: &Json, kind: &Kind) -> Result<Value, String> {
    let int = |v: &Json| -> Result<i128, String> {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("expected an integer, got {v}"))
    };
    let range = |what: &str| format!("{what} out of range");
    Ok(match kind {
        Kind::Bool => Value::Bool(v.as_bool().ok_or("expected true or false")?),
        Kind::String => Value::String(v.as_str().ok_or("expected a string")?.to_string()),
        Kind::Bytes => {
            use base64::Engine;
            let s = v.as_str().ok_or("expected base64")?;
            Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| e.to_string())?
                    .into(),
            )
        }
        Kind::Double => Value::F64(
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or("expected a number")?,
        ),
        Kind::Float => Value::F32(
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or("expected a number")? as f32,
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(i32::try_from(int(v)?).map_err(|_| range("int32"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(i64::try_from(int(v)?).map_err(|_| range("int64"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(u32::try_from(int(v)?).map_err(|_| range("uint32"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(u64::try_from(int(v)?).map_err(|_| range("uint64"))?)
        }
        Kind::Enum(e) => Value::EnumNumber(parse_enum(e, v)?),
        Kind::Message(d) => {
            // MobiledgeX printed timestamps as RFC 3339 strings at times; such input is taken as unset.
            if v.is_string() && d.name() == "Timestamp" {
                Value::Message(DynamicMessage::new(d.clone()))
            } else {
                Value::Message(from_json(d, v)?)
            }
        }
    })
}

/// Converts between a generated message and its dynamic form.
pub fn to_dynamic<T: prost::Message>(msg: &T, name: &str) -> DynamicMessage {
    DynamicMessage::decode(descriptor(name), msg.encode_to_vec().as_slice())
        .expect("a message decodes as itself")
}

pub fn from_dynamic<T: prost::Message + Default>(m: &DynamicMessage) -> T {
    T::decode(prost::Message::encode_to_vec(m).as_slice()).expect("a message decodes as itself")
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::dme::*;

    #[test]
    fn replies_look_like_mobiledgex() {
        let reply = FindCloudletReply {
            status: find_cloudlet_reply::FindStatus::FindFound as i32,
            fqdn: "berlin.tmus.eu".into(),
            ports: vec![AppPort {
                proto: LProto::Tcp as i32,
                internal_port: 80,
                public_port: 10000,
                ..Default::default()
            }],
            cloudlet_location: Some(Loc {
                latitude: 52.5,
                longitude: 13.4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let j = to_json(&to_dynamic(&reply, "FindCloudletReply"));
        assert_eq!(j["status"], "Found");
        assert_eq!(j["qos_result"], "NotAttempted");
        assert_eq!(j["ports"][0]["proto"], "Tcp");
        assert_eq!(j["ports"][0]["max_pkt_size"], "0");
        assert_eq!(j["ports"][0]["fqdn_prefix"], "");
        assert_eq!(j["cloudlet_location"]["timestamp"], Json::Null);
        assert_eq!(j["tags"], json!({}));
        assert_eq!(j["ver"], 0);
        let r = RegisterClientReply {
            status: ReplyStatus::RsSuccess as i32,
            ..Default::default()
        };
        assert_eq!(
            to_json(&to_dynamic(&r, "RegisterClientReply"))["status"],
            "Success"
        );
        let v = VerifyLocationReply {
            tower_status: 0,
            ..Default::default()
        };
        assert_eq!(
            to_json(&to_dynamic(&v, "VerifyLocationReply"))["tower_status"],
            "TowerUnknown"
        );
    }

    #[test]
    fn requests_are_read_leniently() {
        let body = json!({
            "ver": 1, "sessionCookie": "abc", "carrier_name": null, "client_token": null, "cell_id": 7,
            "gps_location": {"latitude": 52.5, "longitude": "13.4", "timestamp": {"seconds": "12", "nanos": 3}},
            "tags": {"k": "v"}
        });
        let m = from_json(&descriptor("FindCloudletRequest"), &body).unwrap();
        let req: FindCloudletRequest = from_dynamic(&m);
        assert_eq!(req.session_cookie, "abc");
        assert_eq!(req.gps_location.unwrap().longitude, 13.4);
        assert_eq!(req.gps_location.unwrap().timestamp.unwrap().seconds, 12);
        assert_eq!(req.tags["k"], "v");
        for (v, n) in [
            (json!("EVENT_LATENCY_SAMPLES"), 3),
            (json!("LatencySamples"), 3),
            (json!("EventLatencySamples"), 3),
            (json!(4), 4),
        ] {
            let m = from_json(&descriptor("ClientEdgeEvent"), &json!({"event_type": v})).unwrap();
            assert_eq!(from_dynamic::<ClientEdgeEvent>(&m).event_type, n);
        }
        let err = from_json(&descriptor("FindCloudletRequest"), &json!({"ver": "x"})).unwrap_err();
        assert!(err.contains("invalid ver"), "{err}");
    }
}
