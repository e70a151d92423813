//! VM-based docker clusters: a docker ClusterInst on the `vm` platform is one VM (the node) booted from
//! `edge-docker.qcow2`, whose Docker Engine listens on guest port 2376 with TLS; qemu forwards it to a
//! loopback port. The engine takes only clients with a certificate of the node's own CA, which only the
//! CRM holds (in the node's directory, mode 0600), and the CRM takes only an engine whose certificate that
//! CA signed: another process on the host that reaches the port can do nothing with it.
//!
//! Its AppInsts are containers in that engine with the guest's network (the guest has no bridge and no
//! iptables); each App port is forwarded live (QMP `hostfwd_add`) from a free loopback port, which the
//! shared root LB routes to, as for VM AppInsts.
//!
//! Images: the guest reaches no registry (`restrict=on`), so an App's image is pulled on the cloudlet's
//! Docker Engine (`VmConfig::image_engine`, with the credentials the controller sent) and copied into the
//! node (`docker save` into `docker load`).
//!
//! What a node runs is recorded next to its disk (`apps/<name>.json`: the AppInst key and its forwards),
//! so a restarted CRM finds the apps and their forwards, and a restarted node gets its forwards back.

use bollard::Docker;
use bollard::models::{RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use edge_proto::edge::ClusterInst;
use tokio_stream::StreamExt;

use super::*;
use crate::platform::docker::{
    DockerPlatform, container_body, create_error, engine_error, not_found, read_logs,
};
use crate::platform::{LABEL_APPINST, LABEL_MANAGED, LogOptions};

/// The guest port of the node's Docker Engine (TLS, client certificates required).
const ENGINE_PORT: u16 = 2376;
/// In the node's directory: its CA's certificate, and the CRM's client certificate and key.
const ENGINE_CA: &str = "engine-ca.pem";
const ENGINE_CERT: &str = "engine-cert.pem";
const ENGINE_KEY: &str = "engine-key.pem";
/// A node is sized by the cluster's flavor, with at least this much for its engine (MB, GB) and its
/// image's 1 GB file system.
const NODE_MIN_RAM_MB: u64 = 512;
const NODE_MIN_DISK_GB: u64 = 2;

/// An app on a node: what its record file keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AppRecord {
    /// AppInst key
    key: String,
    /// (proto, guest port, loopback port)
    forwards: Vec<(Proto, u16, u16)>,
}

impl AppRecord {
    fn observed(&self, name: &str, running: bool) -> ObservedAppInst {
        ObservedAppInst {
            key: self.key.clone(),
            container_ids: vec![name.to_string()],
            running,
            backend: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ports: self
                .forwards
                .iter()
                .map(|(p, guest, host)| ((*p, *guest), *host))
                .collect(),
        }
    }
}

/// TLS for a new node's engine, from a CA made for that node alone (its key is dropped here): the guest's
/// user data (the engine's certificate for 127.0.0.1, where its forward ends, its key and the CA) and the
/// CRM's files (the CA and a client certificate with its key).
fn engine_tls() -> std::result::Result<(String, Secrets), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca.distinguished_name
        .push(DnType::CommonName, "edge cluster node engine CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let leaf = |usage: ExtendedKeyUsagePurpose, name: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        p
    };
    let mut server = leaf(
        ExtendedKeyUsagePurpose::ServerAuth,
        "edge cluster node engine",
    );
    server.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca)?;
    let client_key = KeyPair::generate()?;
    let client_cert =
        leaf(ExtendedKeyUsagePurpose::ClientAuth, "edge crm").signed_by(&client_key, &ca)?;
    let user_data = [
        ("EDGE_ENGINE_CA", ca.pem()),
        ("EDGE_ENGINE_CERT", server_cert.pem()),
        ("EDGE_ENGINE_KEY", server_key.serialize_pem()),
    ]
    .iter()
    .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
    .collect();
    let crm = vec![
        (ENGINE_CA, ca.pem()),
        (ENGINE_CERT, client_cert.pem()),
        (ENGINE_KEY, client_key.serialize_pem()),
    ];
    Ok((user_data, crm))
}

/// The container name of AppInst `key` (also its record's file name).
fn app_name(key: &str) -> String {
    resource_name("edge", key)
}

impl VmPlatform {
    fn cluster_dir(&self, key: &str) -> PathBuf {
        self.cfg.dir.join(resource_name("cluster", key))
    }

    /// Every node directory with its spec.
    fn nodes(&self) -> Vec<(PathBuf, Spec)> {
        let Ok(dirs) = std::fs::read_dir(&self.cfg.dir) else {
            return Vec::new();
        };
        dirs.flatten()
            .filter_map(|d| {
                let dir = d.path();
                Self::read_spec(&dir)
                    .filter(|s| s.cluster)
                    .map(|s| (dir, s))
            })
            .collect()
    }

    /// The records of the apps on the node in `dir`: (container name, record).
    fn records(dir: &Path) -> Vec<(String, AppRecord)> {
        let Ok(files) = std::fs::read_dir(dir.join("apps")) else {
            return Vec::new();
        };
        files
            .flatten()
            .filter_map(|f| {
                let name = f
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".json")?
                    .to_string();
                let record = serde_json::from_slice(&std::fs::read(f.path()).ok()?).ok()?;
                Some((name, record))
            })
            .collect()
    }

    /// The node holding AppInst `key`, with its record.
    fn node_of(&self, key: &str) -> Option<(PathBuf, Spec, AppRecord)> {
        let name = app_name(key);
        self.nodes().into_iter().find_map(|(dir, spec)| {
            let file = dir.join("apps").join(format!("{name}.json"));
            let record = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
            Some((dir, spec, record))
        })
    }

    /// A client of the node's Docker Engine in `dir`, through its forward.
    fn engine(dir: &Path, spec: &Spec) -> Result<Docker> {
        let port = spec
            .forwards
            .iter()
            .find(|(_, guest, _)| *guest == ENGINE_PORT)
            .map(|(_, _, host)| *host)
            .ok_or_else(|| PlatformError::permanent("the node has no engine forward"))?;
        Docker::connect_with_ssl(
            &format!("tcp://127.0.0.1:{port}"),
            &dir.join(ENGINE_KEY),
            &dir.join(ENGINE_CERT),
            &dir.join(ENGINE_CA),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| err("connecting to the node's container engine", e))
    }

    /// Adds (`add`) or removes qemu forwards of the node in `dir`.
    async fn forward(dir: &Path, forwards: &[(Proto, u16, u16)], add: bool) -> Result<()> {
        for (proto, guest, host) in forwards {
            let line = if add {
                format!("hostfwd_add n0 {}", forward_rule(*proto, *host, *guest))
            } else {
                let p = if *proto == Proto::Udp { "udp" } else { "tcp" };
                format!("hostfwd_remove n0 {p}:127.0.0.1:{host}")
            };
            let command = serde_json::json!({
                "execute": "human-monitor-command",
                "arguments": {"command-line": line},
            })
            .to_string();
            let reply = qmp(&dir.join("qmp.sock"), &[&command])
                .await
                .map_err(|e| err("asking qemu for a port forward", e))?;
            // hostfwd_add answers an empty string, or the reason it could not.
            if add && !reply.contains(r#""return": """#) && !reply.contains(r#""return":"""#) {
                return Err(PlatformError::transient(format!(
                    "forwarding port {host} to the node: {reply}"
                )));
            }
        }
        Ok(())
    }

    /// Puts `app`'s image into the node's engine: pulled on the cloudlet's engine, then copied. Whether
    /// it was copied now (else the node had it).
    async fn copy_image(&self, node: &Docker, app: &App, progress: &dyn Progress) -> Result<bool> {
        let image = &app.image_path;
        let registry = edge_common::image_registry(image);
        if registry.is_none() && node.inspect_image(image).await.is_ok() {
            return Ok(false);
        }
        let host = self.cfg.image_engine.as_deref().ok_or_else(|| {
            PlatformError::permanent(
                "this cloudlet has no Docker Engine to take images from (crm --docker-host)",
            )
        })?;
        let source = DockerPlatform::connect(host, "")
            .await
            .map_err(|e| PlatformError::transient(e.to_string()))?;
        match registry {
            Some(r) => source.pull(app, r, progress).await?,
            None => {
                if let Err(e) = source.engine().inspect_image(image).await {
                    return Err(if not_found(&e) {
                        PlatformError::permanent(format!(
                            "image \"{image}\" is not present on the cloudlet's Docker Engine (an image without a registry host is never pulled)"
                        ))
                    } else {
                        engine_error("inspecting image", e)
                    });
                }
            }
        }
        progress.step(&format!("Copying image {image} into the cluster's node"));
        let tar = source.engine().export_image(image);
        let mut load = node.import_image_stream(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            tar,
            None,
        );
        while let Some(r) = load.next().await {
            r.map_err(|e| engine_error(&format!("copying image {image} into the node"), e))?;
        }
        Ok(true)
    }

    /// Starts the node in `dir` again if its qemu stopped (its apps' forwards are added again), and
    /// waits until its engine answers; a client of that engine.
    async fn start_node(&self, dir: &Path, spec: &Spec, progress: &dyn Progress) -> Result<Docker> {
        if Self::pid(dir).is_some() {
            self.wait_ready(dir, spec, progress).await?;
            return self.engine_answers(dir, spec).await;
        }
        progress.step("Starting the cluster's node");
        self.spawn(dir, spec)?;
        self.wait_ready(dir, spec, progress).await?;
        for (_, record) in Self::records(dir) {
            Self::forward(dir, &record.forwards, true).await?;
        }
        let node = self.engine_answers(dir, spec).await?;
        Self::remove_unrecorded(dir, &node).await?;
        Ok(node)
    }

    /// Removes the node's containers whose app has no record (deleted while the node was down): the
    /// engine would start them again, holding their ports in the guest.
    async fn remove_unrecorded(dir: &Path, node: &Docker) -> Result<()> {
        let recorded: Vec<String> = Self::records(dir).into_iter().map(|(n, _)| n).collect();
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&std::collections::HashMap::from([(
                "label",
                vec![format!("{LABEL_MANAGED}=true")],
            )]))
            .build();
        let list = node
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_error("listing containers", e))?;
        for name in list.into_iter().filter_map(|c| c.names?.first().cloned()) {
            let name = name.trim_start_matches('/');
            if !recorded.iter().any(|r| r == name) {
                tracing::info!(container = name, dir = %dir.display(), "removing a container of an app deleted while its node was down");
                Self::remove_container(node, name).await?;
            }
        }
        Ok(())
    }

    /// Removes container `name` from `node`, running or not; no such container is fine.
    async fn remove_container(node: &Docker, name: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match node.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(&format!("removing container {name}"), e)),
        }
    }

    /// Waits until the node's engine answers an API call over TLS: that qemu's forward takes a
    /// connection, or that nothing is said on it for a moment, only shows that the guest may be
    /// listening (under load the guest can take longer than the port check waits to refuse it).
    async fn engine_answers(&self, dir: &Path, spec: &Spec) -> Result<Docker> {
        let node = Self::engine(dir, spec)?;
        let deadline = tokio::time::Instant::now() + self.cfg.boot_timeout;
        loop {
            let why = match tokio::time::timeout(Duration::from_secs(10), node.ping()).await {
                Ok(Ok(_)) => return Ok(node),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 10 s".to_string(),
            };
            if tokio::time::Instant::now() > deadline {
                return Err(PlatformError::transient(format!(
                    "the node's container engine did not answer within {} s ({why}); console: {}",
                    self.cfg.boot_timeout.as_secs(),
                    self.tail(dir)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether the container `name` runs on `node` (`None`: there is no such container).
    async fn container_running(node: &Docker, name: &str) -> Result<Option<bool>> {
        match node.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c.state.and_then(|s| s.running).unwrap_or(false))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(engine_error("inspecting container", e)),
        }
    }

    /// Starts container `name` of `record` and waits until it is up: running, and its first TCP port
    /// answering through the forward, telling `progress` every 10 s. A container that exits fails; when
    /// its image was not `copied` by this deploy, the image goes too (a node that lost power may keep an
    /// image whose files never reached its disk, "exec format error"), so a retry copies it afresh.
    async fn start_app(
        &self,
        node: &Docker,
        record: &AppRecord,
        name: &str,
        app: &App,
        copied: bool,
        progress: &dyn Progress,
    ) -> Result<ObservedAppInst> {
        progress.step("Starting container");
        let start = tokio::time::Instant::now();
        let up = async {
            node.start_container(name, None)
                .await
                .map_err(|e| engine_error("starting container", e))?;
            let first_tcp = record.forwards.iter().find(|(p, _, _)| *p == Proto::Tcp);
            let deadline = tokio::time::Instant::now() + self.cfg.boot_timeout;
            loop {
                if Self::container_running(node, name).await? != Some(true) {
                    let logs = self
                        .app_logs(
                            &record.key,
                            "",
                            LogOptions {
                                tail: 5,
                                since: None,
                                timestamps: false,
                            },
                        )
                        .await
                        .unwrap_or_default();
                    let why = format!("the container exited: {}", logs.trim());
                    if copied {
                        return Err(PlatformError::permanent(why));
                    }
                    let opts = RemoveImageOptionsBuilder::default().force(true).build();
                    let _ = node.remove_image(&app.image_path, Some(opts), None).await;
                    return Err(PlatformError::transient(why));
                }
                match first_tcp {
                    Some((_, _, host)) if !answers(*host).await => {}
                    _ => return Ok(record.observed(name, true)),
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(PlatformError::permanent(format!(
                        "the app did not answer on its first port within {} s",
                        self.cfg.boot_timeout.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::pin!(up);
        let mut tick =
            tokio::time::interval_at(start + Duration::from_secs(10), Duration::from_secs(10));
        loop {
            tokio::select! {
                r = &mut up => return r,
                _ = tick.tick() => progress.step(&format!(
                    "Waiting for the container to answer ({} s)",
                    start.elapsed().as_secs()
                )),
            }
        }
    }
}

#[async_trait::async_trait]
impl ClusterOps for VmPlatform {
    async fn list_clusters(&self) -> Result<Vec<String>> {
        Ok(self.nodes().into_iter().map(|(_, s)| s.key).collect())
    }

    async fn create_cluster(
        &self,
        c: &ClusterInst,
        flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let key = c.key_string();
        let dir = self.cluster_dir(&key);
        if let Some(spec) = Self::read_spec(&dir) {
            return self.start_node(&dir, &spec, progress).await.map(drop);
        }
        let image = self.cfg.images.join("edge-docker.qcow2");
        if !image.is_file() {
            return Err(PlatformError::permanent(format!(
                "{} is missing: build the VM images with infra/vm-images.sh",
                image.display()
            )));
        }
        progress.step("Creating the cluster's node (a VM with a container engine)");
        let (user_data, secrets) =
            engine_tls().map_err(|e| err("making the node engine's certificates", e))?;
        let vm = NewVm {
            key,
            image,
            disk_gb: Some(flavor.map_or(0, |f| f.disk).max(NODE_MIN_DISK_GB)),
            user_data,
            secrets,
            ports: vec![(Proto::Tcp, ENGINE_PORT, true)],
            ram: flavor.map_or(0, |f| f.ram).max(NODE_MIN_RAM_MB),
            cpus: flavor.map_or(0, |f| f.vcpus).max(1),
            cluster: true,
        };
        let spec = self.create(&dir, vm, progress).await?;
        self.engine_answers(&dir, &spec).await?;
        progress.step("The cluster's container engine answers");
        Ok(())
    }

    async fn delete_cluster(&self, key: &str) -> Result<()> {
        self.destroy(&self.cluster_dir(key)).await
    }

    async fn list_app_insts(&self) -> Result<Vec<ObservedAppInst>> {
        let mut out = Vec::new();
        for (dir, spec) in self.nodes() {
            let node = Self::pid(&dir).and_then(|_| Self::engine(&dir, &spec).ok());
            for (name, record) in Self::records(&dir) {
                // A node that just died may keep its pid a moment: no answer is "not running".
                let running = match &node {
                    Some(node) => {
                        matches!(Self::container_running(node, &name).await, Ok(Some(true)))
                    }
                    None => false,
                };
                out.push(record.observed(&name, running));
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
        let name = app_name(&key);
        let dir = self.cluster_dir(&cluster.key_string());
        let spec = Self::read_spec(&dir)
            .ok_or_else(|| PlatformError::transient("the cluster's node is not created yet"))?;
        let node = self.start_node(&dir, &spec, progress).await?;
        if let Some((_, _, record)) = self.node_of(&key) {
            match Self::container_running(&node, &name).await? {
                Some(true) => return Ok(record.observed(&name, true)),
                // Its node restarted and the engine has not started it again (yet): it starts where it
                // is, which races nothing the engine does and copies nothing.
                Some(false) => {
                    match self
                        .start_app(&node, &record, &name, app, false, progress)
                        .await
                    {
                        Ok(observed) => return Ok(observed),
                        // Unless the engine is gone meanwhile (the node died again): then later.
                        Err(e) => {
                            Self::container_running(&node, &name).await?;
                            tracing::warn!(key, error = %e, "the container did not start again: making it anew");
                        }
                    }
                }
                None => {}
            }
            // A leftover of an interrupted deploy, or a container that no longer starts: start over.
            self.delete_app(&key).await?;
        } else {
            // A container of this name without a record (the record went while the node was down, or
            // the CRM stopped between making it and recording it) is an earlier deploy's: it goes, or
            // the name would be taken for good.
            Self::remove_container(&node, &name).await?;
        }
        let copied = self.copy_image(&node, app, progress).await?;
        let labels = std::collections::HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_APPINST.to_string(), key.clone()),
        ]);
        let mut body = container_body(app, flavor, labels, "host".into());
        if let Some(h) = body.host_config.as_mut() {
            h.restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            });
        }
        progress.step(&format!(
            "Creating container {name} from image {} on the cluster's node",
            app.image_path
        ));
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        node.create_container(Some(opts), body)
            .await
            .map_err(|e| create_error(&name, e))?;
        let mut ports = Vec::new();
        for (proto, guest, _) in guest_ports(inst) {
            let host = free_port(proto).map_err(|e| err("finding a free port", e))?;
            ports.push((proto, guest, host));
        }
        let record = AppRecord {
            key: key.clone(),
            forwards: ports,
        };
        let result = async {
            std::fs::create_dir_all(dir.join("apps")).map_err(|e| err("recording the app", e))?;
            std::fs::write(
                dir.join("apps").join(format!("{name}.json")),
                serde_json::to_vec(&record).unwrap_or_default(),
            )
            .map_err(|e| err("recording the app", e))?;
            Self::forward(&dir, &record.forwards, true).await?;
            self.start_app(&node, &record, &name, app, copied, progress)
                .await
        }
        .await;
        if result.is_err() {
            let _ = self.delete_app(&key).await;
        }
        result
    }

    async fn app_logs(&self, key: &str, container: &str, opts: LogOptions) -> Result<String> {
        let name = app_name(key);
        let Some((dir, spec, _)) = self.node_of(key) else {
            return Err(PlatformError::permanent(format!(
                "AppInst \"{key}\" has no container on this cloudlet (not deployed yet, or failed)"
            )));
        };
        if !container.is_empty() && container != name {
            return Err(PlatformError::permanent(format!(
                "container \"{container}\" is not part of AppInst \"{key}\": its container is \"{name}\""
            )));
        }
        read_logs(&Self::engine(&dir, &spec)?, &name, opts).await
    }

    async fn delete_app(&self, key: &str) -> Result<()> {
        let Some((dir, spec, record)) = self.node_of(key) else {
            return Ok(());
        };
        let name = app_name(key);
        if Self::pid(&dir).is_some() {
            Self::remove_container(&Self::engine(&dir, &spec)?, &name).await?;
            Self::forward(&dir, &record.forwards, false).await?;
        }
        match std::fs::remove_file(dir.join("apps").join(format!("{name}.json"))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("removing the app's record", e)),
        }
    }
}
