//! The web console, driven in a real headless Chromium through WebDriver against the whole platform:
//! log in, create an App (a bad value first), deploy an AppInst and watch it become READY and answer,
//! see the cloudlet on the map, log out (the old cookie is refused), and see nothing of it as a user of
//! another organization. Screenshots of the main pages go to `<target>/tmp/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use e2e::{Mc, PASSWORD, Region};
use serde_json::{Value, json};
use testenv::{Browser, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until the element `selector` shows text containing `want`; returns the text. On timeout the
/// failure shows the page.
async fn see(b: &Browser, selector: &str, want: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let what = format!("{selector} to show {want:?}");
    wait_for(&what, WAIT * 2, async || {
        let seen = b.text(selector).await.unwrap().filter(|t| t.contains(want));
        if seen.is_none() && tokio::time::Instant::now() > deadline {
            let page = b
                .script("return document.documentElement.outerHTML", json!([]))
                .await;
            let text = b.text(selector).await;
            panic!(
                "timed out waiting for {what} (it shows {text:?}); at {:?} the page is {page:?}",
                b.url().await
            );
        }
        seen
    })
    .await
}

/// Opens console page `page` and waits until it is there (its `<h1>`).
async fn open(b: &Browser, base: &str, page: &str, title: &str) {
    b.goto(&format!("{base}/console/{page}")).await.unwrap();
    see(b, "main h1", title).await;
}

async fn log_in(b: &Browser, base: &str, user: &str) {
    b.goto(&format!("{base}/console/")).await.unwrap();
    see(b, "main.login h1", "Edge Cloud console").await;
    b.type_into("#username", user).await.unwrap();
    b.type_into("#password", PASSWORD).await.unwrap();
    b.click("#login").await.unwrap();
    see(b, "#user", user).await;
}

/// A call of the console's API (the REST routes under /console/api/auth) with the given cookie and
/// CSRF header: the status.
async fn console_call(
    base: &str,
    cookie: &str,
    csrf: Option<&str>,
    path: &str,
    body: Value,
) -> u16 {
    let mut r = reqwest::Client::new()
        .post(format!("{base}/console/api/auth/{path}"))
        .header("Cookie", format!("edge_session={cookie}"))
        .json(&body);
    if let Some(t) = csrf {
        r = r.header("X-CSRF-Token", t);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_deploys_through_the_console_and_another_org_sees_none_of_it() {
    let mut region = Region::start().await;
    region.onboard("berlin", 0, 52.52, 13.40).await;
    region
        .dev
        .ctrl(
            "CreateClusterInst",
            "ClusterInst",
            json!(testenv::fixtures::cluster("acme", "c1", "tmus", "berlin")),
        )
        .await
        .unwrap();
    let base = format!("http://{}", region.mc_http);
    let shots = shots();
    let b = Browser::start(1280, 1000).await.unwrap();

    // Pages need a session; the login goes through the MC's accounts.
    b.goto(&format!("{base}/console/apps")).await.unwrap();
    see(&b, "main.login h1", "Edge Cloud console").await;
    b.type_into("#username", "dev").await.unwrap();
    b.type_into("#password", "wrong-password").await.unwrap();
    b.click("#login").await.unwrap();
    see(&b, "#login-error", "Invalid username or password").await;
    log_in(&b, &base, "dev").await;
    let cookies = b.cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|(n, _)| n == "edge_session")
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    let csrf = b
        .script(
            "return document.querySelector('meta[name=csrf-token]').content",
            json!([]),
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();

    // A bad value: the API's message appears next to the field it names, and nothing is created.
    open(&b, &base, "apps", "Apps").await;
    b.type_into("#create-app-key-name", "web").await.unwrap();
    b.type_into("#create-app-image_path", "edge-busybox:test")
        .await
        .unwrap();
    b.type_into("#create-app-access_ports", "80").await.unwrap();
    b.type_into(
        "#create-app-command",
        "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www",
    )
    .await
    .unwrap();
    b.click("#create-app button[type=submit]").await.unwrap();
    see(
        &b,
        "#create-app label[data-hints^=accessports] .err",
        "invalid AccessPorts format '80'",
    )
    .await;
    assert_eq!(
        b.text("#create-app .form-error").await.unwrap().as_deref(),
        Some(""),
        "the error belongs to the ports field only"
    );
    b.screenshot(&shots.join("apps-error.png")).await.unwrap();
    let apps = region.dev.ctrl("ShowApp", "App", json!({})).await.unwrap();
    assert!(apps.is_empty(), "a refused App was stored: {apps:?}");

    b.type_into("#create-app-access_ports", "tcp:80")
        .await
        .unwrap();
    b.click("#create-app button[type=submit]").await.unwrap();
    see(&b, "#apps", "acme/web").await;

    // Without the CSRF header the same session may not act.
    let app = json!({"Region": e2e::REGION, "App": {"key": {"organization": "acme", "name": "x", "version": "1"}}});
    assert_eq!(
        console_call(&base, &session, None, "ctrl/DeleteApp", app.clone()).await,
        403
    );
    assert_eq!(
        console_call(&base, &session, Some("forged"), "ctrl/DeleteApp", app).await,
        403
    );

    // Deploy: the progress streams into the page, the instance becomes READY, and its URL answers.
    open(&b, &base, "appinsts", "App instances").await;
    b.type_into("#create-appinst-key-name", "w1").await.unwrap();
    b.choose("#create-appinst-app_key", "acme/web")
        .await
        .unwrap();
    b.choose("#create-appinst-cluster_key", "acme/c1")
        .await
        .unwrap();
    b.click("#create-appinst button[type=submit]")
        .await
        .unwrap();
    see(&b, "tr[data-appinst=w1] .state", "READY").await;
    let progress = see(&b, "#progress", "Last operation").await;
    assert!(
        progress.lines().count() > 1,
        "no progress was shown: {progress}"
    );
    let url = b
        .text("tr[data-appinst=w1] .port code")
        .await
        .unwrap()
        .expect("a mapped port");
    let answer = wait_for("the instance's URL to answer", WAIT, async || {
        let r = reqwest::get(format!("http://{url}/")).await.ok()?;
        r.text().await.ok()
    })
    .await;
    assert_eq!(answer.trim(), "hi");
    b.screenshot(&shots.join("appinsts.png")).await.unwrap();

    // The cloudlet on the map, green.
    open(&b, &base, "cloudlets", "Cloudlets").await;
    let pin = b
        .script(
            "const g = document.querySelector('#map g[data-cloudlet=\"tmus/berlin\"]');
             return g && g.getAttribute('class');",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(pin, json!("pin ok"));
    b.screenshot(&shots.join("cloudlets.png")).await.unwrap();

    // At phone width nothing overflows sideways.
    b.resize(390, 844).await.unwrap();
    for (page, title) in [
        ("cloudlets", "Cloudlets"),
        ("apps", "Apps"),
        ("appinsts", "App instances"),
    ] {
        open(&b, &base, page, title).await;
        let fits = b
            .script(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1",
                json!([]),
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{page} overflows at phone width");
    }
    b.screenshot(&shots.join("appinsts-phone.png"))
        .await
        .unwrap();
    b.resize(1280, 1000).await.unwrap();

    // Delete asks for a second click, then the instance goes.
    b.click("tr[data-appinst=w1] button.danger").await.unwrap();
    see(&b, "tr[data-appinst=w1] button.danger", "Confirm").await;
    b.click("tr[data-appinst=w1] button.danger").await.unwrap();
    see(&b, "#appinsts-empty", "No app instance yet").await;
    see(&b, "#progress", "Last operation: Delete acme/w1").await;

    // Logout ends the session: the old cookie no longer opens pages or calls the API.
    b.click("#logout").await.unwrap();
    see(&b, "main.login h1", "Edge Cloud console").await;
    let page = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/console/appinsts"))
        .header("Cookie", format!("edge_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(page.headers()["location"], "/console/login");
    let show = json!({"Region": e2e::REGION, "App": {}});
    assert_eq!(
        console_call(&base, &session, Some(&csrf), "ctrl/ShowApp", show).await,
        401
    );

    // Another organization's user sees none of acme's objects.
    let anonymous = Mc {
        token: String::new(),
        ..region.admin.clone()
    };
    anonymous
        .post(
            "/usercreate",
            json!({"Name": "eve", "Email": "eve@example.com", "Passhash": PASSWORD}),
        )
        .await
        .unwrap();
    let eve = Mc::login(&region.mc_base(), "eve").await;
    eve.post(
        "/auth/org/create",
        json!({"Name": "evil", "Type": "developer"}),
    )
    .await
    .unwrap();
    log_in(&b, &base, "eve").await;
    for (page, title, empty) in [
        ("appinsts", "App instances", "#appinsts-empty"),
        ("apps", "Apps", "#apps-empty"),
        ("clusters", "Clusters", "#clusters-empty"),
    ] {
        open(&b, &base, page, title).await;
        assert!(
            b.find(empty).await.unwrap().is_some(),
            "{page} is not empty for eve"
        );
        let text = b.text("main").await.unwrap().unwrap_or_default();
        assert!(!text.contains("acme"), "eve sees acme on {page}: {text}");
    }
    b.screenshot(&shots.join("other-org.png")).await.unwrap();

    // The cloudlet's operator sees what its cloudlet uses against its quota.
    b.click("#logout").await.unwrap();
    see(&b, "main.login h1", "Edge Cloud console").await;
    log_in(&b, &base, "op").await;
    open(&b, &base, "cloudlets", "Cloudlets").await;
    see(&b, "#cloudlets", "vCPUs").await;
    assert!(b.find("#cloudlets meter").await.unwrap().is_some());
    b.screenshot(&shots.join("cloudlets-operator.png"))
        .await
        .unwrap();
    println!("screenshots in {}", shots.display());
}
