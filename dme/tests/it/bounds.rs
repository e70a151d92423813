//! The DME's public surfaces are bounded and robust: request sizes, open edge-events streams, the first
//! event's deadline; and random input on every REST path and every gRPC method never gets a server
//! error. The DME here has no controller (it serves from an empty index), which is all these need.

use std::time::Duration;

use bytes::{Buf, BufMut};
use dme::{Config, Dme};
use edge_proto::dme as d;
use edge_proto::dme::match_engine_api_client::MatchEngineApiClient;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use testenv::fuzz::{self, Rng};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::{DecodeBuf, EncodeBuf};
use tonic::transport::Channel;

async fn start(f: impl FnOnce(&mut Config)) -> Dme {
    // Nothing listens on port 1: the DME keeps redialling and serves its (empty) index meanwhile.
    let mut cfg = Config::local("EU", "127.0.0.1:1");
    f(&mut cfg);
    Dme::start(cfg).await.unwrap()
}

async fn channel(dme: &Dme) -> Channel {
    Channel::from_shared(format!("http://{}", dme.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An edge-events stream that sends `first` (or nothing yet) and stays open.
async fn edge_events(
    ch: Channel,
    first: Option<d::ClientEdgeEvent>,
) -> (
    tokio::sync::mpsc::Sender<d::ClientEdgeEvent>,
    Result<tonic::Streaming<d::ServerEdgeEvent>, tonic::Status>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    if let Some(e) = first {
        tx.send(e).await.unwrap();
    }
    let r = MatchEngineApiClient::new(ch)
        .stream_edge_event(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_event_streams_sizes_and_first_events_are_bounded() {
    let dme = start(|c| {
        c.max_edge_event_streams = 2;
        c.first_event_timeout = Duration::from_millis(1500);
    })
    .await;
    let ch = channel(&dme).await;
    // Two silent streams take both slots; a third is refused at once, not queued.
    let silent: Vec<_> = (0..2)
        .map(|_| tokio::spawn(edge_events(ch.clone(), None)))
        .collect();
    testenv::wait_for("two open streams", Duration::from_secs(10), async || {
        let (_, m) = testenv::http_get(dme.http_addr, "/metrics")?;
        m.contains("dme_edge_event_streams 2").then_some(())
    })
    .await;
    let (_tx, r) = edge_events(ch.clone(), None).await;
    let refused = r.expect_err("a third stream is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("too many edge-events streams"),
        "{refused}"
    );
    // The silent ones end at the first event's deadline, which frees their slots.
    for s in silent {
        let (_tx, r) = s.await.unwrap();
        let e = r.expect_err("a silent stream is ended");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    }
    // A wrong first event is the caller's mistake: InvalidArgument on gRPC, 400 on REST.
    let wrong = d::ClientEdgeEvent {
        event_type: d::client_edge_event::ClientEventType::EventLatencySamples as i32,
        ..Default::default()
    };
    let (_tx, r) = edge_events(ch.clone(), Some(wrong)).await;
    assert_eq!(r.err().unwrap().code(), Code::InvalidArgument);
    let http = reqwest::Client::new();
    let rest = format!("http://{}", dme.rest_addr);
    let r = http
        .post(format!("{rest}/v1/streamedgeevent"))
        .body(r#"{"event_type": "EVENT_LATENCY_SAMPLES"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Requests beyond the size limit: OutOfRange on gRPC, 413 on REST; the DME goes on serving.
    let big = d::RegisterClientRequest {
        org_name: "x".repeat(dme::MAX_REQUEST_BYTES),
        ..Default::default()
    };
    let e = MatchEngineApiClient::new(ch.clone())
        .register_client(big)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    let r = http
        .post(format!("{rest}/v1/registerclient"))
        .body(format!(
            r#"{{"org_name": "{}"}}"#,
            "x".repeat(dme::MAX_REQUEST_BYTES)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let e = MatchEngineApiClient::new(ch)
        .register_client(d::RegisterClientRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "still serving: {e}");
}

/// Passes message bytes through unchanged, so random (also malformed) messages reach the server.
#[derive(Clone, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn random_value(rng: &mut Rng, kind: &Kind, depth: usize) -> Value {
    match kind {
        Kind::Double => Value::F64(*rng.pick(&[0.0, -1e308, f64::NAN, f64::INFINITY, 52.5, 200.0])),
        Kind::Float => Value::F32(*rng.pick(&[0.0, f32::NAN, -91.0, 13.4])),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(*rng.pick(&[0, -1, i32::MIN, i32::MAX, 3]))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(*rng.pick(&[0, -1, i64::MIN, i64::MAX, 3]))
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(*rng.pick(&[0, 1, u32::MAX])),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(*rng.pick(&[0, 1, u64::MAX])),
        Kind::Bool => Value::Bool(rng.below(2) == 0),
        Kind::String => Value::String(fuzz::string(rng).chars().take(2000).collect()),
        Kind::Bytes => Value::Bytes(
            (0..rng.below(64))
                .map(|_| rng.next_u64() as u8)
                .collect::<Vec<u8>>()
                .into(),
        ),
        Kind::Enum(_) => Value::EnumNumber(*rng.pick(&[0, 1, 2, 3, 99, -5])),
        Kind::Message(m) if depth > 0 => Value::Message(random_message(rng, m, depth - 1)),
        Kind::Message(m) => Value::Message(DynamicMessage::new(m.clone())),
    }
}

/// A message of type `desc` with a random subset of its fields set to hostile values.
fn random_message(rng: &mut Rng, desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    for f in desc.fields() {
        if rng.below(3) == 0 {
            continue;
        }
        let v = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                continue;
            };
            let value_kind = entry.map_entry_value_field().kind();
            Value::Map(
                (0..rng.below(3))
                    .map(|_| {
                        (
                            MapKey::String(fuzz::string(rng).chars().take(100).collect()),
                            random_value(rng, &value_kind, depth),
                        )
                    })
                    .collect(),
            )
        } else if f.is_list() {
            Value::List(
                (0..rng.below(4))
                    .map(|_| random_value(rng, &f.kind(), depth))
                    .collect(),
            )
        } else {
            random_value(rng, &f.kind(), depth)
        };
        m.set_field(&f, v);
    }
    m
}

/// Server errors: what a malformed request must never cause.
fn server_fault(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::DataLoss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_on_every_grpc_method_and_rest_path_is_refused_cleanly() {
    let dme = start(|c| c.first_event_timeout = Duration::from_millis(300)).await;
    let ch = channel(&dme).await;
    let pool = DescriptorPool::decode(edge_proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = pool
        .get_service_by_name("distributed_match_engine.MatchEngineApi")
        .unwrap();
    let mut rng = Rng::new(42);
    let mut calls = 0;
    for method in service.methods() {
        let path: tonic::codegen::http::uri::PathAndQuery =
            format!("/{}/{}", service.full_name(), method.name())
                .parse()
                .unwrap();
        for i in 0..60 {
            // Mostly well-formed messages with hostile values; some bytes that are not protobuf at all.
            let bytes = if i % 6 == 5 {
                (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
            } else {
                use prost::Message;
                random_message(&mut rng, &method.input(), 3).encode_to_vec()
            };
            let mut grpc = tonic::client::Grpc::new(ch.clone());
            grpc.ready().await.unwrap();
            let req = tonic::Request::new(tokio_stream::iter(vec![bytes.clone()]));
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                grpc.streaming(req, path.clone(), Raw),
            )
            .await
            .expect("the DME answers within 10 s");
            let status = match result {
                Ok(r) => {
                    let mut s = r.into_inner();
                    loop {
                        match tokio::time::timeout(Duration::from_secs(2), s.message()).await {
                            Ok(Ok(Some(_))) => continue,
                            Ok(Ok(None)) | Err(_) => break None,
                            Ok(Err(e)) => break Some(e),
                        }
                    }
                }
                Err(e) => Some(e),
            };
            if let Some(e) = status {
                assert!(
                    !server_fault(e.code()),
                    "{} with {bytes:02x?}: {e}",
                    method.name()
                );
            }
            calls += 1;
        }
    }
    // REST: every path of the gateway, random bodies.
    let http = reqwest::Client::new();
    let names = [
        "org_name",
        "app_name",
        "app_vers",
        "session_cookie",
        "carrier_name",
        "gps_location",
        "latitude",
        "longitude",
        "unique_id",
        "unique_id_type",
        "auth_token",
        "cell_id",
        "tags",
        "event_type",
        "edge_events_cookie",
        "samples",
        "value",
        "positions",
        "lte_category",
        "band_selection",
        "ver",
        "device_info_static",
        "limit",
    ];
    let paths = [
        "registerclient",
        "findcloudlet",
        "platformfindcloudlet",
        "verifylocation",
        "getlocation",
        "addusertogroup",
        "dynamiclocgroup",
        "getappinstlist",
        "getfqdnlist",
        "getappofficialfqdn",
        "getqospositionkpi",
        "qosprioritysessioncreate",
        "qosprioritysessiondelete",
        "streamedgeevent",
    ];
    for p in paths {
        for _ in 0..60 {
            let body = fuzz::body(&mut rng, &names);
            let r = http
                .post(format!("http://{}/v1/{p}", dme.rest_addr))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
            assert!(status < 500, "/v1/{p} {shown} -> {status} {text}");
            calls += 1;
        }
    }
    println!("{calls} random calls");
}
