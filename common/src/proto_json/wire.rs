//! Protobuf wire bytes written straight to JSON, without decoding them into messages first: what the MC
//! does with every reply it forwards. The JSON is what MobiledgeX's MC writes for the same message: proto
//! field names, enum values by the CamelCase of their name (`"Ready"`; a number no value has stays a
//! number), 64-bit integers as numbers, and the fields a proto3 encoder leaves out (zero values, empty
//! strings and lists, unset messages) left out too, as Go's `omitempty` does; a set message is written
//! even when empty (`"key":{}`), as Go writes its non-pointer nested structs.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost_reflect::{Kind, MessageDescriptor};

use super::{camel, pool};

/// How a field's values are encoded and written.
#[derive(Clone, Copy)]
enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    /// index into [`Tables::enums`]
    Enum(usize),
    /// index into [`Tables::messages`]
    Message(usize),
}

impl Scalar {
    /// How a value of this kind is encoded (`Err` for another is malformed input).
    fn wire_type(self) -> u64 {
        match self {
            Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => 1,
            Scalar::String | Scalar::Bytes | Scalar::Message(_) => 2,
            Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => 5,
            _ => 0,
        }
    }
}

struct Field {
    /// `"name":`, ready to copy
    key: Box<[u8]>,
    value: Scalar,
    list: bool,
    /// a map field: its entries' key (field 1) and value (field 2)
    map: Option<(Scalar, Scalar)>,
}

/// A message's fields by number (numbers are small in these protos).
struct Message {
    fields: Vec<Option<Field>>,
}

struct Tables {
    messages: Vec<Message>,
    by_name: HashMap<String, usize>,
    /// each enum's values: number and JSON string (`"Ready"`, quotes included)
    enums: Vec<Vec<(i32, Box<[u8]>)>>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let messages: Vec<MessageDescriptor> = pool().all_messages().collect();
    let by_name: HashMap<String, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.full_name().to_string(), i))
        .collect();
    let mut enums = Vec::new();
    let mut enum_index = HashMap::new();
    let mut scalar = |kind: Kind| match kind {
        Kind::Double => Scalar::Double,
        Kind::Float => Scalar::Float,
        Kind::Int32 => Scalar::Int32,
        Kind::Int64 => Scalar::Int64,
        Kind::Uint32 | Kind::Uint64 => Scalar::Uint,
        Kind::Sint32 => Scalar::Sint32,
        Kind::Sint64 => Scalar::Sint64,
        Kind::Fixed32 => Scalar::Fixed32,
        Kind::Fixed64 => Scalar::Fixed64,
        Kind::Sfixed32 => Scalar::Sfixed32,
        Kind::Sfixed64 => Scalar::Sfixed64,
        Kind::Bool => Scalar::Bool,
        Kind::String => Scalar::String,
        Kind::Bytes => Scalar::Bytes,
        Kind::Message(m) => Scalar::Message(by_name[m.full_name()]),
        Kind::Enum(e) => {
            let i = *enum_index
                .entry(e.full_name().to_string())
                .or_insert_with(|| {
                    enums.push(
                        e.values()
                            .map(|v| (v.number(), json_string(&camel(v.name()))))
                            .collect(),
                    );
                    enums.len() - 1
                });
            Scalar::Enum(i)
        }
    };
    let messages = messages
        .iter()
        .map(|m| {
            let top = m.fields().map(|f| f.number()).max().unwrap_or(0) as usize;
            let mut fields: Vec<Option<Field>> = (0..=top).map(|_| None).collect();
            for f in m.fields() {
                let map = match f.kind() {
                    Kind::Message(entry) if f.is_map() => Some((
                        scalar(entry.map_entry_key_field().kind()),
                        scalar(entry.map_entry_value_field().kind()),
                    )),
                    _ => None,
                };
                let mut key = json_string(f.name()).into_vec();
                key.push(b':');
                fields[f.number() as usize] = Some(Field {
                    key: key.into(),
                    value: scalar(f.kind()),
                    list: f.is_list(),
                    map,
                });
            }
            Message { fields }
        })
        .collect();
    Tables {
        messages,
        by_name,
        enums,
    }
});

fn json_string(s: &str) -> Box<[u8]> {
    serde_json::to_vec(s)
        .expect("a string serializes")
        .into_boxed_slice()
}

/// Writes the JSON of messages of one type from their wire bytes.
#[derive(Clone, Copy)]
pub struct WireJson(usize);

impl WireJson {
    /// The writer of message `full_name` (`edge.AppInst`); `None` for a message the descriptors lack.
    pub fn of(full_name: &str) -> Option<WireJson> {
        TABLES.by_name.get(full_name).copied().map(WireJson)
    }

    /// Appends the JSON object of the message encoded in `bytes` to `out`. On malformed input `out` may
    /// hold part of it; the error says what is wrong.
    pub fn write(self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut r = Reader(bytes);
        message(&TABLES, self.0, &mut r, out)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for (i, b) in self.0.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(v);
            }
        }
        Err("malformed varint".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("truncated message".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn delimited(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length out of range")?)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// Skips a value of wire type `wire` (a field this side does not know).
    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.delimited().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn message(t: &Tables, m: usize, r: &mut Reader, out: &mut Vec<u8>) -> Result<(), String> {
    let fields = &t.messages[m].fields;
    out.push(b'{');
    // The repeated field whose list (or map) is open: its number, closing bracket, and whether it has
    // an element yet. (An encoder writes a repeated field's elements together.)
    let mut open: Option<(u64, u8, bool)> = None;
    let mut any = false;
    while !r.0.is_empty() {
        let tag = r.varint()?;
        let (number, wire) = (tag >> 3, tag & 7);
        let Some(f) = usize::try_from(number)
            .ok()
            .and_then(|n| fields.get(n))
            .and_then(Option::as_ref)
        else {
            r.skip(wire)?;
            continue;
        };
        if open.is_none_or(|(n, ..)| n != number) {
            if let Some((_, close, _)) = open.take() {
                out.push(close);
            }
            if any {
                out.push(b',');
            }
            any = true;
            out.extend_from_slice(&f.key);
            if f.map.is_some() {
                out.push(b'{');
                open = Some((number, b'}', false));
            } else if f.list {
                out.push(b'[');
                open = Some((number, b']', false));
            }
        }
        match f.map {
            Some((k, v)) if wire == 2 => {
                element(&mut open, out);
                entry(t, k, v, &mut Reader(r.delimited()?), out)?;
            }
            // A packed list: all its numbers in one length-delimited run.
            None if f.list && wire == 2 && f.value.wire_type() != 2 => {
                let mut packed = Reader(r.delimited()?);
                while !packed.0.is_empty() {
                    element(&mut open, out);
                    value(t, f.value, &mut packed, out)?;
                }
            }
            None if wire == f.value.wire_type() => {
                element(&mut open, out);
                value(t, f.value, r, out)?;
            }
            _ => return Err(format!("field {number}: wire type {wire}, not its type's")),
        }
    }
    if let Some((_, close, _)) = open {
        out.push(close);
    }
    out.push(b'}');
    Ok(())
}

/// Before an element of the open list or map (if any): a comma unless it is the first.
fn element(open: &mut Option<(u64, u8, bool)>, out: &mut Vec<u8>) {
    if let Some((_, _, started)) = open {
        if *started {
            out.push(b',');
        }
        *started = true;
    }
}

/// One map entry, `"key":value` (a key that is not a string is written as one, as JSON needs).
fn entry(
    t: &Tables,
    k: Scalar,
    v: Scalar,
    r: &mut Reader,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let (mut key, mut val) = (Vec::new(), None);
    while !r.0.is_empty() {
        match r.varint()? {
            // field 1, the key
            tag if tag >> 3 == 1 && tag & 7 == k.wire_type() => {
                key.clear();
                value(t, k, r, &mut key)?;
            }
            tag if tag >> 3 == 2 && tag & 7 == v.wire_type() => {
                let start = r.0;
                r.skip(tag & 7)?;
                val = Some(&start[..start.len() - r.0.len()]);
            }
            tag => r.skip(tag & 7)?,
        }
    }
    match key.first() {
        Some(b'"') => out.extend_from_slice(&key),
        Some(_) => {
            out.push(b'"');
            out.extend_from_slice(&key);
            out.push(b'"');
        }
        None => out.extend_from_slice(match k {
            Scalar::Bool => b"\"false\"",
            Scalar::String => b"\"\"",
            _ => b"\"0\"",
        }),
    }
    out.push(b':');
    match val {
        Some(bytes) => value(t, v, &mut Reader(bytes), out),
        None => {
            // An absent value is its default.
            match v {
                Scalar::Message(m) => message(t, m, &mut Reader(&[]), out)?,
                Scalar::String => out.extend_from_slice(b"\"\""),
                Scalar::Bool => out.extend_from_slice(b"false"),
                Scalar::Bytes => out.extend_from_slice(b"[]"),
                Scalar::Enum(e) => enum_value(t, e, 0, out),
                _ => out.push(b'0'),
            }
            Ok(())
        }
    }
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn enum_value(t: &Tables, e: usize, n: i32, out: &mut Vec<u8>) {
    match t.enums[e].iter().find(|(v, _)| *v == n) {
        Some((_, name)) => out.extend_from_slice(name),
        None => number(out, n),
    }
}

/// One value of scalar kind `s` (its wire type follows from the kind).
fn value(t: &Tables, s: Scalar, r: &mut Reader, out: &mut Vec<u8>) -> Result<(), String> {
    // Truncating casts are the wire format's: an int32 travels as a sign-extended varint.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    match s {
        Scalar::Double => float(out, f64::from_le_bytes(r.fixed()?)),
        Scalar::Float => float(out, f32::from_le_bytes(r.fixed()?)),
        Scalar::Int32 => number(out, r.varint()? as i32),
        Scalar::Int64 => number(out, r.varint()? as i64),
        Scalar::Uint => number(out, r.varint()?),
        Scalar::Sint32 => {
            let v = r.varint()? as u32;
            number(out, (v >> 1) as i32 ^ -((v & 1) as i32));
        }
        Scalar::Sint64 => {
            let v = r.varint()?;
            number(out, (v >> 1) as i64 ^ -((v & 1) as i64));
        }
        Scalar::Fixed32 => number(out, u32::from_le_bytes(r.fixed()?)),
        Scalar::Fixed64 => number(out, u64::from_le_bytes(r.fixed()?)),
        Scalar::Sfixed32 => number(out, i32::from_le_bytes(r.fixed()?)),
        Scalar::Sfixed64 => number(out, i64::from_le_bytes(r.fixed()?)),
        Scalar::Bool => out.extend_from_slice(if r.varint()? != 0 { b"true" } else { b"false" }),
        Scalar::String => {
            let s = std::str::from_utf8(r.delimited()?).map_err(|_| "a string is not UTF-8")?;
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())?;
        }
        Scalar::Bytes => {
            // As the messages' serde derive writes a `Vec<u8>`: a list of numbers.
            serde_json::to_writer(&mut *out, r.delimited()?).map_err(|e| e.to_string())?;
        }
        Scalar::Enum(e) => enum_value(t, e, r.varint()? as i32, out),
        Scalar::Message(m) => message(t, m, &mut Reader(r.delimited()?), out)?,
    }
    Ok(())
}

fn float(out: &mut Vec<u8>, v: impl serde::Serialize) {
    // serde_json's formatting (a non-finite number is `null`), as for the derive.
    serde_json::to_writer(&mut *out, &v).expect("a number serializes");
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::edge::*;
    use prost::Message as _;
    use serde_json::json;

    fn json_of<M: prost::Message + prost::Name>(m: &M) -> serde_json::Value {
        let mut out = Vec::new();
        WireJson::of(&M::full_name())
            .unwrap()
            .write(&m.encode_to_vec(), &mut out)
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// The JSON read back (names to numbers, then the serde derive) is the message again.
    fn round_trip<M>(m: &M) -> serde_json::Value
    where
        M: prost::Message + prost::Name + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let v = json_of(m);
        let back: M = super::super::from_json(&mut v.clone(), "m").unwrap();
        assert_eq!(&back, m);
        v
    }

    #[test]
    fn replies_as_mobiledgex_writes_them() {
        let inst = AppInst {
            key: Some(AppInstKey::default()),
            app_key: Some(AppKey {
                organization: "dev".into(),
                name: "web \"1\" ü".into(),
                version: "1.0".into(),
            }),
            state: TrackedState::Ready as i32,
            health_check: HealthCheck::Ok as i32,
            mapped_ports: vec![
                AppPort {
                    proto: LProto::Udp as i32,
                    public_port: 10000,
                    ..Default::default()
                },
                AppPort {
                    internal_port: -1,
                    tls: true,
                    ..Default::default()
                },
            ],
            errors: vec!["a".into(), String::new()],
            runtime_info: Some(AppInstRuntime {
                container_ids: vec!["c1".into()],
            }),
            created_at: -5,
            updated_at: i64::MAX,
            power_state: 99,
            ..Default::default()
        };
        assert_eq!(
            round_trip(&inst),
            json!({
                "key": {},
                "app_key": {"organization": "dev", "name": "web \"1\" ü", "version": "1.0"},
                "mapped_ports": [{"proto": "LProtoUdp", "public_port": 10000}, {"internal_port": -1, "tls": true}],
                "state": "Ready",
                "errors": ["a", ""],
                "runtime_info": {"container_ids": ["c1"]},
                "health_check": "HealthCheckOk",
                "created_at": -5,
                "updated_at": i64::MAX,
                "power_state": 99,
            }),
            "enum values by name (a number no value has stays); zero values and unset messages left out; \
             a set message written even when empty"
        );
        let app = App {
            env: [
                ("A".to_string(), "1".to_string()),
                ("B".into(), String::new()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(round_trip(&app), json!({"env": {"A": "1", "B": ""}}));
        let cloudlet = Cloudlet {
            location: Some(Loc {
                latitude: 52.52,
                longitude: -13.4,
            }),
            ..Default::default()
        };
        assert_eq!(
            round_trip(&cloudlet),
            json!({"location": {"latitude": 52.52, "longitude": -13.4}})
        );
        let info = CloudletInfo {
            flavors: vec![
                FlavorInfo::default(),
                FlavorInfo {
                    vcpus: u64::MAX,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            round_trip(&info),
            json!({"flavors": [{}, {"vcpus": u64::MAX}]})
        );
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let w = WireJson::of("edge.AppInst").unwrap();
        let good = AppInst {
            uri: "x".repeat(300),
            ..Default::default()
        }
        .encode_to_vec();
        for cut in 1..good.len() {
            let _ = w.write(&good[..cut], &mut Vec::new());
        }
        // A bad varint, a truncated string, an unknown wire type, a string that is not UTF-8, and a
        // string field (7) sent as a varint.
        for bad in [
            &[0xff; 11][..],
            &[0x3a, 0x05, b'a'],
            &[0x0f],
            &[0x3a, 0x01, 0xff],
            &[0x38, 0x01],
        ] {
            assert!(w.write(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
    }
}
