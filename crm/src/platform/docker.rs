//! The `docker` platform: real containers through the Docker Engine API.
//!
//! A docker ClusterInst is a bridge network (one per cluster) isolated from the others and from the host
//! by nftables rules ([`super::isolation`]); an AppInst is a container on that network, with the App's image, command, env and the flavor's CPU and memory limits. Images must
//! already be on the engine (no registry is contacted). Kubernetes clusters are not supported by this
//! driver (its features say so, and the controller refuses them).
//!
//! Names are scoped by cloudlet (`edge-<cloudlet hash>-<key>-<key hash>`), so cloudlets can share an
//! engine; a network or container of that name is used only if its labels say it is this cloudlet's
//! object, otherwise the operation fails naming it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder,
};
use edge_common::Keyed;
use edge_proto::edge::{App, AppInst, ClusterInst, Flavor, LProto, PlatformFeatures};
use tokio_stream::StreamExt;

use super::{
    AppStats, Capacity, ClusterOps, LABEL_APPINST, LABEL_CLOUDLET, LABEL_CLUSTER, LABEL_MANAGED,
    LogOptions, ObservedAppInst, Platform, PlatformError, Progress, Result, fnv1a, resource_name,
};
use crate::platform::isolation::{Isolation, bridge_name};

/// Docker's network option naming the bridge interface.
const BRIDGE_OPTION: &str = "com.docker.network.bridge.name";

pub struct DockerPlatform {
    docker: Docker,
    /// the engine's address
    host: String,
    /// cloudlet key string, on every label set so two cloudlets can share an engine
    cloudlet: String,
    /// the CRM's rules keeping clusters apart (Shepherd, which only reads, has none)
    isolation: Option<Isolation>,
    /// when the rules were last applied (checks apply them again now and then: an operator's firewall
    /// reload may have flushed them)
    isolated_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often [`Platform::check`] applies the isolation rules again.
const ISOLATE_EVERY: Duration = Duration::from_secs(30);

pub(crate) fn engine_error(what: &str, e: DockerError) -> PlatformError {
    match &e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } if *status_code < 500 => PlatformError::permanent(format!("{what}: {message}")),
        _ => PlatformError::transient(format!("{what}: {e}")),
    }
}

/// The error of creating our own container `name`: a name conflict means a create of the same instance got
/// there first (a CRM killed mid-create, whose request the engine still carried out); the next pass
/// adopts or replaces that container, so it is worth a retry.
pub(crate) fn create_error(name: &str, e: DockerError) -> PlatformError {
    match &e {
        DockerError::DockerResponseServerError {
            status_code: 409, ..
        } => PlatformError::transient(format!("creating container {name}: {e}")),
        _ => engine_error("creating container", e),
    }
}

/// What container `name` on `engine` wrote to stdout and stderr, as `opts` selects.
pub(crate) async fn read_logs(engine: &Docker, name: &str, opts: LogOptions) -> Result<String> {
    let mut b = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(opts.timestamps)
        .tail(&opts.tail.to_string());
    if let Some(since) = opts.since {
        b = b.since(since.clamp(0, i64::from(i32::MAX)) as i32);
    }
    let mut logs = engine.logs(name, Some(b.build()));
    let mut out = String::new();
    while let Some(chunk) = logs.next().await {
        let chunk = chunk.map_err(|e| engine_error("reading container logs", e))?;
        out.push_str(&chunk.to_string());
    }
    Ok(out)
}

/// The container of an App's instance: its image, `sh -c` command, env, `labels`, the flavor's CPU and
/// memory limits, on `network_mode`.
pub(crate) fn container_body(
    app: &App,
    flavor: Option<&Flavor>,
    labels: HashMap<String, String>,
    network_mode: String,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(app.image_path.clone()),
        cmd: (!app.command.is_empty()).then(|| vec!["sh".into(), "-c".into(), app.command.clone()]),
        env: Some(app.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            init: Some(true),
            network_mode: Some(network_mode),
            nano_cpus: flavor.map(|f| (f.vcpus as i64) * 1_000_000_000),
            memory: flavor.map(|f| (f.ram as i64) * 1024 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// How often a running pull reports its download progress.
const PULL_REPORT_EVERY: Duration = Duration::from_secs(1);

impl DockerPlatform {
    /// Pulls `app`'s image from `registry` with the credentials the controller sent along (always, so a
    /// moved tag is picked up), reporting progress. Refused credentials and unknown images end the
    /// create; an unreachable registry is retried.
    pub(crate) async fn pull(
        &self,
        app: &App,
        registry: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let image = &app.image_path;
        let name = image.rsplit('/').next().unwrap_or(image);
        // Without a tag the Engine would pull every tag of the repository.
        let reference = if name.contains([':', '@']) {
            image.clone()
        } else {
            format!("{image}:latest")
        };
        progress.step(&format!("Pulling image {reference}"));
        let credentials = app
            .registry_auth
            .as_ref()
            .map(|a| bollard::auth::DockerCredentials {
                username: Some(a.username.clone()),
                password: Some(a.password.clone()),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            });
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&reference)
            .build();
        let mut pull = self.docker.create_image(Some(opts), None, credentials);
        let mut reported = std::time::Instant::now();
        let (mut done, mut total) = (0i64, 0i64);
        let mut layers = HashMap::new();
        while let Some(item) = pull.next().await {
            let info = item.map_err(|e| {
                let text = e.to_string();
                let lower = text.to_ascii_lowercase();
                if ["unauthorized", "authentication required", "denied", "no basic auth"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    PlatformError::permanent(format!(
                        "pulling image \"{reference}\": registry {registry} refused the credentials ({text})"
                    ))
                } else if ["not found", "manifest unknown", "name unknown"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    PlatformError::permanent(format!(
                        "pulling image \"{reference}\": registry {registry} has no such image ({text})"
                    ))
                } else {
                    PlatformError::transient(format!("pulling image \"{reference}\": {text}"))
                }
            })?;
            if let (Some(id), Some(d)) = (&info.id, &info.progress_detail)
                && info.status.as_deref() == Some("Downloading")
            {
                layers.insert(id.clone(), (d.current.unwrap_or(0), d.total.unwrap_or(0)));
                (done, total) = layers
                    .values()
                    .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
            }
            if reported.elapsed() >= PULL_REPORT_EVERY && total > 0 {
                reported = std::time::Instant::now();
                progress.step(&format!(
                    "Pulling image {reference}: {:.1} of {:.1} MB",
                    done as f64 / 1e6,
                    total as f64 / 1e6
                ));
            }
        }
        progress.step(&format!("Pulled image {reference}"));
        Ok(())
    }

    /// Connects to the engine at `host` (`unix:///path/docker.sock`) and negotiates the API version.
    pub async fn connect(host: &str, cloudlet: &str) -> anyhow::Result<Self> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await
            .map_err(|e| anyhow::anyhow!("Docker Engine at {host} does not answer: {e}"))?;
        Ok(Self {
            docker,
            host: host.to_string(),
            cloudlet: cloudlet.to_string(),
            isolation: None,
            isolated_at: Default::default(),
        })
    }

    /// The engine's client.
    pub(crate) fn engine(&self) -> &Docker {
        &self.docker
    }

    /// Keeps the cloudlet's cluster networks apart and away from the host (except `public_addr`, the LB's).
    pub fn isolated(mut self, public_addr: IpAddr) -> Self {
        self.isolation = Some(Isolation::new(&self.host, &self.cloudlet, public_addr));
        self
    }

    /// The engine's name for the object `key` of this cloudlet.
    fn name(&self, key: &str) -> String {
        resource_name(&format!("edge-{:08x}", fnv1a(&self.cloudlet)), key)
    }

    /// The engine's name of this cloudlet's object `key` (`kind`: [`LABEL_CLUSTER`] for a network,
    /// [`LABEL_APPINST`] for a container): the one whose labels say so (it may carry an earlier release's
    /// name), else the name for a new one.
    async fn name_of(&self, kind: &str, key: &str) -> Result<String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_CLOUDLET}={}", self.cloudlet),
                format!("{kind}={key}"),
            ],
        )]);
        let found = if kind == LABEL_CLUSTER {
            let opts = ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build();
            self.docker
                .list_networks(Some(opts))
                .await
                .map_err(|e| engine_error("listing networks", e))?
                .into_iter()
                .find_map(|n| n.name)
        } else {
            let opts = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            self.docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| engine_error("listing containers", e))?
                .into_iter()
                .find_map(|c| c.names?.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
        };
        Ok(found.unwrap_or_else(|| self.name(key)))
    }

    /// Fails unless `labels` mark the object as this cloudlet's `kind` `key`.
    fn ours(
        &self,
        what: &str,
        name: &str,
        labels: Option<&HashMap<String, String>>,
        kind: &str,
        key: &str,
    ) -> Result<()> {
        let get = |l: &str| labels.and_then(|m| m.get(l)).map(String::as_str);
        if get(LABEL_CLOUDLET) == Some(self.cloudlet.as_str()) && get(kind) == Some(key) {
            return Ok(());
        }
        Err(PlatformError::permanent(format!(
            "a {what} named {name} exists on the Docker Engine but is not {key} of cloudlet {} (its labels \
             say otherwise); remove or rename it",
            self.cloudlet
        )))
    }

    /// Whether the network `name` exists; an error if it does and is not this cloudlet's cluster `key`.
    async fn check_network(&self, name: &str, key: &str) -> Result<bool> {
        let net = match self.docker.inspect_network(name, None).await {
            Ok(n) => n,
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(engine_error(&format!("inspecting network {name}"), e)),
        };
        self.ours("network", name, net.labels.as_ref(), LABEL_CLUSTER, key)?;
        Ok(true)
    }

    /// The cloudlet's cluster networks on the engine.
    async fn cluster_networks(&self) -> Result<Vec<bollard::models::Network>> {
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&self.filter(LABEL_CLUSTER))
            .build();
        self.docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| engine_error("listing networks", e))
    }

    /// Applies the isolation rules for the cluster networks that exist now.
    async fn isolate(&self) -> Result<()> {
        let Some(iso) = &self.isolation else {
            return Ok(());
        };
        let nets = self.cluster_networks().await?;
        let mut bridges: Vec<String> = nets
            .into_iter()
            .filter_map(
                |n| match n.options.and_then(|mut o| o.remove(BRIDGE_OPTION)) {
                    Some(b) => Some(b),
                    None => Some(format!("br-{}", n.id?.get(..12)?)),
                },
            )
            .collect();
        bridges.sort();
        iso.apply(&bridges).await?;
        *self.isolated_at.lock().expect("isolation lock") = Some(std::time::Instant::now());
        Ok(())
    }

    fn labels(&self, kind: &str, key: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_CLOUDLET.to_string(), self.cloudlet.clone()),
            (kind.to_string(), key.to_string()),
        ])
    }

    fn filter(&self, kind: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_CLOUDLET}={}", self.cloudlet),
                kind.to_string(),
            ],
        )])
    }

    async fn inspect_app(&self, name: &str, key: &str) -> Result<Option<ObservedAppInst>> {
        let info = match self.docker.inspect_container(name, None).await {
            Ok(i) => i,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(engine_error("inspecting container", e)),
        };
        self.ours(
            "container",
            name,
            info.config.as_ref().and_then(|c| c.labels.as_ref()),
            LABEL_APPINST,
            key,
        )?;
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let backend = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|nets| {
                nets.into_values()
                    .find_map(|e| e.ip_address.filter(|ip| !ip.is_empty()))
            })
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        Ok(Some(ObservedAppInst {
            key: key.to_string(),
            container_ids: info.id.into_iter().collect(),
            running,
            backend,
            ports: Default::default(),
        }))
    }

    /// Resource use of an app instance's containers: CPU over the engine's sampling second, memory
    /// without the page cache, the containers' writable layers and their network counters.
    pub async fn app_stats(&self, inst: &ObservedAppInst) -> Result<AppStats> {
        let mut total = AppStats::default();
        for id in &inst.container_ids {
            let opts = StatsOptionsBuilder::default().stream(false).build();
            let mut stream = self.docker.stats(id, Some(opts));
            let Some(s) = stream.next().await else {
                continue;
            };
            let s = s.map_err(|e| engine_error("reading container stats", e))?;
            if let (Some(cur), Some(pre)) = (&s.cpu_stats, &s.precpu_stats) {
                let used = |c: &bollard::models::ContainerCpuStats| {
                    c.cpu_usage
                        .as_ref()
                        .and_then(|u| u.total_usage)
                        .unwrap_or(0)
                };
                let cpu = used(cur).saturating_sub(used(pre)) as f64;
                let system = cur
                    .system_cpu_usage
                    .unwrap_or(0)
                    .saturating_sub(pre.system_cpu_usage.unwrap_or(0))
                    as f64;
                if system > 0.0 {
                    total.cpu += cpu / system * f64::from(cur.online_cpus.unwrap_or(1)) * 100.0;
                }
            }
            if let Some(m) = &s.memory_stats {
                let cache = m
                    .stats
                    .as_ref()
                    .and_then(|st| st.get("inactive_file").or_else(|| st.get("cache")).copied());
                total.mem += m.usage.unwrap_or(0).saturating_sub(cache.unwrap_or(0));
            }
            for n in s.networks.iter().flat_map(|n| n.values()) {
                total.net_rx += n.rx_bytes.unwrap_or(0);
                total.net_tx += n.tx_bytes.unwrap_or(0);
            }
            let opts = InspectContainerOptionsBuilder::default().size(true).build();
            if let Ok(i) = self.docker.inspect_container(id, Some(opts)).await {
                total.disk += i.size_rw.unwrap_or(0).max(0) as u64;
            }
        }
        Ok(total)
    }

    /// Why a container stopped: exit code, engine error and the last lines it printed.
    async fn exit_report(&self, name: &str) -> String {
        let state = self
            .docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|i| i.state);
        let code = state.as_ref().and_then(|s| s.exit_code).unwrap_or_default();
        let err = state.and_then(|s| s.error).filter(|e| !e.is_empty());
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let mut logs = self.docker.logs(name, Some(opts));
        let mut out = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&chunk.to_string());
        }
        let mut msg = format!("container exited with code {code}");
        if let Some(e) = err {
            msg.push_str(&format!(": {e}"));
        }
        let out = out.trim();
        if !out.is_empty() {
            msg.push_str(&format!("; last output: {out}"));
        }
        msg
    }
}

#[async_trait::async_trait]
impl Platform for DockerPlatform {
    fn features(&self) -> PlatformFeatures {
        PlatformFeatures {
            supports_docker_clusters: true,
            supports_shared_root_lb: true,
            supports_dedicated_ips: true,
            ..Default::default()
        }
    }

    async fn check(&self) -> Result<Capacity> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| engine_error("asking the Docker Engine for its info", e))?;
        let due = self
            .isolated_at
            .lock()
            .expect("isolation lock")
            .is_none_or(|t| t.elapsed() >= ISOLATE_EVERY);
        if due {
            self.isolate().await?;
        }
        Ok(Capacity {
            vcpus: info.ncpu.unwrap_or_default().max(0) as u64,
            ram: (info.mem_total.unwrap_or_default().max(0) as u64) / (1024 * 1024),
            disk: 0,
        })
    }

    fn clusters(&self) -> Option<&dyn ClusterOps> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl ClusterOps for DockerPlatform {
    async fn list_clusters(&self) -> Result<Vec<String>> {
        let nets = self.cluster_networks().await?;
        Ok(nets
            .into_iter()
            .filter_map(|n| n.labels?.remove(LABEL_CLUSTER))
            .collect())
    }

    async fn create_cluster(
        &self,
        c: &ClusterInst,
        _flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<()> {
        if c.deployment != "docker" {
            return Err(PlatformError::permanent(format!(
                "the docker platform cannot run {} clusters; use a docker deployment",
                c.deployment
            )));
        }
        let key = c.key_string();
        let name = self.name(&key);
        if !self.list_clusters().await?.contains(&key) {
            progress.step(&format!("Creating network {name}"));
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(self.labels(LABEL_CLUSTER, &key)),
                options: Some(HashMap::from([(
                    BRIDGE_OPTION.to_string(),
                    bridge_name(&self.host, &self.cloudlet, &key),
                )])),
                ..Default::default()
            };
            match self.docker.create_network(req).await {
                Ok(_) => {}
                // Created concurrently, or by someone else: used only if its labels say it is ours.
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) => {
                    self.check_network(&name, &key).await?;
                }
                Err(e) => return Err(engine_error(&format!("creating network {name}"), e)),
            }
        }
        progress.step("Isolating the network");
        self.isolate().await
    }

    async fn delete_cluster(&self, key: &str) -> Result<()> {
        let name = self.name_of(LABEL_CLUSTER, key).await?;
        if self.check_network(&name, key).await? {
            match self.docker.remove_network(&name).await {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(engine_error(&format!("removing network {name}"), e)),
            }
        }
        self.isolate().await
    }

    async fn list_app_insts(&self) -> Result<Vec<ObservedAppInst>> {
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.filter(LABEL_APPINST))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_error("listing containers", e))?;
        let mut out = Vec::new();
        for c in list {
            let Some(key) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_APPINST))
                .cloned()
            else {
                continue;
            };
            let name = c.names.as_ref().and_then(|n| n.first()).map_or_else(
                || self.name(&key),
                |n| n.trim_start_matches('/').to_string(),
            );
            if let Some(o) = self.inspect_app(&name, &key).await? {
                out.push(o);
            }
        }
        Ok(out)
    }

    async fn deploy_app(
        &self,
        cluster: &ClusterInst,
        app: &App,
        inst: &AppInst,
        flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<ObservedAppInst> {
        let key = inst.key_string();
        let name = self.name_of(LABEL_APPINST, &key).await?;
        if let Some(o) = self.inspect_app(&name, &key).await? {
            if o.running {
                return Ok(o);
            }
            // A leftover of an interrupted deploy: start over.
            self.delete_app(&key).await?;
        }
        if let Some(registry) = edge_common::image_registry(&app.image_path) {
            self.pull(app, registry, progress).await?;
        } else if let Err(e) = self.docker.inspect_image(&app.image_path).await {
            return Err(if not_found(&e) {
                PlatformError::permanent(format!(
                    "image \"{}\" is not present on the cloudlet's Docker Engine (an image without a registry host is never pulled)",
                    app.image_path
                ))
            } else {
                engine_error("inspecting image", e)
            });
        }
        let network = self.name_of(LABEL_CLUSTER, &cluster.key_string()).await?;
        let body = ContainerCreateBody {
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..container_body(app, flavor, self.labels(LABEL_APPINST, &key), network)
        };
        progress.step(&format!(
            "Creating container {name} from image {}",
            app.image_path
        ));
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| create_error(&name, e))?;
        progress.step("Starting container");
        if let Err(e) = self.docker.start_container(&name, None).await {
            let err = engine_error("starting container", e);
            let _ = self.delete_app(&key).await;
            return Err(err);
        }
        // A command that exits at once is a failed deploy, not a running app: the container is watched for
        // half a second, and taken as up as soon as its first TCP port accepts a connection.
        let first_tcp = inst
            .mapped_ports
            .iter()
            .find(|p| p.proto == LProto::Tcp as i32)
            .and_then(|p| u16::try_from(p.internal_port).ok());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let Some(o) = self.inspect_app(&name, &key).await?.filter(|o| o.running) else {
                let why = self.exit_report(&name).await;
                let _ = self.delete_app(&key).await;
                return Err(PlatformError::permanent(why));
            };
            let listening = match (o.backend, first_tcp) {
                (Some(ip), Some(port)) => {
                    let connect = tokio::net::TcpStream::connect((ip, port));
                    matches!(
                        tokio::time::timeout(Duration::from_millis(100), connect).await,
                        Ok(Ok(_))
                    )
                }
                _ => false,
            };
            if listening || tokio::time::Instant::now() >= deadline {
                return Ok(o);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn app_logs(&self, key: &str, container: &str, opts: LogOptions) -> Result<String> {
        let name = self.name_of(LABEL_APPINST, key).await?;
        let Some(o) = self.inspect_app(&name, key).await? else {
            return Err(PlatformError::permanent(format!(
                "AppInst \"{key}\" has no container on this cloudlet (not deployed yet, or failed)"
            )));
        };
        let id = o.container_ids.first().cloned().unwrap_or_default();
        if !container.is_empty() && container != name && !id.starts_with(container) {
            return Err(PlatformError::permanent(format!(
                "container \"{container}\" is not part of AppInst \"{key}\": its container is \"{name}\""
            )));
        }
        read_logs(&self.docker, &name, opts).await
    }

    async fn delete_app(&self, key: &str) -> Result<()> {
        let name = self.name_of(LABEL_APPINST, key).await?;
        if self.inspect_app(&name, key).await?.is_none() {
            return Ok(());
        }
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(&name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(&format!("removing container {name}"), e)),
        }
    }
}
