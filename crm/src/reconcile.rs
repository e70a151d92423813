//! The reconciler: level-triggered and idempotent. Each pass compares the desired state (the mirror)
//! with what the platform observes and acts per object, reporting progress and results. Passes run on
//! every mirror change, after every resync, and every few seconds, so a failed or interrupted step is
//! simply retried (transient failures with exponential backoff and jitter). Resources the platform has
//! but nobody wants are removed — only once a full desired state is known.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_common::Keyed;
use edge_proto::edge::{
    App, AppInst, AppInstInfo, AppInstRuntime, CloudletInfo, CloudletKey, CloudletState,
    ClusterInst, ClusterInstInfo, FlavorInfo, IpAccess, PlatformFeatures, PowerState,
    ResourceUsage, TrackedState, notify_up,
};
use tokio::sync::Notify;

use crate::lb::Lbs;
use crate::lb::client::LbClient;
use crate::lb::{Proto, RouteKey, RouteSpec};
use crate::mirror::{Desired, Mirror};
use crate::platform::{
    Capacity, ClusterOps, ObservedAppInst, Platform, PlatformError, Progress, VmOps,
};
use crate::report::Reporter;

/// Time between passes when nothing changes.
const PERIOD: Duration = Duration::from_secs(2);

pub struct Reconciler {
    pub cloudlet: CloudletKey,
    pub mirror: Arc<Mirror>,
    pub platform: Arc<dyn Platform>,
    pub lbs: Lbs,
    pub reporter: Arc<Reporter>,
    pub resync: Arc<Notify>,
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
    /// Outcome of requests already carried out, by AppInst key: the request's `updated_at` and the error
    /// it ended with. Until the controller has taken the report in, the mirror still shows the request
    /// in progress; this keeps a finished update from being redeployed and a failed create from being
    /// retried (a new request from the controller has a new `updated_at`).
    done: Mutex<HashMap<String, (i64, Option<String>)>>,
    /// `updated_at` of every ClusterInst (`true`) and AppInst as the current pass sees them: reports name
    /// the request they answer, not a newer one that arrived meanwhile.
    stamps: Mutex<HashMap<(bool, String), i64>>,
    /// passes completed (`crm_reconcile_passes_total`)
    passes: prometheus::IntCounter,
}

/// Collects the step messages of one operation and reports them as they come.
struct Steps<'a> {
    r: &'a Reconciler,
    kind: Kind,
    key: String,
    state: TrackedState,
    status: Mutex<Vec<String>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Cluster,
    App,
}

impl Progress for Steps<'_> {
    fn step(&self, message: &str) {
        tracing::info!(key = %self.key, "{message}");
        let status = {
            let mut s = self.status.lock().expect("steps lock");
            s.push(message.to_string());
            s.clone()
        };
        self.r
            .report(self.kind, &self.key, self.state, status, Vec::new(), None);
    }
}

impl Steps<'_> {
    fn status(&self) -> Vec<String> {
        self.status.lock().expect("steps lock").clone()
    }
}

impl Reconciler {
    pub fn new(
        cloudlet: CloudletKey,
        mirror: Arc<Mirror>,
        platform: Arc<dyn Platform>,
        lbs: Lbs,
        reporter: Arc<Reporter>,
        resync: Arc<Notify>,
        passes: prometheus::IntCounter,
    ) -> Self {
        Self {
            cloudlet,
            mirror,
            platform,
            lbs,
            reporter,
            resync,
            backoff: Mutex::default(),
            done: Mutex::default(),
            stamps: Mutex::default(),
            passes,
        }
    }

    pub async fn run(self: Arc<Self>) {
        let mut changed = self.mirror.subscribe();
        loop {
            self.pass().await;
            self.passes.inc();
            tokio::select! {
                _ = changed.changed() => {}
                _ = self.resync.notified() => {}
                _ = tokio::time::sleep(PERIOD) => {}
            }
        }
    }

    fn report(
        &self,
        kind: Kind,
        key: &str,
        state: TrackedState,
        status: Vec<String>,
        errors: Vec<String>,
        runtime: Option<AppInstRuntime>,
    ) {
        self.report_power(
            kind,
            key,
            state,
            status,
            errors,
            runtime,
            PowerState::Unknown,
        );
    }

    /// [`report`](Self::report) with a VM's power state.
    #[allow(clippy::too_many_arguments)]
    fn report_power(
        &self,
        kind: Kind,
        key: &str,
        state: TrackedState,
        status: Vec<String>,
        errors: Vec<String>,
        runtime: Option<AppInstRuntime>,
        power: PowerState,
    ) {
        let (org, name) = key.split_once('/').unwrap_or((key, ""));
        let updated_at = self
            .stamps
            .lock()
            .expect("stamps lock")
            .get(&(matches!(kind, Kind::Cluster), key.to_string()))
            .copied()
            .unwrap_or(0);
        let msg = match kind {
            Kind::Cluster => notify_up::Msg::ClusterInstInfo(ClusterInstInfo {
                key: Some(edge_proto::edge::ClusterInstKey {
                    organization: org.into(),
                    name: name.into(),
                }),
                state: state as i32,
                errors,
                status,
                updated_at,
                allocated_ip: self
                    .lbs
                    .dedicated
                    .address(key)
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            }),
            Kind::App => notify_up::Msg::AppInstInfo(AppInstInfo {
                key: Some(edge_proto::edge::AppInstKey {
                    organization: org.into(),
                    name: name.into(),
                }),
                state: state as i32,
                errors,
                status,
                // health is Shepherd's to measure and report
                health_check: 0,
                runtime_info: runtime,
                power_state: power as i32,
                updated_at,
            }),
        };
        let prefix = match kind {
            Kind::Cluster => "ClusterInst",
            Kind::App => "AppInst",
        };
        self.reporter.send(&format!("{prefix}/{key}"), msg);
    }

    fn steps(&self, kind: Kind, key: &str, state: TrackedState) -> Steps<'_> {
        Steps {
            r: self,
            kind,
            key: key.to_string(),
            state,
            status: Mutex::default(),
        }
    }

    /// Whether `key` may be tried now (its backoff has passed).
    fn due(&self, key: &str) -> bool {
        self.backoff
            .lock()
            .expect("backoff lock")
            .get(key)
            .is_none_or(|(_, at)| Instant::now() >= *at)
    }

    /// Schedules the next try of `key`: 1 s, 2 s, 4 s ... up to 60 s, plus up to 50% jitter.
    fn failed(&self, key: &str) -> Duration {
        let mut b = self.backoff.lock().expect("backoff lock");
        let attempts = b.get(key).map(|(n, _)| n + 1).unwrap_or(0);
        let base = Duration::from_secs(1 << attempts.min(6)).min(Duration::from_secs(60));
        let wait = base + edge_common::notify_client::jitter(base / 2);
        b.insert(key.to_string(), (attempts, Instant::now() + wait));
        wait
    }

    fn succeeded(&self, key: &str) {
        self.backoff.lock().expect("backoff lock").remove(key);
    }

    async fn pass(&self) {
        let d = self.mirror.snapshot();
        *self.stamps.lock().expect("stamps lock") = d
            .clusters
            .iter()
            .map(|(k, c)| ((true, k.clone()), c.updated_at))
            .chain(
                d.app_insts
                    .iter()
                    .map(|(k, i)| ((false, k.clone()), i.updated_at)),
            )
            .collect();
        let capacity = match self.platform.check().await {
            Ok(c) => c,
            Err(e) => {
                self.report_cloudlet(
                    &d,
                    CloudletState::Errors,
                    Capacity::default(),
                    vec![e.message],
                );
                return;
            }
        };
        if !d.complete {
            // Nothing known yet (first start, before the first sync): touch nothing.
            self.report_cloudlet(&d, CloudletState::Init, capacity, Vec::new());
            return;
        }
        self.report_cloudlet(&d, CloudletState::Ready, capacity, Vec::new());
        let observed = async {
            let (mut clusters, mut apps, mut vms) = (BTreeSet::new(), Vec::new(), Vec::new());
            if let Some(ops) = self.platform.clusters() {
                clusters = ops.list_clusters().await?.into_iter().collect();
                apps = ops.list_app_insts().await?;
            }
            if let Some(ops) = self.platform.vms() {
                vms = ops.list_vms().await?;
            }
            Ok::<_, PlatformError>((clusters, apps, vms))
        };
        let (clusters, apps, vms) = match observed.await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "observing the platform failed; retrying");
                return;
            }
        };
        let vm_keys: BTreeSet<String> = vms.iter().map(|v| v.key.clone()).collect();
        let apps: HashMap<String, ObservedAppInst> = apps
            .into_iter()
            .chain(vms)
            .map(|a| (a.key.clone(), a))
            .collect();

        if let Some(ops) = self.platform.clusters() {
            for c in d.clusters.values().filter(|c| !is_delete(c.state())) {
                self.cluster_up(ops, &d, c, &clusters).await;
            }
        }
        for (key, inst) in &d.app_insts {
            self.app_inst(&d, inst, apps.get(key)).await;
        }
        // What runs but is not desired: apps first (they sit on cluster networks), then clusters.
        for key in apps.keys().filter(|k| !d.app_insts.contains_key(*k)) {
            tracing::info!(key, "removing an app instance nobody wants");
            self.remove_routes(key).await;
            let removed = match (
                vm_keys.contains(key),
                self.platform.vms(),
                self.platform.clusters(),
            ) {
                (true, Some(vms), _) => vms.delete_vm(key).await,
                (false, _, Some(ops)) => ops.delete_app(key).await,
                _ => Ok(()),
            };
            if let Err(e) = removed {
                tracing::warn!(key, error = %e, "removing orphan app instance failed");
            }
        }
        if let Some(ops) = self.platform.clusters() {
            for (key, c) in &d.clusters {
                if is_delete(c.state()) {
                    self.cluster_down(ops, c, clusters.contains(key)).await;
                }
            }
            for key in clusters.iter().filter(|k| !d.clusters.contains_key(*k)) {
                tracing::info!(key, "removing a cluster nobody wants");
                if let Err(e) = ops.delete_cluster(key).await {
                    tracing::warn!(key, error = %e, "removing orphan cluster failed");
                }
            }
        }
        for key in self.lbs.dedicated.clusters() {
            if !d.clusters.contains_key(&key) {
                self.lbs.dedicated.release(&key);
            }
        }
        for lb in self.lbs.all() {
            match lb.routes().await {
                Ok(routes) => {
                    for r in routes {
                        if d.app_insts
                            .get(&r.owner)
                            .is_none_or(|i| is_delete(i.state()))
                        {
                            remove_route(&lb, r.key).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list a load balancer's routes"),
            }
        }
        // Reports the controller did not store (a failed write, a lost message) go out again.
        for (key, c) in &d.clusters {
            self.reporter
                .check_stored(&format!("ClusterInst/{key}"), c.state);
        }
        for (key, i) in &d.app_insts {
            self.reporter
                .check_stored(&format!("AppInst/{key}"), i.state);
        }
    }

    fn report_cloudlet(
        &self,
        d: &Desired,
        state: CloudletState,
        cap: Capacity,
        errors: Vec<String>,
    ) {
        let (used, quota) = usage(d, None, "");
        let total = |name: &str, cap: u64| quota.get(name).copied().unwrap_or(cap);
        let info = CloudletInfo {
            key: Some(self.cloudlet.clone()),
            state: state as i32,
            errors,
            flavors: d
                .flavors
                .values()
                .map(|f| FlavorInfo {
                    name: f.key.clone().unwrap_or_default().name,
                    vcpus: f.vcpus,
                    ram: f.ram,
                    disk: f.disk,
                })
                .collect(),
            features: Some(PlatformFeatures {
                // a cluster's own address comes from the CRM's --dedicated-ips
                supports_dedicated_ips: self.platform.features().supports_dedicated_ips
                    && self.lbs.dedicated.enabled(),
                ..self.platform.features()
            }),
            resources: vec![
                ResourceUsage {
                    name: "vCPUs".into(),
                    used: used.vcpus,
                    total: total("vCPUs", cap.vcpus),
                },
                ResourceUsage {
                    name: "RAM".into(),
                    used: used.ram,
                    total: total("RAM", cap.ram),
                },
                ResourceUsage {
                    name: "Disk".into(),
                    used: used.disk,
                    total: total("Disk", cap.disk),
                },
            ],
            crm_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        self.reporter
            .send("CloudletInfo", notify_up::Msg::CloudletInfo(info));
    }

    async fn cluster_up(
        &self,
        ops: &dyn ClusterOps,
        d: &Desired,
        c: &ClusterInst,
        exists: &BTreeSet<String>,
    ) {
        let key = c.key_string();
        let state = c.state();
        let creating = matches!(
            state,
            TrackedState::CreateRequested | TrackedState::Creating
        );
        if !creating
            && !matches!(
                state,
                TrackedState::Ready | TrackedState::UpdateRequested | TrackedState::Updating
            )
        {
            return;
        }
        let dedicated = c.ip_access == IpAccess::Dedicated as i32;
        if exists.contains(&key) {
            if dedicated && let Err(e) = self.lbs.dedicated.ensure(&key) {
                tracing::warn!(key, error = %e, "a dedicated cluster has no load balancer address");
                return;
            }
            // Docker clusters have nothing to update in place.
            self.report(
                Kind::Cluster,
                &key,
                TrackedState::Ready,
                Vec::new(),
                Vec::new(),
                None,
            );
            return;
        }
        if !self.due(&key) {
            return;
        }
        if creating && let Err(msg) = check_quota(d, &self.cloudlet, c, exists) {
            self.report(
                Kind::Cluster,
                &key,
                TrackedState::CreateError,
                Vec::new(),
                vec![msg],
                None,
            );
            return;
        }
        if dedicated && let Err(e) = self.lbs.dedicated.ensure(&key) {
            self.report(
                Kind::Cluster,
                &key,
                TrackedState::CreateError,
                Vec::new(),
                vec![e.to_string()],
                None,
            );
            return;
        }
        let steps = self.steps(Kind::Cluster, &key, TrackedState::Creating);
        let flavor = c.flavor.as_ref().and_then(|f| d.flavors.get(&f.name));
        match ops.create_cluster(c, flavor, &steps).await {
            Ok(()) => {
                self.succeeded(&key);
                self.report(
                    Kind::Cluster,
                    &key,
                    TrackedState::Ready,
                    steps.status(),
                    Vec::new(),
                    None,
                );
            }
            Err(e) => self.fail(Kind::Cluster, &key, &steps, e, TrackedState::CreateError),
        }
    }

    async fn cluster_down(&self, ops: &dyn ClusterOps, c: &ClusterInst, exists: bool) {
        let key = c.key_string();
        if exists {
            if !self.due(&key) {
                return;
            }
            let steps = self.steps(Kind::Cluster, &key, TrackedState::Deleting);
            steps.step("Deleting cluster");
            if let Err(e) = ops.delete_cluster(&key).await {
                self.fail(Kind::Cluster, &key, &steps, e, TrackedState::DeleteError);
                return;
            }
            self.succeeded(&key);
        }
        self.lbs.dedicated.release(&key);
        self.report(
            Kind::Cluster,
            &key,
            TrackedState::NotPresent,
            Vec::new(),
            Vec::new(),
            None,
        );
    }

    /// Reports a failed step: transient failures are retried after a backoff (the object stays in its
    /// in-progress state); others end in `error_state` with the platform's message.
    fn fail(
        &self,
        kind: Kind,
        key: &str,
        steps: &Steps<'_>,
        e: PlatformError,
        error_state: TrackedState,
    ) {
        if e.transient {
            let wait = self.failed(key);
            steps.step(&format!("{}; retrying in {} s", e.message, wait.as_secs()));
        } else {
            self.succeeded(key);
            tracing::warn!(key, error = %e.message, "operation failed");
            self.report(
                kind,
                key,
                error_state,
                steps.status(),
                vec![e.message],
                None,
            );
        }
    }

    async fn app_inst(&self, d: &Desired, inst: &AppInst, observed: Option<&ObservedAppInst>) {
        let key = inst.key_string();
        let state = inst.state();
        // A VM AppInst has no cluster: it is a VM of its own.
        let vm = inst.cluster_key.as_ref().is_none_or(|k| k.name.is_empty());
        let unsupported = || {
            PlatformError::permanent(if vm {
                "VM app instances are not supported by this platform"
            } else {
                "clusters are not supported by this platform"
            })
        };
        if is_delete(state) {
            self.remove_routes(&key).await;
            if observed.is_some() {
                let steps = self.steps(Kind::App, &key, TrackedState::Deleting);
                steps.step("Deleting app instance");
                let deleted = match (vm, self.platform.vms(), self.platform.clusters()) {
                    (true, Some(vms), _) => vms.delete_vm(&key).await,
                    (false, _, Some(ops)) => ops.delete_app(&key).await,
                    _ => Err(unsupported()),
                };
                if let Err(e) = deleted {
                    self.fail(Kind::App, &key, &steps, e, TrackedState::DeleteError);
                    return;
                }
            }
            self.report(
                Kind::App,
                &key,
                TrackedState::NotPresent,
                Vec::new(),
                Vec::new(),
                None,
            );
            return;
        }
        let updating = matches!(
            state,
            TrackedState::UpdateRequested | TrackedState::Updating
        );
        let wanted = updating
            || matches!(
                state,
                TrackedState::CreateRequested | TrackedState::Creating | TrackedState::Ready
            );
        if !wanted {
            return;
        }
        let error_state = if updating {
            TrackedState::UpdateError
        } else {
            TrackedState::CreateError
        };
        let app = d
            .apps
            .get(&inst.app_key.clone().unwrap_or_default().key_string());
        let cluster = d
            .clusters
            .get(&inst.cluster_key.clone().unwrap_or_default().key_string());
        let Some(app) = app else { return };
        if !vm && cluster.is_none() {
            return;
        }
        if (vm && self.platform.vms().is_none()) || (!vm && self.platform.clusters().is_none()) {
            let msg = unsupported().message;
            self.report(Kind::App, &key, error_state, Vec::new(), vec![msg], None);
            return;
        }
        let done = self
            .done
            .lock()
            .expect("done lock")
            .get(&key)
            .filter(|(at, _)| *at == inst.updated_at)
            .cloned();
        if let Some((_, Some(error))) = done {
            self.report(Kind::App, &key, error_state, Vec::new(), vec![error], None);
            return;
        }
        if vm
            && let (Some(vms), Some(o)) = (self.platform.vms(), observed)
            && self
                .vm_power(vms, d, app, inst, o, updating && done.is_none())
                .await
        {
            return;
        }
        let redeploy = updating && done.is_none();
        // A VM found running while its create is under way (a CRM restarted mid-boot) may still be
        // booting: the create path adopts it and waits until it answers.
        let booting = vm && state != TrackedState::Ready;
        let running = observed.filter(|o| o.running && !redeploy && !booting);
        if let Some(o) = running {
            self.publish(inst, cluster, o, Vec::new(), error_state)
                .await;
            return;
        }
        if !self.due(&key) {
            return;
        }
        let steps = self.steps(
            Kind::App,
            &key,
            if updating {
                TrackedState::Updating
            } else {
                TrackedState::Creating
            },
        );
        if redeploy {
            steps.step("Redeploying app instance");
            self.remove_routes(&key).await;
            let deleted = match (self.platform.vms(), self.platform.clusters()) {
                (Some(vms), _) if vm => vms.delete_vm(&key).await,
                (_, Some(ops)) => ops.delete_app(&key).await,
                _ => Ok(()),
            };
            if let Err(e) = deleted {
                self.fail(Kind::App, &key, &steps, e, error_state);
                return;
            }
        }
        let flavor = inst.flavor.as_ref().and_then(|f| d.flavors.get(&f.name));
        if vm
            && observed.is_none()
            && let Err(msg) = check_vm_quota(d, &self.cloudlet, inst)
        {
            self.done
                .lock()
                .expect("done lock")
                .insert(key.clone(), (inst.updated_at, Some(msg.clone())));
            self.fail(
                Kind::App,
                &key,
                &steps,
                PlatformError::permanent(msg),
                error_state,
            );
            return;
        }
        let deployed = match (cluster, self.platform.vms(), self.platform.clusters()) {
            (_, Some(vms), _) if vm => vms.create_vm(app, inst, flavor, &steps).await,
            (Some(c), _, Some(ops)) => ops.deploy_app(c, app, inst, flavor, &steps).await,
            _ => Err(unsupported()),
        };
        match deployed {
            Ok(o) => {
                self.succeeded(&key);
                self.done
                    .lock()
                    .expect("done lock")
                    .insert(key.clone(), (inst.updated_at, None));
                self.publish(inst, cluster, &o, steps.status(), error_state)
                    .await;
            }
            Err(e) => {
                if !e.transient {
                    self.done
                        .lock()
                        .expect("done lock")
                        .insert(key.clone(), (inst.updated_at, Some(e.message.clone())));
                }
                self.fail(Kind::App, &key, &steps, e, error_state)
            }
        }
    }

    /// Carries out a VM's power request (`request`: an update not yet done) or keeps a VM that was
    /// powered off off; true when it handled the instance.
    async fn vm_power(
        &self,
        vms: &dyn VmOps,
        d: &Desired,
        app: &App,
        inst: &AppInst,
        o: &ObservedAppInst,
        request: bool,
    ) -> bool {
        let key = inst.key_string();
        let power = inst.power_state();
        let runtime = || {
            Some(AppInstRuntime {
                container_ids: o.container_ids.clone(),
            })
        };
        let requested = matches!(
            power,
            PowerState::PowerOnRequested
                | PowerState::PowerOffRequested
                | PowerState::RebootRequested
        );
        if request && requested {
            let steps = self.steps(Kind::App, &key, TrackedState::Updating);
            let flavor = inst.flavor.as_ref().and_then(|f| d.flavors.get(&f.name));
            let (done, now) = match power {
                PowerState::PowerOffRequested => {
                    steps.step("Powering off");
                    (vms.power_off(&key).await, PowerState::PowerOff)
                }
                PowerState::RebootRequested => {
                    steps.step("Rebooting");
                    (vms.reboot(&key, &steps).await, PowerState::PowerOn)
                }
                _ => {
                    steps.step("Powering on");
                    let r = vms.create_vm(app, inst, flavor, &steps).await.map(|_| ());
                    (r, PowerState::PowerOn)
                }
            };
            match done {
                Ok(()) => {
                    self.done
                        .lock()
                        .expect("done lock")
                        .insert(key.clone(), (inst.updated_at, None));
                    self.report_power(
                        Kind::App,
                        &key,
                        TrackedState::Ready,
                        steps.status(),
                        Vec::new(),
                        runtime(),
                        now,
                    );
                }
                Err(e) => self.fail(Kind::App, &key, &steps, e, TrackedState::UpdateError),
            }
            return true;
        }
        if matches!(power, PowerState::PowerOff | PowerState::PowerOffRequested) {
            // Powered off on purpose: it stays off (also after a CRM restart).
            if o.running
                && let Err(e) = vms.power_off(&key).await
            {
                tracing::warn!(key, error = %e, "keeping a VM powered off failed");
            }
            self.report_power(
                Kind::App,
                &key,
                TrackedState::Ready,
                Vec::new(),
                Vec::new(),
                runtime(),
                PowerState::PowerOff,
            );
            return true;
        }
        false
    }

    /// Adds the LB routes of a running app instance (on the cluster's dedicated LB, or the shared one)
    /// and reports it READY.
    async fn publish(
        &self,
        inst: &AppInst,
        cluster: Option<&ClusterInst>,
        o: &ObservedAppInst,
        status: Vec<String>,
        error_state: TrackedState,
    ) {
        let key = inst.key_string();
        let lb = match cluster {
            Some(c) if c.ip_access == IpAccess::Dedicated as i32 => {
                self.lbs.dedicated.get(&c.key_string())
            }
            _ => Some(self.lbs.shared.clone()),
        };
        if let (Some(lb), Some(ip)) = (lb, o.backend) {
            for p in &inst.mapped_ports {
                let proto = Proto::of(p);
                let count = if p.end_port == 0 {
                    1
                } else {
                    p.end_port - p.internal_port + 1
                };
                for i in 0..count {
                    let (Ok(public), Ok(internal)) = (
                        u16::try_from(p.public_port + i),
                        u16::try_from(p.internal_port + i),
                    ) else {
                        continue;
                    };
                    let route = RouteKey {
                        proto,
                        port: public,
                    };
                    let port = o.ports.get(&(proto, internal)).copied().unwrap_or(internal);
                    let route = RouteSpec {
                        key: route,
                        backend: SocketAddr::new(ip, port),
                        owner: key.clone(),
                    };
                    if let Err(e) = lb.ensure(route).await {
                        self.report(
                            Kind::App,
                            &key,
                            error_state,
                            status,
                            vec![e.to_string()],
                            None,
                        );
                        return;
                    }
                }
            }
        }
        let runtime = AppInstRuntime {
            container_ids: o.container_ids.clone(),
        };
        self.report(
            Kind::App,
            &key,
            TrackedState::Ready,
            status,
            Vec::new(),
            Some(runtime),
        );
    }

    /// Removes the routes of `owner` from every LB; a route an LB cannot remove now goes at a later pass.
    async fn remove_routes(&self, owner: &str) {
        for lb in self.lbs.all() {
            match lb.routes().await {
                Ok(routes) => {
                    for r in routes.into_iter().filter(|r| r.owner == owner) {
                        remove_route(&lb, r.key).await;
                    }
                }
                Err(e) => tracing::warn!(owner, error = %e, "cannot list a load balancer's routes"),
            }
        }
    }
}

async fn remove_route(lb: &LbClient, key: RouteKey) {
    if let Err(e) = lb.remove(key).await {
        tracing::warn!(route = %key, error = %e, "removing a load balancer route failed");
    }
}

fn is_delete(s: TrackedState) -> bool {
    matches!(s, TrackedState::DeleteRequested | TrackedState::Deleting)
}

/// Resources in use by the clusters that exist (or, with `exists` None, by every cluster not failed or
/// being deleted) and by the VM AppInsts other than `except` that run or are being made, and the
/// cloudlet's quotas by name.
fn usage(
    d: &Desired,
    exists: Option<&BTreeSet<String>>,
    except: &str,
) -> (Capacity, HashMap<String, u64>) {
    let mut used = Capacity::default();
    for (key, i) in &d.app_insts {
        let vm = i.cluster_key.as_ref().is_none_or(|k| k.name.is_empty());
        let live = matches!(
            i.state(),
            TrackedState::Ready
                | TrackedState::Creating
                | TrackedState::UpdateRequested
                | TrackedState::Updating
        );
        if vm && live && key != except {
            let u = flavor_of(d, i.flavor.as_ref());
            used.vcpus += u.vcpus;
            used.ram += u.ram;
            used.disk += u.disk;
        }
    }
    for (key, c) in &d.clusters {
        let counted = match exists {
            Some(e) => e.contains(key),
            None => matches!(
                c.state(),
                TrackedState::Ready
                    | TrackedState::Creating
                    | TrackedState::UpdateRequested
                    | TrackedState::Updating
            ),
        };
        if counted {
            let u = cluster_needs(d, c);
            used.vcpus += u.vcpus;
            used.ram += u.ram;
            used.disk += u.disk;
        }
    }
    let quota = d
        .cloudlet
        .as_ref()
        .map(|c| {
            c.resource_quotas
                .iter()
                .map(|q| (q.name.clone(), q.value))
                .collect()
        })
        .unwrap_or_default();
    (used, quota)
}

/// The size of a flavor.
fn flavor_of(d: &Desired, f: Option<&edge_proto::edge::FlavorKey>) -> Capacity {
    let f = f
        .and_then(|f| d.flavors.get(&f.name))
        .cloned()
        .unwrap_or_default();
    Capacity {
        vcpus: f.vcpus,
        ram: f.ram,
        disk: f.disk,
    }
}

/// What a cluster takes: its flavor per node (docker clusters have one node).
fn cluster_needs(d: &Desired, c: &ClusterInst) -> Capacity {
    let nodes = u64::from((c.num_masters + c.num_nodes).max(1));
    let f = flavor_of(d, c.flavor.as_ref());
    Capacity {
        vcpus: f.vcpus * nodes,
        ram: f.ram * nodes,
        disk: f.disk * nodes,
    }
}

/// Refuses a cluster that would take the cloudlet beyond one of its quotas.
fn check_quota(
    d: &Desired,
    cloudlet: &CloudletKey,
    c: &ClusterInst,
    exists: &BTreeSet<String>,
) -> Result<(), String> {
    let (used, quota) = usage(d, Some(exists), "");
    fits(cloudlet, &c.describe(), used, cluster_needs(d, c), &quota)
}

/// Refuses a VM AppInst that would take the cloudlet beyond one of its quotas.
fn check_vm_quota(d: &Desired, cloudlet: &CloudletKey, i: &AppInst) -> Result<(), String> {
    let (used, quota) = usage(d, None, &i.key_string());
    fits(
        cloudlet,
        &i.describe(),
        used,
        flavor_of(d, i.flavor.as_ref()),
        &quota,
    )
}

fn fits(
    cloudlet: &CloudletKey,
    what: &str,
    used: Capacity,
    need: Capacity,
    quota: &HashMap<String, u64>,
) -> Result<(), String> {
    for (name, used, need, unit) in [
        ("vCPUs", used.vcpus, need.vcpus, ""),
        ("RAM", used.ram, need.ram, " MB"),
        ("Disk", used.disk, need.disk, " GB"),
    ] {
        if let Some(limit) = quota.get(name)
            && used + need > *limit
        {
            return Err(format!(
                "not enough {name} on Cloudlet \"{}\": {what} needs {need}{unit}, {used}{unit} of the quota of {limit}{unit} are in use",
                cloudlet.key_string(),
            ));
        }
    }
    Ok(())
}
