//! `/api/v1/auth/ctrl/<Method>`: region-scoped calls forwarded to the region's controller over gRPC.
//!
//! The body is `{"Region": "...", "<Object>": {...}}` (keys matched case-insensitively, as MobiledgeX's
//! MC did). RBAC is decided from the object's organization and the method (`WIRE.md` §3.3); Show results
//! are filtered to what the caller may see. Replies: unary calls return the controller's result JSON;
//! streamed calls (progress, Show) return newline-delimited `{"data": ...}` lines, and an error after the
//! first line ends the stream with `{"result": {"message": ..., "code": ...}}`. Enum values in replies are
//! names, the CamelCase MobiledgeX's MC writes (`"state": "Ready"`); requests take names or numbers.
//! Fields at their zero value are left out of replies, as MobiledgeX's `omitempty` tags do.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use edge_common::proto_json::{self, WireJson};
use edge_proto::edge::*;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tonic::Status;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::Mc;
use crate::api::{Caller, audited, require};
use crate::error::{ApiError, Result, from_status};
use crate::rbac::{self, *};

/// Who may call a method, decided from the object's organization.
#[derive(Clone, Copy)]
enum Authz {
    /// anyone logged in (ShowFlavor)
    Anyone,
    /// `manage` of the resource on the object's org (`""` for region-wide kinds)
    Manage(&'static str),
    /// Show filtered to the orgs where the caller may view the resource
    View(&'static str),
    /// `view` of the resource on the object's org (ShowLogs: one instance's logs)
    ViewOne(&'static str),
    /// ShowCloudlet: owners see theirs in full, other viewers every cloudlet with public fields only
    ShowCloudlets,
    /// ShowAlert: alerts of the caller's apps, and of the cloudlets it operates
    ShowAlerts,
}

/// The organization of an object the controller returned (trusted output; requests are typed instead):
/// its `organization`, or its key's. Reads a JSON tree or text alike, skipping the other fields.
fn org_of<'de>(obj: impl serde::Deserializer<'de>) -> String {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Key {
        organization: String,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Owner {
        organization: Option<String>,
        key: Key,
    }
    let o = Owner::deserialize(obj).unwrap_or_default();
    o.organization.unwrap_or(o.key.organization)
}

/// Which message a method's object is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Flavor,
    OperatorCode,
    Cloudlet,
    CloudletKey,
    CloudletInfo,
    ClusterInst,
    App,
    AppInst,
    Alert,
    AlertPolicy,
    ExecRequest,
}

/// Another organization a request names besides its own: each must pass its check too.
enum Ref {
    /// the caller must be allowed to view this resource of that org (an AppInst's App, its ClusterInst)
    View(&'static str, String),
    /// the org must be an existing operator organization (a cloudlet's)
    Operator(String),
}

/// A request's object, parsed into its typed message: the canonical JSON forwarded to the controller, the
/// organization the region will act on, and the other orgs it references.
struct Typed {
    value: Value,
    org: String,
    refs: Vec<Ref>,
}

/// Parses `obj` as `T`; a field `T` does not have is refused by its path (`App.organization`). Enum
/// values may be given by name as MobiledgeX's clients send them (`"IpAccessDedicated"`, `"READY"`) or
/// by number.
fn typed<T: DeserializeOwned + Serialize + prost::Name>(
    obj: &Value,
    path: &str,
) -> Result<(T, Value)> {
    let invalid = |why: String| ApiError::bad_request(format!("Invalid JSON data: {why}"));
    let mut obj = obj.clone();
    let t: T = edge_common::proto_json::from_json(&mut obj, path).map_err(invalid)?;
    let canonical = serde_json::to_value(&t).unwrap_or_default();
    if let Some(f) = unknown_field(&obj, &canonical, path) {
        return Err(ApiError::bad_request(format!(
            "Invalid JSON data: unknown field \"{f}\""
        )));
    }
    Ok((t, canonical))
}

/// The first field of `given` that the typed message (`known`, serialized with every field) lacks.
fn unknown_field(given: &Value, known: &Value, path: &str) -> Option<String> {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(name, v)| match k.get(name) {
            None => Some(format!("{path}.{name}")),
            Some(kv) => unknown_field(v, kv, &format!("{path}.{name}")),
        }),
        (Value::Array(g), Value::Array(k)) => g
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (g, k))| unknown_field(g, k, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn org<K>(key: &Option<K>, f: impl Fn(&K) -> &String) -> String {
    key.as_ref().map(|k| f(k).clone()).unwrap_or_default()
}

fn parse_object(kind: Kind, obj: &Value, path: &str) -> Result<Typed> {
    let cloudlet_ref = |k: &Option<CloudletKey>| Ref::Operator(org(k, |k| &k.organization));
    let (value, org, refs) = match kind {
        Kind::Flavor => {
            let (_, v) = typed::<Flavor>(obj, path)?;
            (v, String::new(), vec![])
        }
        Kind::OperatorCode => {
            let (o, v) = typed::<OperatorCode>(obj, path)?;
            (v, o.organization, vec![])
        }
        Kind::Cloudlet => {
            let (c, v) = typed::<Cloudlet>(obj, path)?;
            (v, org(&c.key, |k| &k.organization), vec![])
        }
        Kind::CloudletKey => {
            let (k, v) = typed::<CloudletKey>(obj, path)?;
            (v, k.organization, vec![])
        }
        Kind::CloudletInfo => {
            let (c, v) = typed::<CloudletInfo>(obj, path)?;
            (v, org(&c.key, |k| &k.organization), vec![])
        }
        Kind::ClusterInst => {
            let (c, v) = typed::<ClusterInst>(obj, path)?;
            let refs = vec![cloudlet_ref(&c.cloudlet_key)];
            (v, org(&c.key, |k| &k.organization), refs)
        }
        Kind::Alert => {
            let (_, v) = typed::<Alert>(obj, path)?;
            (v, String::new(), vec![])
        }
        Kind::AlertPolicy => {
            let (p, v) = typed::<AlertPolicy>(obj, path)?;
            (v, org(&p.key, |k| &k.organization), vec![])
        }
        Kind::App => {
            let (a, v) = typed::<App>(obj, path)?;
            (v, org(&a.key, |k| &k.organization), vec![])
        }
        Kind::ExecRequest => {
            let (r, v) = typed::<ExecRequest>(obj, path)?;
            (v, org(&r.app_inst_key, |k| &k.organization), vec![])
        }
        Kind::AppInst => {
            let (i, v) = typed::<AppInst>(obj, path)?;
            let refs = vec![
                Ref::View(APPS, org(&i.app_key, |k| &k.organization)),
                Ref::View(CLUSTERINSTS, org(&i.cluster_key, |k| &k.organization)),
                cloudlet_ref(&i.cloudlet_key),
            ];
            (v, org(&i.key, |k| &k.organization), refs)
        }
    };
    Ok(Typed { value, org, refs })
}

/// The stored owner of an operator code: updates and deletes are authorized on it, not on the request.
async fn operator_code_owner(ch: Channel, code: &str) -> Result<Option<String>> {
    if code.is_empty() {
        return Ok(None);
    }
    let filter = OperatorCode {
        code: code.into(),
        ..Default::default()
    };
    let mut s = operator_code_api_client::OperatorCodeApiClient::new(ch)
        .show_operator_code(filter)
        .await
        .map_err(|e| from_status(&e))?
        .into_inner();
    while let Some(o) = s.message().await.map_err(|e| from_status(&e))? {
        if o.code == code {
            return Ok(Some(o.organization));
        }
    }
    Ok(None)
}

/// What each region still holds of `org` ("region A: 2 App, 1 AppInst"); empty when nothing.
pub async fn org_in_use(mc: &Mc, org: &str) -> Result<Vec<String>> {
    async fn count<T>(
        r: std::result::Result<tonic::Response<tonic::Streaming<T>>, Status>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<usize> {
        let mut s = r.map_err(|e| from_status(&e))?.into_inner();
        let mut n = 0;
        while let Some(item) = s.message().await.map_err(|e| from_status(&e))? {
            n += usize::from(keep(&item));
        }
        Ok(n)
    }
    let regions: Vec<(String,)> = sqlx::query_as("SELECT region FROM controllers ORDER BY region")
        .fetch_all(&mc.db)
        .await?;
    let mut used = Vec::new();
    for (region,) in regions {
        let ch = mc.region(&region).await?;
        let o = org.to_string();
        // Show of the kind filtered on the key's organization.
        macro_rules! keyed {
            ($client:ident, $show:ident, $msg:ident, $key:ident) => {
                count(
                    $client::new(ch.clone())
                        .$show($msg {
                            key: Some($key {
                                organization: o.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .await,
                    |_| true,
                )
                .await
            };
        }
        use app_api_client::AppApiClient;
        use app_inst_api_client::AppInstApiClient;
        use cloudlet_api_client::CloudletApiClient;
        use cluster_inst_api_client::ClusterInstApiClient;
        let counts = [
            (
                "Cloudlet",
                keyed!(CloudletApiClient, show_cloudlet, Cloudlet, CloudletKey),
            ),
            (
                "OperatorCode",
                count(
                    operator_code_api_client::OperatorCodeApiClient::new(ch.clone())
                        .show_operator_code(OperatorCode {
                            organization: o.clone(),
                            ..Default::default()
                        })
                        .await,
                    |c: &OperatorCode| c.organization == org,
                )
                .await,
            ),
            (
                "ClusterInst",
                keyed!(
                    ClusterInstApiClient,
                    show_cluster_inst,
                    ClusterInst,
                    ClusterInstKey
                ),
            ),
            ("App", keyed!(AppApiClient, show_app, App, AppKey)),
            (
                "AppInst",
                keyed!(AppInstApiClient, show_app_inst, AppInst, AppInstKey),
            ),
        ];
        let mut held = Vec::new();
        for (kind, n) in counts {
            let n =
                n.map_err(|e| ApiError::bad_request(format!("region {region}: {}", e.message)))?;
            if n > 0 {
                held.push(format!("{n} {kind}"));
            }
        }
        if !held.is_empty() {
            used.push(format!("region {region}: {}", held.join(", ")));
        }
    }
    Ok(used)
}

/// The value under `name` in a JSON object, matching the key case-insensitively.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

use crate::json::invalid as invalid_json;

fn parse<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(invalid_json)
}

/// What a caller may see of each object of a Show.
enum Keep {
    All,
    /// The objects of these organizations.
    Orgs(BTreeSet<String>),
    /// What the filter returns of each object (`None`: nothing of it).
    Filter(Box<dyn Fn(Value) -> Option<Value> + Send + Sync>),
}

/// Appends a `{"data": <item>}` line for each item (a reply message's wire bytes, written as JSON by
/// `reply`) that `keep` lets the caller see, up to the first error, which it returns. The JSON is written
/// straight from the bytes; only a [`Keep::Filter`] reads it back as a tree.
fn write_lines(
    buf: &mut Vec<u8>,
    items: Vec<std::result::Result<Bytes, Status>>,
    reply: WireJson,
    keep: &Keep,
) -> Option<Status> {
    const DATA: &[u8] = b"{\"data\":";
    for item in items {
        let item = match item {
            Ok(item) => item,
            Err(e) => return Some(e),
        };
        let start = buf.len();
        buf.extend_from_slice(DATA);
        if let Err(e) = reply.write(&item, buf) {
            buf.truncate(start);
            return Some(Status::internal(format!(
                "malformed reply from the controller: {e}"
            )));
        }
        let obj = &buf[start + DATA.len()..];
        let visible = match keep {
            Keep::All => true,
            Keep::Orgs(orgs) => {
                orgs.contains(&org_of(&mut serde_json::Deserializer::from_slice(obj)))
            }
            Keep::Filter(k) => {
                let v = serde_json::from_slice(obj).ok().and_then(k);
                buf.truncate(start);
                if let Some(v) = v {
                    serde_json::to_writer(&mut *buf, &json!({ "data": v }))
                        .expect("a JSON value serializes");
                    buf.push(b'\n');
                }
                continue;
            }
        };
        if visible {
            buf.extend_from_slice(b"}\n");
        } else {
            buf.truncate(start);
        }
    }
    None
}

/// The last line of a stream that failed after it began (the status is 200 by then).
fn write_error(buf: &mut Vec<u8>, e: &Status) {
    let err = from_status(e);
    let v = json!({"result": {"message": err.message, "code": err.status.as_u16()}});
    serde_json::to_writer(&mut *buf, &v).expect("a JSON value serializes");
    buf.push(b'\n');
}

/// Streams `{"data": ...}` lines; the first visible item is awaited so an immediate error is a normal
/// reply. Messages already at hand are written together into one chunk (a Show's objects); one that comes
/// alone (a progress message) goes out at once.
async fn stream_reply(
    s: tonic::Streaming<Bytes>,
    reply: WireJson,
    keep: Keep,
) -> Result<HttpResponse> {
    const READY: usize = 256;
    let mut s = s.ready_chunks(READY);
    let mut first = Vec::new();
    let failed = loop {
        let Some(items) = s.next().await else {
            return Ok(HttpResponse::Ok().content_type("application/json").finish());
        };
        match write_lines(&mut first, items, reply, &keep) {
            Some(e) if first.is_empty() => return Err(from_status(&e)),
            Some(e) => break Some(e),
            None if !first.is_empty() => break None,
            None => {}
        }
    };
    if let Some(e) = failed {
        write_error(&mut first, &e);
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(first));
    }
    let rest = futures::stream::unfold((s, keep, false), move |(mut s, keep, done)| async move {
        if done {
            return None;
        }
        loop {
            let items = s.next().await?;
            let mut buf = Vec::new();
            if let Some(e) = write_lines(&mut buf, items, reply, &keep) {
                write_error(&mut buf, &e);
                return Some((buf, (s, keep, true)));
            }
            if !buf.is_empty() {
                return Some((buf, (s, keep, false)));
            }
        }
    });
    let body = futures::stream::once(async { first })
        .chain(rest)
        .map(|b| Ok::<_, actix_web::Error>(Bytes::from(b)));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

fn with_user<T>(msg: T, c: &Caller) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(c.username.as_str()) {
        r.metadata_mut().insert("x-edge-user", v);
    }
    r
}

/// Checks that `org` exists and has `kind` (developer/operator); else Forbidden for non-admins.
async fn require_org(mc: &Mc, c: &Caller, org: &str, kind: &str) -> Result<()> {
    let t: Option<(String, bool)> =
        sqlx::query_as("SELECT type, delete_in_progress FROM organizations WHERE name = $1")
            .bind(org)
            .fetch_optional(&mc.db)
            .await?;
    match t {
        Some((_, true)) => Err(ApiError::bad_request(format!(
            "Organization {org} is being deleted"
        ))),
        Some((t, _)) if t == kind => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "Organization {org} is not a {kind} organization"
        ))),
        None if c.grants.is_admin() => Err(ApiError::bad_request(format!("Org {org} not found"))),
        None => Err(ApiError::forbidden()),
    }
}

/// Public fields of a cloudlet, for viewers outside its operator organization.
fn public_cloudlet(v: Value) -> Value {
    let keep = [
        "key",
        "location",
        "state",
        "platform_type",
        "num_dynamic_ips",
    ];
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

pub async fn forward(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    method: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse> {
    let method = method.into_inner();
    let spec = SPECS
        .iter()
        .find(|s| s.method == method)
        .ok_or_else(|| ApiError::not_found(format!("Unknown method {method}")))?;
    let v = crate::json::value(&body)?;
    let Value::Object(wrapper) = &v else {
        return Err(invalid_json("expected a JSON object"));
    };
    if let Some(k) = wrapper
        .keys()
        .find(|k| !k.eq_ignore_ascii_case("Region") && !k.eq_ignore_ascii_case(spec.object))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid JSON data: unknown field \"{k}\", expected \"Region\" and \"{}\"",
            spec.object
        )));
    }
    let region = match field(wrapper, "Region") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(r)) => r.clone(),
        Some(_) => return Err(invalid_json("field \"Region\" must be a string")),
    };
    let mut given = field(wrapper, spec.object)
        .cloned()
        .unwrap_or_else(|| json!({}));
    // Update without a field list updates the fields present in the request (MobiledgeX's rule).
    let update_fields = if method.starts_with("Update") {
        let listed = given.as_object_mut().and_then(|m| m.remove("fields"));
        Some(match listed {
            Some(Value::Array(f)) if !f.is_empty() => f
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid_json("\"fields\" must be a list of field names"))?,
            Some(Value::Array(_)) | Some(Value::Null) | None => given
                .as_object()
                .map(|m| m.keys().filter(|k| *k != "key").cloned().collect())
                .unwrap_or_default(),
            Some(_) => return Err(invalid_json("\"fields\" must be a list of field names")),
        })
    } else {
        None
    };
    let mut obj = parse_object(spec.kind, &given, spec.object)?;
    let mutating = !method.starts_with("Show");
    let audit_request = json!({ "Region": region, spec.object: given });
    // An operator code's owner is the stored one: a request cannot claim another org's code. A changed
    // organization must be one the caller manages too.
    let mut new_owner = None;
    if spec.kind == Kind::OperatorCode
        && (method.starts_with("Update") || method.starts_with("Delete"))
    {
        let code = obj.value["code"].as_str().unwrap_or_default().to_string();
        if let Some(owner) = operator_code_owner(mc.region(&region).await?, &code).await? {
            if owner != obj.org && !obj.org.is_empty() {
                new_owner = Some(obj.org.clone());
            }
            obj.org = owner;
        }
    }
    let call = async {
        if let Some(o) = &new_owner {
            require(&c, CLOUDLETS, MANAGE, o)?;
            require_org(&mc, &c, o, "operator").await?;
        }
        let org = obj.org.as_str();
        // Deleting without the cloudlet's CRM leaves whatever runs there: platform admins only.
        if obj.value["crm_override"].as_i64().unwrap_or(0) != 0 {
            require(&c, CLOUDLETS, MANAGE, "")?;
        }
        match spec.authz {
            Authz::Anyone | Authz::ShowCloudlets | Authz::ShowAlerts | Authz::View(_) => {}
            Authz::ViewOne(res) => require(&c, res, VIEW, org)?,
            Authz::Manage(res) => {
                let scope = if res == rbac::FLAVORS { "" } else { org };
                require(&c, res, MANAGE, scope)?;
            }
        }
        if mutating {
            for r in &obj.refs {
                match r {
                    Ref::View(res, o) if !o.is_empty() => require(&c, res, VIEW, o)?,
                    Ref::Operator(o) if !o.is_empty() => {
                        require_org(&mc, &c, o, "operator").await?
                    }
                    _ => {}
                }
            }
        }
        if let Some(kind) = spec.org_kind {
            require_org(&mc, &c, org, kind).await?;
        }
        let keep = match spec.authz {
            Authz::View(res) => match c.grants.viewable_orgs(res) {
                None => Keep::All,
                Some(orgs) if orgs.is_empty() => return Err(ApiError::forbidden()),
                Some(orgs) => Keep::Orgs(orgs),
            },
            Authz::ShowCloudlets => match c.grants.viewable_orgs(CLOUDLETS) {
                None => Keep::All,
                Some(orgs) if orgs.is_empty() => return Err(ApiError::forbidden()),
                Some(orgs) => Keep::Filter(Box::new(move |v: Value| {
                    Some(if orgs.contains(&org_of(&v)) {
                        v
                    } else {
                        public_cloudlet(v)
                    })
                })),
            },
            Authz::ShowAlerts => {
                let none = |r| c.grants.viewable_orgs(r).is_some_and(|o| o.is_empty());
                if none(APPINSTS) && none(CLOUDLET_ANALYTICS) {
                    return Err(ApiError::forbidden());
                }
                let grants = c.grants.clone();
                Keep::Filter(Box::new(move |v: Value| {
                    let labels = serde_json::from_value(v["labels"].clone()).unwrap_or_default();
                    crate::api::alerts::visible(&grants, &labels).then_some(v)
                }))
            }
            _ => Keep::All,
        };
        let request = match &update_fields {
            Some(fields) => json!({ spec.update_field: obj.value, "fields": fields }),
            None => obj.value.clone(),
        };
        let ch = mc.region(&region).await?;
        call_controller(ch, &c, &method, request, keep).await
    };
    if mutating {
        audited(&mc, &req, &c.username, &obj.org, &audit_request, call).await
    } else {
        call.await
    }
}

/// `/auth/alert/show`: the same as `/auth/ctrl/ShowAlert` (MobiledgeX's path for it).
pub async fn show_alert(
    mc: web::Data<Mc>,
    req: HttpRequest,
    c: Caller,
    body: Bytes,
) -> Result<HttpResponse> {
    forward(mc, req, c, web::Path::from("ShowAlert".to_string()), body).await
}

/// The body of every `/auth/ctrl/<Method>` call, for the OpenAPI document: the region, and the object
/// under its kind's name (`{"Region": "EU", "App": {...}}`).
pub struct RegionRequest;

impl utoipa::PartialSchema for RegionRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        serde_json::from_value(json!({
            "type": "object",
            "required": ["Region"],
            "properties": {"Region": {"type": "string"}},
            "additionalProperties": {
                "type": "object",
                "description": "the object, under its kind's name (Flavor, Cloudlet, App, ...)"
            }
        }))
        .expect("a valid schema")
    }
}

impl utoipa::ToSchema for RegionRequest {}

struct Spec {
    method: &'static str,
    kind: Kind,
    /// key of the object in the request wrapper
    object: &'static str,
    /// field of the object in the controller's Update request
    update_field: &'static str,
    authz: Authz,
    /// the object's org must exist and be of this type (creates)
    org_kind: Option<&'static str>,
}

macro_rules! specs {
    ($($m:literal, $kind:ident, $o:literal, $u:literal, $a:expr, $k:expr;)*) => {
        &[$(Spec { method: $m, kind: Kind::$kind, object: $o, update_field: $u, authz: $a, org_kind: $k }),*]
    };
}

const SPECS: &[Spec] = specs![
    "CreateFlavor", Flavor, "Flavor", "", Authz::Manage(FLAVORS), None;
    "UpdateFlavor", Flavor, "Flavor", "flavor", Authz::Manage(FLAVORS), None;
    "DeleteFlavor", Flavor, "Flavor", "", Authz::Manage(FLAVORS), None;
    "ShowFlavor", Flavor, "Flavor", "", Authz::Anyone, None;
    "CreateOperatorCode", OperatorCode, "OperatorCode", "", Authz::Manage(CLOUDLETS), Some("operator");
    "UpdateOperatorCode", OperatorCode, "OperatorCode", "operator_code", Authz::Manage(CLOUDLETS), None;
    "DeleteOperatorCode", OperatorCode, "OperatorCode", "", Authz::Manage(CLOUDLETS), None;
    "ShowOperatorCode", OperatorCode, "OperatorCode", "", Authz::View(CLOUDLETS), None;
    "CreateCloudlet", Cloudlet, "Cloudlet", "", Authz::Manage(CLOUDLETS), Some("operator");
    "UpdateCloudlet", Cloudlet, "Cloudlet", "cloudlet", Authz::Manage(CLOUDLETS), None;
    "DeleteCloudlet", Cloudlet, "Cloudlet", "", Authz::Manage(CLOUDLETS), None;
    "ShowCloudlet", Cloudlet, "Cloudlet", "", Authz::ShowCloudlets, None;
    "RotateCloudletAccessKey", CloudletKey, "CloudletKey", "", Authz::Manage(CLOUDLETS), None;
    "ShowCloudletInfo", CloudletInfo, "CloudletInfo", "", Authz::View(CLOUDLET_ANALYTICS), None;
    "CreateClusterInst", ClusterInst, "ClusterInst", "", Authz::Manage(CLUSTERINSTS), Some("developer");
    "UpdateClusterInst", ClusterInst, "ClusterInst", "cluster_inst", Authz::Manage(CLUSTERINSTS), None;
    "DeleteClusterInst", ClusterInst, "ClusterInst", "", Authz::Manage(CLUSTERINSTS), None;
    "ShowClusterInst", ClusterInst, "ClusterInst", "", Authz::View(CLUSTERINSTS), None;
    "CreateApp", App, "App", "", Authz::Manage(APPS), Some("developer");
    "UpdateApp", App, "App", "app", Authz::Manage(APPS), None;
    "DeleteApp", App, "App", "", Authz::Manage(APPS), None;
    "ShowApp", App, "App", "", Authz::View(APPS), None;
    "CreateAppInst", AppInst, "AppInst", "", Authz::Manage(APPINSTS), Some("developer");
    "UpdateAppInst", AppInst, "AppInst", "app_inst", Authz::Manage(APPINSTS), None;
    "DeleteAppInst", AppInst, "AppInst", "", Authz::Manage(APPINSTS), None;
    "ShowAppInst", AppInst, "AppInst", "", Authz::View(APPINSTS), None;
    "ShowAlert", Alert, "Alert", "", Authz::ShowAlerts, None;
    "RunCommand", ExecRequest, "ExecRequest", "", Authz::Manage(APPINSTS), None;
    "RunConsole", ExecRequest, "ExecRequest", "", Authz::Manage(APPINSTS), None;
    "ShowLogs", ExecRequest, "ExecRequest", "", Authz::ViewOne(APPINSTS), None;
    "CreateAlertPolicy", AlertPolicy, "AlertPolicy", "", Authz::Manage(APPS), Some("developer");
    "UpdateAlertPolicy", AlertPolicy, "AlertPolicy", "alert_policy", Authz::Manage(APPS), None;
    "DeleteAlertPolicy", AlertPolicy, "AlertPolicy", "", Authz::Manage(APPS), None;
    "ShowAlertPolicy", AlertPolicy, "AlertPolicy", "", Authz::View(APPS), None;
];

/// The method names forwarded to controllers.
pub fn methods() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.method).collect()
}

async fn call_controller(
    ch: Channel,
    c: &Caller,
    method: &str,
    obj: Value,
    keep: Keep,
) -> Result<HttpResponse> {
    macro_rules! methods {
        ($($name:literal => $request:ty,)*) => {
            match method {
                $($name => call::<$request>(ch, c, method, obj, keep).await,)*
                other => Err(ApiError::not_found(format!("Unknown method {other}"))),
            }
        };
    }
    methods! {
        "CreateFlavor" => Flavor,
        "UpdateFlavor" => FlavorUpdate,
        "DeleteFlavor" => Flavor,
        "ShowFlavor" => Flavor,
        "CreateOperatorCode" => OperatorCode,
        "UpdateOperatorCode" => OperatorCodeUpdate,
        "DeleteOperatorCode" => OperatorCode,
        "ShowOperatorCode" => OperatorCode,
        "CreateCloudlet" => Cloudlet,
        "UpdateCloudlet" => CloudletUpdate,
        "DeleteCloudlet" => Cloudlet,
        "ShowCloudlet" => Cloudlet,
        "RotateCloudletAccessKey" => CloudletKey,
        "ShowCloudletInfo" => CloudletInfo,
        "CreateClusterInst" => ClusterInst,
        "UpdateClusterInst" => ClusterInstUpdate,
        "DeleteClusterInst" => ClusterInst,
        "ShowClusterInst" => ClusterInst,
        "CreateApp" => App,
        "UpdateApp" => AppUpdate,
        "DeleteApp" => App,
        "ShowApp" => App,
        "CreateAppInst" => AppInst,
        "UpdateAppInst" => AppInstUpdate,
        "DeleteAppInst" => AppInst,
        "ShowAppInst" => AppInst,
        "ShowAlert" => Alert,
        "RunCommand" => ExecRequest,
        "RunConsole" => ExecRequest,
        "ShowLogs" => ExecRequest,
        "CreateAlertPolicy" => AlertPolicy,
        "UpdateAlertPolicy" => AlertPolicyUpdate,
        "DeleteAlertPolicy" => AlertPolicy,
        "ShowAlertPolicy" => AlertPolicy,
    }
}

/// A controller method as [`call`] needs it, from the descriptors.
struct Method {
    path: PathAndQuery,
    /// the request message's full name
    input: String,
    reply: WireJson,
    streaming: bool,
}

/// The controller's gRPC methods by name, looked up once.
static METHODS: LazyLock<HashMap<String, Method>> = LazyLock::new(|| {
    let mut all = HashMap::new();
    for s in proto_json::pool().services() {
        if s.package_name() != "edge" {
            continue;
        }
        for m in s.methods() {
            let path = format!("/{}/{}", s.full_name(), m.name());
            let method = Method {
                path: path.parse().expect("a gRPC path from the descriptors"),
                input: m.input().full_name().to_string(),
                reply: WireJson::of(m.output().full_name()).expect("every message has a writer"),
                streaming: m.is_server_streaming(),
            };
            all.insert(m.name().to_string(), method);
        }
    }
    all
});

/// Calls controller method `method` with `obj` as its request `R`. The reply is never decoded into
/// messages: its wire bytes are written as JSON (`WireJson`), one `{"data": ...}` line per message of a
/// stream.
async fn call<R>(
    ch: Channel,
    c: &Caller,
    method: &str,
    obj: Value,
    keep: Keep,
) -> Result<HttpResponse>
where
    R: prost::Message + prost::Name + DeserializeOwned + Send + Sync + 'static,
{
    let m = METHODS
        .get(method)
        .filter(|m| m.input == R::full_name())
        .ok_or_else(|| {
            ApiError::internal(format!("no controller method {method}({})", R::full_name()))
        })?;
    let request = with_user(parse::<R>(obj)?, c);
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| from_status(&Status::unknown(format!("Service was not ready: {e}"))))?;
    let codec = Raw::<R>(std::marker::PhantomData);
    let path = m.path.clone();
    if m.streaming {
        match grpc.server_streaming(request, path, codec).await {
            Ok(r) => stream_reply(r.into_inner(), m.reply, keep).await,
            Err(e) => Err(from_status(&e)),
        }
    } else {
        let r = grpc
            .unary(request, path, codec)
            .await
            .map_err(|e| from_status(&e))?;
        let mut body = Vec::new();
        m.reply
            .write(r.get_ref(), &mut body)
            .map_err(|e| ApiError::internal(format!("malformed reply from the controller: {e}")))?;
        Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(body))
    }
}

/// The gRPC codec of [`call`]: requests encoded by prost (as `edge-proto`'s clients do), replies kept as
/// their wire bytes.
struct Raw<R>(std::marker::PhantomData<R>);

impl<R: prost::Message + Send + 'static> tonic::codec::Codec for Raw<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> std::result::Result<Option<Bytes>, Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(name: &str) -> Flavor {
        Flavor {
            key: Some(FlavorKey { name: name.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn stream_lines_keep_what_the_caller_may_see_and_stop_at_an_error() {
        let lines = |buf: &[u8]| -> Vec<Value> {
            String::from_utf8_lossy(buf)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        // The lines of `items` as the controller would send them (wire bytes).
        fn write<M: prost::Message + prost::Name>(
            buf: &mut Vec<u8>,
            items: Vec<std::result::Result<M, Status>>,
            keep: &Keep,
        ) -> Option<Status> {
            let wire = items
                .into_iter()
                .map(|i| i.map(|m| Bytes::from(m.encode_to_vec())))
                .collect();
            write_lines(buf, wire, WireJson::of(&M::full_name()).unwrap(), keep)
        }
        let mut buf = Vec::new();
        let items = vec![Ok(flavor("a")), Ok(flavor("b"))];
        assert!(write(&mut buf, items, &Keep::All).is_none());
        let all = lines(&buf);
        assert_eq!(
            (all.len(), &all[1]["data"]["key"]["name"]),
            (2, &json!("b"))
        );

        // A filter drops what the caller may not see; an error ends the items at that point.
        let only_b = Keep::Filter(Box::new(|v: Value| (v["key"]["name"] == "b").then_some(v)));
        let mut buf = Vec::new();
        let items = vec![
            Ok(flavor("a")),
            Ok(flavor("b")),
            Err(Status::failed_precondition("Flavor \"c\" is in use")),
            Ok(flavor("d")),
        ];
        let err = write(&mut buf, items, &only_b).expect("the error");
        write_error(&mut buf, &err);
        assert_eq!(
            lines(&buf),
            vec![
                json!({"data": {"key": {"name": "b"}}}),
                json!({"result": {"message": "Flavor \"c\" is in use", "code": 400}}),
            ]
        );

        // By organization: the object's own, or its key's.
        let app = |org: &str| App {
            key: Some(AppKey {
                organization: org.into(),
                name: "web".into(),
                version: "1".into(),
            }),
            ..Default::default()
        };
        let code = |org: &str| OperatorCode {
            code: "1".into(),
            organization: org.into(),
        };
        let only = |org: &str| Keep::Orgs(BTreeSet::from([org.to_string()]));
        let mut buf = Vec::new();
        let items = vec![Ok(app("a")), Ok(app("b")), Ok(app("")), Ok(app("a"))];
        assert!(write(&mut buf, items, &only("a")).is_none());
        let a = json!({"data": {"key": {"organization": "a", "name": "web", "version": "1"}}});
        assert_eq!(lines(&buf), vec![a; 2]);
        let mut buf = Vec::new();
        let items = vec![Ok(code("b")), Ok(code("a"))];
        assert!(write(&mut buf, items, &only("a")).is_none());
        assert_eq!(
            lines(&buf),
            vec![json!({"data": {"code": "1", "organization": "a"}})]
        );
    }
}
