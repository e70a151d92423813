//! The DME against a real region: etcd, the controller, and fake-platform CRMs (the DME only needs
//! READY instances; the real drivers are tested in the CRM's own tests).

use std::collections::HashMap;
use std::time::Duration;

use crm::Crm;
use dme::Dme;
use dme_client::DmeClient;
use edge_proto::dme as d;
use edge_proto::dme::match_engine_api_client::MatchEngineApiClient;
use edge_proto::edge::*;
use regional_controller::Controller;
use serde_json::{Value, json};
use testenv::fixtures::*;
use tonic::Code;
use tonic::transport::Channel;

const BERLIN: (f64, f64) = (52.52, 13.405);
const PARIS: (f64, f64) = (48.8566, 2.3522);
const MUNICH: (f64, f64) = (48.137, 11.575);
const HAMBURG: (f64, f64) = (53.55, 9.99);

struct World {
    etcd: testenv::Etcd,
    ctrl: Controller,
    ch: Channel,
    crms: HashMap<&'static str, Crm>,
    dme: Dme,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let etcd = testenv::Etcd::start().await.unwrap();
        let mut cfg = regional_controller::Config::local("EU", &etcd.url);
        cfg.offline_after = Duration::from_secs(3);
        let ctrl = Controller::start(cfg).await.unwrap();
        let ch = Channel::from_shared(format!("http://{}", ctrl.api_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        flavor_api_client::FlavorApiClient::new(ch.clone())
            .create_flavor(flavor("small"))
            .await
            .unwrap();
        operator_code_api_client::OperatorCodeApiClient::new(ch.clone())
            .create_operator_code(OperatorCode {
                code: "26201".into(),
                organization: "tmus".into(),
            })
            .await
            .unwrap();
        let mut a = app("acme", "game", "tcp:80,udp:9000");
        a.official_fqdn = "game.acme.example".into();
        app_api_client::AppApiClient::new(ch.clone())
            .create_app(a)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut crms = HashMap::new();
        for (org, name, (lat, lon)) in [
            ("tmus", "berlin", BERLIN),
            ("tmus", "paris", PARIS),
            ("vodafone", "munich", MUNICH),
        ] {
            let mut c = cloudlet(org, name);
            c.location = Some(Loc {
                latitude: lat,
                longitude: lon,
            });
            let mut s = cloudlet_api_client::CloudletApiClient::new(ch.clone())
                .create_cloudlet(c)
                .await
                .unwrap()
                .into_inner();
            let access = s.message().await.unwrap().unwrap().access.unwrap();
            let crm = Crm::start(crm::Config::fake(
                "EU",
                CloudletKey {
                    organization: org.into(),
                    name: name.into(),
                },
                ctrl.notify_addr.to_string(),
                access.access_private_key,
                Duration::from_millis(5),
                dir.path().join(name),
            ))
            .await
            .unwrap();
            drain(&mut s).await.unwrap();
            crms.insert(name, crm);
            let mut cl = cluster("acme", &format!("c-{name}"), org, name);
            cl.ip_access = IpAccess::Shared as i32;
            let mut s = cluster_inst_api_client::ClusterInstApiClient::new(ch.clone())
                .create_cluster_inst(cl)
                .await
                .unwrap()
                .into_inner();
            drain(&mut s).await.unwrap();
            let inst = app_inst("acme", &format!("g-{name}"), "game", &format!("c-{name}"));
            let mut s = app_inst_api_client::AppInstApiClient::new(ch.clone())
                .create_app_inst(inst)
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                drain(&mut s).await.unwrap().last().unwrap().state,
                TrackedState::Ready as i32
            );
        }
        let dme = Dme::start(dme::Config::local("EU", &ctrl.notify_addr.to_string()))
            .await
            .unwrap();
        let w = Self {
            etcd,
            ctrl,
            ch,
            crms,
            dme,
            _dir: dir,
        };
        // The DME has synced once the app is known and its three instances answer.
        let mut c = DmeClient::connect(&format!("http://{}", w.dme.grpc_addr))
            .await
            .unwrap();
        testenv::wait_for(
            "the DME to see the three instances",
            Duration::from_secs(10),
            async || {
                (c.register("acme", "game", "1.0", None).await.is_ok()
                    && c.app_inst_list("", HAMBURG.0, HAMBURG.1, 5)
                        .await
                        .unwrap()
                        .len()
                        == 3)
                    .then_some(())
            },
        )
        .await;
        w
    }

    async fn client(&self) -> DmeClient {
        let mut c = DmeClient::connect(&format!("http://{}", self.dme.grpc_addr))
            .await
            .unwrap();
        c.register("acme", "game", "1.0", None).await.unwrap();
        c
    }

    async fn raw(&self) -> MatchEngineApiClient<Channel> {
        MatchEngineApiClient::new(
            Channel::from_shared(format!("http://{}", self.dme.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    }

    async fn nearest(
        &self,
        c: &mut DmeClient,
        carrier: &str,
        at: (f64, f64),
    ) -> Option<(f64, f64)> {
        c.find_cloudlet(carrier, at.0, at.1)
            .await
            .unwrap()
            .map(|f| (f.cloudlet_location.latitude, f.cloudlet_location.longitude))
    }

    async fn delete_inst(&self, name: &str) {
        let mut s = app_inst_api_client::AppInstApiClient::new(self.ch.clone())
            .delete_app_inst(app_inst("acme", name, "", ""))
            .await
            .unwrap()
            .into_inner();
        drain(&mut s).await.unwrap();
    }
}

/// Waits up to 10 s for `f` to hold (testenv's shared poll-with-deadline, as a bool for `assert!`).
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    testenv::wait_for("the condition", Duration::from_secs(10), async || {
        f().await.then_some(())
    })
    .await;
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_cloudlet_picks_the_nearest_matching_instance() {
    let w = World::start().await;
    let mut c = w.client().await;
    assert_eq!(w.nearest(&mut c, "", HAMBURG).await, Some(BERLIN));
    assert_eq!(w.nearest(&mut c, "", (48.0, 11.0)).await, Some(MUNICH));
    assert_eq!(w.nearest(&mut c, "vodafone", HAMBURG).await, Some(MUNICH));
    // An MCC+MNC resolves through the OperatorCodes.
    assert_eq!(w.nearest(&mut c, "26201", (48.0, 11.0)).await, Some(BERLIN));
    assert_eq!(w.nearest(&mut c, "nobody", HAMBURG).await, None);

    let found = c
        .find_cloudlet("", HAMBURG.0, HAMBURG.1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.fqdn, "berlin.tmus.eu.edgecloud.local");
    assert!(!found.edge_events_cookie.is_empty());
    let tcp = found
        .ports
        .iter()
        .find(|p| p.proto == d::LProto::Tcp as i32)
        .unwrap();
    assert_eq!(tcp.internal_port, 80);
    assert_eq!(
        found.address(80),
        Some(format!(
            "berlin.tmus.eu.edgecloud.local:{}",
            tcp.public_port
        ))
    );

    let list = c.app_inst_list("", HAMBURG.0, HAMBURG.1, 2).await.unwrap();
    let names: Vec<&str> = list.iter().map(|l| l.cloudlet_name.as_str()).collect();
    assert_eq!(names, ["berlin", "munich"]);
    assert!(list[0].distance < list[1].distance);
    assert_eq!(list[0].appinstances[0].app_name, "game");

    // Errors as MobiledgeX gives them.
    let mut raw = w.raw().await;
    let find = |cookie: &str, loc: Option<d::Loc>| d::FindCloudletRequest {
        session_cookie: cookie.into(),
        gps_location: loc,
        ..Default::default()
    };
    let err = raw
        .find_cloudlet(find(c.session_cookie(), None))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "Missing GpsLocation")
    );
    let bad = d::Loc {
        latitude: 91.0,
        ..Default::default()
    };
    let err = raw
        .find_cloudlet(find(c.session_cookie(), Some(bad)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "Invalid GpsLocation")
    );
    let err = raw
        .find_cloudlet(find("forged.cookie.value", Some(d::Loc::default())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = raw
        .find_cloudlet(find("", Some(d::Loc::default())))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "VerifyCookie failed: missing cookie")
    );
    for (org, app, vers, code, msg) in [
        (
            "",
            "game",
            "1.0",
            Code::InvalidArgument,
            "OrgName cannot be empty",
        ),
        (
            "acme",
            "",
            "1.0",
            Code::InvalidArgument,
            "AppName cannot be empty",
        ),
        (
            "acme",
            "game",
            "",
            Code::InvalidArgument,
            "AppVers cannot be empty",
        ),
        ("other", "game", "1.0", Code::NotFound, "app not found"),
        ("acme", "game", "2.0", Code::NotFound, "app not found"),
    ] {
        let req = d::RegisterClientRequest {
            org_name: org.into(),
            app_name: app.into(),
            app_vers: vers.into(),
            ..Default::default()
        };
        let err = raw.register_client(req).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (code, msg));
    }

    // Location verification without a carrier verifier: MobiledgeX's simulated device position.
    let verify = |lat, lon| d::VerifyLocationRequest {
        session_cookie: c.session_cookie().into(),
        gps_location: Some(d::Loc {
            latitude: lat,
            longitude: lon,
            ..Default::default()
        }),
        ..Default::default()
    };
    let near = raw
        .verify_location(verify(32.0140, -96.5983))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        near.gps_location_status,
        d::verify_location_reply::GpsLocationStatus::LocVerified as i32
    );
    assert_eq!(near.gps_location_accuracy_km, 2.0);
    let far = raw
        .verify_location(verify(BERLIN.0, BERLIN.1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        far.gps_location_status,
        d::verify_location_reply::GpsLocationStatus::LocMismatchSameCountry as i32
    );
    let fqdn = raw
        .get_app_official_fqdn(d::AppOfficialFqdnRequest {
            session_cookie: c.session_cookie().into(),
            gps_location: Some(d::Loc {
                latitude: 1.0,
                longitude: 1.0,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fqdn.app_official_fqdn, "game.acme.example");

    // A DME with 1 s cookies: the SDK registers again by itself when its cookie expired.
    let mut cfg = dme::Config::local("EU", &w.ctrl.notify_addr.to_string());
    cfg.session_ttl = Duration::from_secs(1);
    let short = Dme::start(cfg).await.unwrap();
    let mut c = DmeClient::connect(&format!("http://{}", short.grpc_addr))
        .await
        .unwrap();
    assert!(eventually(async || c.register("acme", "game", "1.0", None).await.is_ok()).await);
    let first = c.session_cookie().to_string();
    // Wait until the DME itself refuses the first cookie as expired (1 s lifetime, 1 s granularity).
    let mut raw = MatchEngineApiClient::new(
        Channel::from_shared(format!("http://{}", short.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    testenv::wait_for(
        "the first cookie to expire",
        Duration::from_secs(10),
        async || {
            let req = d::FindCloudletRequest {
                session_cookie: first.clone(),
                gps_location: Some(d::Loc {
                    latitude: HAMBURG.0,
                    longitude: HAMBURG.1,
                    ..Default::default()
                }),
                ..Default::default()
            };
            match raw.find_cloudlet(req).await {
                Err(e) if e.message().contains("expired") => Some(()),
                _ => None,
            }
        },
    )
    .await;
    assert!(
        eventually(async || c
            .find_cloudlet("", HAMBURG.0, HAMBURG.1)
            .await
            .unwrap()
            .is_some())
        .await
    );
    assert_ne!(c.session_cookie(), first, "the SDK did not register again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_gateway_speaks_mobiledgex_json() {
    let w = World::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", w.dme.rest_addr);
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .body(body.to_string())
            .send()
    };

    let r = post("/v1/registerclient", json!({"ver": 1, "org_name": "acme", "app_name": "game", "app_vers": "1.0", "cell_id": 0, "tags": null}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reg: Value = r.json().await.unwrap();
    assert_eq!(reg["status"], "Success");
    assert_eq!(reg["token_server_uri"], "");
    let cookie = reg["session_cookie"].as_str().unwrap().to_string();

    let body = json!({"ver": 1, "session_cookie": cookie, "carrier_name": "", "client_token": null,
                      "gps_location": {"latitude": HAMBURG.0, "longitude": HAMBURG.1}});
    let found: Value = post("/v1/findcloudlet", body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["status"], "Found", "{found}");
    assert_eq!(found["fqdn"], "berlin.tmus.eu.edgecloud.local");
    assert_eq!(found["ports"][0]["proto"], "Tcp");
    assert_eq!(found["ports"][0]["max_pkt_size"], "0");
    assert_eq!(found["cloudlet_location"]["latitude"], BERLIN.0);
    assert_eq!(found["qos_result"], "NotAttempted");

    let body = json!({"session_cookie": cookie, "carrier_name": "nobody", "gps_location": {"latitude": 1, "longitude": 1}});
    let nf: Value = post("/v1/findcloudlet", body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nf["status"], "Notfound");
    assert_eq!(nf["ports"], json!([]));
    assert_eq!(nf["cloudlet_location"]["latitude"], 0.0);

    let r = post(
        "/v1/findcloudlet",
        json!({"session_cookie": "bad", "gps_location": {"latitude": 1, "longitude": 1}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], 16);
    assert_eq!(e["details"], json!([]));
    let r = post(
        "/v1/registerclient",
        json!({"org_name": "acme", "app_name": "nope", "app_vers": "1.0"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "app not found");
    let r = http
        .post(format!("{base}/v1/findcloudlet"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/v1/nosuchthing", json!({})).await.unwrap();
    assert_eq!(r.status(), 501);

    let list: Value = post("/v1/getappinstlist", json!({"session_cookie": cookie, "gps_location": {"latitude": HAMBURG.0, "longitude": HAMBURG.1}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["status"], "Success");
    assert_eq!(list["cloudlets"].as_array().unwrap().len(), 3);

    // Edge events over REST: init + latency samples in, init + statistics out.
    let ee = found["edge_events_cookie"].as_str().unwrap();
    let events = format!(
        "{}{}",
        json!({"session_cookie": cookie, "edge_events_cookie": ee, "event_type": "EVENT_INIT_CONNECTION"}),
        json!({"event_type": 3, "gps_location": {"latitude": 1, "longitude": 1}, "samples": [{"value": 10}, {"value": 30}]})
    );
    let text = http
        .post(format!("{base}/v1/streamedgeevent"))
        .body(events)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["result"]["event_type"], "InitConnection", "{text}");
    assert_eq!(
        lines[1]["result"]["event_type"], "LatencyProcessed",
        "{text}"
    );
    assert_eq!(lines[1]["result"]["statistics"]["avg"], 20.0);
    assert_eq!(lines[1]["result"]["statistics"]["num_samples"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_offline_cloudlets_and_edge_events() {
    let mut w = World::start().await;
    let mut c = w.client().await;
    let found = c
        .find_cloudlet("", HAMBURG.0, HAMBURG.1)
        .await
        .unwrap()
        .unwrap();
    let mut events = c.edge_events(&found).await.unwrap();
    let init = events.next().await.unwrap().unwrap();
    assert_eq!(
        init.event_type,
        d::server_edge_event::ServerEventType::EventInitConnection as i32
    );
    assert!(
        events
            .send_latency(HAMBURG.0, HAMBURG.1, &[5.0, 15.0])
            .await
    );
    let stats = events.next().await.unwrap().unwrap();
    assert_eq!(stats.statistics.unwrap().avg, 10.0);

    // The instance in use goes away: the DME pushes the next best one, and FindCloudlet follows.
    w.delete_inst("g-berlin").await;
    let pushed = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        pushed
            .new_cloudlet
            .unwrap()
            .cloudlet_location
            .unwrap()
            .latitude,
        MUNICH.0
    );
    assert_eq!(w.nearest(&mut c, "", HAMBURG).await, Some(MUNICH));

    // Munich's CRM stops: once the cloudlet is offline the DME skips it.
    w.crms.remove("munich");
    let pushed = tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        pushed.event_type,
        d::server_edge_event::ServerEventType::EventCloudletState as i32
    );
    assert_eq!(pushed.cloudlet_state, d::CloudletState::Offline as i32);
    assert_eq!(
        pushed
            .new_cloudlet
            .unwrap()
            .cloudlet_location
            .unwrap()
            .latitude,
        PARIS.0
    );
    assert!(eventually(async || w.nearest(&mut c, "", HAMBURG).await == Some(PARIS)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_with_an_auth_key_need_a_signed_token() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let run = |args: &[&str]| {
        assert!(
            std::process::Command::new("openssl")
                .args(args)
                .status()
                .unwrap()
                .success()
        )
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key.to_str().unwrap(),
        "-quiet",
    ]);
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in", key.to_str().unwrap()])
        .output()
        .unwrap();
    let mut a = app("acme", "secure", "tcp:80");
    a.auth_public_key = String::from_utf8(public.stdout).unwrap();
    app_api_client::AppApiClient::new(w.ch.clone())
        .create_app(a)
        .await
        .unwrap();
    let private = std::fs::read(&key).unwrap();
    let token = |org: &str| {
        let claims = json!({"orgname": org, "appname": "secure", "appvers": "1.0", "exp": edge_common::now_ms() / 1000 + 60});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap()
    };
    let mut c = DmeClient::connect(&format!("http://{}", w.dme.grpc_addr))
        .await
        .unwrap();
    assert!(eventually(async || {
        !matches!(c.register("acme", "secure", "1.0", Some(&token("acme"))).await, Err(dme_client::Error::Api(s)) if s.code() == Code::NotFound)
    })
    .await);
    c.register("acme", "secure", "1.0", Some(&token("acme")))
        .await
        .unwrap();
    let err = |r: std::result::Result<(), dme_client::Error>| match r {
        Err(dme_client::Error::Api(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected an API error, got {other:?}"),
    };
    assert_eq!(
        err(c.register("acme", "secure", "1.0", None).await),
        (Code::InvalidArgument, "No authtoken received".into())
    );
    let (code, msg) = err(c
        .register("acme", "secure", "1.0", Some(&token("evil")))
        .await);
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::Unauthenticated,
            "failed to verify token - token organization mismatch"
        )
    );
    let (code, msg) = err(c.register("acme", "secure", "1.0", Some("x.y.z")).await);
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.starts_with("failed to verify token - "), "{msg}");
    let (code, _) = err(c
        .register("acme", "game", "1.0", Some(&token("acme")))
        .await);
    assert_eq!(code, Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dme_and_crms_keep_their_world_through_a_controller_that_cannot_load() {
    let World {
        etcd,
        ctrl,
        crms,
        dme,
        _dir,
        ..
    } = World::start().await;
    let mut cfg = regional_controller::Config::local("EU", &etcd.url);
    cfg.api_addr = ctrl.api_addr;
    cfg.notify_addr = ctrl.notify_addr;
    cfg.http_addr = ctrl.http_addr;
    drop(ctrl);
    // A value larger than one gRPC reply may carry: the restarted controller cannot load the region (it
    // retries), but its ports answer.
    let mut kv = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .unwrap();
    kv.put("/edge/EU/zz-oversized", vec![b'x'; 5 << 20], None)
        .await
        .unwrap();
    let restarting = tokio::spawn(Controller::start(cfg.clone()));
    let refused = |t: &str| {
        testenv::metric(
            cfg.http_addr,
            &format!("controller_notify_refused_total{{client_type=\"{t}\"}}"),
        )
    };
    testenv::wait_for(
        "the DME and every CRM to be refused by the controller that cannot load",
        Duration::from_secs(60),
        async || {
            (refused("CLIENT_TYPE_DME") >= 1.0 && refused("CLIENT_TYPE_CRM") >= 3.0).then_some(())
        },
    )
    .await;
    // Refused, not emptied: the DME still finds the nearest instance, every CRM still holds its own.
    let mut c = DmeClient::connect(&format!("http://{}", dme.grpc_addr))
        .await
        .unwrap();
    c.register("acme", "game", "1.0", None).await.unwrap();
    let found = c.find_cloudlet("", HAMBURG.0, HAMBURG.1).await.unwrap();
    assert_eq!(
        found.map(|f| (f.cloudlet_location.latitude, f.cloudlet_location.longitude)),
        Some(BERLIN)
    );
    for name in crms.keys() {
        let desired = std::fs::read_to_string(_dir.path().join(name).join("desired.json")).unwrap();
        assert!(desired.contains(&format!("g-{name}")), "{name}: {desired}");
    }

    // The oversized value gone, the controller loads and every client syncs with it.
    kv.delete("/edge/EU/zz-oversized", None).await.unwrap();
    let ctrl = tokio::time::timeout(Duration::from_secs(60), restarting)
        .await
        .expect("the region loads")
        .unwrap()
        .unwrap();
    testenv::wait_for(
        "the CRMs and the DME to reconnect",
        Duration::from_secs(60),
        async || {
            let up = |t: &str| {
                testenv::metric(
                    ctrl.http_addr,
                    &format!("controller_notify_clients{{client_type=\"{t}\"}}"),
                )
            };
            (up("CLIENT_TYPE_DME") == 1.0 && up("CLIENT_TYPE_CRM") == 3.0).then_some(())
        },
    )
    .await;
    assert!(
        c.find_cloudlet("", HAMBURG.0, HAMBURG.1)
            .await
            .unwrap()
            .is_some()
    );
}
