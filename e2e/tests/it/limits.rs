//! Bounds every gRPC server of the platform advertises, checked on the wire with a plain HTTP/2 client.

use regional_controller::{Config, Controller};

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` an HTTP/2 server at `addr` (plaintext) advertises.
async fn advertised_streams(addr: std::net::SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    // One request makes sure the server's SETTINGS have been received and acknowledged.
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/nosuch.Service/Method"))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (resp, _body) = client.send_request(req, true).unwrap();
    tokio::select! {
        r = &mut conn => panic!("connection ended: {r:?}"),
        r = resp => { r.unwrap(); }
    }
    conn.max_concurrent_send_streams()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_servers_bound_concurrent_streams_per_connection() {
    let etcd = testenv::Etcd::start().await.unwrap();
    let ctrl = Controller::start(Config::local("EU", &etcd.url))
        .await
        .unwrap();
    let dme = dme::Dme::start(dme::Config::local("EU", &ctrl.notify_addr.to_string()))
        .await
        .unwrap();
    let limit = edge_common::GRPC_MAX_CONCURRENT_STREAMS as usize;
    for addr in [ctrl.api_addr, ctrl.notify_addr, dme.grpc_addr] {
        assert_eq!(advertised_streams(addr).await, limit, "{addr}");
    }
}
