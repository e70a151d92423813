//! The RBAC matrix, generated from the route table (`api::ROUTES`, with `/auth/ctrl/{method}` expanded
//! to every forwarded method): every route × every principal (each role of the permission table, a user
//! without roles, an API key with a narrower scope than its creator) × the principal's own organization,
//! another one and a missing one. Each call must be allowed (any answer but 401/403) or denied (403) as the
//! permission table says, and a denied call must change nothing: neither the accounts, organizations,
//! roles, API keys and regions in PostgreSQL nor the region's objects.
//!
//! The expectations below restate, route by route, which permission each route needs; a route added to
//! the table without an expectation here fails the test.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use master_controller::rbac::{self, *};
use serde_json::{Value, json};

type Grants = BTreeMap<String, BTreeSet<(String, String)>>;

fn has(g: &Grants, org: &str, res: &str, action: &str) -> bool {
    g.get(org)
        .is_some_and(|p| p.contains(&(res.to_string(), action.to_string())))
}

/// The permission on `org`, or platform-wide (admin roles live under the org `""`).
fn allows(g: &Grants, res: &str, action: &str, org: &str) -> bool {
    has(g, "", res, action) || (!org.is_empty() && has(g, org, res, action))
}

/// The permission in some organization (Show calls list what that allows).
fn anywhere(g: &Grants, res: &str, action: &str) -> bool {
    g.keys().any(|o| has(g, o, res, action))
}

/// An AlertPolicy of `org`.
fn policy(org: &str, name: &str) -> Value {
    json!({"key": {"organization": org, "name": name}, "cpu_utilization_limit": 80, "severity": "warning", "trigger_time": "30s"})
}

/// Alerts are shown to viewers of app instances (their apps') and operators (their cloudlets').
fn sees_alerts(g: &Grants) -> bool {
    anywhere(g, APPINSTS, VIEW) || anywhere(g, CLOUDLET_ANALYTICS, VIEW)
}

struct Principal {
    name: &'static str,
    client: Client,
    grants: Grants,
    /// organization of the principal's role (none for admins and the user without roles)
    home: Option<&'static str>,
    api_key: bool,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Own,
    Other,
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Allow,
    Deny,
}

fn expect(allowed: bool) -> Expect {
    if allowed { Expect::Allow } else { Expect::Deny }
}

/// Which kind of organization a route acts on.
#[derive(Clone, Copy)]
enum OrgKind {
    Developer,
    Operator,
}

fn org_for(p: &Principal, kind: OrgKind, t: Target) -> String {
    let own = p.home.unwrap_or(match kind {
        OrgKind::Developer => "devA",
        OrgKind::Operator => "opA",
    });
    match t {
        Target::Own => own.into(),
        Target::Other if own.starts_with("dev") => "devB".into(),
        Target::Other => "opB".into(),
        Target::Missing => "nosuchorg".into(),
    }
}

fn viewer_role(org: &str) -> &'static str {
    if org.starts_with("op") {
        OPERATOR_VIEWER
    } else {
        DEVELOPER_VIEWER
    }
}

struct Env {
    p: Platform,
    admin: Client,
    /// managers of the four organizations, by org
    managers: BTreeMap<&'static str, Client>,
    db: sqlx::PgPool,
}

impl Env {
    async fn must(&self, c: &Client, path: &str, body: Value) -> Value {
        let (s, b) = c.post(path, body.clone()).await;
        assert_eq!(s, 200, "setup {path} {body}: {b}");
        b
    }

    async fn ctrl_must(&self, method: &str, kind: &str, obj: Value) {
        let (s, b) = self.admin.ctrl(method, "A", kind, obj.clone()).await;
        assert_eq!(s, 200, "setup {method} {obj}: {b}");
    }

    fn exists(org: &str) -> bool {
        org != "nosuchorg"
    }

    /// Everything a call could change, as text.
    async fn snapshot(&self) -> String {
        let tables = [
            "SELECT name, email, token_gen, locked, email_verified, family_name, given_name, nickname FROM users",
            "SELECT name, type, address, phone, delete_in_progress FROM organizations",
            "SELECT username, org, role FROM roles",
            "SELECT id, username, org, permissions FROM api_keys",
            "SELECT region, address FROM controllers",
            "SELECT username, name, type, severity FROM alert_receivers",
        ]
        .map(|q| format!("(SELECT json_agg(t ORDER BY t::text) FROM ({q}) t)"))
        .join(", ");
        let sql = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(format!(
            "SELECT json_build_array({tables})::text"
        )))
        .fetch_one(&self.db);
        let kinds = [
            "Flavor",
            "OperatorCode",
            "Cloudlet",
            "ClusterInst",
            "App",
            "AppInst",
            "AlertPolicy",
        ];
        let shows = futures::future::join_all(kinds.map(|kind| async move {
            let (s, b) = self
                .admin
                .ctrl(&format!("Show{kind}"), "A", kind, json!({}))
                .await;
            assert_eq!(s, 200, "{b}");
            let mut items: Vec<String> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let mut d = l["data"].clone();
                    // Progress text and timestamps move by themselves; what a call could change stays.
                    if let Some(m) = d.as_object_mut() {
                        m.remove("status");
                        m.remove("updated_at");
                    }
                    d.to_string()
                })
                .collect();
            items.sort();
            items.join("\n")
        }));
        let (sql, shows) = tokio::join!(sql, shows);
        format!("{}\n{}", sql.unwrap().0, shows.join("\n"))
    }

    /// The request body of `route` for `p` on target `t`, and the expected decision. May create what the
    /// call will act on (as the admin or the org's manager), so that a denied delete has something to
    /// leave alone.
    async fn case(&self, route: &str, p: &Principal, t: Target, i: usize) -> (Value, Expect) {
        use Expect::*;
        let g = &p.grants;
        let dev = org_for(p, OrgKind::Developer, t);
        let op = org_for(p, OrgKind::Operator, t);
        match route {
            "/auth/user/current"
            | "/auth/role/show"
            | "/auth/role/perms/show"
            | "/auth/role/assignment/show"
            | "/auth/controller/show"
            | "/auth/audit/showself"
            | "/auth/org/show"
            | "/auth/user/show/apikey" => (json!({}), Allow),
            "/auth/user/show" => (json!({}), expect(anywhere(g, USERS, VIEW))),
            "/auth/user/newpass" => (
                json!({"currentpassword": "Wrong-Passw0rd", "password": "New-Passw0rd-1"}),
                expect(!p.api_key),
            ),
            "/auth/user/update" => (json!({"Nickname": format!("n{i}")}), expect(!p.api_key)),
            "/auth/user/delete" => {
                let victim = self.victim(&dev, i).await;
                (
                    json!({"Name": victim}),
                    expect(!p.api_key && allows(g, USERS, MANAGE, "")),
                )
            }
            "/auth/restricted/user/update" => {
                let victim = self.victim(&dev, i).await;
                (
                    json!({"Name": victim, "Nickname": format!("r{i}"), "EmailVerified": true}),
                    expect(allows(g, USERS, MANAGE, "")),
                )
            }
            "/auth/user/create/apikey" => (
                json!({"Org": dev, "Description": "matrix", "permissions": [{"resource": "users", "action": "view"}]}),
                expect(!p.api_key && has(g, &dev, USERS, VIEW)),
            ),
            "/auth/user/delete/apikey" => {
                if !Self::exists(&dev) {
                    return (json!({"Id": "nosuchkey"}), expect(!p.api_key));
                }
                let key = self
                    .must(
                        &self.managers[dev.as_str()],
                        "/auth/user/create/apikey",
                        json!({"Org": dev, "permissions": [{"resource": "users", "action": "view"}]}),
                    )
                    .await;
                (
                    json!({"Id": key["Id"]}),
                    expect(!p.api_key && allows(g, USERS, MANAGE, &dev)),
                )
            }
            // (Reserved names are refused as bad input, 400, as MobiledgeX did: tests/it/security.rs.)
            "/auth/org/create" => (
                json!({"Name": format!("neworg{i}"), "Type": "developer"}),
                expect(!p.api_key),
            ),
            "/auth/org/update" => (
                json!({"Name": dev, "Phone": format!("{i}")}),
                expect(allows(g, USERS, MANAGE, &dev)),
            ),
            "/auth/restricted/org/update" => (
                json!({"Name": dev, "Phone": format!("r{i}")}),
                expect(allows(g, USERS, MANAGE, "")),
            ),
            // Every existing org holds objects in region A: an allowed delete is refused as "in use".
            "/auth/org/delete" => (json!({"Name": op}), expect(allows(g, USERS, MANAGE, &op))),
            "/auth/role/adduser" => {
                let name = format!("nb{i}");
                self.create_user(&name).await;
                (
                    json!({"org": dev, "username": name, "role": viewer_role(&dev)}),
                    expect(allows(g, USERS, MANAGE, &dev)),
                )
            }
            "/auth/role/removeuser" => {
                let victim = self.victim(&op, i).await;
                (
                    json!({"org": op, "username": victim, "role": viewer_role(&op)}),
                    expect(allows(g, USERS, MANAGE, &op)),
                )
            }
            "/auth/controller/create" => (
                json!({"Region": format!("R{i}"), "Address": "127.0.0.1:1"}),
                expect(allows(g, CONTROLLERS, MANAGE, "")),
            ),
            "/auth/controller/delete" => {
                let region = format!("D{i}");
                self.must(
                    &self.admin,
                    "/auth/controller/create",
                    json!({"Region": region, "Address": "127.0.0.1:1"}),
                )
                .await;
                (
                    json!({"Region": region}),
                    expect(allows(g, CONTROLLERS, MANAGE, "")),
                )
            }
            "/auth/audit/showorg" => (json!({"org": dev}), expect(allows(g, USERS, VIEW, &dev))),
            "/auth/alert/show" => (json!({"Region": "A", "Alert": {}}), expect(sees_alerts(g))),
            "/auth/metrics/app" | "/auth/events/app" => (
                json!({"Region": "A", "AppInst": {"app_key": {"organization": dev}}, "Selector": "cpu"}),
                expect(allows(g, APPINSTS, VIEW, &dev)),
            ),
            "/auth/metrics/cluster" | "/auth/events/cluster" => (
                json!({"Region": "A", "ClusterInst": {"organization": dev}, "Selector": "cpu"}),
                expect(allows(g, CLUSTERINSTS, VIEW, &dev)),
            ),
            "/auth/metrics/cloudlet" | "/auth/events/cloudlet" => (
                json!({"Region": "A", "Cloudlet": {"organization": op}, "Selector": "utilization"}),
                expect(allows(g, CLOUDLET_ANALYTICS, VIEW, &op)),
            ),
            "/auth/alertreceiver/create" => (
                json!({"Name": format!("r{i}"), "Type": "webhook", "Severity": "error",
                    "Webhook": "http://127.0.0.1:9/hook", "AppInst": {"app_key": {"organization": dev}}}),
                expect(allows(g, APPINSTS, VIEW, &dev)),
            ),
            "/auth/alertreceiver/delete" => {
                let name = format!("rdel{i}");
                self.must(
                    &self.admin,
                    "/auth/alertreceiver/create",
                    json!({"Name": name, "Type": "webhook", "Severity": "error", "Webhook": "http://127.0.0.1:9/hook"}),
                )
                .await;
                (
                    json!({"Name": name, "User": ADMIN}),
                    expect(allows(g, USERS, MANAGE, "")),
                )
            }
            "/auth/alertreceiver/show" => (json!({}), Allow),
            ctrl => {
                let method = ctrl.strip_prefix("/auth/ctrl/").unwrap_or_else(|| {
                    panic!("route {route} has no RBAC expectation in the matrix")
                });
                self.ctrl_case(method, p, &dev, &op, i).await
            }
        }
    }

    /// A fresh user (never logged in) with a viewer role in `org` (no role when `org` does not exist).
    async fn victim(&self, org: &str, i: usize) -> String {
        let name = format!("victim{i}");
        self.create_user(&name).await;
        if Self::exists(org) {
            self.must(
                &self.admin,
                "/auth/role/adduser",
                json!({"org": org, "username": name, "role": viewer_role(org)}),
            )
            .await;
        }
        name
    }

    async fn create_user(&self, name: &str) {
        self.must(
            &self.p.anonymous(),
            "/usercreate",
            json!({"Name": name, "Email": format!("{name}@example.com"), "Passhash": PASSWORD}),
        )
        .await;
    }

    async fn ctrl_case(
        &self,
        method: &str,
        p: &Principal,
        dev: &str,
        op: &str,
        i: usize,
    ) -> (Value, Expect) {
        use Expect::*;
        let g = &p.grants;
        let (kind, obj, allowed) = match method {
            "CreateFlavor" => (
                "Flavor",
                json!({"key": {"name": format!("f{i}")}, "vcpus": 1, "ram": 512, "disk": 1}),
                allows(g, FLAVORS, MANAGE, ""),
            ),
            "UpdateFlavor" => (
                "Flavor",
                json!({"key": {"name": "small"}, "ram": 1024 + i}),
                allows(g, FLAVORS, MANAGE, ""),
            ),
            "DeleteFlavor" => {
                let f =
                    json!({"key": {"name": format!("fdel{i}")}, "vcpus": 1, "ram": 512, "disk": 1});
                self.ctrl_must("CreateFlavor", "Flavor", f.clone()).await;
                ("Flavor", f, allows(g, FLAVORS, MANAGE, ""))
            }
            "ShowFlavor" => ("Flavor", json!({}), true),
            "CreateOperatorCode" => (
                "OperatorCode",
                json!({"code": format!("{}", 100_000 + i), "organization": op}),
                allows(g, CLOUDLETS, MANAGE, op),
            ),
            "UpdateOperatorCode" | "DeleteOperatorCode" => {
                let code = json!({"code": format!("{}", 200_000 + i), "organization": op});
                if op.starts_with("op") {
                    self.ctrl_must("CreateOperatorCode", "OperatorCode", code.clone())
                        .await;
                }
                ("OperatorCode", code, allows(g, CLOUDLETS, MANAGE, op))
            }
            "ShowOperatorCode" => ("OperatorCode", json!({}), anywhere(g, CLOUDLETS, VIEW)),
            // An invalid location: an allowed create is refused by the controller, and nothing waits for
            // a CRM.
            "CreateCloudlet" => (
                "Cloudlet",
                json!({"key": {"organization": op, "name": format!("cl{i}")}, "location": {"latitude": 99, "longitude": 1}}),
                allows(g, CLOUDLETS, MANAGE, op),
            ),
            "UpdateCloudlet" => (
                "Cloudlet",
                json!({"key": {"organization": op, "name": "home"}, "location": {"latitude": 2, "longitude": 2}}),
                allows(g, CLOUDLETS, MANAGE, op),
            ),
            "DeleteCloudlet" => (
                "Cloudlet",
                json!({"key": {"organization": op, "name": "nosuch"}}),
                allows(g, CLOUDLETS, MANAGE, op),
            ),
            "RotateCloudletAccessKey" => (
                "CloudletKey",
                json!({"organization": op, "name": "home"}),
                allows(g, CLOUDLETS, MANAGE, op),
            ),
            "ShowCloudlet" => ("Cloudlet", json!({}), anywhere(g, CLOUDLETS, VIEW)),
            "ShowCloudletInfo" => (
                "CloudletInfo",
                json!({}),
                anywhere(g, CLOUDLET_ANALYTICS, VIEW),
            ),
            "CreateClusterInst" => (
                "ClusterInst",
                json!({"key": {"organization": dev, "name": format!("k{i}")}, "cloudlet_key": {"organization": "opA", "name": "nosuch"},
                       "flavor": {"name": "small"}, "deployment": "docker"}),
                allows(g, CLUSTERINSTS, MANAGE, dev),
            ),
            "UpdateClusterInst" => (
                "ClusterInst",
                json!({"key": {"organization": dev, "name": "nosuch"}, "num_nodes": 2}),
                allows(g, CLUSTERINSTS, MANAGE, dev),
            ),
            "DeleteClusterInst" => (
                "ClusterInst",
                json!({"key": {"organization": dev, "name": "nosuch"}}),
                allows(g, CLUSTERINSTS, MANAGE, dev),
            ),
            "ShowClusterInst" => ("ClusterInst", json!({}), anywhere(g, CLUSTERINSTS, VIEW)),
            "CreateApp" => (
                "App",
                app(dev, &format!("a{i}")),
                allows(g, APPS, MANAGE, dev),
            ),
            "UpdateApp" => (
                "App",
                json!({"key": {"organization": dev, "name": "home", "version": "1.0"}, "command": format!("run {i}")}),
                allows(g, APPS, MANAGE, dev),
            ),
            "DeleteApp" => {
                let a = app(dev, &format!("adel{i}"));
                if dev.starts_with("dev") {
                    self.ctrl_must("CreateApp", "App", a.clone()).await;
                }
                ("App", a, allows(g, APPS, MANAGE, dev))
            }
            "ShowApp" => ("App", json!({}), anywhere(g, APPS, VIEW)),
            "CreateAppInst" => (
                "AppInst",
                json!({"key": {"organization": dev, "name": format!("ai{i}")}, "app_key": {"organization": dev, "name": "home", "version": "1.0"},
                       "cloudlet_key": {"organization": "opA", "name": "nosuch"}}),
                allows(g, APPINSTS, MANAGE, dev) && allows(g, APPS, VIEW, dev),
            ),
            "UpdateAppInst" => (
                "AppInst",
                json!({"key": {"organization": dev, "name": "nosuch"}, "flavor": {"name": "small"}}),
                allows(g, APPINSTS, MANAGE, dev),
            ),
            "DeleteAppInst" => (
                "AppInst",
                json!({"key": {"organization": dev, "name": "nosuch"}}),
                allows(g, APPINSTS, MANAGE, dev),
            ),
            "ShowAppInst" => ("AppInst", json!({}), anywhere(g, APPINSTS, VIEW)),
            "ShowAlert" => ("Alert", json!({}), sees_alerts(g)),
            "RunCommand" | "RunConsole" => (
                "ExecRequest",
                json!({"app_inst_key": {"organization": dev, "name": "nosuch"}}),
                allows(g, APPINSTS, MANAGE, dev),
            ),
            "ShowLogs" => (
                "ExecRequest",
                json!({"app_inst_key": {"organization": dev, "name": "nosuch"}}),
                allows(g, APPINSTS, VIEW, dev),
            ),
            "CreateAlertPolicy" => (
                "AlertPolicy",
                policy(dev, &format!("p{i}")),
                allows(g, APPS, MANAGE, dev),
            ),
            "UpdateAlertPolicy" => (
                "AlertPolicy",
                json!({"key": {"organization": dev, "name": "nosuch"}, "severity": "info"}),
                allows(g, APPS, MANAGE, dev),
            ),
            "DeleteAlertPolicy" => {
                let p = policy(dev, &format!("pdel{i}"));
                if dev.starts_with("dev") {
                    self.ctrl_must("CreateAlertPolicy", "AlertPolicy", p.clone())
                        .await;
                }
                ("AlertPolicy", p, allows(g, APPS, MANAGE, dev))
            }
            "ShowAlertPolicy" => ("AlertPolicy", json!({}), anywhere(g, APPS, VIEW)),
            other => panic!("ctrl method {other} has no RBAC expectation in the matrix"),
        };
        (
            json!({"Region": "A", kind: obj}),
            if allowed { Allow } else { Deny },
        )
    }
}

fn grants(roles: &[(&str, &str)]) -> Grants {
    let mut g = Grants::new();
    for (org, role) in roles {
        g.entry(org.to_string())
            .or_default()
            .extend(rbac::perms_of(role));
    }
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_role_and_org() {
    let p = Platform::start().await;
    let admin = p.login(ADMIN, ADMIN_PASSWORD).await;
    // Four organizations, each created by its manager, each holding objects in region A.
    let mut managers = BTreeMap::new();
    for (user, org, kind) in [
        ("devm", "devA", "developer"),
        ("opm", "opA", "operator"),
        ("devbm", "devB", "developer"),
        ("opbm", "opB", "operator"),
    ] {
        let c = p.user(user).await;
        let (s, b) = c
            .post("/auth/org/create", json!({"Name": org, "Type": kind}))
            .await;
        assert_eq!(s, 200, "{b}");
        managers.insert(org, c);
    }
    let db = p.db().await;
    let env = Env {
        admin: admin.clone(),
        managers,
        db,
        p,
    };
    env.ctrl_must(
        "CreateFlavor",
        "Flavor",
        json!({"key": {"name": "small"}, "vcpus": 1, "ram": 512, "disk": 1}),
    )
    .await;
    for org in ["devA", "devB"] {
        env.ctrl_must("CreateApp", "App", app(org, "home")).await;
    }
    // Cloudlets without a CRM: each create streams until the region's lifecycle timeout (5 s); both at once.
    let cloudlet = |org: &str| json!({"key": {"organization": org, "name": "home"}, "location": {"latitude": 1, "longitude": 1}});
    let (a, b) = tokio::join!(
        admin.ctrl("CreateCloudlet", "A", "Cloudlet", cloudlet("opA")),
        admin.ctrl("CreateCloudlet", "A", "Cloudlet", cloudlet("opB"))
    );
    assert!(a.0 == 200 && b.0 == 200, "{a:?} {b:?}");

    // The principals.
    let mut principals = vec![Principal {
        name: "AdminManager",
        client: admin.clone(),
        grants: grants(&[("", ADMIN_MANAGER)]),
        home: None,
        api_key: false,
    }];
    for (name, org, role, home) in [
        ("admc", "", ADMIN_CONTRIBUTOR, None),
        ("admv", "", ADMIN_VIEWER, None),
        ("devc", "devA", DEVELOPER_CONTRIBUTOR, Some("devA")),
        ("devv", "devA", DEVELOPER_VIEWER, Some("devA")),
        ("opc", "opA", OPERATOR_CONTRIBUTOR, Some("opA")),
        ("opv", "opA", OPERATOR_VIEWER, Some("opA")),
    ] {
        principals.push(Principal {
            name: role,
            client: env.p.user_with_role(name, org, role).await,
            grants: grants(&[(org, role)]),
            home,
            api_key: false,
        });
    }
    for (org, role) in [("devA", DEVELOPER_MANAGER), ("opA", OPERATOR_MANAGER)] {
        principals.push(Principal {
            name: role,
            client: env.managers[org].clone(),
            grants: grants(&[(org, role)]),
            home: Some(if org == "devA" { "devA" } else { "opA" }),
            api_key: false,
        });
    }
    principals.push(Principal {
        name: "no role",
        client: env.p.user("nobody").await,
        grants: Grants::new(),
        home: None,
        api_key: false,
    });
    // devA's manager delegates only apps:view to a key.
    let key = env
        .must(
            &env.managers["devA"],
            "/auth/user/create/apikey",
            json!({"Org": "devA", "permissions": [{"resource": "apps", "action": "view"}]}),
        )
        .await;
    let (s, b) = env
        .p
        .anonymous()
        .post(
            "/login",
            json!({"apikeyid": key["Id"], "apikey": key["ApiKey"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut key_grants = Grants::new();
    key_grants
        .entry("devA".into())
        .or_default()
        .insert((APPS.into(), VIEW.into()));
    principals.push(Principal {
        name: "API key (apps:view of a DeveloperManager)",
        client: Client {
            token: Some(b["token"].as_str().unwrap().into()),
            ..env.p.anonymous()
        },
        grants: key_grants,
        home: Some("devA"),
        api_key: true,
    });

    // The routes: the route table with the forwarded methods expanded.
    let mut routes = Vec::new();
    for r in master_controller::api::ROUTES {
        match *r {
            "/auth/ctrl/{method}" => routes.extend(
                master_controller::api::ctrl::methods()
                    .into_iter()
                    .map(|m| format!("/auth/ctrl/{m}")),
            ),
            // Public routes answer without a token.
            "/login" | "/usercreate" => {
                let (s, _) = env.p.anonymous().post(r, json!({})).await;
                assert_eq!(
                    s, 400,
                    "{r} answers an empty request without asking for a token"
                );
            }
            other => routes.push(other.to_string()),
        }
    }

    let mut before = env.snapshot().await;
    let (mut calls, mut denied) = (0, 0);
    let mut i = 0;
    for route in &routes {
        for p in &principals {
            for t in [Target::Own, Target::Other, Target::Missing] {
                i += 1;
                let (body, want) = env.case(route, p, t, i).await;
                if want == Expect::Deny {
                    before = env.snapshot().await;
                }
                let (status, reply) = p.client.post(route, body.clone()).await;
                calls += 1;
                let what = format!("{} {route} {t:?} {body} -> {status} {reply}", p.name);
                // The creator of an org becomes its manager: take the org away again so every
                // principal keeps exactly the grants the expectations assume.
                if route == "/auth/org/create" && status == 200 {
                    env.must(
                        &env.admin,
                        "/auth/org/delete",
                        json!({"Name": body["Name"]}),
                    )
                    .await;
                }
                // Regions of unreachable controllers would fail every later org delete's in-use check.
                if route == "/auth/controller/create" && status == 200 {
                    env.must(
                        &env.admin,
                        "/auth/controller/delete",
                        json!({"Region": body["Region"]}),
                    )
                    .await;
                }
                assert_ne!(status, 401, "{what}");
                // 501: RunCommand and RunConsole, which no platform serves.
                assert!(status < 500 || status == 501, "{what}");
                match want {
                    Expect::Allow => assert_ne!(status, 403, "expected allowed: {what}"),
                    Expect::Deny => {
                        denied += 1;
                        assert_eq!(status, 403, "expected denied: {what}");
                        assert_eq!(
                            env.snapshot().await,
                            before,
                            "a denied call changed state: {what}"
                        );
                    }
                }
            }
        }
    }
    println!(
        "RBAC matrix: {calls} calls over {} routes, {denied} denied",
        routes.len()
    );
    assert!(routes.len() >= 48 && denied > calls / 4);
}
