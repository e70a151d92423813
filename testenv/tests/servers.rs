//! Each server of testenv, driven through the client library the platform uses for it.

use std::collections::HashMap;
use std::time::Duration;

use testenv::{Docker, Etcd, Influx, OpenBao, Postgres, http_get};

#[tokio::test]
async fn postgres_sql_round_trip() {
    let pg = Postgres::start().await.unwrap();
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::query("CREATE TABLE regions (name TEXT PRIMARY KEY, addr TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO regions VALUES ($1, $2)")
        .bind("EU")
        .bind("127.0.0.1:55001")
        .execute(&pool)
        .await
        .unwrap();
    let (addr,): (String,) = sqlx::query_as("SELECT addr FROM regions WHERE name = $1")
        .bind("EU")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(addr, "127.0.0.1:55001");
}

#[tokio::test]
async fn etcd_put_get_watch_and_restart() {
    let mut etcd = Etcd::start().await.unwrap();
    let mut client = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .unwrap();
    let mut stream = client
        .watch(
            "/edge/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    client
        .put("/edge/EU/Flavor/small", r#"{"vcpus":1}"#, None)
        .await
        .unwrap();
    let got = client.get("/edge/EU/Flavor/small", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), r#"{"vcpus":1}"#);
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let resp = stream.message().await.unwrap().expect("watch stream ended");
            if let Some(e) = resp.events().first() {
                return e.kv().unwrap().key_str().unwrap().to_string();
            }
        }
    })
    .await
    .expect("no watch event within 5 s");
    assert_eq!(event, "/edge/EU/Flavor/small");

    // A restart keeps the data and the address.
    etcd.stop();
    assert!(
        http_get(etcd.client_addr, "/health").is_none(),
        "etcd still answers after stop"
    );
    etcd.resume().await.unwrap();
    let mut client = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .unwrap();
    let got = client.get("/edge/EU/Flavor/small", None).await.unwrap();
    assert_eq!(got.kvs().len(), 1);

    // Dropping the handle stops the server.
    let addr = etcd.client_addr;
    drop(etcd);
    assert!(
        http_get(addr, "/health").is_none(),
        "etcd still answers after drop"
    );
}

#[tokio::test]
async fn openbao_kv2_write_read() {
    let bao = OpenBao::start().await.unwrap();
    let client = vaultrs::client::VaultClient::new(
        vaultrs::client::VaultClientSettingsBuilder::default()
            .address(&bao.addr)
            .token(&bao.token)
            .build()
            .unwrap(),
    )
    .unwrap();
    let secret = HashMap::from([("password".to_string(), "s3cret!".to_string())]);
    vaultrs::kv2::set(&client, "secret", "mc/admin", &secret)
        .await
        .unwrap();
    let read: HashMap<String, String> = vaultrs::kv2::read(&client, "secret", "mc/admin")
        .await
        .unwrap();
    assert_eq!(read["password"], "s3cret!");
}

#[tokio::test]
async fn influx_line_protocol_write_and_influxql_query() {
    let influx = Influx::start().await.unwrap();
    let http = reqwest::Client::new();
    let q = |q: &str| {
        http.post(format!("{}/query", influx.url))
            .form(&[("q", q), ("db", "edge")])
    };
    assert!(
        q("CREATE DATABASE edge")
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    // A new database becomes writable a moment after CREATE DATABASE answers (more so on a loaded
    // machine): poll the write.
    testenv::wait_for(
        "the write to be accepted",
        std::time::Duration::from_secs(10),
        async || {
            let w = http
                .post(format!("{}/write?db=edge&precision=ms", influx.url))
                .body("appinst-cpu,app=game,cloudlet=berlin cpu=12.5 1700000000000\n")
                .send()
                .await
                .ok()?;
            (w.status() == 204).then_some(())
        },
    )
    .await;
    let body: serde_json::Value = q("SELECT cpu FROM \"appinst-cpu\" WHERE app = 'game'")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let values = &body["results"][0]["series"][0]["values"][0];
    assert_eq!(values[1], 12.5, "{body}");
}

#[tokio::test]
async fn docker_container_from_local_image_serves_http_on_loopback() {
    use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding};
    use bollard::query_parameters::CreateContainerOptionsBuilder;

    let dockerd = Docker::start().await.unwrap();
    dockerd.busybox_image("edge-busybox:test").unwrap();
    // Importing again is a no-op.
    dockerd.busybox_image("edge-busybox:test").unwrap();

    let docker =
        bollard::Docker::connect_with_unix(&dockerd.host, 60, bollard::API_DEFAULT_VERSION)
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
    docker
        .create_network(NetworkCreateRequest {
            name: "edge-test".into(),
            driver: Some("bridge".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let port = testenv::free_port();
    let host_config = HostConfig {
        init: Some(true),
        network_mode: Some("edge-test".into()),
        port_bindings: Some(HashMap::from([(
            "80/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(port.to_string()),
            }]),
        )])),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some("edge-busybox:test".into()),
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello-edge > /www/index.html && exec httpd -f -p 80 -h /www".into(),
        ]),
        exposed_ports: Some(vec!["80/tcp".to_string()]),
        host_config: Some(host_config),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name("web").build();
    docker.create_container(Some(opts), body).await.unwrap();
    docker.start_container("web", None).await.unwrap();

    let addr = ([127, 0, 0, 1], port).into();
    let mut answer = None;
    for _ in 0..100 {
        answer = http_get(addr, "/").filter(|(s, _)| *s == 200);
        if answer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = answer.unwrap_or_else(|| {
        panic!(
            "container never answered; dockerd log:\n{}",
            dockerd.log_tail()
        )
    });
    assert_eq!(body.trim(), "hello-edge");
}

#[tokio::test]
async fn parallel_daemons_do_not_collide() {
    let (a, b, e1, e2) = tokio::join!(
        Docker::start(),
        Docker::start(),
        Etcd::start(),
        Etcd::start()
    );
    let (a, b, e1, e2) = (a.unwrap(), b.unwrap(), e1.unwrap(), e2.unwrap());
    assert_ne!(a.address_pool, b.address_pool);
    assert_ne!(a.socket, b.socket);
    assert_ne!(e1.url, e2.url);
    // The same network name in both daemons is fine: they are separate engines.
    for d in [&a, &b] {
        let out = d
            .cli()
            .args(["network", "create", "same-name"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
