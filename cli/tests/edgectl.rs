//! `edgectl` as a user runs it, against a real master controller (PostgreSQL, OpenBao), a regional
//! controller (etcd) and a CRM on the fake platform: log in, onboard a cloudlet with the key edgectl
//! prints, apply a directory of YAML, show in every format, apply again, change, tenancy, exit codes,
//! delete -f.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use edge_proto::edge::CloudletKey;
use serde_json::Value;
use testenv::fixtures::onboard_with_edgectl;

const PASSWORD: &str = "Edgectl-Passw0rd!";

struct Platform {
    _pg: testenv::Postgres,
    _bao: testenv::OpenBao,
    _etcd: testenv::Etcd,
    ctrl: regional_controller::Controller,
    mc: master_controller::MasterController,
    dir: tempfile::TempDir,
}

impl Platform {
    async fn start() -> Self {
        let (pg, bao, etcd) = tokio::join!(
            testenv::Postgres::start(),
            testenv::OpenBao::start(),
            testenv::Etcd::start()
        );
        let (pg, bao, etcd) = (pg.unwrap(), bao.unwrap(), etcd.unwrap());
        let ctrl = regional_controller::Controller::start(regional_controller::Config::local(
            "EU", &etcd.url,
        ))
        .await
        .unwrap();
        let mut cfg = master_controller::Config::local(&pg.url, &bao.addr, &bao.token);
        cfg.admin_password = Some(PASSWORD.into());
        cfg.bad_auth_delay = Duration::ZERO;
        let mc = master_controller::MasterController::start(cfg)
            .await
            .unwrap();
        Self {
            _pg: pg,
            _bao: bao,
            _etcd: etcd,
            ctrl,
            mc,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `edgectl` with this test's configuration file and MC.
    fn edgectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edgectl"));
        c.env_clear()
            .env("EDGECTL_CONFIG", self.dir.path().join("config.yaml"))
            .env("EDGE_MC_URL", format!("http://{}", self.mc.addr))
            .args(args);
        c
    }

    /// Runs edgectl and returns its output, asserting the exit code.
    fn run(&self, code: i32, args: &[&str]) -> String {
        let out: Output = self.edgectl(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "edgectl {args:?}:\n{text}");
        text
    }

    fn as_user(&self, context: &str, args: &[&str]) -> String {
        let mut a = vec!["--context", context];
        a.extend_from_slice(args);
        self.run(0, &a)
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_deploys_with_edgectl_apply_and_sees_only_their_own() {
    let p = Platform::start().await;
    let ctrl_api = p.ctrl.api_addr.to_string();

    // The admin logs in (a context is saved, readable by its owner only) and sets the platform up.
    let out = p.run(
        0,
        &[
            "login",
            "--as",
            "admin",
            "--user",
            "mexadmin",
            "--password",
            PASSWORD,
            "--region",
            "EU",
        ],
    );
    assert!(out.contains("logged in as mexadmin"), "{out}");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p.dir.path().join("config.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    p.as_user("admin", &["region", "create", "EU", "--address", &ctrl_api]);
    p.as_user(
        "admin",
        &[
            "create",
            "flavor",
            "name=small",
            "vcpus=1",
            "ram=512",
            "disk=1",
        ],
    );
    for (user, org, kind) in [
        ("dev", "acme", "developer"),
        ("op", "tmus", "operator"),
        ("eve", "evil", "developer"),
    ] {
        p.as_user(
            "admin",
            &[
                "user",
                "create",
                user,
                "--email",
                &format!("{user}@example.com"),
                "--new-password",
                PASSWORD,
            ],
        );
        p.run(
            0,
            &[
                "login",
                "--as",
                user,
                "--user",
                user,
                "--password",
                PASSWORD,
                "--region",
                "EU",
            ],
        );
        p.as_user(user, &["org", "create", org, "--type", kind]);
    }
    let contexts = p.run(0, &["context", "list"]);
    assert!(
        contexts.contains("* eve") && contexts.contains("  dev"),
        "{contexts}"
    );

    // The operator onboards a cloudlet; edgectl prints the key its CRM starts with.
    let state = tempfile::tempdir().unwrap();
    let _crm = onboard_with_edgectl(
        p.edgectl(&[
            "--context",
            "op",
            "create",
            "cloudlet",
            "org=tmus",
            "name=berlin",
            "location.latitude=52.5",
            "location.longitude=13.4",
            "platform_type=FAKE",
        ]),
        "tmus/berlin",
        async |key| {
            crm::Crm::start(crm::Config::fake(
                "EU",
                CloudletKey {
                    organization: "tmus".into(),
                    name: "berlin".into(),
                },
                p.ctrl.notify_addr.to_string(),
                key,
                Duration::from_millis(10),
                state.path().into(),
            ))
            .await
            .unwrap()
        },
    )
    .await;

    // The developer applies a directory: in dependency order, whatever order the files list them.
    let deploy = tempfile::tempdir().unwrap();
    write(
        deploy.path(),
        "1-instances.yaml",
        "kind: AppInst\nkey: {organization: acme, name: w1}\napp_key: {organization: acme, name: web, version: '1.0'}\n\
         cluster_key: {organization: acme, name: c1}\n",
    );
    let app = "kind: App\nkey: {organization: acme, name: web, version: '1.0'}\nimage_type: DOCKER\nimage_path: web:1\n\
               deployment: docker\naccess_ports: tcp:80\ndefault_flavor: {name: small}\n---\n\
               kind: ClusterInst\nkey: {organization: acme, name: c1}\ncloudlet_key: {organization: tmus, name: berlin}\n\
               flavor: {name: small}\ndeployment: docker\nip_access: IP_ACCESS_SHARED\n";
    write(deploy.path(), "2-app.yaml", app);
    let dir = deploy.path().to_str().unwrap();
    let out = p.as_user("dev", &["apply", "-f", dir]);
    let order: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(
        order.len() == 3
            && order[0].contains("App")
            && order[1].contains("ClusterInst acme/c1: READY")
            && order[2].contains("AppInst acme/w1: READY"),
        "{out}"
    );
    assert!(
        out.contains("Deploying simulated app"),
        "progress is shown: {out}"
    );

    // Shown with enums by name, in a table, JSON and YAML.
    let table = p.as_user("dev", &["show", "appinsts"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("ORG") && rows[0].contains("STATE") && rows[1].contains("READY"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&p.as_user("dev", &["show", "appinst", "name=w1", "-o", "json"]))
            .unwrap();
    assert_eq!(json[0]["state"], "READY");
    assert_eq!(json[0]["mapped_ports"][0]["proto"], "L_PROTO_TCP");
    let yaml = p.as_user("dev", &["show", "clusterinst", "-o", "yaml"]);
    assert!(yaml.contains("ip_access: IP_ACCESS_SHARED"), "{yaml}");

    // Again: nothing to do. Changed: only what changed.
    let again = p.as_user("dev", &["apply", "-f", dir]);
    assert_eq!(again.matches(": unchanged").count(), 3, "{again}");
    write(deploy.path(), "2-app.yaml", &app.replace("web:1", "web:2"));
    let changed = p.as_user("dev", &["apply", "-f", dir]);
    assert!(
        changed.contains("App acme/web/1.0: updating image_path"),
        "{changed}"
    );
    assert_eq!(changed.matches(": unchanged").count(), 2, "{changed}");

    // Another tenant sees none of it and cannot touch it.
    let theirs = p.as_user("eve", &["show", "appinsts"]);
    assert_eq!(theirs.lines().count(), 1, "only the header: {theirs}");
    let denied = p.run(
        2,
        &[
            "--context",
            "eve",
            "delete",
            "appinst",
            "org=acme",
            "name=w1",
        ],
    );
    assert!(denied.contains("rejected: 403"), "{denied}");

    // Exit codes tell rejected from failed from unreachable; local mistakes are 1.
    let bad = p.run(
        2,
        &[
            "--context",
            "dev",
            "create",
            "app",
            "org=acme",
            "name=bad",
            "version=1",
            "deployment=docker",
            "image_path=x",
            "access_ports=tcp:none",
        ],
    );
    // (MobiledgeX's text for a port that is not a number)
    assert!(
        bad.contains("rejected: 400: unable to convert port range base value"),
        "{bad}"
    );
    let typo = p.run(1, &["--context", "dev", "show", "appinst", "colour=red"]);
    assert!(typo.contains("AppInst has no field \"colour\""), "{typo}");
    let away = p.run(
        4,
        &[
            "--context",
            "dev",
            "--mc-url",
            "http://127.0.0.1:1",
            "show",
            "apps",
        ],
    );
    assert!(away.contains("unreachable"), "{away}");

    // delete -f takes everything down in reverse order; a second time finds nothing to do.
    let gone = p.as_user("dev", &["delete", "-f", dir]);
    let order: Vec<&str> = gone.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(
        order[0].contains("AppInst acme/w1") && order[2].contains("App acme/web/1.0"),
        "{gone}"
    );
    assert_eq!(p.as_user("dev", &["show", "appinsts"]).lines().count(), 1);
    let twice = p.as_user("dev", &["delete", "-f", dir]);
    assert_eq!(twice.matches(": not there").count(), 3, "{twice}");

    let completion = p.run(0, &["completion", "bash"]);
    assert!(completion.contains("_edgectl()"), "{completion}");
}
