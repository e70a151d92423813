//! The `edge-lb` process on its own: programmed through [`LbClient`], its routes saved and bound again at
//! start, one LB per directory, clear failures, and gone when its directory is.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crm::lb::client::{LbClient, LbConfig};
use crm::lb::{Proto, RouteKey, RouteSpec};
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn client(dir: &std::path::Path) -> LbClient {
    LbClient::new(
        LbConfig {
            binary: env!("CARGO_BIN_EXE_edge-lb").into(),
            dir: dir.to_path_buf(),
            public_addr: [127, 0, 0, 1].into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
        },
        &Registry::new(),
    )
    .unwrap()
}

/// A TCP server answering every connection with `word`.
async fn backend(word: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(word.as_bytes()).await;
        }
    });
    addr
}

async fn answer(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut b = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut b))
        .await
        .ok()?
        .ok()?;
    Some(b)
}

fn tcp(port: u16) -> RouteKey {
    RouteKey {
        proto: Proto::Tcp,
        port,
    }
}

/// Runs `edge-lb` on `dir` by hand and returns how it ended and what it printed.
fn run_by_hand(dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-lb"))
        .arg("--dir")
        .arg(dir)
        .args(["--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_saved_and_served_by_the_next_lb_and_one_lb_runs_per_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lb");
    let lb = client(&dir);
    // Nothing routed yet: no LB is started for a status or a removal.
    assert!(lb.status().await.unwrap().is_none());
    lb.remove(tcp(1)).await.unwrap();
    assert!(!dir.join("lb.sock").exists(), "an LB was started");

    let port = testenv::free_port();
    let route = RouteSpec {
        key: tcp(port),
        backend: backend("one").await,
        owner: "acme/one".into(),
    };
    lb.ensure(route.clone()).await.unwrap();
    assert_eq!(answer(port).await.as_deref(), Some("one"));
    let status = lb.status().await.unwrap().unwrap();
    assert_eq!(status.routes, vec![route.clone()]);
    let metrics = testenv::http_get(status.http_addr, "/metrics").unwrap().1;
    assert!(metrics.contains("crm_lb_connections_total"), "{metrics}");

    // A second LB on the same directory refuses to start, naming the reason.
    let (code, out) = run_by_hand(&dir);
    assert!(!code.success());
    assert!(out.contains("another edge-lb already serves"), "{out}");

    // Stopped (SIGTERM) and started again by the next call: the saved route is served before any call.
    Command::new("kill")
        .args(["-TERM", &status.pid.to_string()])
        .status()
        .unwrap();
    testenv::wait_for("the LB to stop", Duration::from_secs(10), async || {
        answer(port).await.is_none().then_some(())
    })
    .await;
    let again = lb.status().await.unwrap().unwrap();
    assert_ne!(again.pid, status.pid);
    assert_eq!(again.routes, vec![route.clone()]);
    assert_eq!(answer(port).await.as_deref(), Some("one"));

    // A port that is taken is a clear error, and nothing of it is saved.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let err = lb
        .ensure(RouteSpec {
            key: tcp(taken_port),
            backend: route.backend,
            owner: "acme/two".into(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{err}"
    );
    let saved = std::fs::read_to_string(dir.join("routes.json")).unwrap();
    assert!(!saved.contains("acme/two"), "{saved}");

    lb.remove(route.key).await.unwrap();
    assert!(lb.routes().await.unwrap().is_empty());
    testenv::wait_for("the route to close", Duration::from_secs(5), async || {
        answer(port).await.is_none().then_some(())
    })
    .await;

    // The directory removed: the LB stops by itself.
    let pid = again.pid;
    drop(tmp);
    testenv::wait_for("the LB to exit", Duration::from_secs(10), async || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_saved_routes_and_a_missing_binary_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("routes.json"), "{not json").unwrap();
    let (code, out) = run_by_hand(tmp.path());
    assert!(!code.success());
    assert!(out.contains("reading saved routes"), "{out}");

    let lb = LbClient::new(
        LbConfig {
            binary: tmp.path().join("no-such-edge-lb"),
            dir: tmp.path().join("lb"),
            public_addr: [127, 0, 0, 1].into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
        },
        &Registry::new(),
    )
    .unwrap();
    let err = lb
        .ensure(RouteSpec {
            key: tcp(testenv::free_port()),
            backend: ([127, 0, 0, 1], 1).into(),
            owner: "acme/x".into(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("starting the load balancer"), "{err}");
    assert!(err.contains("no-such-edge-lb"), "{err}");
}
