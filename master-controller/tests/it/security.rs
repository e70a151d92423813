//! One regression test per authorization hole the security issue named: each shows the attack answered
//! as it must be, and that nothing changed.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn message(b: &Value) -> &str {
    b["message"].as_str().unwrap_or_default()
}

/// Two developer orgs (`victimorg`, `evilorg`) with a manager each, an App of the victim, a flavor.
async fn tenants(p: &Platform) -> (Client, Client, Client) {
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    let victim = p.user("victim").await;
    let evil = p.user("evil").await;
    for (c, org) in [(&victim, "victimorg"), (&evil, "evilorg")] {
        let (s, b) = c
            .post(
                "/auth/org/create",
                json!({"Name": org, "Type": "developer"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    admin.create_small_flavor("A").await;
    let (s, b) = victim
        .ctrl("CreateApp", "A", "App", app("victimorg", "vapp"))
        .await;
    assert_eq!(s, 200, "{b}");
    (admin, victim, evil)
}

async fn apps_of(c: &Client, org: &str) -> usize {
    let (s, b) = c
        .ctrl("ShowApp", "A", "App", json!({"key": {"organization": org}}))
        .await;
    assert_eq!(s, 200, "{b}");
    b.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_checked_is_the_org_of_the_typed_key() {
    let p = Platform::start().await;
    let (admin, victim, evil) = tenants(&p).await;
    // The reported attack: a loose "organization" beside the key. Refused as an unknown field.
    let (s, b) = evil
        .post(
            "/auth/ctrl/DeleteApp",
            json!({"region": "A", "app": {"organization": "evilorg", "key": {"organization": "victimorg", "name": "vapp", "version": "1.0"}}}),
        )
        .await;
    assert_eq!(
        (s, message(&b)),
        (400, "Invalid JSON data: unknown field \"App.organization\"")
    );
    // The key alone names the victim's org: Forbidden.
    let (s, _) = evil
        .ctrl("DeleteApp", "A", "App", app("victimorg", "vapp"))
        .await;
    assert_eq!(s, 403);
    // Unknown wrapper fields and nested unknown fields are named too.
    let (s, b) = evil
        .post(
            "/auth/ctrl/ShowApp",
            json!({"Region": "A", "App": {}, "org": "victimorg"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(message(&b).contains("unknown field \"org\""), "{b}");
    let (s, b) = evil
        .ctrl(
            "CreateApp",
            "A",
            "App",
            json!({"key": {"organization": "evilorg", "name": "x", "version": "1", "org": "victimorg"}}),
        )
        .await;
    assert_eq!(
        (s, message(&b)),
        (400, "Invalid JSON data: unknown field \"App.key.org\"")
    );
    // An AppInst of evilorg naming the victim's App or ClusterInst is refused before the region sees it.
    for refs in [
        json!({"app_key": {"organization": "victimorg", "name": "vapp", "version": "1.0"}}),
        json!({"app_key": {"organization": "evilorg", "name": "vapp", "version": "1.0"},
               "cluster_key": {"organization": "victimorg", "name": "c"}}),
    ] {
        let mut inst = json!({"key": {"organization": "evilorg", "name": "steal"},
                              "cloudlet_key": {"organization": "nosuchop", "name": "c"}});
        inst.as_object_mut()
            .unwrap()
            .extend(refs.as_object().unwrap().clone());
        let (s, b) = evil.ctrl("CreateAppInst", "A", "AppInst", inst).await;
        assert_eq!(s, 403, "{b}");
    }
    assert_eq!(apps_of(&victim, "victimorg").await, 1);
    // Deleting without the CRM (crm_override) is for platform admins, even on one's own objects.
    let forced = json!({"key": {"organization": "victimorg", "name": "i1"}, "crm_override": 2});
    let (s, _) = victim
        .ctrl("DeleteAppInst", "A", "AppInst", forced.clone())
        .await;
    assert_eq!(s, 403);
    let (s, b) = admin.ctrl("DeleteAppInst", "A", "AppInst", forced).await;
    assert_eq!(s, 404, "the admin gets past RBAC to the region: {b}");
    // The audit row records the org of the typed key.
    let (s, b) = admin
        .post("/auth/audit/showorg", json!({"org": "victimorg"}))
        .await;
    assert_eq!(s, 200);
    let denied = b
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operationname"] == "/api/v1/auth/ctrl/DeleteApp")
        .expect("the denied delete is audited under the victim's org");
    assert_eq!(
        (denied["status"].as_i64(), &denied["username"]),
        (Some(403), &json!("evil"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_codes_are_authorized_on_their_stored_owner() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    let (op1, op2) = (p.user("op1m").await, p.user("op2m").await);
    for (c, org) in [(&op1, "op1"), (&op2, "op2")] {
        assert_eq!(
            c.post("/auth/org/create", json!({"Name": org, "Type": "operator"}))
                .await
                .0,
            200
        );
    }
    let (s, b) = op1
        .ctrl(
            "CreateOperatorCode",
            "A",
            "OperatorCode",
            json!({"code": "26201", "organization": "op1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // op2 claims op1's code as its own: both update and delete are Forbidden.
    for method in ["UpdateOperatorCode", "DeleteOperatorCode"] {
        let (s, b) = op2
            .ctrl(
                method,
                "A",
                "OperatorCode",
                json!({"code": "26201", "organization": "op2"}),
            )
            .await;
        assert_eq!(s, 403, "{method}: {b}");
    }
    let (_, b) = admin
        .ctrl("ShowOperatorCode", "A", "OperatorCode", json!({}))
        .await;
    assert_eq!(b[0]["data"]["organization"], "op1", "{b}");
    // The owner may delete it.
    let (s, b) = op1
        .ctrl(
            "DeleteOperatorCode",
            "A",
            "OperatorCode",
            json!({"code": "26201", "organization": "op1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_follow_their_creators_roles_now() {
    let p = Platform::start().await;
    let (admin, victim, _) = tenants(&p).await;
    // A contributor of victimorg makes a key with apps:manage.
    let contrib = p
        .user_with_role("contrib", "victimorg", "DeveloperContributor")
        .await;
    let key = |c: &Client| {
        let c = c.clone();
        async move {
            let (s, k) = c
                .post(
                    "/auth/user/create/apikey",
                    json!({"Org": "victimorg", "permissions": [{"resource": "apps", "action": "manage"}]}),
                )
                .await;
            assert_eq!(s, 200, "{k}");
            let (s, b) = Client {
                token: None,
                ..c.clone()
            }
            .post(
                "/login",
                json!({"apikeyid": k["Id"], "apikey": k["ApiKey"]}),
            )
            .await;
            assert_eq!(s, 200, "{b}");
            (
                k["Id"].as_str().unwrap().to_string(),
                Client {
                    token: Some(b["token"].as_str().unwrap().into()),
                    ..c
                },
            )
        }
    };
    let (id, session) = key(&contrib).await;
    assert_eq!(apps_of(&session, "victimorg").await, 1);
    // The org's manager sees and can delete keys of the org; strangers cannot.
    let (_, listed) = victim.post("/auth/user/show/apikey", json!({})).await;
    assert!(listed.to_string().contains(&id), "{listed}");
    // Demoted to viewer: the key's manage right ends at once, though its scope still names it.
    let role = |r: &str| json!({"org": "victimorg", "username": "contrib", "role": r});
    assert_eq!(
        victim
            .post("/auth/role/removeuser", role("DeveloperContributor"))
            .await
            .0,
        200
    );
    assert_eq!(
        victim
            .post("/auth/role/adduser", role("DeveloperViewer"))
            .await
            .0,
        200
    );
    let (s, _) = session
        .ctrl("CreateApp", "A", "App", app("victimorg", "viakey"))
        .await;
    assert_eq!(s, 403);
    // No role at all: not even viewing.
    assert_eq!(
        victim
            .post("/auth/role/removeuser", role("DeveloperViewer"))
            .await
            .0,
        200
    );
    let (s, _) = session.ctrl("ShowApp", "A", "App", json!({})).await;
    assert_eq!(s, 403);
    // Promoted again, a new key; its session cannot delete its owner's account or keys.
    assert_eq!(
        victim
            .post("/auth/role/adduser", role("DeveloperContributor"))
            .await
            .0,
        200
    );
    let (id2, session2) = key(&contrib).await;
    let (s, b) = session2
        .post("/auth/user/delete", json!({"Name": "contrib"}))
        .await;
    assert_eq!(
        (s, message(&b)),
        (
            403,
            "ApiKey auth not allowed to delete users, please log in with user account"
        )
    );
    assert_eq!(
        session2
            .post("/auth/user/delete/apikey", json!({"Id": id2}))
            .await
            .0,
        403
    );
    // The org's manager deletes the member's key.
    assert_eq!(
        victim
            .post("/auth/user/delete/apikey", json!({"Id": id2}))
            .await
            .0,
        200
    );
    assert_eq!(session2.post("/auth/user/current", json!({})).await.0, 401);
    // The user deleted: every key session ends.
    let (_, session3) = key(&contrib).await;
    assert_eq!(
        admin
            .post("/auth/user/delete", json!({"Name": "contrib"}))
            .await
            .0,
        200
    );
    assert_eq!(session3.post("/auth/user/current", json!({})).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_die_with_the_credential() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    // A password change ends every older token.
    let alice = p.user("alice").await;
    let second = p.login("alice", PASSWORD).await;
    let (s, b) = alice
        .post(
            "/auth/user/newpass",
            json!({"currentpassword": PASSWORD, "password": "Other-Passw0rd"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(alice.post("/auth/user/current", json!({})).await.0, 401);
    assert_eq!(second.post("/auth/user/current", json!({})).await.0, 401);
    let alice = p.login("alice", "Other-Passw0rd").await;
    // A lock ends them too, and refuses logins; an unlock lets the user in again (old tokens stay dead).
    let (s, b) = admin
        .post(
            "/auth/restricted/user/update",
            json!({"Name": "alice", "Locked": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(alice.post("/auth/user/current", json!({})).await.0, 401);
    let (s, b) = p
        .anonymous()
        .post(
            "/login",
            json!({"username": "alice", "password": "Other-Passw0rd"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(message(&b).starts_with("Account is locked"), "{b}");
    let (s, _) = admin
        .post(
            "/auth/restricted/user/update",
            json!({"Name": "alice", "Locked": false, "EmailVerified": true}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(alice.post("/auth/user/current", json!({})).await.0, 401);
    let alice = p.login("alice", "Other-Passw0rd").await;
    let (_, me) = alice.post("/auth/user/current", json!({})).await;
    assert_eq!(
        (&me["Locked"], &me["EmailVerified"]),
        (&json!(false), &json!(true))
    );
    // Only admins lock; users cannot lock or verify themselves.
    assert_eq!(
        alice
            .post(
                "/auth/restricted/user/update",
                json!({"Name": "alice", "Locked": true})
            )
            .await
            .0,
        403
    );
    let (s, b) = alice
        .post("/auth/user/update", json!({"EmailVerified": false}))
        .await;
    assert_eq!((s, message(&b)), (400, "Cannot change emailverified"));
    // A user deleted and created again under the same name does not inherit the old tokens.
    assert_eq!(
        alice
            .post("/auth/user/delete", json!({"Name": "alice"}))
            .await
            .0,
        200
    );
    let _again = p.user("alice").await;
    assert_eq!(alice.post("/auth/user/current", json!({})).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_orgs_update_and_names_are_unique_case_insensitively() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    let alice = p.user("alice").await;
    let anon = p.anonymous();
    let (s, b) = anon
        .post(
            "/usercreate",
            json!({"Name": "ALICE", "Email": "a2@example.com", "Passhash": PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, message(&b)),
        (
            409,
            "Username with name ALICE (case-insensitive) already exists"
        )
    );
    let (s, b) = anon
        .post(
            "/usercreate",
            json!({"Name": "alice2", "Email": "ALICE@example.com", "Passhash": PASSWORD}),
        )
        .await;
    assert_eq!((s, message(&b)), (409, "Email already in use"));
    // Login by email, in any case, is the same account.
    let (s, _) = anon
        .post(
            "/login",
            json!({"username": "Alice@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, 200);
    // The user updates their names and email; name changes are refused.
    let (s, b) = alice
        .post(
            "/auth/user/update",
            json!({"Email": "alice@new.example", "FamilyName": "Liddell", "Nickname": "al"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, me) = alice.post("/auth/user/current", json!({})).await;
    assert_eq!(
        (&me["Email"], &me["FamilyName"], &me["Nickname"]),
        (&json!("alice@new.example"), &json!("Liddell"), &json!("al"))
    );
    let (s, b) = alice
        .post("/auth/user/update", json!({"Name": "bob"}))
        .await;
    assert_eq!((s, message(&b)), (400, "Cannot change username"));
    // As MobiledgeX's MC: the user as shown may be sent back (read-only fields unchanged, fields this
    // platform does not keep ignored); an email taken by another is named.
    let mut back = me.clone();
    back["Picture"] = json!("x.png");
    let (s, b) = alice.post("/auth/user/update", back).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = alice
        .post("/auth/user/update", json!({"Locked": true}))
        .await;
    assert_eq!((s, message(&b)), (400, "Cannot change locked"));
    let _carol = p.user("carol").await;
    let (s, b) = alice
        .post("/auth/user/update", json!({"Email": "carol@example.com"}))
        .await;
    assert_eq!(
        (s, message(&b)),
        (409, "Email carol@example.com already in use")
    );
    let (s, b) = alice.post("/auth/user/update", json!({"Shoe": "42"})).await;
    assert_eq!(s, 400);
    assert!(message(&b).contains("unknown field \"Shoe\""), "{b}");
    // Orgs: unique case-insensitively, never a user's name, reserved names for admins only.
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
    let (s, b) = alice
        .post(
            "/auth/org/create",
            json!({"Name": "ACME", "Type": "operator"}),
        )
        .await;
    assert_eq!(
        (s, message(&b)),
        (
            409,
            "Organization with name ACME (case-insensitive) already exists"
        )
    );
    let (s, _) = alice
        .post(
            "/auth/org/create",
            json!({"Name": "Alice", "Type": "developer"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, b) = alice
        .post(
            "/auth/org/create",
            json!({"Name": "EdgeCloud", "Type": "operator"}),
        )
        .await;
    assert_eq!(
        (s, message(&b)),
        (400, "Not authorized to create reserved org EdgeCloud")
    );
    assert_eq!(
        admin
            .post(
                "/auth/org/create",
                json!({"Name": "EdgeCloud", "Type": "operator"})
            )
            .await
            .0,
        200
    );
    // Org update: managers change address and phone, never the type.
    let (s, b) = alice
        .post(
            "/auth/org/update",
            json!({"Name": "acme", "Phone": "+49 30 1234"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, orgs) = alice.post("/auth/org/show", json!({})).await;
    assert_eq!(orgs[0]["Phone"], "+49 30 1234");
    let (s, b) = alice
        .post(
            "/auth/org/update",
            json!({"Name": "acme", "Type": "operator"}),
        )
        .await;
    assert_eq!((s, message(&b)), (400, "Cannot change Organization type"));
    let bob = p.user("bob").await;
    assert_eq!(
        bob.post("/auth/org/update", json!({"Name": "acme", "Phone": "0"}))
            .await
            .0,
        403
    );
    // Admins update any org through the restricted route; others may not use it.
    let restricted = json!({"Name": "acme", "Phone": "112"});
    assert_eq!(
        alice
            .post("/auth/restricted/org/update", restricted.clone())
            .await
            .0,
        403
    );
    let (s, b) = admin.post("/auth/restricted/org/update", restricted).await;
    assert_eq!(s, 200, "{b}");
    // No org loses its last manager, and the platform's own admin stays.
    let (s, b) = alice
        .post("/auth/user/delete", json!({"Name": "alice"}))
        .await;
    assert_eq!(
        (s, message(&b)),
        (
            400,
            "Error: Cannot delete the last remaining manager for the org acme"
        )
    );
    let (s, b) = admin
        .post("/auth/user/delete", json!({"Name": ADMIN}))
        .await;
    assert_eq!((s, message(&b)), (400, "Cannot delete superuser"));
    let (s, b) = admin
        .post(
            "/auth/role/adduser",
            json!({"org": "acme", "username": "bob", "role": "DeveloperManager"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = alice
        .post("/auth/user/delete", json!({"Name": "alice"}))
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_with_objects_in_a_region_is_not_deleted() {
    let p = Platform::start().await;
    let (_, victim, _) = tenants(&p).await;
    let (s, b) = victim
        .post("/auth/org/delete", json!({"Name": "victimorg"}))
        .await;
    assert_eq!(
        (s, message(&b)),
        (
            400,
            "Organization victimorg in use: region A: 1 App; delete these first"
        )
    );
    // Nothing was lost: the org, its roles and its App are all there, and it takes new objects.
    let (_, orgs) = victim.post("/auth/org/show", json!({})).await;
    assert_eq!(orgs.as_array().unwrap().len(), 1);
    let (s, b) = victim
        .ctrl("CreateApp", "A", "App", app("victimorg", "second"))
        .await;
    assert_eq!(s, 200, "{b}");
    for name in ["vapp", "second"] {
        let (s, b) = victim
            .ctrl("DeleteApp", "A", "App", app("victimorg", name))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = victim
        .post("/auth/org/delete", json!({"Name": "victimorg"}))
        .await;
    assert_eq!(s, 200, "{b}");
    // Objects in a deleted org cannot be created.
    let (s, _) = victim
        .ctrl("CreateApp", "A", "App", app("victimorg", "late"))
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_stores_no_secret_and_no_raw_unauthenticated_body() {
    let p = Platform::start().await;
    let (admin, victim, _) = tenants(&p).await;
    let mut a = app("victimorg", "withenv");
    a["env"] = json!({"DB_PASSWORD": "hunter2-secret", "MODE": "prod"});
    let (s, b) = victim.ctrl("CreateApp", "A", "App", a).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = victim
        .ctrl(
            "CreateApp",
            "A",
            "App",
            json!({"key": {"organization": "victimorg", "name": "big", "version": "1"}, "command": "x".repeat(20_000)}),
        )
        .await;
    assert_ne!(s, 500, "{b}");
    let (_, entries) = admin
        .post("/auth/audit/showorg", json!({"org": "victimorg"}))
        .await;
    let text = entries.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("\"MODE\":\"prod\""), "{text}");
    assert!(text.contains("\"truncated\":true"), "{text}");
    // usercreate and login store who, never the password.
    let (_, mine) = victim.post("/auth/audit/showself", json!({})).await;
    let create = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operationname"] == "/api/v1/usercreate")
        .unwrap();
    assert_eq!(
        create["request"],
        json!({"Name": "victim", "Email": "victim@example.com"})
    );
    assert!(!mine.to_string().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_is_per_account_and_address_and_usercreate_is_throttled() {
    let p = Platform::start_with(|c| {
        c.throttle_failures = 2;
        c.throttle_window = Duration::from_secs(600);
    })
    .await;
    let _alice = p.user("alice").await;
    let _mallory = p.user("mallory").await;
    let anon = p.anonymous();
    let login = |user: &str, pw: &str| {
        let anon = anon.clone();
        let body = json!({"username": user, "password": pw});
        async move { anon.post("/login", body).await }
    };
    // Name and email are one account: one failure by each locks it.
    assert_eq!(login("alice", "Wrong-Passw0rd").await.0, 400);
    assert_eq!(login("alice@example.com", "Wrong-Passw0rd").await.0, 400);
    assert_eq!(login("ALICE", PASSWORD).await.0, 429);
    // The address: 4 x 2 failures over several accounts lock it for everyone, and logging into one's
    // own account does not reset it.
    for u in ["x1", "x2", "x3"] {
        for _ in 0..2 {
            assert_eq!(login(u, "Wrong-Passw0rd").await.0, 400);
        }
    }
    assert_eq!(login("mallory", PASSWORD).await.0, 429);
    // Parallel guesses are counted before they are judged: at most the limit gets through.
    let p2 = Platform::start_with(|c| {
        c.throttle_failures = 3;
        c.throttle_window = Duration::from_secs(600);
    })
    .await;
    p2.user("bob").await;
    let anon2 = p2.anonymous();
    let guesses = futures::future::join_all((0..20).map(|_| {
        anon2.post(
            "/login",
            json!({"username": "bob", "password": "Wrong-Passw0rd"}),
        )
    }))
    .await;
    let judged = guesses.iter().filter(|(s, _)| *s == 400).count();
    assert_eq!(judged, 3, "{guesses:?}");
    // Account creation per address.
    let p3 = Platform::start_with(|c| c.user_create_limit = 2).await;
    let anon3 = p3.anonymous();
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(
            anon3
                .post(
                    "/usercreate",
                    json!({"Name": format!("u{i}"), "Email": format!("u{i}@example.com"), "Passhash": PASSWORD}),
                )
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_and_database_errors_never_give_a_500() {
    let p = Platform::start().await;
    let alice = p.user("alice").await;
    let anon = p.anonymous();
    let (s, b) = anon
        .post("/login", json!({"username": "a\u{0}b", "password": "x"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(!message(&b).contains("UTF8"), "{b}");
    let (s, b) = alice
        .post(
            "/auth/org/create",
            json!({"Name": "acme", "Type": "developer", "Address": "nul\u{0}here"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = alice
        .ctrl(
            "ShowApp",
            "A",
            "App",
            json!({"key": {"organization": "a\u{0}"}}),
        )
        .await;
    assert!(s < 500, "{s} {b}");
}
