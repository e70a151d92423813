//! The protobuf descriptors of every message, and enum values in JSON the way MobiledgeX's clients write
//! them: a number, the proto name (`IP_ACCESS_DEDICATED`), its CamelCase (`IpAccessDedicated`, what
//! MobiledgeX's Go structs marshal to), either of those in any case, or the CamelCase without the enum's
//! common prefix (`Dedicated`, what its DME gateway prints). [`EnumsByName`] writes them the way
//! MobiledgeX's MC replies do.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, EnumDescriptor, Kind, MessageDescriptor};
use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize, Serializer};
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

/// The CamelCase names of an enum's values, with their numbers.
type Names = Vec<(i32, String)>;

/// For each message with enum fields (by short name, as serde sees it), the names of each enum field's
/// values. A short name in both packages (`AppPort`, `Loc`) takes `edge`'s message.
type EnumFields = HashMap<String, Vec<(String, Names)>, BuildHasherDefault<Fnv>>;

/// FNV-1a: this map is looked up for every struct of every reply, by names of a few bytes, which
/// `HashMap`'s default (DoS-resistant) hasher takes several times longer to hash.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

static ENUM_FIELDS: LazyLock<EnumFields> = LazyLock::new(|| {
    let mut all = EnumFields::default();
    for m in pool().all_messages() {
        if all.contains_key(m.name()) && m.package_name() != "edge" {
            continue;
        }
        let fields: Vec<_> = m
            .fields()
            .filter_map(|f| match f.kind() {
                Kind::Enum(e) => Some((
                    f.name().to_string(),
                    e.values().map(|v| (v.number(), camel(v.name()))).collect(),
                )),
                _ => None,
            })
            .collect();
        all.insert(m.name().to_string(), fields);
    }
    all.retain(|_, fields| !fields.is_empty());
    all
});

/// Serializes an `edge-proto` message (its serde derive) with enum values as MobiledgeX's MC writes them:
/// the CamelCase of the value's name (`"Ready"`, `"HealthCheckOk"`), also in nested messages and lists.
/// A number no value has stays a number. Everything else is written as the derive writes it, straight
/// to the output (no JSON tree in between).
pub struct EnumsByName<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Serialize for EnumsByName<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Inner(self.0, None).serialize(s)
    }
}

/// A value inside a message, with the names of its values when it is an enum field's (the number, or
/// the numbers of a repeated field).
struct Inner<'a, T: ?Sized>(&'a T, Option<&'static Names>);

impl<T: Serialize + ?Sized> Serialize for Inner<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Named(s, self.1))
    }
}

/// The serializer behind [`EnumsByName`]: passes everything to `S`, names the `i32`s of an enum field,
/// and sees each struct's fields.
struct Named<S>(S, Option<&'static Names>);

/// A compound value being written: a struct with the enum fields it has (`fields`), or the elements of
/// a list (`names`: an enum field's value names).
struct Compound<C> {
    inner: C,
    fields: Option<&'static [(String, Names)]>,
    names: Option<&'static Names>,
}

impl<S: Serializer> Named<S> {
    fn elements<C>(names: Option<&'static Names>) -> impl FnOnce(C) -> Compound<C> {
        move |inner| Compound {
            inner,
            fields: None,
            names,
        }
    }
}

/// The methods of [`Named`] that pass a value on as it is.
macro_rules! passed_on {
    ($($method:ident: $t:ty),* $(,)?) => {$(
        fn $method(self, v: $t) -> Result<S::Ok, S::Error> {
            self.0.$method(v)
        }
    )*};
}

impl<S: Serializer> Serializer for Named<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    passed_on! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_f32: f32, serialize_f64: f64, serialize_char: char, serialize_str: &str,
        serialize_bytes: &[u8],
    }
    fn serialize_i32(self, v: i32) -> Result<S::Ok, S::Error> {
        match self.1.and_then(|names| names.iter().find(|(n, _)| *n == v)) {
            Some((_, name)) => self.0.serialize_str(name),
            None => self.0.serialize_i32(v),
        }
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Inner(v, self.1))
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Inner(v, self.1))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Inner(v, None))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Self::elements(self.1))
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Self::elements(None))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0
            .serialize_tuple_struct(name, len)
            .map(Self::elements(None))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Self::elements(None))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Self::elements(self.1))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let fields = ENUM_FIELDS.get(name).map(Vec::as_slice);
        self.0.serialize_struct(name, len).map(|inner| Compound {
            inner,
            fields,
            names: None,
        })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Self::elements(None))
    }
}

/// The element-wise compounds (lists, tuples, variants) wrap each element.
macro_rules! compound {
    ($($trait:ident, $method:ident;)*) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
                self.inner.$method(&Inner(v, self.names))
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

compound! {
    SerializeSeq, serialize_element;
    SerializeTuple, serialize_element;
    SerializeTupleStruct, serialize_field;
    SerializeTupleVariant, serialize_field;
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), C::Error> {
        self.inner.serialize_key(k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.inner.serialize_value(&Inner(v, self.names))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), C::Error> {
        if is_empty(v) {
            return self.inner.skip_field(key);
        }
        let names = self
            .fields
            .and_then(|f| f.iter().find(|(n, _)| n == key))
            .map(|(_, names)| names);
        self.inner.serialize_field(key, &Inner(v, names))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), C::Error> {
        self.inner.serialize_field(key, &Inner(v, None))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

/// Whether a message field holds what MobiledgeX's Go structs leave out of their JSON (`omitempty`):
/// zero, `false`, an empty string, list or map, or an unset message. A set message is written even when
/// all its fields are zero, as Go writes its non-pointer nested structs.
fn is_empty<T: Serialize + ?Sized>(v: &T) -> bool {
    v.serialize(Probe).unwrap_or(false)
}

/// The serializer behind [`is_empty`]: `Ok(true)` for an empty value, and `Err` (cheap, nothing
/// formatted) as soon as a value is not empty.
struct Probe;

#[derive(Debug)]
struct NotEmpty;

impl std::fmt::Display for NotEmpty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not empty")
    }
}

impl std::error::Error for NotEmpty {}

impl ser::Error for NotEmpty {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        NotEmpty
    }
}

/// An empty list or map: nothing in it.
struct NoElements;

macro_rules! no_elements {
    ($($trait:ident, $method:ident;)*) => {$(
        impl ser::$trait for NoElements {
            type Ok = bool;
            type Error = NotEmpty;
            fn $method<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotEmpty> {
                Err(NotEmpty)
            }
            fn end(self) -> Result<bool, NotEmpty> {
                Ok(true)
            }
        }
    )*};
}

no_elements! {
    SerializeSeq, serialize_element;
    SerializeTuple, serialize_element;
    SerializeTupleStruct, serialize_field;
    SerializeTupleVariant, serialize_field;
}

impl ser::SerializeMap for NoElements {
    type Ok = bool;
    type Error = NotEmpty;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotEmpty> {
        Err(NotEmpty)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotEmpty> {
        Err(NotEmpty)
    }
    fn end(self) -> Result<bool, NotEmpty> {
        Ok(true)
    }
}

/// (Never made: a struct, set or not, is not empty.)
macro_rules! no_fields {
    ($($trait:ident;)*) => {$(
        impl ser::$trait for NoElements {
            type Ok = bool;
            type Error = NotEmpty;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                _: &T,
            ) -> Result<(), NotEmpty> {
                Err(NotEmpty)
            }
            fn end(self) -> Result<bool, NotEmpty> {
                Err(NotEmpty)
            }
        }
    )*};
}

no_fields! {
    SerializeStruct;
    SerializeStructVariant;
}

/// Lists and maps are empty when their length is 0.
fn no_elements(len: Option<usize>) -> Result<NoElements, NotEmpty> {
    match len {
        Some(0) => Ok(NoElements),
        _ => Err(NotEmpty),
    }
}

/// The number methods of [`Probe`]: empty when zero.
macro_rules! zero_is_empty {
    ($($method:ident: $t:ty = $zero:literal),* $(,)?) => {$(
        fn $method(self, v: $t) -> Result<bool, NotEmpty> {
            Ok(v == $zero)
        }
    )*};
}

impl Serializer for Probe {
    type Ok = bool;
    type Error = NotEmpty;
    type SerializeSeq = NoElements;
    type SerializeTuple = NoElements;
    type SerializeTupleStruct = NoElements;
    type SerializeTupleVariant = NoElements;
    type SerializeMap = NoElements;
    type SerializeStruct = NoElements;
    type SerializeStructVariant = NoElements;

    fn serialize_bool(self, v: bool) -> Result<bool, NotEmpty> {
        Ok(!v)
    }
    zero_is_empty! {
        serialize_i8: i8 = 0, serialize_i16: i16 = 0, serialize_i32: i32 = 0, serialize_i64: i64 = 0,
        serialize_u8: u8 = 0, serialize_u16: u16 = 0, serialize_u32: u32 = 0, serialize_u64: u64 = 0,
        serialize_f32: f32 = 0.0, serialize_f64: f64 = 0.0,
    }
    fn serialize_char(self, _: char) -> Result<bool, NotEmpty> {
        Ok(false)
    }
    fn serialize_str(self, v: &str) -> Result<bool, NotEmpty> {
        Ok(v.is_empty())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<bool, NotEmpty> {
        Ok(v.is_empty())
    }
    fn serialize_none(self) -> Result<bool, NotEmpty> {
        Ok(true)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, NotEmpty> {
        // A set message or a set `optional` scalar.
        Ok(false)
    }
    fn serialize_unit(self) -> Result<bool, NotEmpty> {
        Ok(true)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, NotEmpty> {
        Ok(true)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<bool, NotEmpty> {
        Ok(false)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<bool, NotEmpty> {
        v.serialize(Probe)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotEmpty> {
        Ok(false)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<NoElements, NotEmpty> {
        no_elements(len)
    }
    fn serialize_tuple(self, len: usize) -> Result<NoElements, NotEmpty> {
        no_elements(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<NoElements, NotEmpty> {
        no_elements(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<NoElements, NotEmpty> {
        Err(NotEmpty)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<NoElements, NotEmpty> {
        no_elements(len)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<NoElements, NotEmpty> {
        Err(NotEmpty)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<NoElements, NotEmpty> {
        Err(NotEmpty)
    }
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

    #[test]
    fn replies_name_enum_values_and_omit_zero_fields_as_mobiledgex_does() {
        use edge_proto::edge::{AppInst, AppInstKey, AppPort, HealthCheck, LProto, TrackedState};
        let inst = AppInst {
            key: Some(AppInstKey::default()),
            state: TrackedState::Ready as i32,
            health_check: HealthCheck::Ok as i32,
            mapped_ports: vec![AppPort {
                proto: LProto::Udp as i32,
                public_port: 10000,
                ..Default::default()
            }],
            power_state: 99,
            ..Default::default()
        };
        let v = serde_json::to_value(EnumsByName(&inst)).unwrap();
        assert_eq!(
            v,
            json!({
                "key": {},
                "state": "Ready",
                "health_check": "HealthCheckOk",
                "mapped_ports": [{"proto": "LProtoUdp", "public_port": 10000}],
                "power_state": 99,
            }),
            "names for enum values (a number no value has stays); zero values, empty lists and \
             unset messages left out; a set message written even when empty"
        );
        // Read back, it is the same message.
        let back: AppInst = from_json(&mut v.clone(), "AppInst").unwrap();
        assert_eq!(back, inst);
    }
}
