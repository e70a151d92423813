//! Shepherd: runs next to a cloudlet's CRM, measures what the cloudlet's apps use and whether they
//! answer, and reports both.
//!
//! It follows its cloudlet's objects over notify ([`world`]), authenticating exactly as the CRM does
//! (a client certificate obtained with the cloudlet access key). Every `interval` it samples each READY
//! AppInst on the platform ([`collect`]) and the shared LB's per-port counters ([`lbstats`]) and queues
//! `appinst-*`, `cluster-*` and `cloudlet-utilization` points for InfluxDB ([`influx`]). Every
//! `health_interval` it probes each AppInst's TCP ports ([`health`]), reports a changed health to the
//! controller (the DME then skips a failing instance), and raises or clears the cloudlet's alerts
//! (`AppInstDown`, `CloudletResourceUsage`).

pub mod collect;
pub mod health;
pub mod influx;
pub mod lbstats;
pub mod tags;
pub mod world;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_common::Keyed;
use edge_common::notify_client::CloudletAgent;
use edge_common::ops::{self, Readiness};
use edge_proto::edge::{
    Alert, AppInst, AppInstInfo, ClusterInst, HealthCheck, NotifyUp, TrackedState, notify_up,
};
use prometheus::{IntGauge, Registry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::collect::{Collector, Sample};
use crate::influx::{Db, Field, InfluxConfig, Point, Writer};
use crate::world::{State, World};

/// Where AppInst figures come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// The Docker Engine the CRM runs the cloudlet's containers on.
    Docker { host: String },
    /// The CRM's qemu VMs, in its `vms/` directory (`<crm state dir>/vms`).
    Vm { dir: std::path::PathBuf },
    /// Simulated figures (the fake platform).
    Fake,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// who this Shepherd is and how it reaches its controller (client type `Shepherd`)
    pub agent: CloudletAgent,
    pub platform: PlatformKind,
    pub influx: InfluxConfig,
    /// between two metric samples
    pub interval: Duration,
    /// between two health checks
    pub health_interval: Duration,
    /// failed checks in a row before an AppInst is reported failing
    pub health_failures: u32,
    /// address the shared root LB publishes app ports on (probed by health checks)
    pub public_addr: IpAddr,
    /// the LB's Prometheus page (the CRM's `/metrics`), for per-port connection counters
    pub lb_metrics: Option<String>,
    /// address of Shepherd's own `/metrics` and `/healthz`
    pub http_addr: SocketAddr,
    /// a cloudlet resource used above this percentage of its total raises `CloudletResourceUsage`
    pub resource_alert_percent: u64,
}

/// A running Shepherd; dropping it stops every task.
pub struct Shepherd {
    pub http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Shepherd {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The shared part of the loops.
struct Core {
    cfg: Config,
    world: Arc<World>,
    writer: Arc<Writer>,
    collector: Box<dyn Collector>,
    http: reqwest::Client,
    reports: mpsc::UnboundedSender<NotifyUp>,
    /// alerts the last metrics round wants (resource usage, alert policies), by key
    metric_alerts: Mutex<HashMap<String, Alert>>,
    /// since when each (AppInst, AlertPolicy) has been over a limit
    over_since: Mutex<HashMap<(String, String), Instant>>,
    /// what was last sent per report id, and when: a report the controller has not applied yet is
    /// repeated only after a while
    sent: Mutex<HashMap<String, (String, Instant)>>,
}

/// How long an unchanged report waits before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(10);

impl Shepherd {
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let connected = IntGauge::new(
            "shepherd_controller_connected",
            "1 while the notify stream to the controller is up",
        )?;
        registry.register(Box::new(connected.clone()))?;
        let writer = Writer::new(cfg.influx.clone(), &registry)?;
        let collector: Box<dyn Collector> = match &cfg.platform {
            PlatformKind::Docker { host } => Box::new(collect::Docker(
                crm::platform::docker::DockerPlatform::connect(
                    host,
                    &cfg.agent.cloudlet.key_string(),
                )
                .await?,
            )),
            PlatformKind::Vm { dir } => Box::new(collect::Vm::new(dir.clone())),
            PlatformKind::Fake => Box::new(collect::Fake::default()),
        };
        let world = Arc::new(World::new(writer.clone(), connected));
        let ready = Readiness::default();
        ready.set(true);
        let ops_server = ops::serve(cfg.http_addr, registry, ready).await?;
        let (reports, rx) = mpsc::unbounded_channel();
        let agent = cfg.agent.clone();
        let dial = agent.dial();
        let connection =
            edge_common::notify_client::run(dial, move || agent.hello(&[]), world.clone(), rx);
        let core = Arc::new(Core {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            cfg: cfg.clone(),
            world,
            writer: writer.clone(),
            collector,
            reports,
            metric_alerts: Mutex::default(),
            over_since: Mutex::default(),
            sent: Mutex::default(),
        });
        let metrics = {
            let core = core.clone();
            async move {
                let mut tick = tokio::time::interval(core.cfg.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    core.metrics_round().await;
                }
            }
        };
        let health = {
            let core = core.clone();
            async move {
                let mut tracker = health::Tracker::new(core.cfg.health_failures);
                let mut tick = tokio::time::interval(core.cfg.health_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    core.health_round(&mut tracker).await;
                }
            }
        };
        let tasks = vec![
            ops_server.task,
            tokio::spawn(connection),
            tokio::spawn(writer.run(cfg.interval.min(Duration::from_secs(10)))),
            tokio::spawn(metrics),
            tokio::spawn(health),
        ];
        tracing::info!(
            cloudlet = %cfg.agent.cloudlet.key_string(),
            controller = %cfg.agent.controller,
            influxdb = %cfg.influx.url,
            http = %ops_server.addr,
            "Shepherd started"
        );
        Ok(Self {
            http_addr: ops_server.addr,
            tasks,
        })
    }
}

/// READY AppInsts of the cloudlet.
fn ready_insts(s: &State) -> Vec<AppInst> {
    s.app_insts
        .values()
        .filter(|i| i.state() == TrackedState::Ready)
        .cloned()
        .collect()
}

/// A new firing alert with the labels of `inst`.
fn app_alert(name: &str, severity: &str, inst: &AppInst) -> Alert {
    let a = inst.app_key.clone().unwrap_or_default();
    let c = inst.cluster_key.clone().unwrap_or_default();
    let mut alert = Alert {
        state: "firing".into(),
        ..Default::default()
    };
    for (k, v) in [
        ("alertname", name),
        ("scope", "Application"),
        ("severity", severity),
        ("app", &a.name),
        ("appver", &a.version),
        ("apporg", &a.organization),
        ("cluster", &c.name),
        ("clusterorg", &c.organization),
    ] {
        alert.labels.insert(k.into(), v.into());
    }
    alert
}

impl Core {
    /// The labels the controller adds, so keys compare with what it stores.
    fn stamp(&self, mut a: Alert) -> Alert {
        let ck = &self.cfg.agent.cloudlet;
        for (k, v) in [
            ("region", self.cfg.agent.region.as_str()),
            ("cloudlet", ck.name.as_str()),
            ("cloudletorg", ck.organization.as_str()),
        ] {
            a.labels.insert(k.into(), v.into());
        }
        a
    }

    /// Sends `msg` unless the same `value` went out for `id` less than [`RESEND_AFTER`] ago.
    fn report(&self, id: String, value: String, msg: notify_up::Msg) {
        let mut sent = self.sent.lock().expect("sent lock");
        if let Some((v, at)) = sent.get(&id)
            && *v == value
            && at.elapsed() < RESEND_AFTER
        {
            return;
        }
        sent.insert(id, (value, Instant::now()));
        let _ = self.reports.send(NotifyUp {
            trace_context: Default::default(),
            msg: Some(msg),
        });
    }

    async fn metrics_round(&self) {
        let s = self.world.snapshot();
        if !s.synced {
            return;
        }
        let insts = ready_insts(&s);
        let samples = match self.collector.collect(&insts, true).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "sampling the platform failed");
                HashMap::new()
            }
        };
        // The shared LB's counters per AppInst route: connection points, open connections for alert
        // policies, and the network of instances whose platform counts none (a VM's only traffic is
        // through the LB: its user network forwards the LB's ports and nothing else).
        let lb = match &self.cfg.lb_metrics {
            Some(url) => match lbstats::fetch(&self.http, url).await {
                Ok(lb) => lb,
                Err(e) => {
                    tracing::warn!(%url, error = %e, "reading the LB's counters failed");
                    Default::default()
                }
            },
            None => Default::default(),
        };
        let mut lb_active: HashMap<String, i64> = HashMap::new();
        let mut lb_bytes: HashMap<String, (i64, i64)> = HashMap::new();
        for ((key, _), r) in &lb {
            *lb_active.entry(key.clone()).or_default() += r.active;
            let b = lb_bytes.entry(key.clone()).or_default();
            b.0 += r.bytes_out;
            b.1 += r.bytes_in;
        }
        let now = edge_common::now_ms();
        let mut points = Vec::new();
        let mut per_cluster: HashMap<String, Vec<&Sample>> = HashMap::new();
        for inst in &insts {
            let Some(sample) = samples.get(&inst.key_string()) else {
                continue;
            };
            let st = &sample.stats;
            let p = |m| tags::app_inst(Point::new(m, now), inst);
            points.push(p(tags::APPINST_CPU).field("cpu", Field::Float(st.cpu)));
            points.push(p(tags::APPINST_MEM).field("mem", Field::Int(st.mem as i64)));
            points.push(p(tags::APPINST_DISK).field("disk", Field::Int(st.disk as i64)));
            let (sent, recvd) = match (st.net_tx, st.net_rx) {
                (0, 0) => lb_bytes
                    .get(&inst.key_string())
                    .copied()
                    .unwrap_or_default(),
                (tx, rx) => (tx as i64, rx as i64),
            };
            points.push(
                p(tags::APPINST_NETWORK)
                    .field("sendBytes", Field::Int(sent))
                    .field("recvBytes", Field::Int(recvd)),
            );
            per_cluster
                .entry(inst.cluster_key.clone().unwrap_or_default().key_string())
                .or_default()
                .push(sample);
        }
        for (key, samples) in &per_cluster {
            if let Some(c) = s.clusters.get(key) {
                points.extend(self.cluster_points(&s, c, samples, now));
            }
        }
        for ((key, route), r) in lb {
            let Some(inst) = s.app_insts.get(&key) else {
                continue;
            };
            let port = route.rsplit(':').next().unwrap_or_default().to_string();
            points.push(
                tags::app_inst(Point::new(tags::APPINST_CONNECTIONS, now), inst)
                    .tag("port", port)
                    .field("active", Field::Int(r.active))
                    .field("accepts", Field::Int(r.accepts))
                    .field("handled", Field::Int(r.accepts - r.refused))
                    .field("bytesSent", Field::Int(r.bytes_out))
                    .field("bytesRecvd", Field::Int(r.bytes_in)),
            );
        }
        let mut metric_alerts = self.policy_alerts(&s, &insts, &samples, &lb_active);
        if let Some(info) = &s.cloudlet_info {
            let mut p = tags::cloudlet(
                Point::new(tags::CLOUDLET_UTILIZATION, now),
                &self.cfg.agent.cloudlet,
            );
            for r in &info.resources {
                let (used, max) = match r.name.as_str() {
                    "vCPUs" => ("vCpuUsed", "vCpuMax"),
                    "RAM" => ("memUsed", "memMax"),
                    "Disk" => ("diskUsed", "diskMax"),
                    _ => continue,
                };
                p = p
                    .field(used, Field::Int(r.used as i64))
                    .field(max, Field::Int(r.total as i64));
                let limit = self.cfg.resource_alert_percent;
                if r.total > 0 && r.used * 100 > limit * r.total {
                    let mut a = Alert {
                        state: "firing".into(),
                        value: r.used as f64 * 100.0 / r.total as f64,
                        ..Default::default()
                    };
                    for (k, v) in [
                        ("alertname", "CloudletResourceUsage".to_string()),
                        ("scope", "Cloudlet".into()),
                        ("severity", "warning".into()),
                        (
                            "warning",
                            format!("More than {limit}% of {} is used by the cloudlet", r.name),
                        ),
                    ] {
                        a.labels.insert(k.into(), v);
                    }
                    a.annotations
                        .insert("title".into(), "CloudletResourceUsage".into());
                    a.annotations.insert(
                        "description".into(),
                        format!("{} of {} {} in use", r.used, r.total, r.name),
                    );
                    let a = self.stamp(a);
                    metric_alerts.insert(a.key_string(), a);
                }
            }
            if !p.fields.is_empty() {
                points.push(p);
            }
        }
        *self.metric_alerts.lock().expect("alerts lock") = metric_alerts;
        self.writer.push(Db::Metrics, points);
    }

    /// `cluster-*` points: the cluster's apps together, as a percentage of the cluster's flavor for
    /// CPU, memory and disk.
    fn cluster_points(
        &self,
        s: &State,
        c: &ClusterInst,
        samples: &[&Sample],
        now: i64,
    ) -> Vec<Point> {
        let flavor = c
            .flavor
            .as_ref()
            .and_then(|f| s.flavors.get(&f.key_string()));
        let nodes = u64::from(c.num_nodes.max(1));
        let sum = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(|s| f(s)).sum::<f64>();
        let pct = |used: f64, total: u64| {
            if total == 0 {
                0.0
            } else {
                used * 100.0 / total as f64
            }
        };
        let (vcpus, ram_mb, disk_gb) = flavor.map_or((0, 0, 0), |f| (f.vcpus, f.ram, f.disk));
        let p = |m| tags::cluster(Point::new(m, now), c);
        vec![
            p(tags::CLUSTER_CPU).field(
                "cpu",
                Field::Float(sum(&|s| s.stats.cpu) / (vcpus * nodes).max(1) as f64),
            ),
            p(tags::CLUSTER_MEM).field(
                "mem",
                Field::Float(pct(sum(&|s| s.stats.mem as f64), (ram_mb * nodes) << 20)),
            ),
            p(tags::CLUSTER_DISK).field(
                "disk",
                Field::Float(pct(sum(&|s| s.stats.disk as f64), (disk_gb * nodes) << 30)),
            ),
            p(tags::CLUSTER_NETWORK)
                .field(
                    "sendBytes",
                    Field::Int(sum(&|s| s.stats.net_tx as f64) as i64),
                )
                .field(
                    "recvBytes",
                    Field::Int(sum(&|s| s.stats.net_rx as f64) as i64),
                ),
        ]
    }

    async fn health_round(&self, tracker: &mut health::Tracker) {
        let s = self.world.snapshot();
        if !s.synced {
            return;
        }
        let insts = ready_insts(&s);
        let samples = match self.collector.collect(&insts, false).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "asking the platform for its instances failed");
                return;
            }
        };
        let lb = self.cfg.public_addr;
        let checks = insts.iter().map(|i| {
            let sample = samples.get(&i.key_string());
            async move { (i, health::probe(i, lb, sample).await) }
        });
        let mut wanted: HashMap<String, Alert> =
            self.metric_alerts.lock().expect("alerts lock").clone();
        for (inst, result) in futures::future::join_all(checks).await {
            let key = inst.key_string();
            let Some(result) = result else { continue };
            let measured = tracker.record(&key, result);
            if measured == HealthCheck::Unknown {
                continue;
            }
            if measured != inst.health_check() {
                self.report(
                    format!("health/{key}"),
                    measured.as_str_name().into(),
                    notify_up::Msg::AppInstInfo(AppInstInfo {
                        key: inst.key.clone(),
                        health_check: measured as i32,
                        ..Default::default()
                    }),
                );
            }
            if measured != HealthCheck::Ok {
                let (status, why) = match measured {
                    HealthCheck::FailRootlbOffline => (
                        "HealthCheckRootlbOffline",
                        "Root Load Balancer is not responding",
                    ),
                    _ => (
                        "HealthCheckServerFail",
                        "Application server port is not responding",
                    ),
                };
                let mut a = app_alert("AppInstDown", "error", inst);
                a.labels.insert("status".into(), status.into());
                a.annotations.insert("title".into(), "AppInstDown".into());
                a.annotations.insert("description".into(), why.into());
                let a = self.stamp(a);
                wanted.insert(a.key_string(), a);
            }
        }
        tracker.retain(&|k| s.app_insts.contains_key(k));
        self.reconcile_alerts(&s, wanted);
    }

    /// Alerts of the instances' AlertPolicies whose limits have been exceeded for their trigger time.
    fn policy_alerts(
        &self,
        s: &State,
        insts: &[AppInst],
        samples: &HashMap<String, Sample>,
        lb_active: &HashMap<String, i64>,
    ) -> HashMap<String, Alert> {
        let mut over = self.over_since.lock().expect("over lock");
        let mut still = std::collections::HashSet::new();
        let mut out = HashMap::new();
        for inst in insts {
            let key = inst.key_string();
            let (Some(sample), Some(app)) = (
                samples.get(&key),
                s.apps
                    .get(&inst.app_key.clone().unwrap_or_default().key_string()),
            ) else {
                continue;
            };
            let flavor = inst
                .flavor
                .as_ref()
                .or(app.default_flavor.as_ref())
                .and_then(|f| s.flavors.get(&f.key_string()));
            let pct = |used: f64, total: u64| {
                if total == 0 {
                    0.0
                } else {
                    used * 100.0 / total as f64
                }
            };
            let st = &sample.stats;
            let cpu = flavor.map_or(0.0, |f| st.cpu / f.vcpus.max(1) as f64);
            let mem = flavor.map_or(0.0, |f| pct(st.mem as f64, f.ram << 20));
            let disk = flavor.map_or(0.0, |f| pct(st.disk as f64, f.disk << 30));
            let conns = lb_active.get(&key).copied().unwrap_or(0) as f64;
            let org = app.key.clone().unwrap_or_default().organization;
            for name in &app.alert_policies {
                let Some(p) = s.policies.get(&format!("{org}/{name}")) else {
                    continue;
                };
                let exceeded = [
                    (p.cpu_utilization_limit, cpu),
                    (p.mem_utilization_limit, mem),
                    (p.disk_utilization_limit, disk),
                    (p.active_conn_limit, conns),
                ]
                .into_iter()
                .filter(|(limit, v)| *limit > 0 && *v > f64::from(*limit))
                .map(|(_, v)| v)
                .next();
                let Some(value) = exceeded else { continue };
                let id = (key.clone(), name.clone());
                let since = *over.entry(id.clone()).or_insert_with(Instant::now);
                still.insert(id);
                let trigger = edge_common::parse_duration(&p.trigger_time).unwrap_or_default();
                if since.elapsed() < trigger {
                    continue;
                }
                let mut a = app_alert(name, &p.severity, inst);
                a.labels.insert("type".into(), "UserDefined".into());
                for (k, v) in &p.labels {
                    a.labels.entry(k.clone()).or_insert_with(|| v.clone());
                }
                a.annotations = p.annotations.clone();
                if !p.description.is_empty() {
                    a.annotations
                        .insert("description".into(), p.description.clone());
                }
                a.value = value;
                let a = self.stamp(a);
                out.insert(a.key_string(), a);
            }
        }
        over.retain(|id, _| still.contains(id));
        out
    }

    /// Raises the wanted alerts the controller lacks and clears the ones it holds that are no longer
    /// wanted (only alerts a Shepherd raises; `CloudletDown` is the controller's).
    fn reconcile_alerts(&self, s: &State, wanted: HashMap<String, Alert>) {
        const MINE: &[&str] = &["AppInstDown", "CloudletResourceUsage"];
        for (key, a) in &wanted {
            if !s.alerts.contains_key(key) {
                self.report(
                    format!("alert/{key}"),
                    "firing".into(),
                    notify_up::Msg::AlertFiring(a.clone()),
                );
            }
        }
        for (key, a) in &s.alerts {
            let name = a.labels.get("alertname").map(String::as_str);
            let mine = name.is_some_and(|n| MINE.contains(&n))
                || a.labels.get("type").is_some_and(|t| t == "UserDefined");
            if !wanted.contains_key(key) && mine {
                self.report(
                    format!("alert/{key}"),
                    "cleared".into(),
                    notify_up::Msg::AlertCleared(a.clone()),
                );
            }
        }
    }
}
