//! The master controller's REST API against real PostgreSQL, OpenBao, etcd and regional controllers.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_login_tokens_and_api_keys() {
    let p = Platform::start_with(|c| {
        c.throttle_failures = 3;
        c.token_ttl = Duration::from_secs(5);
    })
    .await;
    let anon = p.anonymous();
    let (s, b) = anon
        .post(
            "/usercreate",
            json!({"Name": "alice", "Email": "alice@example.com", "Passhash": "weak"}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            400,
            "Invalid password, password must be at least 8 characters"
        )
    );
    let (s, b) = anon
        .post(
            "/usercreate",
            json!({"Name": "bad name", "Email": "x@example.com", "Passhash": PASSWORD}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let alice = p.user("alice").await;
    let (s, b) = anon
        .post(
            "/usercreate",
            json!({"Name": "alice", "Email": "other@example.com", "Passhash": PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            409,
            "Username with name alice (case-insensitive) already exists"
        )
    );
    let (s, b) = alice.post("/auth/user/current", json!({})).await;
    assert_eq!((s, b["Name"].as_str().unwrap()), (200, "alice"));

    // Bad bodies get Go's encoding/json texts as MobiledgeX's MC sent them, never a 500.
    for (path, body, content_type, want) in [
        (
            "/auth/org/create",
            "{nope",
            "application/json",
            (
                400,
                "Invalid JSON data: Syntax error at offset 2, invalid character 'n' looking for beginning of object key string",
            ),
        ),
        (
            "/auth/org/create",
            "{\"Name\": 5}",
            "application/json",
            (
                400,
                "Invalid JSON data: Unmarshal error: expected string, but got number for field \"Name\" at offset 10",
            ),
        ),
        (
            "/auth/org/create",
            "",
            "application/json",
            (400, "Request body can't be empty"),
        ),
        (
            "/auth/org/create",
            "{}",
            "text/plain",
            (415, "Unsupported Media Type"),
        ),
        (
            "/auth/ctrl/ShowApp",
            "",
            "application/json",
            (
                400,
                "Invalid JSON data: Syntax error at offset 0, unexpected end of JSON input",
            ),
        ),
        (
            "/auth/ctrl/ShowApp",
            "[1,}",
            "application/json",
            (
                400,
                "Invalid JSON data: Syntax error at offset 4, invalid character '}' looking for beginning of value",
            ),
        ),
    ] {
        let r = alice
            .http
            .post(format!("{}{path}", alice.base))
            .bearer_auth(alice.token.as_ref().unwrap())
            .body(body)
            .header("Content-Type", content_type)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let reply: serde_json::Value = r.json().await.unwrap();
        assert_eq!((status, reply["message"].as_str().unwrap()), want, "{body}");
    }

    // No or bad tokens.
    let (s, b) = anon.post("/auth/user/current", json!({})).await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (400, "No bearer token found")
    );
    let forged = Client {
        token: Some("x.y.z".into()),
        ..anon.clone()
    };
    assert_eq!(forged.post("/auth/user/current", json!({})).await.0, 401);

    // API keys: a subset of the creator's permissions in one org, usable to log in.
    let (s, _) = alice
        .post(
            "/auth/org/create",
            json!({"Name": "acme", "Type": "developer"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = alice.post("/auth/user/create/apikey", json!({"Org": "acme", "Description": "ci", "permissions": [{"resource": "controllers", "action": "manage"}]})).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid permission specified: [controllers:manage]")
    );
    let (s, key) = alice.post("/auth/user/create/apikey", json!({"Org": "acme", "Description": "ci", "permissions": [{"resource": "apps", "action": "view"}]})).await;
    assert_eq!(s, 200, "{key}");
    let (s, b) = anon
        .post(
            "/login",
            json!({"apikeyid": key["Id"], "apikey": key["ApiKey"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let ci = Client {
        token: Some(b["token"].as_str().unwrap().to_string()),
        ..anon.clone()
    };
    assert_eq!(
        ci.post("/auth/user/current", json!({})).await.1["Name"],
        "alice"
    );
    // The key may view apps of acme but not manage them.
    let (s, _) = ci
        .ctrl(
            "CreateApp",
            "A",
            "App",
            json!({"key": {"organization": "acme", "name": "x", "version": "1"}}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, b) = ci
        .post(
            "/auth/user/create/apikey",
            json!({"Org": "acme", "permissions": [{"resource": "apps", "action": "view"}]}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            403,
            "ApiKey auth not allowed to create API keys, please log in with user account"
        )
    );
    let (s, b) = alice.post("/auth/user/show/apikey", json!({})).await;
    assert_eq!((s, b.as_array().unwrap().len()), (200, 1));
    assert_eq!(
        alice
            .post("/auth/user/delete/apikey", json!({"Id": key["Id"]}))
            .await
            .0,
        200
    );
    assert_eq!(ci.post("/auth/user/current", json!({})).await.0, 401);

    // Wrong passwords, then throttling per user (and per address).
    let (s, b) = anon
        .post(
            "/login",
            json!({"username": "alice", "password": "Wrong-Passw0rd"}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (400, "Invalid username or password")
    );
    anon.post(
        "/login",
        json!({"username": "alice", "password": "Wrong-Passw0rd"}),
    )
    .await;
    anon.post(
        "/login",
        json!({"username": "alice", "password": "Wrong-Passw0rd"}),
    )
    .await;
    let (s, b) = anon
        .post("/login", json!({"username": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(s, 429, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("Login temporarily disabled due to 3 failed login attempts"),
        "{b}"
    );

    // Tokens expire (5 s here; expiry has one-second granularity).
    let carol = p.user("carol").await;
    assert_eq!(carol.post("/auth/user/current", json!({})).await.0, 200);
    let (s, b) = testenv::wait_for(
        "carol's token to expire",
        Duration::from_secs(15),
        async || {
            let r = carol.post("/auth/user/current", json!({})).await;
            (r.0 != 200).then_some(r)
        },
    )
    .await;
    // MobiledgeX's MC: jwt-go's text and a 400 for a token that only expired.
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Token is expired by "),
        "{b}"
    );
}

/// One row of the RBAC matrix: who calls, what, and the expected status.
struct Case {
    who: &'static str,
    method: &'static str,
    kind: &'static str,
    object: Value,
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_matrix_and_show_filtering() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    // dev1/dev2 developer orgs, op1/op2 operator orgs; each creator is the org's manager.
    let mut users = std::collections::HashMap::new();
    for (user, org, kind) in [
        ("dev1m", "dev1", "developer"),
        ("dev2m", "dev2", "developer"),
        ("op1m", "op1", "operator"),
        ("op2m", "op2", "operator"),
    ] {
        let c = p.user(user).await;
        assert_eq!(
            c.post("/auth/org/create", json!({"Name": org, "Type": kind}))
                .await
                .0,
            200
        );
        users.insert(user, c);
    }
    for (user, org, role) in [
        ("dev1c", "dev1", "DeveloperContributor"),
        ("dev1v", "dev1", "DeveloperViewer"),
        ("op1c", "op1", "OperatorContributor"),
        ("op1v", "op1", "OperatorViewer"),
    ] {
        let c = p.user(user).await;
        let (s, b) = users["dev1m"]
            .post(
                "/auth/role/adduser",
                json!({"org": org, "username": user, "role": role}),
            )
            .await;
        let expected = if org == "dev1" { 200 } else { 403 };
        assert_eq!(s, expected, "dev1m adding {user} to {org}: {b}");
        if org == "op1" {
            assert_eq!(
                users["op1m"]
                    .post(
                        "/auth/role/adduser",
                        json!({"org": org, "username": user, "role": role})
                    )
                    .await
                    .0,
                200
            );
        }
        users.insert(user, c);
    }
    // Role rules.
    let (s, b) = users["op1m"]
        .post(
            "/auth/role/adduser",
            json!({"org": "op1", "username": "dev1c", "role": "DeveloperViewer"}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            400,
            "Can only assign operator roles for operator organization"
        )
    );
    let (s, _) = users["dev1m"]
        .post(
            "/auth/role/adduser",
            json!({"org": "", "username": "dev1c", "role": "AdminManager"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = users["dev1m"]
        .post(
            "/auth/role/adduser",
            json!({"org": "nosuchorg", "username": "dev1c", "role": "DeveloperViewer"}),
        )
        .await;
    assert_eq!(s, 403, "a non-admin learns nothing about other orgs");

    let flavor = json!({"key": {"name": "small"}, "vcpus": 1, "ram": 512, "disk": 1});
    let cloudlet = |org: &str, name: &str| json!({"key": {"organization": org, "name": name}, "location": {"latitude": 52.5, "longitude": 13.4}, "platform_type": "PlatformTypeFake"});
    // Enums by name, as MobiledgeX's Go clients marshal them (or by number).
    let app = |org: &str, name: &str| json!({"key": {"organization": org, "name": name, "version": "1.0"}, "image_type": "ImageTypeDocker", "image_path": "img", "deployment": "docker", "default_flavor": {"name": "small"}});
    let cases = [
        Case {
            who: "dev1c",
            method: "CreateFlavor",
            kind: "Flavor",
            object: flavor.clone(),
            status: 403,
        },
        Case {
            who: "op1m",
            method: "CreateFlavor",
            kind: "Flavor",
            object: flavor.clone(),
            status: 403,
        },
        Case {
            who: "admin",
            method: "CreateFlavor",
            kind: "Flavor",
            object: flavor.clone(),
            status: 200,
        },
        Case {
            who: "dev1v",
            method: "ShowFlavor",
            kind: "Flavor",
            object: json!({}),
            status: 200,
        },
        Case {
            who: "dev1c",
            method: "CreateCloudlet",
            kind: "Cloudlet",
            object: cloudlet("op1", "c1"),
            status: 403,
        },
        Case {
            who: "op1v",
            method: "CreateCloudlet",
            kind: "Cloudlet",
            object: cloudlet("op1", "c1"),
            status: 403,
        },
        Case {
            who: "op2m",
            method: "CreateCloudlet",
            kind: "Cloudlet",
            object: cloudlet("op1", "c1"),
            status: 403,
        },
        Case {
            who: "op1c",
            method: "CreateCloudlet",
            kind: "Cloudlet",
            object: cloudlet("dev1", "c1"),
            status: 403,
        },
        Case {
            who: "op1c",
            method: "CreateCloudlet",
            kind: "Cloudlet",
            object: cloudlet("op1", "c1"),
            status: 200,
        },
        Case {
            who: "op2m",
            method: "CreateCloudlet",
            kind: "Cloudlet",
            object: cloudlet("op2", "c2"),
            status: 200,
        },
        Case {
            who: "op1v",
            method: "ShowCloudletInfo",
            kind: "CloudletInfo",
            object: json!({}),
            status: 200,
        },
        Case {
            who: "dev1c",
            method: "ShowCloudletInfo",
            kind: "CloudletInfo",
            object: json!({}),
            status: 403,
        },
        Case {
            who: "dev1v",
            method: "CreateApp",
            kind: "App",
            object: app("dev1", "game"),
            status: 403,
        },
        Case {
            who: "dev2m",
            method: "CreateApp",
            kind: "App",
            object: app("dev1", "game"),
            status: 403,
        },
        Case {
            who: "op1m",
            method: "CreateApp",
            kind: "App",
            object: app("dev1", "game"),
            status: 403,
        },
        Case {
            who: "dev1c",
            method: "CreateApp",
            kind: "App",
            object: app("dev1", "game"),
            status: 200,
        },
        Case {
            who: "dev2m",
            method: "CreateApp",
            kind: "App",
            object: app("dev2", "other"),
            status: 200,
        },
        Case {
            who: "dev1c",
            method: "CreateApp",
            kind: "App",
            object: app("dev1", "game"),
            status: 409,
        },
        Case {
            who: "dev2m",
            method: "DeleteApp",
            kind: "App",
            object: app("dev1", "game"),
            status: 403,
        },
        Case {
            who: "op1m",
            method: "ShowApp",
            kind: "App",
            object: json!({}),
            status: 403,
        },
        Case {
            who: "dev1c",
            method: "CreateApp",
            kind: "App",
            object: json!({"key": {"organization": "dev1", "name": "bad/name", "version": "1"}, "image_type": 1, "image_path": "i"}),
            status: 400,
        },
    ];
    for case in &cases {
        let client = if case.who == "admin" {
            &admin
        } else {
            &users[case.who]
        };
        let (s, b) = client
            .ctrl(case.method, "A", case.kind, case.object.clone())
            .await;
        assert_eq!(
            s, case.status,
            "{} {} {}: {b}",
            case.who, case.method, case.object
        );
        if s == 403 {
            assert_eq!(b["message"], "Forbidden");
        }
    }

    // Show never lists another org's objects.
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x["data"]["key"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (s, b) = users["dev1v"].ctrl("ShowApp", "A", "App", json!({})).await;
    assert_eq!((s, names(&b)), (200, vec!["game".to_string()]));
    assert_eq!(
        b[0]["data"]["image_type"], "ImageTypeDocker",
        "shown by MobiledgeX's name: {b}"
    );
    let mut bad = app("dev1", "floppy");
    bad["image_type"] = json!("ImageTypeFloppy");
    let (s, b) = users["dev1m"].ctrl("CreateApp", "A", "App", bad).await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            400,
            "Invalid JSON data: App.image_type: unknown ImageType value \"ImageTypeFloppy\"; one of ImageTypeUnknown, ImageTypeDocker, ImageTypeQcow, ImageTypeHelm"
        )
    );
    let (_, b) = users["dev2m"].ctrl("ShowApp", "A", "App", json!({})).await;
    assert_eq!(names(&b), vec!["other".to_string()]);
    let (_, b) = admin.ctrl("ShowApp", "A", "App", json!({})).await;
    assert_eq!(names(&b).len(), 2);
    // Developers see every cloudlet, but only the public fields of ones they do not operate.
    let (_, b) = users["dev1c"]
        .ctrl("ShowCloudlet", "A", "Cloudlet", json!({}))
        .await;
    assert_eq!(names(&b).len(), 2);
    assert!(b[0]["data"].get("access_public_key").is_none(), "{b}");
    let (_, b) = users["op1v"]
        .ctrl("ShowCloudlet", "A", "Cloudlet", json!({}))
        .await;
    let own = b
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["data"]["key"]["name"] == "c1")
        .unwrap();
    assert!(own["data"].get("access_public_key").is_some(), "{b}");
    let other = b
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["data"]["key"]["name"] == "c2")
        .unwrap();
    assert!(other["data"].get("access_public_key").is_none(), "{b}");
    // User and org listings are scoped too.
    let (_, b) = users["dev2m"].post("/auth/org/show", json!({})).await;
    assert_eq!(b.as_array().unwrap().len(), 1);
    let (_, b) = users["dev1c"].post("/auth/user/show", json!({})).await;
    let listed: Vec<&str> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["Name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["dev1c", "dev1m", "dev1v"]);
    // Show filters (MobiledgeX's): fields of the shown object, matched case-insensitively, plus org and
    // role for users; an org the caller may not view is a 403.
    let dev1c = &users["dev1c"];
    let names_of = |b: &serde_json::Value| -> Vec<String> {
        b.as_array()
            .unwrap()
            .iter()
            .map(|u| u["Name"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, b) = dev1c
        .post(
            "/auth/user/show",
            json!({"org": "dev1", "role": "DeveloperManager"}),
        )
        .await;
    assert_eq!((s, names_of(&b)), (200, vec!["dev1m".to_string()]));
    let (s, b) = dev1c
        .post("/auth/user/show", json!({"name": "dev1v"}))
        .await;
    assert_eq!((s, names_of(&b)), (200, vec!["dev1v".to_string()]));
    let (s, b) = dev1c.post("/auth/user/show", json!({"org": "dev2"})).await;
    assert_eq!((s, b["message"].as_str().unwrap()), (403, "Forbidden"));
    let (s, b) = dev1c.post("/auth/user/show", json!({"Bogus": 1})).await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            400,
            "Failed to parse input data: JSON field Bogus not found in database object User"
        )
    );
    let (s, b) = users["dev2m"]
        .post("/auth/org/show", json!({"Type": "operator"}))
        .await;
    assert_eq!((s, names_of(&b)), (200, Vec::<String>::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_reaches_only_the_named_region() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    admin.create_small_flavor("A").await;
    let (_, a) = admin.ctrl("ShowFlavor", "A", "Flavor", json!({})).await;
    let (sb, b) = admin.ctrl("ShowFlavor", "B", "Flavor", json!({})).await;
    assert_eq!(a.as_array().unwrap().len(), 1);
    assert_eq!((sb, b), (200, Value::Array(vec![])));
    // Straight from region A's controller.
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", p.region_a.api_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flavors = edge_proto::edge::flavor_api_client::FlavorApiClient::new(ch);
    let mut s = flavors
        .show_flavor(edge_proto::edge::Flavor::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.message().await.unwrap().unwrap().key.unwrap().name,
        "small"
    );
    // Updates name only the fields they change.
    let (s, b) = admin
        .ctrl(
            "UpdateFlavor",
            "A",
            "Flavor",
            json!({"key": {"name": "small"}, "vcpus": 4}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, a) = admin.ctrl("ShowFlavor", "A", "Flavor", json!({})).await;
    assert_eq!(
        (a[0]["data"]["vcpus"].as_u64(), a[0]["data"]["ram"].as_u64()),
        (Some(4), Some(512))
    );
    let (s, b) = admin
        .ctrl("ShowFlavor", "nowhere", "Flavor", json!({}))
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (400, "Region \"nowhere\" not found")
    );
    let (s, b) = admin
        .ctrl(
            "CreateFlavor",
            "A",
            "Flavor",
            json!({"key": {"name": "small"}, "vcpus": 1, "ram": 1, "disk": 1}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (409, "Flavor \"small\" already exists")
    );
    let (s, _) = admin.ctrl("NoSuchMethod", "A", "Flavor", json!({})).await;
    assert_eq!(s, 404);
    // The MC keeps region B's channel after using it; deregistering B ends it at once, and registering it
    // again brings it back.
    let (s, b) = admin
        .post("/auth/controller/delete", json!({"Region": "B"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin.ctrl("ShowFlavor", "B", "Flavor", json!({})).await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (400, "Region \"B\" not found")
    );
    let (s, b) = admin
        .post(
            "/auth/controller/create",
            json!({"Region": "B", "Address": p.region_b.api_addr.to_string()}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin.ctrl("ShowFlavor", "B", "Flavor", json!({})).await;
    assert_eq!((s, b), (200, Value::Array(vec![])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_app_inst_progress_streams_incrementally() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    let op = p.user("opm").await;
    let dev = p.user("devm").await;
    assert_eq!(
        op.post(
            "/auth/org/create",
            json!({"Name": "op", "Type": "operator"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        dev.post(
            "/auth/org/create",
            json!({"Name": "dev", "Type": "developer"})
        )
        .await
        .0,
        200
    );
    admin.create_small_flavor("A").await;

    // The operator onboards a cloudlet: the first line carries the access key; its CRM (fake platform,
    // 1 s per step) then brings it up.
    let r = op.send("/auth/ctrl/CreateCloudlet", json!({"Region": "A", "Cloudlet": {"key": {"organization": "op", "name": "c1"}, "location": {"latitude": 1, "longitude": 1}}})).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    use futures::StreamExt;
    let first = body.next().await.unwrap().unwrap();
    let first: Value =
        serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let key = first["data"]["access"]["access_private_key"]
        .as_str()
        .unwrap()
        .to_string();
    let state = tempfile::tempdir().unwrap();
    let _crm = crm::Crm::start(crm::Config::fake(
        "A",
        edge_proto::edge::CloudletKey {
            organization: "op".into(),
            name: "c1".into(),
        },
        p.region_a.notify_addr.to_string(),
        key,
        Duration::from_millis(1000),
        state.path().into(),
    ))
    .await
    .unwrap();
    while body.next().await.is_some() {}

    let cl = json!({"key": {"organization": "dev", "name": "k1"}, "cloudlet_key": {"organization": "op", "name": "c1"}, "flavor": {"name": "small"}, "deployment": "docker"});
    let (s, b) = dev.ctrl("CreateClusterInst", "A", "ClusterInst", cl).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b.as_array()
            .unwrap()
            .iter()
            .all(|l| l.get("result").is_none()),
        "{b}"
    );
    let app = json!({"key": {"organization": "dev", "name": "game", "version": "1.0"}, "image_type": 1, "image_path": "img", "deployment": "docker", "access_ports": "tcp:80", "default_flavor": {"name": "small"}});
    assert_eq!(dev.ctrl("CreateApp", "A", "App", app).await.0, 200);

    let started = std::time::Instant::now();
    let r = dev.send("/auth/ctrl/CreateAppInst", json!({"Region": "A", "AppInst": {"key": {"organization": "dev", "name": "g1"}, "app_key": {"organization": "dev", "name": "game", "version": "1.0"}, "cluster_key": {"organization": "dev", "name": "k1"}}})).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut lines: Vec<(Duration, Value)> = Vec::new();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let l: Vec<u8> = buf.drain(..=i).collect();
            lines.push((started.elapsed(), serde_json::from_slice(&l).unwrap()));
        }
    }
    let messages: Vec<&str> = lines
        .iter()
        .map(|(_, v)| v["data"]["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        messages.contains(&"Deploying simulated app"),
        "{messages:?}"
    );
    assert_eq!(
        *messages.last().unwrap(),
        "AppInst \"dev/g1\" is ready",
        "{messages:?}"
    );
    // The first progress line reached the client well before the end (the CRM takes 1 s per step).
    let (first_at, last_at) = (lines[0].0, lines.last().unwrap().0);
    assert!(
        last_at - first_at >= Duration::from_millis(700),
        "not incremental: {lines:?}"
    );

    // The instance's logs, read on its cloudlet: for its owner only.
    let g1 = json!({"app_inst_key": {"organization": "dev", "name": "g1"}, "log": {"tail": 1}});
    let (s, b) = dev.ctrl("ShowLogs", "A", "ExecRequest", g1.clone()).await;
    assert_eq!(
        (s, b["output"].as_str()),
        (200, Some("simulated app dev/g1 serving\n")),
        "{b}"
    );
    let (s, b) = op.ctrl("ShowLogs", "A", "ExecRequest", g1).await;
    assert_eq!(s, 403, "{b}");

    // A failure after the stream started ends it with a result line.
    let (s, b) = dev
        .ctrl(
            "DeleteClusterInst",
            "A",
            "ClusterInst",
            json!({"key": {"organization": "dev", "name": "k1"}}),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap()),
        (
            400,
            "ClusterInst \"dev/k1\" is in use by AppInst \"dev/g1\""
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_is_written_redacted_and_scoped() {
    let p = Platform::start().await;
    let anon = p.anonymous();
    let alice = p.user("alice").await;
    anon.post(
        "/login",
        json!({"username": "alice", "password": "Wrong-Passw0rd"}),
    )
    .await;
    assert_eq!(
        alice
            .post(
                "/auth/org/create",
                json!({"Name": "acme", "Type": "developer"})
            )
            .await
            .0,
        200
    );
    let bob = p.user("bob").await;
    assert_eq!(
        bob.post(
            "/auth/org/create",
            json!({"Name": "bobs", "Type": "developer"})
        )
        .await
        .0,
        200
    );
    let (s, b) = alice.post("/auth/audit/showself", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let entries = b.as_array().unwrap();
    let ops: Vec<&str> = entries
        .iter()
        .map(|e| e["operationname"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "/api/v1/auth/org/create",
            "/api/v1/login",
            "/api/v1/login",
            "/api/v1/usercreate"
        ]
    );
    let failed = &entries[1];
    assert_eq!(failed["status"], 400);
    // Unauthenticated routes store who tried, never the body.
    assert_eq!(failed["request"], json!({"username": "alice"}));
    assert_eq!(failed["response"], "Invalid username or password");
    assert!(
        entries
            .iter()
            .all(|e| !e["request"].to_string().contains("Passw0rd")),
        "{b}"
    );
    // Org view: alice sees acme's entries, not bobs'; time filters apply.
    let (s, b) = alice
        .post("/auth/audit/showorg", json!({"org": "acme"}))
        .await;
    assert_eq!((s, b.as_array().unwrap().len()), (200, 1));
    assert_eq!(
        alice
            .post("/auth/audit/showorg", json!({"org": "bobs"}))
            .await
            .0,
        403
    );
    let (_, b) = alice
        .post(
            "/auth/audit/showself",
            json!({"endtime": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert!(b.as_array().unwrap().is_empty());
    let (s, _) = alice
        .post("/auth/audit/showself", json!({"starttime": "not-a-time"}))
        .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_restart_and_a_database_outage() {
    let mut p = Platform::start().await;
    // A second MC on the same database: migrations are a no-op, the admin exists already.
    let again = master_controller::MasterController::start(p.config.clone())
        .await
        .unwrap();
    again.stop().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    p.pg.stop();
    let (s, b) = admin.post("/auth/controller/show", json!({})).await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("database unavailable"),
        "{b}"
    );
    p.pg.resume().await.unwrap();
    testenv::wait_for(
        "the MC to recover after the database came back",
        Duration::from_secs(10),
        async || (admin.post("/auth/controller/show", json!({})).await.0 == 200).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_checked_in_copy() {
    let p = Platform::start().await;
    let served: Value = reqwest::get(format!("{}/openapi.json", p.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&served).unwrap() + "\n").unwrap();
    }
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("master-controller/openapi.json"),
    )
    .unwrap();
    assert!(
        served == checked_in,
        "the served OpenAPI document differs from master-controller/openapi.json; regenerate with UPDATE_OPENAPI=1 cargo nextest run -p master-controller openapi"
    );
    assert!(served["paths"]["/api/v1/auth/ctrl/CreateAppInst"].is_object());
    // The document names exactly the routes the server registers (the route table, with one path per
    // method of the region's API), and every request body has a schema.
    let mut served_paths: Vec<String> = master_controller::api::ROUTES
        .iter()
        .flat_map(|r| match r.strip_suffix("{method}") {
            Some(prefix) => master_controller::api::ctrl::methods()
                .into_iter()
                .map(|m| format!("/api/v1{prefix}{m}"))
                .collect::<Vec<_>>(),
            None => vec![format!("/api/v1{r}")],
        })
        .collect();
    served_paths.sort();
    let mut documented: Vec<String> = served["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    documented.sort();
    assert_eq!(documented, served_paths);
    for (path, item) in served["paths"].as_object().unwrap() {
        if let Some(r) =
            item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        {
            let name = r.rsplit('/').next().unwrap();
            assert!(
                served["components"]["schemas"][name].is_object(),
                "{path}: {name}"
            );
        }
    }
    // A schema derived from its type: the user's fields as the MC parses them.
    assert!(served["components"]["schemas"]["NewUser"]["properties"]["Passhash"].is_object());

    // The ops endpoints.
    let base = format!("http://{}", p.mc.addr);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mc_requests_total{path=\"/api/v1/login\",status=\"200\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let p = Platform::start().await;
    let mut cfg = p.config.clone();
    cfg.tls = Some((cert, key));
    let tls = master_controller::MasterController::start(cfg)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = http
        .post(format!(
            "https://localhost:{}/api/v1/login",
            tls.addr.port()
        ))
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_postgres_restart_under_load() {
    let mut p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    let load = testenv::WriteLoad::start(2, 3000, move |name| {
        let admin = admin.clone();
        async move {
            let r = admin
                .post(
                    "/auth/org/create",
                    json!({"Name": name, "Type": "developer"}),
                )
                .await;
            if r.0 == 200 { Ok(()) } else { Err(r) }
        }
    });
    load.wait_acked(20).await;
    p.pg.stop();
    load.wait_refused().await;
    p.pg.resume().await.unwrap();
    load.wait_acked(20).await;
    let (acked, refused) = load.finish().await;

    // While PostgreSQL was down callers were told to retry, in words; nothing acknowledged is missing.
    for (status, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert!(body.to_string().contains("retry later"), "{body}");
    }
    let stored: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT name FROM organizations WHERE name LIKE 'load%'")
            .fetch_all(&p.db().await)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let lost: Vec<_> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    println!(
        "{} writes acknowledged, {} refused while PostgreSQL restarted, {} lost",
        acked.len(),
        refused.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}
