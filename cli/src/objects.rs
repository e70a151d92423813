//! The region's object kinds as edgectl handles them through the MC: their names and methods, the order
//! `apply` follows, `field=value` arguments and YAML/JSON files turned into request objects, enum fields
//! written and shown by name, and tables.

use std::path::Path;

use edge_common::proto_json;
use prost_reflect::{EnumDescriptor, FieldDescriptor, MessageDescriptor};
use serde_json::{Map, Value, json};

/// One kind of object.
#[derive(Debug)]
pub struct Kind {
    /// MC method suffix and request key, e.g. `AppInst`
    pub name: &'static str,
    /// apply order: what others refer to comes first
    pub rank: u8,
    /// Create, Update and Delete exist
    pub writable: bool,
    /// table columns: header and the field's dotted path
    pub columns: &'static [(&'static str, &'static str)],
}

pub const KINDS: &[Kind] = &[
    Kind {
        name: "Flavor",
        rank: 0,
        writable: true,
        columns: &[
            ("NAME", "key.name"),
            ("VCPUS", "vcpus"),
            ("RAM", "ram"),
            ("DISK", "disk"),
        ],
    },
    Kind {
        name: "OperatorCode",
        rank: 1,
        writable: true,
        columns: &[("CODE", "code"), ("ORG", "organization")],
    },
    Kind {
        name: "Cloudlet",
        rank: 2,
        writable: true,
        columns: &[
            ("ORG", "key.organization"),
            ("NAME", "key.name"),
            ("PLATFORM", "platform_type"),
            ("LOCATION", "location"),
            ("STATE", "state"),
            ("AGE", "created_at"),
        ],
    },
    Kind {
        name: "CloudletInfo",
        rank: 2,
        writable: false,
        columns: &[
            ("ORG", "key.organization"),
            ("NAME", "key.name"),
            ("STATE", "state"),
            ("CRM", "crm_version"),
            ("ERRORS", "errors"),
        ],
    },
    Kind {
        name: "AlertPolicy",
        rank: 3,
        writable: true,
        columns: &[
            ("ORG", "key.organization"),
            ("NAME", "key.name"),
            ("SEVERITY", "severity"),
            ("TRIGGER", "trigger_time"),
        ],
    },
    Kind {
        name: "App",
        rank: 4,
        writable: true,
        columns: &[
            ("ORG", "key.organization"),
            ("NAME", "key.name"),
            ("VERSION", "key.version"),
            ("DEPLOYMENT", "deployment"),
            ("IMAGE", "image_path"),
            ("PORTS", "access_ports"),
            ("AGE", "created_at"),
        ],
    },
    Kind {
        name: "ClusterInst",
        rank: 5,
        writable: true,
        columns: &[
            ("ORG", "key.organization"),
            ("NAME", "key.name"),
            ("CLOUDLET", "cloudlet_key"),
            ("FLAVOR", "flavor.name"),
            ("ACCESS", "ip_access"),
            ("IP", "allocated_ip"),
            ("STATE", "state"),
            ("AGE", "created_at"),
        ],
    },
    Kind {
        name: "AppInst",
        rank: 6,
        writable: true,
        columns: &[
            ("ORG", "key.organization"),
            ("NAME", "key.name"),
            ("APP", "app_key"),
            ("CLUSTER", "cluster_key.name"),
            ("CLOUDLET", "cloudlet_key"),
            ("STATE", "state"),
            ("HEALTH", "health_check"),
            ("URI", "uri"),
            ("PORTS", "mapped_ports"),
            ("AGE", "created_at"),
        ],
    },
    Kind {
        name: "Alert",
        rank: 7,
        writable: false,
        columns: &[
            ("ALERT", "labels.alertname"),
            ("APP", "labels.app"),
            ("CLOUDLET", "labels.cloudlet"),
            ("SEVERITY", "labels.severity"),
            ("STATE", "state"),
        ],
    },
];

/// The kind named `s`: its name in any case (`appinst`, `AppInst`), optionally plural (`appinsts`).
pub fn kind(s: &str) -> anyhow::Result<&'static Kind> {
    let s = s.to_ascii_lowercase();
    let s = s
        .strip_suffix('s')
        .filter(|_| !s.ends_with("ss"))
        .unwrap_or(&s);
    KINDS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown kind \"{s}\"; kinds: {}",
                KINDS
                    .iter()
                    .map(|k| k.name.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Every field of `kind` with its default value, nested messages included: what `field=value`
/// arguments and files are checked and typed against.
fn schema(kind: &str) -> Value {
    message(kind).map_or(Value::Null, |m| defaults(&m))
}

/// Every field of message `m` at its default, as the messages' serde derive writes it (enums as
/// numbers), nested messages filled in the same way.
fn defaults(m: &MessageDescriptor) -> Value {
    Value::Object(
        m.fields()
            .map(|f| (f.name().to_string(), default_of(&f)))
            .collect(),
    )
}

fn default_of(f: &FieldDescriptor) -> Value {
    if f.is_map() {
        return json!({});
    }
    if f.is_list() {
        return json!([]);
    }
    match f.kind() {
        prost_reflect::Kind::Message(m) => defaults(&m),
        prost_reflect::Kind::Bool => json!(false),
        prost_reflect::Kind::String => json!(""),
        prost_reflect::Kind::Double | prost_reflect::Kind::Float => json!(0.0),
        // Integers and enums; this proto has no bytes fields.
        _ => json!(0),
    }
}

/// Adds to `obj` (an object of `kind` as the MC returns it, which leaves out fields at their zero value
/// as MobiledgeX's MC does) every field it lacks, at its default, also in nested messages and lists of
/// them, so that tables, JSON and YAML show them all.
pub fn with_defaults(kind: &str, obj: &mut Value) {
    fn fill_in(m: &MessageDescriptor, obj: &mut Value) {
        let Value::Object(o) = obj else { return };
        for f in m.fields() {
            match o.get_mut(f.name()) {
                None | Some(Value::Null) => {
                    o.insert(f.name().to_string(), default_of(&f));
                }
                Some(v) => match f.kind() {
                    prost_reflect::Kind::Message(inner) if f.is_list() => {
                        for e in v.as_array_mut().into_iter().flatten() {
                            fill_in(&inner, e);
                        }
                    }
                    prost_reflect::Kind::Message(inner) if !f.is_map() => fill_in(&inner, v),
                    _ => {}
                },
            }
        }
    }
    if let Some(m) = message(kind) {
        fill_in(&m, obj);
    }
}

/// The message descriptor of `kind`.
fn message(kind: &str) -> Option<MessageDescriptor> {
    proto_json::pool().get_message_by_name(&format!("edge.{kind}"))
}

/// The enum a field holds, found by its dotted path in `kind`.
fn enum_at(kind: &str, path: &[&str]) -> Option<EnumDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut m = message(kind)?;
    for p in parents {
        match m.get_field_by_name(p)?.kind() {
            prost_reflect::Kind::Message(inner) => m = inner,
            _ => return None,
        }
    }
    match m.get_field_by_name(last)?.kind() {
        prost_reflect::Kind::Enum(e) => Some(e),
        _ => None,
    }
}

/// Writes the enum values in `obj` (an object of `kind` as the MC returns it: MobiledgeX's CamelCase
/// names, or numbers) as their proto names, `READY`.
pub fn names(kind: &str, obj: &mut Value) {
    if let Some(m) = message(kind) {
        let _ = proto_json::visit_enums(&m, obj, kind, &mut |e, v, _| {
            proto_json::enum_proto_name(e, v);
            Ok(())
        });
    }
}

/// Replaces enum names in `obj` (an object of `kind` as a user wrote it) by their numbers.
pub fn numbers(kind: &str, obj: &mut Value) -> anyhow::Result<()> {
    match message(kind) {
        Some(m) => proto_json::enum_names_to_numbers(&m, obj, kind).map_err(anyhow::Error::msg),
        None => Ok(()),
    }
}

/// Short names for the fields users name most.
fn alias(kind: &str, field: &str) -> String {
    match (kind, field) {
        ("OperatorCode", "org") => "organization".into(),
        ("OperatorCode", "name") => "code".into(),
        (_, "org") => "key.organization".into(),
        (_, "name") => "key.name".into(),
        ("App", "version") => "key.version".into(),
        (_, f) => f.replace('-', "_"),
    }
}

/// The object of `kind` that `field=value` arguments describe (dotted paths, e.g. `key.name=web`, or
/// `org=`, `name=`, `version=`): each value typed as its field is, enums by name.
pub fn from_args(kind: &Kind, args: &[String]) -> anyhow::Result<Value> {
    let schema = schema(kind.name);
    let mut obj = Value::Object(Map::new());
    for a in args {
        let (field, value) = a.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "\"{a}\": arguments are field=value, e.g. name=web or key.organization=acme"
            )
        })?;
        let path = alias(kind.name, field);
        let parts: Vec<&str> = path.split('.').collect();
        let mut expected = &schema;
        for (i, p) in parts.iter().enumerate() {
            expected = match expected.get(p) {
                Some(e) => e,
                // A map's keys are the user's: any name goes.
                None if expected.is_object() && i > 0 && is_map(&schema, &parts[..i]) => {
                    &Value::Null
                }
                None => anyhow::bail!(
                    "{} has no field \"{path}\"; its fields: {}",
                    kind.name,
                    field_list(&schema, "").join(", ")
                ),
            };
        }
        let typed = typed_value(enum_at(kind.name, &parts), expected, value)
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        set(&mut obj, &parts, typed);
    }
    Ok(obj)
}

/// Whether the schema holds a map (not a message) at `path`: an empty object by default.
fn is_map(schema: &Value, path: &[&str]) -> bool {
    let mut v = schema;
    for p in path {
        v = &v[p];
    }
    v.as_object().is_some_and(|m| m.is_empty())
}

fn field_list(v: &Value, prefix: &str) -> Vec<String> {
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .flat_map(|(k, v)| field_list(v, &format!("{prefix}{k}.")))
            .collect(),
        _ => vec![prefix.trim_end_matches('.').to_string()],
    }
}

fn typed_value(
    enum_of: Option<EnumDescriptor>,
    expected: &Value,
    given: &str,
) -> anyhow::Result<Value> {
    if let Some(e) = enum_of {
        let n =
            proto_json::parse_enum(&e, &Value::String(given.into())).map_err(anyhow::Error::msg)?;
        return Ok(json!(n));
    }
    Ok(match expected {
        Value::Number(_) => {
            let n: serde_json::Number = given
                .parse()
                .map_err(|_| anyhow::anyhow!("\"{given}\" is not a number"))?;
            Value::Number(n)
        }
        Value::Bool(_) => json!(
            given
                .parse::<bool>()
                .map_err(|_| anyhow::anyhow!("\"{given}\" is not true or false"))?
        ),
        Value::Array(_) if given.trim_start().starts_with('[') => serde_json::from_str(given)?,
        Value::Array(_) => json!(
            given
                .split(',')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        ),
        Value::Object(_) => serde_json::from_str(given)
            .map_err(|_| anyhow::anyhow!("give a JSON object, or its fields one by one"))?,
        _ => json!(given),
    })
}

fn set(obj: &mut Value, path: &[&str], v: Value) {
    let mut cur = obj;
    for p in &path[..path.len() - 1] {
        cur = cur
            .as_object_mut()
            .expect("objects all the way down")
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    cur[path[path.len() - 1]] = v;
}

/// One object of a file: its kind, the region it names (if any), and the object itself.
#[derive(Debug)]
pub struct Doc {
    pub kind: &'static Kind,
    pub region: Option<String>,
    pub object: Value,
    /// file and document number, for messages
    pub origin: String,
}

/// The objects of a YAML or JSON file (several YAML documents may share one file), or of every
/// `.yaml`, `.yml` and `.json` file of a directory in name order. Each document has `kind:`, may have
/// `region:`, and the object's fields; enums may be written by name.
pub fn load(path: &Path) -> anyhow::Result<Vec<Doc>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for e in std::fs::read_dir(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        {
            let p = e?.path();
            if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?;
        for (i, d) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let origin = format!("{} (document {})", f.display(), i + 1);
            let v: Value = serde::Deserialize::deserialize(d)
                .map_err(|e| anyhow::anyhow!("{origin}: not valid YAML or JSON: {e}"))?;
            if v.is_null() {
                continue;
            }
            docs.push(doc(v, origin)?);
        }
    }
    Ok(docs)
}

fn doc(v: Value, origin: String) -> anyhow::Result<Doc> {
    let Value::Object(mut m) = v else {
        anyhow::bail!("{origin}: expected a mapping with kind: and the object's fields");
    };
    let kind_name = m
        .remove("kind")
        .and_then(|k| k.as_str().map(String::from))
        .ok_or_else(|| anyhow::anyhow!("{origin}: kind: is missing (e.g. kind: App)"))?;
    let kind = kind(&kind_name).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let region = m
        .remove("region")
        .and_then(|r| r.as_str().map(String::from));
    let mut object = Value::Object(m);
    numbers(kind.name, &mut object).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    if let Some(f) = unknown(&schema(kind.name), &object, "") {
        anyhow::bail!("{origin}: {} has no field \"{f}\"", kind.name);
    }
    Ok(Doc {
        kind,
        region,
        object,
        origin,
    })
}

/// The first field of `given` the schema does not have (maps' keys are free).
fn unknown(schema: &Value, given: &Value, prefix: &str) -> Option<String> {
    let (Value::Object(s), Value::Object(g)) = (schema, given) else {
        return None;
    };
    if s.is_empty() {
        return None;
    }
    g.iter().find_map(|(k, v)| match s.get(k) {
        None => Some(format!("{prefix}{k}")),
        Some(sv) => unknown(sv, v, &format!("{prefix}{k}.")),
    })
}

/// The object's key (the fields that name it), to show or delete it.
pub fn key_of(kind: &Kind, obj: &Value) -> Value {
    match kind.name {
        "OperatorCode" => json!({"code": obj["code"]}),
        _ => json!({"key": obj["key"]}),
    }
}

/// `org/name` for messages.
pub fn describe(kind: &Kind, obj: &Value) -> String {
    let key = if kind.name == "OperatorCode" {
        &obj["code"]
    } else {
        &obj["key"]
    };
    format!("{} {}", kind.name, cell(key))
}

/// A table of `rows` (objects of `kind` with enums already named).
pub fn table(kind: &Kind, rows: &[Value]) -> String {
    let mut cells: Vec<Vec<String>> =
        vec![kind.columns.iter().map(|(h, _)| h.to_string()).collect()];
    for r in rows {
        cells.push(
            kind.columns
                .iter()
                .map(|(_, path)| {
                    let v = path.split('.').fold(r, |v, p| &v[p]);
                    if path.ends_with("created_at") {
                        age(v.as_i64().unwrap_or(0))
                    } else {
                        cell(v)
                    }
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..kind.columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A value as one table cell: keys as `org/name[/version]`, a location as `lat,long`, ports as
/// `tcp:10000->80`, lists joined by commas.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        // Fields at zero are left out by the MC.
        Value::Object(m) if m.contains_key("public_port") || m.contains_key("internal_port") => {
            let proto = v["proto"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("L_PROTO_");
            format!(
                "{}:{}->{}",
                proto.to_ascii_lowercase(),
                v["public_port"].as_u64().unwrap_or(0),
                v["internal_port"].as_u64().unwrap_or(0)
            )
        }
        Value::Object(m) if m.contains_key("latitude") => {
            format!("{},{}", v["latitude"], v["longitude"])
        }
        Value::Object(m) => ["organization", "name", "version"]
            .iter()
            .filter_map(|k| m.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .collect::<Vec<_>>()
            .join("/"),
        other => other.to_string(),
    }
}

/// How long ago unix milliseconds `ms` was: `42s`, `5m`, `3h`, `2d`.
pub fn age(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let s = (edge_common::now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_typed_as_their_fields_and_enums_go_by_name() {
        let app = from_args(
            kind("apps").unwrap(),
            &args(&[
                "org=acme",
                "name=web",
                "version=1.0",
                "image_type=Docker",
                "default_flavor.name=small",
                "env.GREETING=hi",
                "alert_policies=a,b",
            ]),
        )
        .unwrap();
        assert_eq!(
            app,
            json!({"key": {"organization": "acme", "name": "web", "version": "1.0"}, "image_type": 1,
                   "default_flavor": {"name": "small"}, "env": {"GREETING": "hi"}, "alert_policies": ["a", "b"]})
        );
        let c = from_args(
            kind("Cloudlet").unwrap(),
            &args(&[
                "location.latitude=52.5",
                "platform_type=PLATFORM_TYPE_DOCKER",
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            json!({"location": {"latitude": 52.5}, "platform_type": 1})
        );
        let err = |a: &[&str]| {
            from_args(kind("appinst").unwrap(), &args(a))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["colour=red"]).contains("AppInst has no field \"colour\""));
        assert!(err(&["power_state=sideways"]).contains("power_state: unknown PowerState value \"sideways\"; one of PowerStateUnknown, PowerOnRequested"));
        assert!(err(&["key"]).contains("arguments are field=value"));
        assert!(
            from_args(kind("flavor").unwrap(), &args(&["vcpus=two"]))
                .unwrap_err()
                .to_string()
                .contains("vcpus: \"two\" is not a number")
        );
    }

    #[test]
    fn enum_numbers_show_as_names_and_read_back() {
        let mut inst = json!({"state": "Ready", "health_check": 3, "mapped_ports": [{"proto": "LProtoTcp", "public_port": 10000, "internal_port": 80}]});
        names("AppInst", &mut inst);
        assert_eq!(inst["state"], "READY");
        assert_eq!(inst["health_check"], "HEALTH_CHECK_OK");
        assert_eq!(inst["mapped_ports"][0]["proto"], "L_PROTO_TCP");
        numbers("AppInst", &mut inst).unwrap();
        assert_eq!(inst["state"], 5);
        let mut info = json!({"state": 2});
        names("CloudletInfo", &mut info);
        assert_eq!(info["state"], "CLOUDLET_STATE_READY");
    }

    #[test]
    fn fields_the_mc_left_out_show_at_their_defaults() {
        let mut inst = json!({"app_key": {"name": "web"}, "state": 5, "mapped_ports": [{"public_port": 10000}]});
        with_defaults("AppInst", &mut inst);
        names("AppInst", &mut inst);
        assert_eq!(inst["state"], "READY");
        assert_eq!(inst["power_state"], "POWER_STATE_UNKNOWN");
        assert_eq!(inst["uri"], "");
        assert_eq!(
            inst["app_key"],
            json!({"organization": "", "name": "web", "version": ""})
        );
        assert_eq!(inst["key"], json!({"organization": "", "name": ""}));
        assert_eq!(
            inst["mapped_ports"][0],
            json!({"proto": "L_PROTO_UNKNOWN", "internal_port": 0, "public_port": 10000, "fqdn_prefix": "",
                   "end_port": 0, "tls": false, "http": false}),
            "list elements too"
        );
        assert_eq!(cell(&inst["mapped_ports"]), "unknown:10000->0");
    }

    #[test]
    fn kinds_tables_and_files() {
        assert!(
            kind("widget")
                .unwrap_err()
                .to_string()
                .contains("kinds: flavor")
        );
        let t = table(
            kind("appinst").unwrap(),
            &[
                json!({"key": {"organization": "acme", "name": "w"}, "app_key": {"organization": "acme", "name": "web", "version": "1.0"},
                     "state": "READY", "mapped_ports": [{"proto": "L_PROTO_TCP", "public_port": 10000, "internal_port": 80}]}),
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ORG   NAME  APP"), "{t}");
        assert!(
            lines[1].contains("acme/web/1.0") && lines[1].contains("tcp:10000->80"),
            "{t}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "kind: App\nkey: {organization: acme, name: web, version: '1.0'}\nimage_type: IMAGE_TYPE_DOCKER\n---\nkind: flavor\nregion: EU\nkey: {name: small}\nvcpus: 1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not read").unwrap();
        let docs = load(dir.path()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].object["image_type"], 1);
        assert_eq!(
            (docs[1].kind.name, docs[1].region.as_deref()),
            ("Flavor", Some("EU"))
        );
        std::fs::write(dir.path().join("b.yaml"), "kind: App\ncolour: red\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("b.yaml (document 1): App has no field \"colour\""),
            "{err}"
        );
        std::fs::write(dir.path().join("b.yaml"), "key: [unclosed\n").unwrap();
        assert!(
            load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not valid YAML")
        );
    }
}
