//! Random request bodies on every route of the route table, as an admin and without a token: the MC never
//! answers 5xx, every error is JSON with a message, and it keeps serving afterwards.

use crate::common::*;
use serde_json::{Value, json};
use testenv::fuzz::{self, Rng};

/// Field names the routes read, so random bodies reach past the first check.
const NAMES: &[&str] = &[
    "Name",
    "Email",
    "Passhash",
    "username",
    "password",
    "apikeyid",
    "apikey",
    "Org",
    "Description",
    "permissions",
    "resource",
    "action",
    "Id",
    "Type",
    "Address",
    "Phone",
    "org",
    "role",
    "Region",
    "NotifyAddr",
    "InfluxDB",
    "CaCert",
    "ServerName",
    "starttime",
    "endtime",
    "limit",
    "currentpassword",
    "Locked",
    "EmailVerified",
    "FamilyName",
    "Nickname",
    "key",
    "organization",
    "name",
    "version",
    "fields",
    "code",
    "env",
    "image_path",
    "image_type",
    "access_ports",
    "cloudlet_key",
    "app_key",
    "cluster_key",
    "location",
    "latitude",
    "longitude",
    "vcpus",
    "ram",
];

/// The object a forwarded method takes: `CreateApp` → `App`.
fn kind_of(method: &str) -> &str {
    if method == "RotateCloudletAccessKey" {
        return "CloudletKey";
    }
    ["Create", "Update", "Delete", "Show"]
        .iter()
        .find_map(|v| method.strip_prefix(v))
        .unwrap_or(method)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_never_get_a_5xx() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    let anon = p.anonymous();
    let mut routes: Vec<String> = Vec::new();
    for r in master_controller::api::ROUTES {
        if *r == "/auth/ctrl/{method}" {
            routes.extend(
                master_controller::api::ctrl::methods()
                    .into_iter()
                    .map(|m| format!("/auth/ctrl/{m}")),
            );
        } else {
            routes.push(r.to_string());
        }
    }
    let mut rng = Rng::new(0x5eed);
    let mut sent = 0;
    for route in &routes {
        for i in 0..40 {
            let body = match route.strip_prefix("/auth/ctrl/") {
                // Half of the ctrl bodies have the right wrapper, so the typed object parser is reached.
                Some(m) if i % 2 == 0 => {
                    json!({"Region": "A", kind_of(m): fuzz::object(&mut rng, NAMES, 3)})
                        .to_string()
                        .into_bytes()
                }
                _ => fuzz::body(&mut rng, NAMES),
            };
            let client = if i % 4 == 3 { &anon } else { &admin };
            let mut req = client
                .http
                .post(format!("{}{route}", client.base))
                .header("Content-Type", "application/json")
                .body(body.clone());
            if let Some(t) = &client.token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.expect("MC answers");
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
            assert!(status < 500, "{route} {shown} -> {status} {text}");
            if status >= 400 {
                let first: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
                    .unwrap_or_else(|_| panic!("{route} {shown} -> {status} non-JSON: {text}"));
                assert!(
                    first["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{route} {shown} -> {status} without a message: {text}"
                );
            }
            sent += 1;
        }
    }
    // Still serving, and the admin's account is intact.
    p.login(ADMIN, ADMIN_PASSWORD).await;
    println!("{sent} random requests over {} routes", routes.len());
}
