//! The OpenAPI 3 document of the REST API, served at `/api/v1/openapi.json`. The checked-in copy
//! (`master-controller/openapi.json`) is compared with this one by a test, so the two never drift.

use actix_web::HttpResponse;
use serde_json::{Value, json};

fn op(summary: &str, request: Option<&str>, auth: bool) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "OK"},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "409": {"$ref": "#/components/responses/Error"}
        }
    });
    if let Some(schema) = request {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    if auth {
        o["security"] = json!([{"bearer": []}]);
    }
    json!({ "post": o })
}

fn obj(props: &[&str]) -> Value {
    let p: serde_json::Map<String, Value> = props
        .iter()
        .map(|k| (k.to_string(), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "properties": p})
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, summary: &str, req: Option<&str>, auth: bool| {
        paths.insert(format!("/api/v1{path}"), op(summary, req, auth));
    };
    add(
        "/login",
        "Log in with a user name (or email) and password, or an API key; returns a token",
        Some("Login"),
        false,
    );
    add("/usercreate", "Create a user account", Some("User"), false);
    add("/auth/user/current", "The calling user", None, true);
    add(
        "/auth/user/newpass",
        "Change the caller's password",
        Some("NewPassword"),
        true,
    );
    add("/auth/user/show", "Users the caller may see", None, true);
    add(
        "/auth/user/delete",
        "Delete a user (oneself, or any as admin)",
        Some("User"),
        true,
    );
    add(
        "/auth/user/update",
        "Change the caller's email and names",
        Some("User"),
        true,
    );
    add(
        "/auth/restricted/user/update",
        "Admins: lock or unlock a user, mark the email verified",
        Some("User"),
        true,
    );
    add(
        "/auth/user/create/apikey",
        "Create an API key with a subset of the caller's permissions in an org",
        Some("ApiKey"),
        true,
    );
    add(
        "/auth/user/delete/apikey",
        "Delete an API key",
        Some("ApiKey"),
        true,
    );
    add(
        "/auth/user/show/apikey",
        "The caller's API keys",
        None,
        true,
    );
    add(
        "/auth/org/create",
        "Create an organization (developer or operator); the caller becomes its manager",
        Some("Organization"),
        true,
    );
    add(
        "/auth/org/update",
        "Change an organization's address and phone",
        Some("Organization"),
        true,
    );
    add(
        "/auth/org/delete",
        "Delete an organization",
        Some("Organization"),
        true,
    );
    add(
        "/auth/org/show",
        "Organizations the caller belongs to (all for admins)",
        None,
        true,
    );
    add(
        "/auth/role/adduser",
        "Give a user a role in an organization",
        Some("Role"),
        true,
    );
    add(
        "/auth/role/removeuser",
        "Take a role from a user",
        Some("Role"),
        true,
    );
    add("/auth/role/show", "Role names", None, true);
    add("/auth/role/assignment/show", "Role assignments", None, true);
    add(
        "/auth/role/perms/show",
        "The permission table: role, resource, action",
        None,
        true,
    );
    add(
        "/auth/controller/create",
        "Register a region's controller",
        Some("Controller"),
        true,
    );
    add(
        "/auth/controller/delete",
        "Deregister a region",
        Some("Controller"),
        true,
    );
    add("/auth/controller/show", "Regions", None, true);
    add(
        "/auth/audit/showself",
        "The caller's audit entries",
        Some("AuditQuery"),
        true,
    );
    add(
        "/auth/audit/showorg",
        "An organization's audit entries",
        Some("AuditQuery"),
        true,
    );
    add(
        "/auth/alert/show",
        "Alerts of a region the caller may see (same as /auth/ctrl/ShowAlert)",
        Some("RegionRequest"),
        true,
    );
    add(
        "/auth/alertreceiver/create",
        "Have a region's alerts about an app instance or a cloudlet sent to a webhook or Slack",
        Some("AlertReceiver"),
        true,
    );
    add(
        "/auth/alertreceiver/delete",
        "Delete one of the caller's alert receivers",
        Some("AlertReceiver"),
        true,
    );
    add(
        "/auth/alertreceiver/show",
        "The caller's alert receivers (all for admins), URLs hidden",
        Some("AlertReceiver"),
        true,
    );
    for (target, what) in [
        (
            "app",
            "app instances (selector cpu, mem, disk, network, connections)",
        ),
        (
            "cluster",
            "cluster instances (selector cpu, mem, disk, network)",
        ),
        ("cloudlet", "cloudlets (selector utilization)"),
    ] {
        add(
            &format!("/auth/metrics/{target}"),
            &format!("Metrics of {what}, newest first"),
            Some("MetricsQuery"),
            true,
        );
        add(
            &format!("/auth/events/{target}"),
            &format!(
                "Lifecycle and health events of {}",
                what.split(" (").next().unwrap_or(what)
            ),
            Some("MetricsQuery"),
            true,
        );
    }
    for m in crate::api::ctrl::methods() {
        add(
            &format!("/auth/ctrl/{m}"),
            &format!("{m} in a region (forwarded to its controller)"),
            Some("RegionRequest"),
            true,
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Edge Cloud Platform master controller", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": obj(&["message"]),
                "Login": obj(&["username", "password", "apikeyid", "apikey"]),
                "User": obj(&["Name", "Email", "Passhash", "FamilyName", "GivenName", "Nickname", "Locked", "EmailVerified"]),
                "NewPassword": obj(&["currentpassword", "password"]),
                "ApiKey": {"type": "object", "properties": {"Id": {"type": "string"}, "Org": {"type": "string"}, "Description": {"type": "string"},
                    "permissions": {"type": "array", "items": obj(&["resource", "action"])}}},
                "Organization": obj(&["Name", "Type", "Address", "Phone"]),
                "Role": obj(&["org", "username", "role"]),
                "Controller": obj(&["Region", "Address", "NotifyAddr", "InfluxDB", "CaCert", "ServerName"]),
                "AuditQuery": {"type": "object", "properties": {"org": {"type": "string"}, "starttime": {"type": "string", "format": "date-time"},
                    "endtime": {"type": "string", "format": "date-time"}, "limit": {"type": "integer"}}},
                "AlertReceiver": obj(&["Name", "Type", "Severity", "Region", "User", "Email", "SlackChannel", "SlackWebhook", "Webhook", "Cloudlet", "AppInst"]),
                "MetricsQuery": obj(&["Region", "AppInst", "AppInsts", "ClusterInst", "ClusterInsts", "Cloudlet", "Cloudlets", "Selector", "Limit", "NumSamples", "StartTime", "EndTime"]),
                "RegionRequest": {"type": "object", "required": ["Region"], "properties": {"Region": {"type": "string"}},
                    "additionalProperties": {"type": "object", "description": "the object, under its kind's name (Flavor, Cloudlet, App, ...)"}}
            }
        }
    })
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
