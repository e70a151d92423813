//! `edge-bench notify` and `edge-bench resync`: the controller's notify streams on a region written
//! straight into etcd.
//!
//! - `notify`: one change (a new Flavor) until the last of many subscribers (DME-style streams) has it
//!   (target ≤ 1 s for 1,000), and a full sync of a cloudlet with many objects to its CRM (target
//!   ≥ 50,000 objects/s).
//! - `resync`: that CRM reconnects after a few of its objects changed, saying which revision it holds: the
//!   bytes and time until it is up to date, against a full resync of the same state (target: the delta's
//!   bytes ≤ 1 % of the full sync's).

use std::time::{Duration, Instant};

use edge_common::Keyed;
use edge_proto::edge::notify_client::NotifyClient;
use edge_proto::edge::*;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

const REGION: &str = "notify";

/// The cloudlet whose CRM the benchmarks play.
fn c0() -> CloudletKey {
    CloudletKey {
        organization: "op".into(),
        name: "c0".into(),
    }
}

#[derive(clap::Args, Debug)]
pub struct NotifyArgs {
    /// Subscribers that all must see one change.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Objects (AppInsts) on the cloudlet whose CRM gets a full sync.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
}

#[derive(clap::Args, Debug)]
pub struct ResyncArgs {
    /// Objects (AppInsts) on the cloudlet of the reconnecting CRM.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Of those, how many change while the CRM is away.
    #[arg(long, default_value_t = 10)]
    changed: usize,
}

/// A controller on a region of one cloudlet `op/c0` holding `objects` AppInsts, whose access key is
/// returned (its CRM's hellos are signed with it).
async fn region(
    objects: usize,
) -> anyhow::Result<(testenv::Etcd, regional_controller::Controller, String)> {
    eprintln!("writing {objects} app instances on one cloudlet into etcd ...");
    let etcd = testenv::Etcd::start().await?;
    crate::bulk::write_region(&etcd.url, REGION, objects, 1, false, 0).await?;
    let private = c0_access_key(&etcd.url, REGION).await?;
    let (ctrl, _) = crate::region::controller(REGION, &etcd.url).await?;
    Ok((etcd, ctrl, private))
}

/// Gives cloudlet `op/c0` of `region` (in etcd at `etcd`) an access key, whose private half is returned:
/// the benchmarks play its CRM.
pub async fn c0_access_key(etcd: &str, region: &str) -> anyhow::Result<String> {
    let (private, public) = edge_common::access_key::generate()?;
    let client = etcd_client::Client::connect([etcd], None).await?;
    let store = regional_controller::store::Store::new(client.clone(), region);
    let mut cl = testenv::fixtures::cloudlet("op", "c0");
    cl.state = TrackedState::Ready as i32;
    cl.access_public_key = public;
    client
        .kv_client()
        .put(store.path_of(&cl), serde_json::to_vec(&cl)?, None)
        .await?;
    Ok(private)
}

fn up(msg: notify_up::Msg) -> NotifyUp {
    NotifyUp {
        trace_context: Default::default(),
        msg: Some(msg),
    }
}

/// A notify stream on `channel` opened with `hello`; the sender keeps it open.
async fn open(
    channel: Channel,
    hello: Hello,
) -> anyhow::Result<(mpsc::Sender<NotifyUp>, Streaming<NotifyDown>)> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(up(notify_up::Msg::Hello(hello))).await?;
    let down = NotifyClient::new(channel)
        .max_decoding_message_size(edge_common::GRPC_MAX_MESSAGE_BYTES)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, down))
}

fn crm_hello(region: &str, private: &str, since: i64) -> anyhow::Result<Hello> {
    let at = edge_common::now_ms();
    Ok(Hello {
        client_type: ClientType::Crm as i32,
        region: region.into(),
        cloudlet_key: Some(c0()),
        signed_at: at,
        signature: edge_common::access_key::sign(private, region, "op", "c0", at)?,
        last_revision: since,
        client_name: "bench-crm".into(),
        ..Default::default()
    })
}

/// What one sync brought: its bytes, objects, time and the revision it ended at.
pub struct Sync {
    pub bytes: usize,
    pub objects: usize,
    pub took: Duration,
    revision: i64,
    delta: bool,
}

/// Connects as the CRM of `op/c0` of `region` holding revision `since` and reads up to `SendAllEnd`.
pub async fn sync(
    channel: &Channel,
    region: &str,
    private: &str,
    since: i64,
) -> anyhow::Result<(Sync, mpsc::Sender<NotifyUp>, Streaming<NotifyDown>)> {
    let started = Instant::now();
    let (tx, mut down) = open(channel.clone(), crm_hello(region, private, since)?).await?;
    let (mut bytes, mut objects) = (0, 0);
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), down.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the stream ended during the sync"))?;
        bytes += m.encoded_len();
        match m.msg {
            Some(notify_down::Msg::Change(_)) => objects += 1,
            Some(notify_down::Msg::SendAllEnd(end)) => {
                let s = Sync {
                    bytes,
                    objects,
                    took: started.elapsed(),
                    revision: end.revision,
                    delta: end.delta,
                };
                return Ok((s, tx, down));
            }
            _ => {}
        }
    }
}

pub async fn fanout(args: NotifyArgs) -> anyhow::Result<()> {
    let (_etcd, ctrl, private) = region(args.objects).await?;
    let endpoint = format!("http://{}", ctrl.notify_addr);
    // At most 256 streams share a connection: one connection per 200 subscribers.
    let mut channels = Vec::new();
    for _ in 0..args.subscribers.div_ceil(200).max(1) {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }

    let (full, _tx, _down) = sync(&channels[0], REGION, &private, 0).await?;
    let per_s = full.objects as f64 / full.took.as_secs_f64();
    println!(
        "full sync to one CRM: {} objects, {:.1} MB in {:.2} s = {per_s:.0} objects/s (target ≥ 50000)",
        full.objects,
        full.bytes as f64 / 1e6,
        full.took.as_secs_f64()
    );

    eprintln!("opening {} subscriber streams ...", args.subscribers);
    let hello = Hello {
        client_type: ClientType::Dme as i32,
        region: REGION.into(),
        wanted: vec![ObjectKind::Flavor as i32],
        client_name: "bench-subscriber".into(),
        ..Default::default()
    };
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let (tx, mut down) = open(channels[i % channels.len()].clone(), hello.clone()).await?;
        // Past the initial sync (the one flavor).
        while let Some(m) = down.message().await? {
            if matches!(m.msg, Some(notify_down::Msg::SendAllEnd(_))) {
                break;
            }
        }
        subscribers.push((tx, down));
    }
    let client = etcd_client::Client::connect([_etcd.url.as_str()], None).await?;
    let store = regional_controller::store::Store::new(client.clone(), REGION);
    let flavor = testenv::fixtures::flavor("fanout");
    let started = Instant::now();
    client
        .kv_client()
        .put(store.path_of(&flavor), serde_json::to_vec(&flavor)?, None)
        .await?;
    let waits = subscribers.into_iter().map(|(tx, mut down)| async move {
        let _keep = tx;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), down.message()).await??;
            match m.and_then(|m| m.msg) {
                Some(notify_down::Msg::Change(c))
                    if matches!(&c.object, Some(change::Object::Flavor(f)) if f.key_string() == "fanout") =>
                {
                    return anyhow::Ok(started.elapsed());
                }
                Some(_) => {}
                None => anyhow::bail!("a subscriber's stream ended"),
            }
        }
    });
    let mut times = futures::future::try_join_all(waits).await?;
    times.sort();
    let last = times.last().copied().unwrap_or_default();
    println!(
        "one change to {} subscribers: first after {:.1} ms, median {:.1} ms, last {:.1} ms (target ≤ 1000 ms)",
        times.len(),
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3
    );
    crate::ratio(
        "notify",
        last.as_secs_f64(),
        1.0,
        serde_json::json!({"subscribers": args.subscribers, "last_ms": last.as_secs_f64() * 1e3,
            "full_sync_objects": full.objects, "full_sync_objects_per_s": per_s}),
    );
    Ok(())
}

pub async fn resync(args: ResyncArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.changed <= args.objects,
        "--changed must not exceed --objects"
    );
    let (etcd, ctrl, private) = region(args.objects).await?;
    let channel = Channel::from_shared(format!("http://{}", ctrl.notify_addr))?
        .connect()
        .await?;
    let (first, tx, down) = sync(&channel, REGION, &private, 0).await?;
    drop((tx, down));

    // While the CRM is away, `changed` of its instances change (their status, as a report would).
    let client = etcd_client::Client::connect([etcd.url.as_str()], None).await?;
    let store = regional_controller::store::Store::new(client.clone(), REGION);
    for i in 0..args.changed {
        let mut inst = testenv::fixtures::app_inst("dev", &format!("g{i}"), "game", "k0");
        inst.cloudlet_key = Some(c0());
        inst.state = TrackedState::Ready as i32;
        inst.status = vec![format!("changed {i}")];
        client
            .kv_client()
            .put(store.path_of(&inst), serde_json::to_vec(&inst)?, None)
            .await?;
    }
    // Until the controller has them: the delta then carries every change.
    let last = client
        .kv_client()
        .get("x", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    testenv::wait_for(
        "the controller to see the changes",
        Duration::from_secs(30),
        async || {
            let (probe, _tx, _down) = sync(&channel, REGION, &private, first.revision)
                .await
                .ok()?;
            (probe.revision >= last).then_some(())
        },
    )
    .await;

    let (delta, _tx, _down) = sync(&channel, REGION, &private, first.revision).await?;
    anyhow::ensure!(delta.delta, "the reconnect was not a delta resync");
    let (full, _tx2, _down2) = sync(&channel, REGION, &private, 0).await?;
    println!(
        "full resync: {} objects, {} bytes in {:.1} ms",
        full.objects,
        full.bytes,
        full.took.as_secs_f64() * 1e3
    );
    println!(
        "delta resync after {} changes: {} objects, {} bytes in {:.1} ms",
        args.changed,
        delta.objects,
        delta.bytes,
        delta.took.as_secs_f64() * 1e3
    );
    let ratio = delta.bytes as f64 / full.bytes as f64;
    crate::ratio(
        "resync",
        ratio,
        0.01,
        serde_json::json!({"objects": args.objects, "changed": args.changed,
            "delta_bytes": delta.bytes, "full_bytes": full.bytes,
            "delta_ms": delta.took.as_secs_f64() * 1e3, "full_ms": full.took.as_secs_f64() * 1e3}),
    );
    Ok(())
}
