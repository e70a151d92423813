//! AppInstApi: an App deployed on a cluster (or as a VM) on a cloudlet, with public ports on the
//! cloudlet's shared root load balancer.

use std::collections::BTreeSet;

use edge_common::Keyed;
use edge_proto::edge::app_inst_api_server::AppInstApi;
use edge_proto::edge::{
    App, AppInst, AppInstKey, AppInstUpdate, AppPort, Cloudlet, CloudletInfo, ClusterInst,
    IpAccess, LProto, TrackedState,
};
use tonic::{Request, Response, Status};

use super::cloudlet::key_matches;
use super::{Api, ObjectStream, ProgressStream, matches, now};
use crate::error::{CtrlError, Result, invalid};
use crate::objects::{Object, Tracked};
use crate::store::{Store, Write};
use crate::validate;

pub struct AppInstService(pub Api);

pub fn validate_key(k: &AppInstKey) -> Result<()> {
    validate::name("key.organization", &k.organization)?;
    validate::name("key.name", &k.name)
}

fn precondition(msg: String) -> CtrlError {
    CtrlError::FailedPrecondition(msg)
}

fn proto_name(p: i32) -> &'static str {
    if p == LProto::Udp as i32 {
        "udp"
    } else {
        "tcp"
    }
}

/// Keys of the public ports an AppInst holds on a cloudlet: `Port/<cloudlet>/<proto>/<port>`.
fn port_keys(store: &Store, cloudlet: &str, p: &AppPort) -> Vec<String> {
    let prefix = store.ports_prefix(cloudlet);
    (p.public_port..p.public_port + validate::port_count(p))
        .map(|port| format!("{prefix}{}/{port}", proto_name(p.proto)))
        .collect()
}

impl AppInstService {
    /// Checks `inst` against the objects it refers to, fills the derived fields (cloudlet, flavor, ports,
    /// URI) and adds guards, reference keys and port holds to `w`.
    /// `attempt` counts the races this create lost already (its public ports spread out with it). The
    /// first attempt reads the App, cluster, cloudlet and held ports from the cache, guarded by the
    /// revisions it holds; later ones read etcd.
    async fn prepare(&self, inst: &mut AppInst, w: &mut Write, attempt: usize) -> Result<()> {
        let api = &self.0;
        let cached = attempt == 0;
        let key = inst.key.clone().unwrap_or_default();
        let app_key = inst
            .app_key
            .clone()
            .ok_or_else(|| invalid("app_key is required"))?;
        validate::name("app_key.organization", &app_key.organization)?;
        validate::name("app_key.name", &app_key.name)?;
        validate::name("app_key.version", &app_key.version)?;
        if app_key.organization != key.organization {
            return Err(invalid(format!(
                "app_key.organization \"{}\" must match key.organization \"{}\": an AppInst belongs to its App's organization",
                app_key.organization, key.organization
            )));
        }
        // Every object read here is guarded at the revision read, so the create commits only if none of
        // them changed meanwhile (an App's ports, a cluster leaving READY).
        let got = api.read::<App>(&app_key.key_string(), cached).await?;
        w.unchanged(&api.store.path_of(&got.obj), got.rev);
        let app = got.obj;

        let cluster = match inst
            .cluster_key
            .clone()
            .filter(|k| !k.name.is_empty() || !k.organization.is_empty())
        {
            None if app.deployment == "vm" => None,
            None => {
                return Err(invalid(format!(
                    "cluster_key is required for a {} App",
                    app.deployment
                )));
            }
            Some(_) if app.deployment == "vm" => {
                return Err(invalid(
                    "cluster_key must be empty for a vm App: it runs as its own VM",
                ));
            }
            Some(ck) => {
                validate::name("cluster_key.organization", &ck.organization)?;
                validate::name("cluster_key.name", &ck.name)?;
                if ck.organization != key.organization {
                    return Err(invalid(format!(
                        "cluster_key.organization \"{}\" must match key.organization \"{}\"",
                        ck.organization, key.organization
                    )));
                }
                let got = api.read::<ClusterInst>(&ck.key_string(), cached).await?;
                w.unchanged(&api.store.path_of(&got.obj), got.rev);
                let c = got.obj;
                if c.state() != TrackedState::Ready {
                    return Err(precondition(format!(
                        "ClusterInst \"{}\" is {}: wait until it is READY",
                        ck.key_string(),
                        c.state().as_str_name()
                    )));
                }
                let needed = if app.deployment == "docker" {
                    "docker"
                } else {
                    "kubernetes"
                };
                if c.deployment != needed {
                    return Err(invalid(format!(
                        "App deployment \"{}\" needs a {needed} cluster, ClusterInst \"{}\" is {}",
                        app.deployment,
                        ck.key_string(),
                        c.deployment
                    )));
                }
                Some(c)
            }
        };

        let cloudlet_key = match (&inst.cloudlet_key, &cluster) {
            (Some(k), Some(c)) if !k.name.is_empty() && Some(k) != c.cloudlet_key.as_ref() => {
                return Err(invalid(format!(
                    "cloudlet_key \"{}\" differs from the cloudlet of its cluster, \"{}\"",
                    k.key_string(),
                    c.cloudlet_key.clone().unwrap_or_default().key_string()
                )));
            }
            (_, Some(c)) => c.cloudlet_key.clone().unwrap_or_default(),
            (Some(k), None) => k.clone(),
            (None, None) => return Err(invalid("cloudlet_key is required for a vm App")),
        };
        validate::name("cloudlet_key.organization", &cloudlet_key.organization)?;
        validate::name("cloudlet_key.name", &cloudlet_key.name)?;
        let ck = cloudlet_key.key_string();
        let got = api.read::<Cloudlet>(&ck, cached).await?;
        w.unchanged(&api.store.path_of(&got.obj), got.rev);
        let cloudlet = got.obj;
        if cloudlet.state() != TrackedState::Ready {
            return Err(precondition(format!(
                "Cloudlet \"{ck}\" is {}: start its CRM and wait until it is READY",
                cloudlet.state().as_str_name()
            )));
        }
        if cluster.is_none()
            && !api
                .cache
                .get::<CloudletInfo>(&ck)
                .and_then(|i| i.features)
                .is_some_and(|f| f.supports_vms)
        {
            return Err(precondition(format!(
                "Cloudlet \"{ck}\" does not support VM apps"
            )));
        }
        inst.cloudlet_key = Some(cloudlet_key);

        if inst.flavor.as_ref().is_none_or(|f| f.name.is_empty()) {
            inst.flavor = app
                .default_flavor
                .clone()
                .or_else(|| cluster.as_ref().and_then(|c| c.flavor.clone()));
        }
        if inst.flavor.as_ref().is_none_or(|f| f.name.is_empty()) {
            return Err(invalid("flavor is required: the App has no default_flavor"));
        }

        let mut ports = if app.access_ports.is_empty() {
            Vec::new()
        } else {
            validate::access_ports("access_ports", &app.access_ports)?
        };
        let shared = cluster
            .as_ref()
            .is_none_or(|c| c.ip_access == IpAccess::Shared as i32);
        if shared {
            self.allocate_ports(w, &ck, &key.key_string(), &mut ports, attempt)
                .await?;
            inst.uri = cloudlet.root_lb_fqdn.clone();
        } else {
            for p in &mut ports {
                p.public_port = p.internal_port;
            }
            let cname = cluster
                .as_ref()
                .and_then(|c| c.key.clone())
                .unwrap_or_default()
                .name;
            // The address of the cluster's own LB, or a name under the cloudlet's for DNS.
            inst.uri = match cluster.as_ref().map(|c| c.allocated_ip.as_str()) {
                Some(ip) if !ip.is_empty() => ip.to_string(),
                _ => format!(
                    "{}.{}",
                    cname.to_ascii_lowercase().replace('_', "-"),
                    cloudlet.root_lb_fqdn
                ),
            };
        }
        inst.mapped_ports = ports;

        let refs = inst.references();
        api.guard_refs(w, &refs, cached).await?;
        w.absent(&api.store.path_of(inst));
        api.store.put_refs(w, inst, &refs);
        Ok(())
    }

    /// Picks the lowest free public ports of the configured range on the cloudlet (TCP and UDP counted
    /// separately; a range gets a contiguous block) and holds them in the same write. After `attempt`
    /// lost races (two or more) it picks at random among the lowest `attempt²` free ones instead:
    /// callers created at once would otherwise all want the same port again.
    ///
    /// The first attempt takes the held ports from the cache (no etcd read that grows with the
    /// cloudlet); the write's `absent` guards make a hold the cache had not seen yet fail the commit, and
    /// a retry reads etcd.
    async fn allocate_ports(
        &self,
        w: &mut Write,
        cloudlet: &str,
        inst: &str,
        ports: &mut [AppPort],
        attempt: usize,
    ) -> Result<()> {
        let store = &self.0.store;
        let prefix = store.ports_prefix(cloudlet);
        let keys = if attempt == 0 {
            self.0.cache.ports_under(&prefix)
        } else {
            store.keys(&prefix).await?
        };
        let mut held: BTreeSet<(&'static str, i32)> = keys
            .iter()
            .filter_map(|k| {
                let (proto, port) = k.strip_prefix(&prefix)?.split_once('/')?;
                let proto = ["tcp", "udp"].into_iter().find(|p| *p == proto)?;
                Some((proto, port.parse().ok()?))
            })
            .collect();
        let (lo, hi) = self.0.config.port_range;
        for p in ports.iter_mut() {
            let proto = proto_name(p.proto);
            let n = validate::port_count(p);
            let free = (i32::from(lo)..=i32::from(hi) - n + 1)
                .filter(|s| (*s..*s + n).all(|port| !held.contains(&(proto, port))));
            let skip = random_below(attempt * attempt);
            // The `skip`-th free start, or the last free one when there are fewer.
            let start = free
                .take(skip + 1)
                .last()
                .ok_or_else(|| {
                    precondition(format!(
                        "no {n} free public {proto} port(s) left on Cloudlet \"{cloudlet}\" (range {lo}-{hi})"
                    ))
                })?;
            // end_port stays the end of the internal range; the public range has the same length.
            p.public_port = start;
            for port in start..start + n {
                held.insert((proto, port));
            }
            for k in port_keys(store, cloudlet, p) {
                w.absent(&k);
                w.put(&k, inst);
            }
        }
        Ok(())
    }
}

/// A random number below `n` (≥ 1), from the standard library's per-process random hash keys.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(n);
    (h.finish() % n.max(1) as u64) as usize
}

/// The public-port keys an AppInst holds, for release when it is deleted: those of its mapped ports
/// that name it (an instance on a dedicated cluster holds none; its ports are its cluster's own).
pub async fn held_ports(store: &Store, inst: &AppInst) -> Result<Vec<String>> {
    use etcd_client::{Txn, TxnOp, TxnOpResponse};
    let cloudlet = inst.cloudlet_key.clone().unwrap_or_default().key_string();
    let me = inst.key_string();
    let keys: Vec<String> = inst
        .mapped_ports
        .iter()
        .flat_map(|p| port_keys(store, &cloudlet, p))
        .collect();
    let mut held = Vec::new();
    // etcd allows 128 operations per transaction by default.
    for chunk in keys.chunks(128) {
        let reads = chunk.iter().map(|k| TxnOp::get(k.as_str(), None));
        let resp = store
            .client
            .kv_client()
            .txn(Txn::new().and_then(reads.collect::<Vec<_>>()))
            .await?;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                held.extend(
                    get.kvs()
                        .iter()
                        .filter(|kv| kv.value() == me.as_bytes())
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned()),
                );
            }
        }
    }
    Ok(held)
}

#[tonic::async_trait]
impl AppInstApi for AppInstService {
    type CreateAppInstStream = ProgressStream;
    async fn create_app_inst(
        &self,
        req: Request<AppInst>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        let key = req.key.clone().unwrap_or_default();
        validate_key(&key)?;
        let api = &self.0;
        api.check_org_quota::<AppInst>(&key.organization)?;
        let what = format!("AppInst \"{}\"", key.key_string());
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let create = api.write(&what, || async {
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut inst = req.clone();
            inst.crm_override = 0;
            let mut w = Write::default();
            match self.prepare(&mut inst, &mut w, attempt).await {
                // Refused on the cache's view, which may lag a write made through another replica:
                // the next attempt judges on etcd's.
                Err(_) if attempt == 0 => return Ok(None),
                done => done?,
            }
            inst.request(TrackedState::CreateRequested);
            inst.created_at = now();
            inst.updated_at = inst.created_at;
            api.store.put_obj(&mut w, &inst);
            let done = api.store.commit(w).await?;
            if done.is_none()
                && api
                    .store
                    .get::<AppInst>(&inst.key_string())
                    .await?
                    .is_some()
            {
                return Err(CtrlError::AlreadyExists(inst.describe()));
            }
            Ok(done)
        });
        Ok(Response::new(
            api.create_tracked::<AppInst>(key.key_string(), create)
                .await?,
        ))
    }

    type UpdateAppInstStream = ProgressStream;
    async fn update_app_inst(
        &self,
        req: Request<AppInstUpdate>,
    ) -> Result<Response<ProgressStream>, Status> {
        let AppInstUpdate { app_inst, fields } = req.into_inner();
        let new = app_inst.ok_or_else(|| invalid("app_inst is required"))?;
        // No fields: redeploy as it is (e.g. to pick up a new image of the App).
        let fields = if fields.is_empty() {
            Vec::new()
        } else {
            validate::check_fields(&fields, &["flavor", "power_state"])?
        };
        let key = new.key.clone().unwrap_or_default();
        validate_key(&key)?;
        let power = fields.iter().any(|f| f == "power_state");
        if power {
            use edge_proto::edge::PowerState;
            if !matches!(
                new.power_state(),
                PowerState::PowerOnRequested
                    | PowerState::PowerOffRequested
                    | PowerState::RebootRequested
            ) {
                return Err(invalid(
                    "power_state: one of POWER_ON_REQUESTED, POWER_OFF_REQUESTED, REBOOT_REQUESTED",
                )
                .into());
            }
            let cur = self
                .0
                .store
                .must_get::<AppInst>(&key.key_string())
                .await?
                .obj;
            let app = cur.app_key.clone().unwrap_or_default().key_string();
            let vm = self
                .0
                .cache
                .get::<edge_proto::edge::App>(&app)
                .is_some_and(|a| a.deployment == "vm");
            if !vm {
                return Err(invalid("power_state applies to VM app instances only").into());
            }
        }
        if fields.iter().any(|f| f == "flavor") {
            let name = new.flavor.clone().unwrap_or_default().name;
            validate::name("flavor.name", &name)?;
            self.0
                .store
                .must_get::<edge_proto::edge::Flavor>(&name)
                .await?;
        }
        let stream = self
            .0
            .update_tracked::<AppInst>(key.key_string(), |i| {
                if fields.iter().any(|f| f == "flavor") {
                    i.flavor = new.flavor.clone();
                }
                if power {
                    i.power_state = new.power_state;
                }
                i.updated_at = now();
            })
            .await?;
        Ok(Response::new(stream))
    }

    type DeleteAppInstStream = ProgressStream;
    async fn delete_app_inst(
        &self,
        req: Request<AppInst>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        let key = req.key.clone().unwrap_or_default();
        validate_key(&key)?;
        if req.crm_override() == edge_proto::edge::CrmOverride::IgnoreCrm {
            self.0.force_delete::<AppInst>(&key.key_string()).await?;
            return Ok(Response::new(crate::api::progress_done(
                "deleted without its CRM (crm_override IGNORE_CRM): what ran on the cloudlet is left as it is",
            )));
        }
        Ok(Response::new(
            self.0.delete_tracked::<AppInst>(key.key_string()).await?,
        ))
    }

    type ShowAppInstStream = ObjectStream<AppInst>;
    async fn show_app_inst(
        &self,
        req: Request<AppInst>,
    ) -> Result<Response<Self::ShowAppInstStream>, Status> {
        let f = req.into_inner();
        let fk = f.key.unwrap_or_default();
        let fa = f.app_key.unwrap_or_default();
        let fc = f.cloudlet_key.unwrap_or_default();
        let fcl = f.cluster_key.unwrap_or_default();
        Ok(Response::new(self.0.show(|i: &AppInst| {
            let k = i.key.clone().unwrap_or_default();
            let a = i.app_key.clone().unwrap_or_default();
            let cl = i.cluster_key.clone().unwrap_or_default();
            matches(&fk.organization, &k.organization)
                && matches(&fk.name, &k.name)
                && matches(&fa.name, &a.name)
                && matches(&fa.version, &a.version)
                && key_matches(&fc, i.cloudlet_key.as_ref())
                && matches(&fcl.name, &cl.name)
        })))
    }
}
