//! `/api/v1/auth/ctrl/<Method>`: region-scoped calls forwarded to the region's controller over gRPC.
//!
//! The body is `{"Region": "...", "<Object>": {...}}` (keys matched case-insensitively, as MobiledgeX's
//! MC did). RBAC is decided from the object's organization and the method (`WIRE.md` §3.3); Show results
//! are filtered to what the caller may see. Replies: unary calls return the controller's result JSON;
//! streamed calls (progress, Show) return newline-delimited `{"data": ...}` lines, and an error after the
//! first line ends the stream with `{"result": {"message": ..., "code": ...}}`.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use edge_proto::edge::*;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::Mc;
use crate::error::{ApiError, Result, from_status};
use crate::handlers::{Caller, audited, caller, require};
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
    /// ShowCloudlet: owners see theirs in full, other viewers every cloudlet with public fields only
    ShowCloudlets,
}

/// The organization an object belongs to, from its JSON.
fn org_of(obj: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    obj.get("organization")
        .map(s)
        .or_else(|| obj.get("key").and_then(|k| k.get("organization")).map(s))
        .unwrap_or_default()
}

/// The value under `name` in a JSON object, matching the key case-insensitively.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn invalid_json(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid JSON data: {e}"))
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(invalid_json)
}

fn line(v: Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Streams `{"data": ...}` lines; the first message is awaited so an immediate error is a normal reply.
async fn stream_reply<T: Serialize + Send + 'static>(
    mut s: tonic::Streaming<T>,
    keep: impl Fn(Value) -> Option<Value> + Send + Sync + 'static,
) -> Result<HttpResponse> {
    let mut first = Vec::new();
    loop {
        match s.message().await {
            Ok(Some(item)) => {
                if let Some(v) = keep(serde_json::to_value(&item).unwrap_or_default()) {
                    first.push(line(json!({ "data": v })));
                    break;
                }
            }
            Ok(None) => {
                return Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    .body(first.concat()));
            }
            Err(e) => return Err(from_status(&e)),
        }
    }
    let keep = std::sync::Arc::new(keep);
    let rest = futures::stream::unfold((s, false), move |(mut s, done)| {
        let keep = keep.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match s.message().await {
                    Ok(Some(item)) => {
                        if let Some(v) = keep(serde_json::to_value(&item).unwrap_or_default()) {
                            return Some((line(json!({ "data": v })), (s, false)));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        let err = from_status(&e);
                        let l = line(
                            json!({"result": {"message": err.message, "code": err.status.as_u16()}}),
                        );
                        return Some((l, (s, true)));
                    }
                }
            }
        }
    });
    let body = futures::stream::iter(first)
        .chain(rest)
        .map(Ok::<_, actix_web::Error>);
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
    let t: Option<(String,)> = sqlx::query_as("SELECT type FROM organizations WHERE name = $1")
        .bind(org)
        .fetch_optional(&mc.db)
        .await?;
    match t {
        Some((t,)) if t == kind => Ok(()),
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
    method: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse> {
    let c = caller(&mc, &req).await?;
    if body.is_empty() {
        return Err(invalid_json(
            "Syntax error at offset 0, unexpected end of JSON input",
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(invalid_json)?;
    let Value::Object(wrapper) = &v else {
        return Err(invalid_json("expected a JSON object"));
    };
    let region = field(wrapper, "Region")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let method = method.into_inner();
    let spec = SPECS
        .iter()
        .find(|s| s.method == method)
        .ok_or_else(|| ApiError::not_found(format!("Unknown method {method}")))?;
    let mut obj = field(wrapper, spec.object)
        .cloned()
        .unwrap_or_else(|| json!({}));
    let org = org_of(&obj);
    let mutating = !method.starts_with("Show");
    let call = async {
        match spec.authz {
            Authz::Anyone | Authz::ShowCloudlets | Authz::View(_) => {}
            Authz::Manage(res) => {
                let scope = if res == rbac::FLAVORS {
                    ""
                } else {
                    org.as_str()
                };
                require(&c, res, MANAGE, scope)?;
            }
        }
        if let Some(kind) = spec.org_kind {
            require_org(&mc, &c, &org, kind).await?;
        }
        let keep: Box<dyn Fn(Value) -> Option<Value> + Send + Sync> = match spec.authz {
            Authz::View(res) => match c.grants.viewable_orgs(res) {
                None => Box::new(Some),
                Some(orgs) if orgs.is_empty() => return Err(ApiError::forbidden()),
                Some(orgs) => Box::new(move |v: Value| orgs.contains(&org_of(&v)).then_some(v)),
            },
            Authz::ShowCloudlets => match c.grants.viewable_orgs(CLOUDLETS) {
                None => Box::new(Some),
                Some(orgs) if orgs.is_empty() => return Err(ApiError::forbidden()),
                Some(orgs) => Box::new(move |v: Value| {
                    Some(if orgs.contains(&org_of(&v)) {
                        v
                    } else {
                        public_cloudlet(v)
                    })
                }),
            },
            _ => Box::new(Some),
        };
        // Update without a field list updates the fields present in the request (MobiledgeX's rule).
        if method.starts_with("Update") {
            let fields: Vec<String> = match obj.get("fields").and_then(Value::as_array) {
                Some(f) if !f.is_empty() => f
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                _ => obj
                    .as_object()
                    .map(|m| {
                        m.keys()
                            .filter(|k| *k != "key" && *k != "fields")
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if let Some(m) = obj.as_object_mut() {
                m.remove("fields");
            }
            obj = json!({ spec.update_field: obj, "fields": fields });
        }
        let ch = mc.region(&region).await?;
        call_controller(ch, &c, &method, obj, keep).await
    };
    if mutating {
        audited(&mc, &req, &c.username, &org, &v, call).await
    } else {
        call.await
    }
}

struct Spec {
    method: &'static str,
    /// key of the object in the request wrapper
    object: &'static str,
    /// field of the object in the controller's Update request
    update_field: &'static str,
    authz: Authz,
    /// the object's org must exist and be of this type (creates)
    org_kind: Option<&'static str>,
}

macro_rules! specs {
    ($($m:literal, $o:literal, $u:literal, $a:expr, $k:expr;)*) => {
        &[$(Spec { method: $m, object: $o, update_field: $u, authz: $a, org_kind: $k }),*]
    };
}

const SPECS: &[Spec] = specs![
    "CreateFlavor", "Flavor", "", Authz::Manage(FLAVORS), None;
    "UpdateFlavor", "Flavor", "flavor", Authz::Manage(FLAVORS), None;
    "DeleteFlavor", "Flavor", "", Authz::Manage(FLAVORS), None;
    "ShowFlavor", "Flavor", "", Authz::Anyone, None;
    "CreateOperatorCode", "OperatorCode", "", Authz::Manage(CLOUDLETS), Some("operator");
    "UpdateOperatorCode", "OperatorCode", "operator_code", Authz::Manage(CLOUDLETS), None;
    "DeleteOperatorCode", "OperatorCode", "", Authz::Manage(CLOUDLETS), None;
    "ShowOperatorCode", "OperatorCode", "", Authz::View(CLOUDLETS), None;
    "CreateCloudlet", "Cloudlet", "", Authz::Manage(CLOUDLETS), Some("operator");
    "UpdateCloudlet", "Cloudlet", "cloudlet", Authz::Manage(CLOUDLETS), None;
    "DeleteCloudlet", "Cloudlet", "", Authz::Manage(CLOUDLETS), None;
    "ShowCloudlet", "Cloudlet", "", Authz::ShowCloudlets, None;
    "RotateCloudletAccessKey", "CloudletKey", "", Authz::Manage(CLOUDLETS), None;
    "ShowCloudletInfo", "CloudletInfo", "", Authz::View(CLOUDLET_ANALYTICS), None;
    "CreateClusterInst", "ClusterInst", "", Authz::Manage(CLUSTERINSTS), Some("developer");
    "UpdateClusterInst", "ClusterInst", "cluster_inst", Authz::Manage(CLUSTERINSTS), None;
    "DeleteClusterInst", "ClusterInst", "", Authz::Manage(CLUSTERINSTS), None;
    "ShowClusterInst", "ClusterInst", "", Authz::View(CLUSTERINSTS), None;
    "CreateApp", "App", "", Authz::Manage(APPS), Some("developer");
    "UpdateApp", "App", "app", Authz::Manage(APPS), None;
    "DeleteApp", "App", "", Authz::Manage(APPS), None;
    "ShowApp", "App", "", Authz::View(APPS), None;
    "CreateAppInst", "AppInst", "", Authz::Manage(APPINSTS), Some("developer");
    "UpdateAppInst", "AppInst", "app_inst", Authz::Manage(APPINSTS), None;
    "DeleteAppInst", "AppInst", "", Authz::Manage(APPINSTS), None;
    "ShowAppInst", "AppInst", "", Authz::View(APPINSTS), None;
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
    keep: Box<dyn Fn(Value) -> Option<Value> + Send + Sync>,
) -> Result<HttpResponse> {
    fn unary<T: Serialize>(
        r: std::result::Result<tonic::Response<T>, Status>,
    ) -> Result<HttpResponse> {
        let r = r.map_err(|e| from_status(&e))?;
        Ok(HttpResponse::Ok().json(r.get_ref()))
    }
    macro_rules! u {
        ($client:ident, $m:ident) => {
            unary($client::new(ch).$m(with_user(parse(obj)?, c)).await)
        };
    }
    macro_rules! s {
        ($client:ident, $m:ident) => {
            match $client::new(ch).$m(with_user(parse(obj)?, c)).await {
                Ok(r) => stream_reply(r.into_inner(), keep).await,
                Err(e) => Err(from_status(&e)),
            }
        };
    }
    use app_api_client::AppApiClient as A;
    use app_inst_api_client::AppInstApiClient as I;
    use cloudlet_api_client::CloudletApiClient as C;
    use cluster_inst_api_client::ClusterInstApiClient as K;
    use flavor_api_client::FlavorApiClient as F;
    use operator_code_api_client::OperatorCodeApiClient as O;
    match method {
        "CreateFlavor" => u!(F, create_flavor),
        "UpdateFlavor" => u!(F, update_flavor),
        "DeleteFlavor" => u!(F, delete_flavor),
        "ShowFlavor" => s!(F, show_flavor),
        "CreateOperatorCode" => u!(O, create_operator_code),
        "UpdateOperatorCode" => u!(O, update_operator_code),
        "DeleteOperatorCode" => u!(O, delete_operator_code),
        "ShowOperatorCode" => s!(O, show_operator_code),
        "CreateCloudlet" => s!(C, create_cloudlet),
        "UpdateCloudlet" => u!(C, update_cloudlet),
        "DeleteCloudlet" => s!(C, delete_cloudlet),
        "ShowCloudlet" => s!(C, show_cloudlet),
        "RotateCloudletAccessKey" => u!(C, rotate_cloudlet_access_key),
        "ShowCloudletInfo" => s!(C, show_cloudlet_info),
        "CreateClusterInst" => s!(K, create_cluster_inst),
        "UpdateClusterInst" => s!(K, update_cluster_inst),
        "DeleteClusterInst" => s!(K, delete_cluster_inst),
        "ShowClusterInst" => s!(K, show_cluster_inst),
        "CreateApp" => u!(A, create_app),
        "UpdateApp" => u!(A, update_app),
        "DeleteApp" => u!(A, delete_app),
        "ShowApp" => s!(A, show_app),
        "CreateAppInst" => s!(I, create_app_inst),
        "UpdateAppInst" => s!(I, update_app_inst),
        "DeleteAppInst" => s!(I, delete_app_inst),
        "ShowAppInst" => s!(I, show_app_inst),
        other => Err(ApiError::not_found(format!("Unknown method {other}"))),
    }
}
