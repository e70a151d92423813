//! mTLS between the components, with certificates from a real OpenBao's PKI: who may reach the
//! controller with which certificate, how a CRM gets, renews and recovers its short-lived certificate,
//! and what a rotated access key ends.

use std::time::Duration;

use edge_common::notify_client::{AccessKeyCerts, CertSource, VaultCerts};
use edge_common::pki::{CertBundle, Peer, Role, VaultPki, controller_server_name};
use edge_proto::edge::flavor_api_client::FlavorApiClient;
use edge_proto::edge::notify_client::NotifyClient;
use edge_proto::edge::*;
use regional_controller::{Config, Controller, PkiConfig};
use std::result::Result;
use testenv::fixtures::{cloudlet, flavor};
use testenv::wait_for;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const REGION: &str = "EU";

struct Secure {
    _bao: testenv::OpenBao,
    _etcd: testenv::Etcd,
    /// `None` while the controller is down
    ctrl: Option<Controller>,
    /// the controller's settings, its ports fixed by the first start
    config: Config,
    vault: VaultPki,
}

impl Secure {
    async fn start(client_cert_ttl: Duration) -> Self {
        Self::with_registries(client_cert_ttl, Vec::new()).await
    }

    /// [`Secure::start`] with `registries` as the platform's own image registries.
    async fn with_registries(client_cert_ttl: Duration, registries: Vec<String>) -> Self {
        let (bao, etcd) = tokio::join!(testenv::OpenBao::start(), testenv::Etcd::start());
        let (bao, etcd) = (bao.unwrap(), etcd.unwrap());
        let vault = VaultPki::new(&bao.addr, &bao.token);
        let mut config = Config::local(REGION, &etcd.url);
        config.registries = registries;
        config.lifecycle_timeout = Duration::from_secs(2);
        config.heartbeat_interval = Duration::from_secs(1);
        config.pki = Some(PkiConfig {
            vault: vault.clone(),
            client_cert_ttl,
        });
        let ctrl = Controller::start(config.clone()).await.unwrap();
        // Restarts bind the same ports.
        config.api_addr = ctrl.api_addr;
        config.notify_addr = ctrl.notify_addr;
        config.http_addr = ctrl.http_addr;
        Self {
            _bao: bao,
            _etcd: etcd,
            ctrl: Some(ctrl),
            config,
            vault,
        }
    }

    async fn cert(&self, role: Role, ttl: Duration) -> CertBundle {
        let peer = Peer {
            region: REGION.into(),
            role,
            cloudlet: None,
        };
        self.vault.issue(&peer, &[], &[], ttl).await.unwrap()
    }

    async fn channel(
        &self,
        addr: std::net::SocketAddr,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Channel, String> {
        let e = match tls {
            Some(t) => Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(t)
                .unwrap(),
            None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        };
        e.connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))
    }

    /// ShowFlavor on the API with `tls`: Ok, or the error (transport or status) as text.
    async fn show_flavor(
        &self,
        tls: Option<ClientTlsConfig>,
        user: Option<&str>,
    ) -> Result<(), String> {
        let ch = self.channel(self.config.api_addr, tls).await?;
        let mut req = tonic::Request::new(Flavor::default());
        if let Some(u) = user {
            req.metadata_mut().insert("x-edge-user", u.parse().unwrap());
        }
        let mut s = FlavorApiClient::new(ch)
            .show_flavor(req)
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .into_inner();
        while s
            .message()
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .is_some()
        {}
        Ok(())
    }

    async fn admin(&self) -> Channel {
        let cert = self.cert(Role::Admin, Duration::from_secs(600)).await;
        self.channel(
            self.config.api_addr,
            Some(cert.client_tls(&controller_server_name(REGION))),
        )
        .await
        .unwrap()
    }

    /// Creates `org/name` as the admin: its access key and the region CA from the onboarding reply.
    async fn onboard(&self, org: &str, name: &str) -> CloudletAccess {
        let mut s = cloudlet_api_client::CloudletApiClient::new(self.admin().await)
            .create_cloudlet(cloudlet(org, name))
            .await
            .unwrap()
            .into_inner();
        let access = s.message().await.unwrap().unwrap().access.unwrap();
        assert!(access.ca_certificate.contains("BEGIN CERTIFICATE"));
        assert_eq!(access.server_name, controller_server_name(REGION));
        access
    }

    /// A CRM (fake platform) of cloudlet `key`, onboarded with `access`, dialling over mTLS.
    async fn start_crm(
        &self,
        access: &CloudletAccess,
        key: &CloudletKey,
        state: &std::path::Path,
    ) -> crm::Crm {
        self.start_crm_with(access, key, state, |_| {}).await
    }

    /// [`Secure::start_crm`] with its configuration changed by `adjust` (platform, addresses).
    async fn start_crm_with(
        &self,
        access: &CloudletAccess,
        key: &CloudletKey,
        state: &std::path::Path,
        adjust: impl FnOnce(&mut crm::Config),
    ) -> crm::Crm {
        let mut cfg = crm::Config::fake(
            REGION,
            key.clone(),
            self.config.notify_addr.to_string(),
            access.access_private_key.clone(),
            Duration::from_millis(10),
            state.into(),
        );
        cfg.tls = Some(crm::ControllerTls {
            ca: access.ca_certificate.clone(),
            server_name: access.server_name.clone(),
        });
        adjust(&mut cfg);
        crm::Crm::start(cfg).await.unwrap()
    }

    fn key_source(
        &self,
        access: &CloudletAccess,
        key: &CloudletKey,
        t: ClientType,
    ) -> AccessKeyCerts {
        AccessKeyCerts {
            addr: self.config.notify_addr.to_string(),
            server_name: access.server_name.clone(),
            ca: access.ca_certificate.clone(),
            region: REGION.into(),
            cloudlet: key.clone(),
            client_type: t,
            access_key: access.access_private_key.clone(),
        }
    }

    /// Opens notify with `cert` and `hello`: the open session after its first reply, or the refusal as
    /// text.
    async fn notify(&self, cert: Option<&CertBundle>, hello: Hello) -> Result<Session, String> {
        let tls = match cert {
            Some(c) => c.client_tls(&controller_server_name(REGION)),
            None => edge_common::pki::anonymous_client_tls(
                &self.vault.region_ca(REGION).await.unwrap(),
                &controller_server_name(REGION),
            ),
        };
        let ch = self.channel(self.config.notify_addr, Some(tls)).await?;
        let (up, rx) = tokio::sync::mpsc::channel(4);
        up.send(NotifyUp {
            msg: Some(notify_up::Msg::Hello(hello)),
            ..Default::default()
        })
        .await
        .unwrap();
        let status = |e: tonic::Status| format!("{:?}: {}", e.code(), e.message());
        let mut down = NotifyClient::new(ch)
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(status)?
            .into_inner();
        down.message()
            .await
            .map_err(status)?
            .ok_or("stream closed")?;
        Ok(Session { up, _down: down })
    }

    async fn metric(&self, name: &str) -> f64 {
        testenv::metric(self.config.http_addr, name)
    }
}

/// An open notify session: what the test sends up, and the stream kept open.
#[derive(Debug)]
struct Session {
    up: tokio::sync::mpsc::Sender<NotifyUp>,
    _down: tonic::Streaming<NotifyDown>,
}

fn hello(t: ClientType, key: Option<&CloudletKey>) -> Hello {
    Hello {
        client_type: t as i32,
        region: REGION.into(),
        cloudlet_key: key.cloned(),
        client_name: "test".into(),
        ..Default::default()
    }
}

fn key(org: &str, name: &str) -> CloudletKey {
    CloudletKey {
        organization: org.into(),
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certificates_of_the_region_reach_the_controller() {
    let s = Secure::start(Duration::from_secs(3600)).await;
    let name = controller_server_name(REGION);
    let admin = s.cert(Role::Admin, Duration::from_secs(600)).await;
    assert_eq!(
        s.show_flavor(Some(admin.client_tls(&name)), None).await,
        Ok(())
    );

    // Plaintext, and TLS without a client certificate, are refused on the API.
    assert!(s.show_flavor(None, None).await.is_err());
    let ca = s.vault.region_ca(REGION).await.unwrap();
    assert!(
        s.show_flavor(
            Some(edge_common::pki::anonymous_client_tls(&ca, &name)),
            None
        )
        .await
        .is_err()
    );
    // A certificate of another region's CA is refused at the handshake.
    s.vault.setup_region("other").await.unwrap();
    let foreign = s
        .vault
        .issue(
            &Peer {
                region: "other".into(),
                role: Role::Admin,
                cloudlet: None,
            },
            &[],
            &[],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let foreign_tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
        .identity(tonic::transport::Identity::from_pem(
            &foreign.chain,
            &foreign.key,
        ))
        .domain_name(name.clone());
    assert!(s.show_flavor(Some(foreign_tls), None).await.is_err());

    // Only the MC acts for users; a DME certificate cannot use the API at all.
    let err = s
        .show_flavor(Some(admin.client_tls(&name)), Some("alice"))
        .await
        .unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    let mc = s.cert(Role::Mc, Duration::from_secs(600)).await;
    assert_eq!(
        s.show_flavor(Some(mc.client_tls(&name)), Some("alice"))
            .await,
        Ok(())
    );
    let dme = s.cert(Role::Dme, Duration::from_secs(600)).await;
    let err = s
        .show_flavor(Some(dme.client_tls(&name)), None)
        .await
        .unwrap_err();
    assert!(
        err.contains("a dme certificate may not call the controller API"),
        "{err}"
    );

    // An expired certificate is refused; a renewed one works.
    let short = s.cert(Role::Admin, Duration::from_secs(1)).await;
    wait_for(
        "the short certificate to expire",
        Duration::from_secs(10),
        async || (short.remaining() < 0).then_some(()),
    )
    .await;
    assert!(
        s.show_flavor(Some(short.client_tls(&name)), None)
            .await
            .is_err()
    );
    let renewed = s.cert(Role::Admin, Duration::from_secs(600)).await;
    assert_eq!(
        s.show_flavor(Some(renewed.client_tls(&name)), None).await,
        Ok(())
    );

    // Notify: no certificate, no stream; a DME certificate connects as a DME only.
    let err = s
        .notify(None, hello(ClientType::Dme, None))
        .await
        .unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    assert!(
        s.notify(Some(&dme), hello(ClientType::Dme, None))
            .await
            .is_ok()
    );
    let err = s
        .notify(Some(&dme), hello(ClientType::Crm, Some(&key("op", "c1"))))
        .await
        .unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudlet_certificates_name_one_cloudlet_and_die_with_its_key() {
    let s = Secure::start(Duration::from_secs(3600)).await;
    let (a, b) = (key("op", "a"), key("op", "b"));
    let access_a = s.onboard("op", "a").await;
    let _access_b = s.onboard("op", "b").await;
    let cert_a = s
        .key_source(&access_a, &a, ClientType::Crm)
        .fetch()
        .await
        .unwrap();
    assert!(cert_a.remaining() > 3000);
    let session = s
        .notify(Some(&cert_a), hello(ClientType::Crm, Some(&a)))
        .await
        .unwrap();
    // A report naming cloudlet B on A's session is stored as A's: B's state is not A's to tell.
    session
        .up
        .send(NotifyUp {
            msg: Some(notify_up::Msg::CloudletInfo(CloudletInfo {
                key: Some(b.clone()),
                state: CloudletState::Ready as i32,
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .unwrap();
    let admin = s.admin().await;
    let info_of = async |k: &CloudletKey| {
        let mut c = cloudlet_api_client::CloudletApiClient::new(admin.clone());
        let mut st = c
            .show_cloudlet_info(CloudletInfo {
                key: Some(k.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        st.message().await.unwrap()
    };
    wait_for(
        "A's report to be stored",
        Duration::from_secs(10),
        async || {
            info_of(&a)
                .await
                .filter(|i| i.state == CloudletState::Ready as i32)
        },
    )
    .await;
    assert!(
        info_of(&b)
            .await
            .is_none_or(|i| i.state != CloudletState::Ready as i32)
    );
    drop(session);
    // Cloudlet A's certificate can neither subscribe as B nor as a Shepherd.
    let err = s
        .notify(Some(&cert_a), hello(ClientType::Crm, Some(&b)))
        .await
        .unwrap_err();
    assert!(
        err.contains("this certificate is for cloudlet op/a, not op/b"),
        "{err}"
    );
    let err = s
        .notify(Some(&cert_a), hello(ClientType::Shepherd, Some(&a)))
        .await
        .unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    // A's access key cannot obtain a certificate for B, nor for a DME.
    let mut wrong = s.key_source(&access_a, &b, ClientType::Crm);
    let err = wrong.fetch().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    wrong.cloudlet = a.clone();
    wrong.client_type = ClientType::Dme;
    assert_eq!(
        wrong.fetch().await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // Rotating the key ends the certificates issued under the old one, and the old key gets no new one.
    let rotated = cloudlet_api_client::CloudletApiClient::new(s.admin().await)
        .rotate_cloudlet_access_key(a.clone())
        .await
        .unwrap()
        .into_inner();
    let err = s
        .notify(Some(&cert_a), hello(ClientType::Crm, Some(&a)))
        .await
        .unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    let err = s
        .key_source(&access_a, &a, ClientType::Crm)
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let fresh = s
        .key_source(&rotated, &a, ClientType::Crm)
        .fetch()
        .await
        .unwrap();
    assert!(
        s.notify(Some(&fresh), hello(ClientType::Crm, Some(&a)))
            .await
            .is_ok()
    );
    assert!(
        s.metric("controller_client_certificates_total{result=\"refused\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_renews_its_certificate_and_recovers_after_a_partition_longer_than_its_life() {
    // Certificates of 3 s stand for hours; a partition of twice that for a week.
    let ttl = Duration::from_secs(3);
    let mut s = Secure::start(ttl).await;
    let c = key("op", "edge1");
    let access = s.onboard("op", "edge1").await;
    let state = tempfile::tempdir().unwrap();
    let _crm = s.start_crm(&access, &c, state.path()).await;
    let connected = async |s: &Secure| {
        s.metric("controller_notify_clients{client_type=\"CLIENT_TYPE_CRM\"}")
            .await
            == 1.0
    };
    wait_for("the CRM to connect", Duration::from_secs(20), async || {
        connected(&s).await.then_some(())
    })
    .await;
    // It renews before expiry (a new certificate every two thirds of the lifetime) without a gap.
    wait_for("three certificates", Duration::from_secs(20), async || {
        (s.metric("controller_client_certificates_total{result=\"issued\"}")
            .await
            >= 3.0)
            .then_some(())
    })
    .await;
    // The state dir is the CRM's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "state dir mode {mode:o}");

    // The controller goes away for longer than a certificate lives, then comes back.
    s.ctrl = None;
    let outage = tokio::time::Instant::now();
    wait_for(
        "the partition to outlast a certificate",
        ttl * 3,
        async || (outage.elapsed() > ttl * 2).then_some(()),
    )
    .await;
    s.ctrl = Some(Controller::start(s.config.clone()).await.unwrap());
    // With no manual step, the CRM gets a new certificate with its access key and reconnects.
    wait_for(
        "the CRM to reconnect",
        Duration::from_secs(40),
        async || connected(&s).await.then_some(()),
    )
    .await;
    assert!(
        s.metric("controller_client_certificates_total{result=\"issued\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dme_gets_apps_without_their_env_or_command() {
    let s = Secure::start(Duration::from_secs(3600)).await;
    let admin = s.admin().await;
    FlavorApiClient::new(admin.clone())
        .create_flavor(flavor("small"))
        .await
        .unwrap();
    let mut app = testenv::fixtures::app("dev", "game", "tcp:80");
    app.env.insert("DB_PASSWORD".into(), "hunter2".into());
    app.command = "serve --secret x".into();
    app_api_client::AppApiClient::new(admin)
        .create_app(app)
        .await
        .unwrap();
    let dme = VaultCerts {
        vault: s.vault.clone(),
        peer: Peer {
            region: REGION.into(),
            role: Role::Dme,
            cloudlet: None,
        },
        ttl: Duration::from_secs(600),
    }
    .fetch()
    .await
    .unwrap();
    let ch = s
        .channel(
            s.config.notify_addr,
            Some(dme.client_tls(&controller_server_name(REGION))),
        )
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NotifyUp {
        msg: Some(notify_up::Msg::Hello(hello(ClientType::Dme, None))),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut down = NotifyClient::new(ch)
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let app = loop {
        let m = down.message().await.unwrap().unwrap();
        if let Some(notify_down::Msg::Change(Change {
            object: Some(change::Object::App(a)),
            ..
        })) = m.msg
        {
            break a;
        }
    };
    assert_eq!(app.key.unwrap().name, "game");
    assert!(
        app.env.is_empty() && app.command.is_empty(),
        "a DME got what it does not need"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_controller_reaches_its_regions_over_mtls() {
    let s = Secure::start(Duration::from_secs(3600)).await;
    let pg = testenv::Postgres::start().await.unwrap();
    let mut cfg = master_controller::Config::local(&pg.url, &s._bao.addr, &s._bao.token);
    cfg.admin_password = Some("Admin-Passw0rd!".into());
    cfg.bad_auth_delay = Duration::ZERO;
    let mc = master_controller::MasterController::start(cfg)
        .await
        .unwrap();
    let base = format!("http://{}/api/v1", mc.addr);
    let http = reqwest::Client::new();
    let post = async |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };
    let (_, login) = post(
        "/login",
        None,
        serde_json::json!({"username": "mexadmin", "password": "Admin-Passw0rd!"}),
    )
    .await;
    let token: serde_json::Value = serde_json::from_str(&login).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    // Registered without a CA: the MC takes the region's CA from Vault and dials with an `mc` certificate.
    let (status, body) = post(
        "/auth/controller/create",
        Some(&token),
        serde_json::json!({"Region": REGION, "Address": s.config.api_addr.to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = post("/auth/controller/show", Some(&token), serde_json::json!({})).await;
    assert!(
        shown.contains("BEGIN CERTIFICATE") && shown.contains("controller.eu.edge"),
        "{shown}"
    );
    let (status, body) = post(
        "/auth/ctrl/CreateFlavor",
        Some(&token),
        serde_json::json!({"Region": REGION, "Flavor": {"key": {"name": "small"}, "vcpus": 1, "ram": 512, "disk": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        "/auth/ctrl/ShowFlavor",
        Some(&token),
        serde_json::json!({"Region": REGION, "Flavor": {}}),
    )
    .await;
    assert!(status == 200 && body.contains("small"), "{status} {body}");
    // Region "other" pointed at EU's controller: its CA does not match the controller's certificate
    // (nor does EU's controller accept an `other` certificate), so nothing gets through.
    s.vault.setup_region("other").await.unwrap();
    let (status, body) = post(
        "/auth/controller/create",
        Some(&token),
        serde_json::json!({"Region": "other", "Address": s.config.api_addr.to_string(),
                           "ServerName": controller_server_name(REGION)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        "/auth/ctrl/ShowFlavor",
        Some(&token),
        serde_json::json!({"Region": "other", "Flavor": {}}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    mc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dme_serves_its_public_api_over_tls() {
    let bao = testenv::OpenBao::start().await.unwrap();
    let vault = VaultPki::new(&bao.addr, &bao.token);
    vault.setup_region(REGION).await.unwrap();
    let peer = Peer {
        region: REGION.into(),
        role: Role::Dme,
        cloudlet: None,
    };
    let cert = vault
        .issue(
            &peer,
            &["localhost"],
            &["127.0.0.1"],
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert.chain).unwrap();
    std::fs::write(&key_file, &cert.key).unwrap();
    let mut cfg = dme::Config::local(REGION, "127.0.0.1:1");
    cfg.public_tls = Some((cert_file, key_file));
    let dme = dme::Dme::start(cfg).await.unwrap();

    // gRPC: the SDK over TLS reaches the DME (which knows no app yet); plaintext does not.
    let url = format!("https://localhost:{}", dme.grpc_addr.port());
    let mut client = dme_client::DmeClient::connect_tls(&url, &cert.ca)
        .await
        .unwrap();
    let err = client
        .register("acme", "game", "1.0", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    let mut plain = dme_client::DmeClient::connect(&format!("http://{}", dme.grpc_addr))
        .await
        .unwrap();
    assert!(plain.register("acme", "game", "1.0", None).await.is_err());

    // REST: HTTPS with the CA answers MobiledgeX's JSON; plain HTTP gets nothing.
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = https
        .post(format!(
            "https://localhost:{}/v1/registerclient",
            dme.rest_addr.port()
        ))
        .body(r#"{"org_name":"acme","app_name":"game","app_vers":"1.0"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{:?}", r.text().await);
    let plain = reqwest::Client::new()
        .post(format!("http://{}/v1/registerclient", dme.rest_addr))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

/// Every file under `dir`, as text.
/// Every value stored in the etcd at `url`, as one text.
async fn etcd_values(url: &str) -> String {
    let mut etcd = etcd_client::Client::connect([url], None).await.unwrap();
    let all = etcd
        .get("/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    all.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
        .collect()
}

fn files_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.push_str(&files_text(&p));
        } else if p.is_file() {
            // (sockets, such as the LB's, hold nothing)
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_demo_no_secret_is_stored_in_clear() {
    const PASSWORD: &str = "Demo-Passw0rd-7731";
    const DB_SECRET: &str = "db-secret-value-5190";
    let s = Secure::start(Duration::from_secs(3600)).await;
    let pg = testenv::Postgres::start().await.unwrap();
    let mut cfg = master_controller::Config::local(&pg.url, &s._bao.addr, &s._bao.token);
    cfg.admin_password = Some("Admin-Passw0rd!".into());
    let mc = master_controller::MasterController::start(cfg)
        .await
        .unwrap();
    let base = format!("http://{}/api/v1", mc.addr);
    let http = reqwest::Client::new();
    let call = async |path: &str, token: &str, body: serde_json::Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if !token.is_empty() {
            r = r.bearer_auth(token);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        text
    };
    let login = async |user: &str, pw: &str| {
        let t = call(
            "/login",
            "",
            serde_json::json!({"username": user, "password": pw}),
        )
        .await;
        serde_json::from_str::<serde_json::Value>(&t).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let admin = login("mexadmin", "Admin-Passw0rd!").await;
    call(
        "/auth/controller/create",
        &admin,
        serde_json::json!({"Region": REGION, "Address": s.config.api_addr.to_string()}),
    )
    .await;
    call(
        "/usercreate",
        "",
        serde_json::json!({"Name": "alice", "Email": "alice@example.com", "Passhash": PASSWORD}),
    )
    .await;
    let alice = login("alice", PASSWORD).await;
    call(
        "/auth/org/create",
        &alice,
        serde_json::json!({"Name": "acme", "Type": "developer"}),
    )
    .await;
    call(
        "/auth/org/create",
        &admin,
        serde_json::json!({"Name": "op", "Type": "operator"}),
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(
        &call(
            "/auth/user/create/apikey",
            &alice,
            serde_json::json!({"Org": "acme", "permissions": [{"resource": "apps", "action": "view"}]}),
        )
        .await,
    )
    .unwrap();
    let api_key = created["ApiKey"].as_str().unwrap().to_string();
    let ctrl = async |token: &str, method: &str, kind: &str, obj: serde_json::Value| {
        call(
            &format!("/auth/ctrl/{method}"),
            token,
            serde_json::json!({"Region": REGION, kind: obj}),
        )
        .await
    };
    ctrl(
        &admin,
        "CreateFlavor",
        "Flavor",
        serde_json::json!({"key": {"name": "small"}, "vcpus": 1, "ram": 512, "disk": 1}),
    )
    .await;

    // The operator's cloudlet and its CRM (fake platform), over mTLS.
    let access = s.onboard("op", "edge1").await;
    let state = tempfile::tempdir().unwrap();
    let _crm = s
        .start_crm(&access, &key("op", "edge1"), state.path())
        .await;
    let admin_ch = s.admin().await;
    wait_for(
        "the cloudlet to be ready",
        Duration::from_secs(30),
        async || {
            let mut c = cloudlet_api_client::CloudletApiClient::new(admin_ch.clone());
            let mut st = c
                .show_cloudlet(cloudlet("op", "edge1"))
                .await
                .ok()?
                .into_inner();
            let cl = st.message().await.ok()??;
            (cl.state == TrackedState::Ready as i32).then_some(())
        },
    )
    .await;

    // The developer deploys an App whose env holds a secret.
    ctrl(
        &alice,
        "CreateApp",
        "App",
        serde_json::json!({"key": {"organization": "acme", "name": "game", "version": "1.0"}, "image_type": 1,
                           "image_path": "img", "deployment": "docker", "access_ports": "tcp:80",
                           "default_flavor": {"name": "small"}, "env": {"DB_PASSWORD": DB_SECRET, "MODE": "prod"}}),
    )
    .await;
    ctrl(&alice, "CreateClusterInst", "ClusterInst", serde_json::json!({"key": {"organization": "acme", "name": "c1"},
        "cloudlet_key": {"organization": "op", "name": "edge1"}, "flavor": {"name": "small"}, "deployment": "docker"})).await;
    let out = ctrl(
        &alice,
        "CreateAppInst",
        "AppInst",
        serde_json::json!({"key": {"organization": "acme", "name": "game-1"},
        "app_key": {"organization": "acme", "name": "game", "version": "1.0"},
        "cluster_key": {"organization": "acme", "name": "c1"}}),
    )
    .await;
    assert!(out.contains("\"state\":\"Ready\""), "{out}");

    // The CRM got the value (its saved state opens with its access key)...
    let seal = || crm::mirror::Seal::from_access_key(&access.access_private_key);
    let desired = wait_for(
        "the CRM to save the App",
        Duration::from_secs(10),
        async || {
            let d = crm::mirror::Mirror::load(state.path(), seal())
                .ok()?
                .snapshot();
            d.apps.get("acme/game/1.0").cloned()
        },
    )
    .await;
    assert_eq!(desired.env["DB_PASSWORD"], DB_SECRET);

    // ...and no store holds a secret in clear: not etcd, not PostgreSQL, not the CRM's state dir.
    let secrets = [
        PASSWORD,
        DB_SECRET,
        api_key.as_str(),
        access.access_private_key.as_str(),
        "PRIVATE KEY",
    ];
    let etcd_text = etcd_values(&s._etcd.url).await;
    assert!(
        etcd_text.contains("DB_PASSWORD") && etcd_text.contains("vault:"),
        "the App is stored"
    );
    let db = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let mut pg_text = String::new();
    for table in [
        "users",
        "organizations",
        "roles",
        "api_keys",
        "controllers",
        "audit",
    ] {
        let (t,): (Option<String>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT json_agg(t)::text FROM {table} t"
        )))
        .fetch_one(&db)
        .await
        .unwrap();
        pg_text.push_str(&t.unwrap_or_default());
    }
    assert!(
        pg_text.contains("/api/v1/auth/ctrl/CreateApp"),
        "the audit log is there"
    );
    let state_text = files_text(state.path());
    for secret in secrets {
        assert!(!etcd_text.contains(secret), "etcd holds {secret}");
        assert!(!pg_text.contains(secret), "PostgreSQL holds {secret}");
        assert!(
            !state_text.contains(secret),
            "the CRM's state dir holds {secret}"
        );
    }
    mc.stop().await;
}

/// The controller's API as the region's admin, for the fixtures' clients.
struct AdminApi(Channel);

impl testenv::fixtures::RegionApi for AdminApi {
    fn channel(&self) -> Channel {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_pulls_images_from_a_private_registry_with_credentials_only_vault_keeps() {
    use testenv::fixtures::{RegionApi, app_inst, cluster, drain, show, web_app};
    let (docker, good, bad) = tokio::join!(
        testenv::Docker::start(),
        testenv::Registry::start(),
        testenv::Registry::start()
    );
    let (docker, good, bad) = (docker.unwrap(), good.unwrap(), bad.unwrap());
    let s = Secure::with_registries(
        Duration::from_secs(3600),
        vec![good.host.clone(), bad.host.clone()],
    )
    .await;

    // The developer's image sits in the registries only (the cloudlet's engine must pull it).
    docker.busybox_image("edge-busybox:push").unwrap();
    let image = good
        .push(&docker, "edge-busybox:push", "acme/web:1.0")
        .unwrap();
    let bad_image = bad
        .push(&docker, "edge-busybox:push", "acme/web:1.0")
        .unwrap();
    let rmi = docker
        .cli()
        .args(["rmi", "edge-busybox:push", &image, &bad_image])
        .output()
        .unwrap();
    assert!(rmi.status.success(), "{rmi:?}");
    // Vault has the right credentials for one registry and a wrong password for the other.
    let kv = s.vault.kv("secret").unwrap();
    let creds = |user: &str, pw: &str| {
        std::collections::HashMap::from([
            ("username".to_string(), user.to_string()),
            ("password".to_string(), pw.to_string()),
        ])
    };
    kv.write_all(
        &format!("registry/{}", good.host),
        &creds(&good.username, &good.password),
    )
    .await
    .unwrap();
    kv.write_all(
        &format!("registry/{}", bad.host),
        &creds(&bad.username, "not-the-password"),
    )
    .await
    .unwrap();

    // A docker cloudlet whose CRM dials over mTLS.
    let api = AdminApi(s.admin().await);
    let ip = testenv::loopback_ip();
    let mut c = cloudlet("op", "edge1");
    c.public_addr = ip.to_string();
    let mut onboarding = api
        .cloudlets()
        .create_cloudlet(c)
        .await
        .unwrap()
        .into_inner();
    let access = onboarding.message().await.unwrap().unwrap().access.unwrap();
    let state = tempfile::tempdir().unwrap();
    let _crm = s
        .start_crm_with(&access, &key("op", "edge1"), state.path(), |cfg| {
            cfg.platform = crm::PlatformKind::Docker {
                host: docker.host.clone(),
            };
            cfg.public_addr = ip;
        })
        .await;
    drain(&mut onboarding)
        .await
        .expect("the cloudlet becomes ready");
    api.flavors().create_flavor(flavor("small")).await.unwrap();
    let mut cl = api
        .clusters()
        .create_cluster_inst(cluster("acme", "c1", "op", "edge1"))
        .await
        .unwrap()
        .into_inner();
    drain(&mut cl).await.expect("the cluster becomes ready");

    // On the platform's registries an image must sit under the App's organization, and nobody sends
    // credentials along with an App.
    let app = |name: &str, path: &str| {
        let mut a = web_app(name, "pulled");
        a.image_path = path.into();
        a
    };
    let foreign = image.replace("/acme/", "/other/");
    let err = api
        .apps()
        .create_app(app("web", &foreign))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("does not match App developer name 'acme'"),
        "{}",
        err.message()
    );
    let mut with_auth = app("web", &image);
    with_auth.registry_auth = Some(RegistryAuth {
        username: "u".into(),
        password: "p".into(),
    });
    let err = api.apps().create_app(with_auth).await.unwrap_err();
    assert!(err.message().contains("registry_auth"), "{}", err.message());

    // The image is pulled with Vault's credentials, with progress, and the app answers through the LB.
    api.apps().create_app(app("web", &image)).await.unwrap();
    let mut st = api
        .app_insts()
        .create_app_inst(app_inst("acme", "w1", "web", "c1"))
        .await
        .unwrap()
        .into_inner();
    let progress = drain(&mut st).await.expect("the instance becomes ready");
    assert!(
        progress
            .iter()
            .any(|p| p.message.contains(&format!("Pulled image {image}"))),
        "{progress:?}"
    );
    let shown = show(
        api.app_insts()
            .show_app_inst(app_inst("acme", "w1", "", "")),
    )
    .await;
    let port = shown[0].mapped_ports[0].public_port as u16;
    let body = wait_for(
        "the app through the LB",
        Duration::from_secs(10),
        async || match testenv::http_get((ip, port).into(), "/") {
            Some((200, body)) => Some(body),
            _ => None,
        },
    )
    .await;
    assert!(body.contains("pulled"), "{body}");

    // A missing image and refused credentials end the create, naming the image; nothing is left.
    let missing = image.replace("/web:", "/missing:");
    for (name, path, want) in [
        ("missing", missing.as_str(), "has no such image"),
        ("refused", bad_image.as_str(), "refused the credentials"),
    ] {
        api.apps().create_app(app(name, path)).await.unwrap();
        let mut st = api
            .app_insts()
            .create_app_inst(app_inst("acme", name, name, "c1"))
            .await
            .unwrap()
            .into_inner();
        let err = drain(&mut st).await.unwrap_err();
        assert!(
            err.message().contains(want) && err.message().contains(path),
            "{}",
            err.message()
        );
        let shown = show(
            api.app_insts()
                .show_app_inst(app_inst("acme", name, "", "")),
        )
        .await;
        assert_eq!(shown[0].state, TrackedState::CreateError as i32);
        let left = docker
            .cli()
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=edge.appinst=acme/{name}"),
            ])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "{name} left a container");
    }

    // The credentials are in no store but Vault: not in etcd, not in clear in the CRM's state, not in
    // what Show returns.
    let shown = show(api.apps().show_app(App::default())).await;
    assert!(shown.iter().all(|a| a.registry_auth.is_none()), "{shown:?}");
    assert!(!etcd_values(&s._etcd.url).await.contains(&good.password));
    assert!(!files_text(state.path()).contains(&good.password));
}
