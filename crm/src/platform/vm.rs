//! The `vm` platform: every VM AppInst is a qemu virtual machine, spawned directly (no libvirt).
//!
//! Each VM lives in its own directory under the CRM's state dir (`vms/<name>/`): the AppInst key, a qcow2
//! overlay on the App's image, the user data passed through fw_cfg (the App's command and env, kept out of
//! the command line), the qemu command line, its pid, its QMP socket and its serial console log. qemu uses
//! `restrict=on` user networking (the guest reaches nothing on the host) with the App's ports forwarded
//! from free loopback ports, which the shared root LB routes to. VMs are not children the CRM waits on:
//! they keep running when the CRM stops, and a restarted CRM adopts them by pid and directory, like
//! containers.
//!
//! Images: the App's `image_path` is `NAME#sha256:HEX` (a qcow2 in the image directory) or
//! `/abs/path.qcow2#sha256:HEX`; `#md5:HEX` is accepted as MobiledgeX wrote it. Every VM boots the project's
//! kernel and initramfs (`infra/vm-images.sh`) with the App's disk as `/dev/vda`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_common::Keyed;
use edge_proto::edge::{App, AppInst, Flavor, PlatformFeatures};
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod cluster;

use super::{
    Capacity, ClusterOps, ObservedAppInst, Platform, PlatformError, Progress, Result, VmOps,
    resource_name,
};
use crate::lb::Proto;

/// How the VMs are run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// the CRM's `vms/` directory
    pub dir: PathBuf,
    /// kernel, initramfs and named disk images (`infra/vm-images.sh` writes them)
    pub images: PathBuf,
    /// longest wait for a new VM to answer on its ports
    pub boot_timeout: Duration,
    /// the Docker Engine App images of docker clusters are pulled to and copied from
    /// (`unix:///path/docker.sock`)
    pub image_engine: Option<String>,
}

/// What a VM's directory records besides its disk, sockets and logs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Spec {
    /// AppInst key
    key: String,
    /// qemu's arguments, to start it again the same way (power on)
    args: Vec<String>,
    /// (proto, guest port) → loopback port qemu forwards
    forwards: Vec<(Proto, u16, u16)>,
    /// TCP guest ports whose answer tells the VM is up
    ready_ports: Vec<u16>,
    /// a node of a docker cluster (its key is the ClusterInst's), not a VM AppInst
    #[serde(default)]
    cluster: bool,
}

/// Files for the CRM only, by name, written into a VM's directory (mode 0600) before it boots.
type Secrets = Vec<(&'static str, String)>;

/// A VM to create.
struct NewVm {
    key: String,
    /// the base image of its disk
    image: PathBuf,
    /// its disk's size (default: the image's)
    disk_gb: Option<u64>,
    /// shell lines `/init` runs before the command (exports, `EDGE_COMMAND`)
    user_data: String,
    secrets: Secrets,
    /// guest ports to forward from loopback, and whether each must answer before the VM counts as up
    ports: Vec<(Proto, u16, bool)>,
    /// MB
    ram: u64,
    cpus: u64,
    cluster: bool,
}

/// Every guest port of an instance's mapped ports (ranges expanded), and whether it is the first TCP port
/// of its range (those must answer before the instance counts as up).
fn guest_ports(inst: &AppInst) -> Vec<(Proto, u16, bool)> {
    let mut out = Vec::new();
    for p in &inst.mapped_ports {
        let proto = Proto::of(p);
        let last = if p.end_port == 0 {
            p.internal_port
        } else {
            p.end_port
        };
        for guest in p.internal_port..=last {
            let first = proto == Proto::Tcp && guest == p.internal_port;
            out.push((proto, u16::try_from(guest).unwrap_or_default(), first));
        }
    }
    out
}

/// qemu's forward of loopback port `host` to `guest` (`hostfwd=` and `hostfwd_add` syntax).
fn forward_rule(proto: Proto, host: u16, guest: u16) -> String {
    let p = if proto == Proto::Udp { "udp" } else { "tcp" };
    format!("{p}:127.0.0.1:{host}-:{guest}")
}

pub struct VmPlatform {
    cfg: VmConfig,
    /// `-accel` of this host: KVM when the CPU has it and /dev/kvm opens, else TCG
    accel: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::transient(format!("{what}: {e}"))
}

/// `'text'` for /bin/sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Whether `pid` is a qemu running the VM in `dir` (a reused pid never passes).
fn alive(pid: u32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("qemu-system") && c.contains(&*dir.to_string_lossy())
        })
        .unwrap_or(false)
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A free loopback port (bound and released; qemu binds it right after).
fn free_port(proto: Proto) -> std::io::Result<u16> {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    Ok(match proto {
        Proto::Tcp => std::net::TcpListener::bind(any)?.local_addr()?.port(),
        Proto::Udp => std::net::UdpSocket::bind(any)?.local_addr()?.port(),
    })
}

/// A TCP server behind qemu's forward answers: the connection stays open (or sends something). Before the
/// guest listens, qemu accepts and closes at once.
async fn answers(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)),
    )
    .await
    else {
        return false;
    };
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await {
        Err(_) => true,
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
    }
}

/// Runs QMP commands on a VM's socket (names, or JSON commands with arguments); the last command's reply.
async fn qmp(sock: &Path, commands: &[&str]) -> std::io::Result<String> {
    let s = tokio::net::UnixStream::connect(sock).await?;
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await?; // greeting
    let mut last = String::new();
    for c in std::iter::once("qmp_capabilities").chain(commands.iter().copied()) {
        // A bare name, or a whole command with its arguments.
        let line = if c.starts_with('{') {
            format!("{c}\n")
        } else {
            format!("{{\"execute\":\"{c}\"}}\n")
        };
        w.write_all(line.as_bytes()).await?;
        // Replies come after any events.
        loop {
            let Some(l) = lines.next_line().await? else {
                return Ok(last);
            };
            if l.contains("\"return\"") || l.contains("\"error\"") {
                last = l;
                break;
            }
        }
    }
    Ok(last)
}

/// The App's image file and its expected checksum (`sha256` or `md5`, hex).
fn image_of(images: &Path, image_path: &str) -> Result<(PathBuf, &'static str, String)> {
    let (path, sum) = image_path.rsplit_once('#').ok_or_else(|| {
        PlatformError::permanent(format!(
            "image \"{image_path}\" has no checksum: write it as NAME#sha256:HEX"
        ))
    })?;
    let (algo, hex) = match sum.split_once(':') {
        Some(("sha256", h)) => ("sha256", h),
        Some(("md5", h)) => ("md5", h),
        _ => {
            return Err(PlatformError::permanent(format!(
                "image \"{image_path}\": the checksum must be sha256:HEX or md5:HEX"
            )));
        }
    };
    if path.starts_with("http://") || path.starts_with("https://") {
        return Err(PlatformError::permanent(format!(
            "image \"{path}\": this cloudlet cannot download images; put the image in {} and name it",
            images.display()
        )));
    }
    let file = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        images.join(path)
    };
    Ok((file, algo, hex.to_ascii_lowercase()))
}

/// Hex digest of a file with `sha256sum` or `md5sum` (the coreutils every host has).
async fn digest(algo: &str, file: &Path) -> Result<String> {
    let out = tokio::process::Command::new(format!("{algo}sum"))
        .arg(file)
        .output()
        .await
        .map_err(|e| err(&format!("running {algo}sum"), e))?;
    if !out.status.success() {
        return Err(PlatformError::permanent(format!(
            "image {} cannot be read: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

impl VmPlatform {
    /// Checks that qemu and the boot images are there.
    pub fn new(cfg: VmConfig) -> anyhow::Result<Self> {
        for f in ["edge-vm.kernel", "edge-vm.initrd"] {
            let p = cfg.images.join(f);
            anyhow::ensure!(
                p.is_file(),
                "{} is missing: build the VM images with infra/vm-images.sh",
                p.display()
            );
        }
        std::fs::create_dir_all(&cfg.dir)?;
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kvm = (cpu.contains(" vmx") || cpu.contains(" svm"))
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
        let accel = if kvm {
            "kvm".to_string()
        } else {
            "tcg,thread=multi,tb-size=64".to_string()
        };
        tracing::info!(accel, dir = %cfg.dir.display(), "vm platform ready");
        Ok(Self { cfg, accel })
    }

    fn vm_dir(&self, key: &str) -> PathBuf {
        self.cfg.dir.join(resource_name("vm", key))
    }

    fn read_spec(dir: &Path) -> Option<Spec> {
        serde_json::from_slice(&std::fs::read(dir.join("spec.json")).ok()?).ok()
    }

    fn pid(dir: &Path) -> Option<u32> {
        std::fs::read_to_string(dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| alive(*p, dir))
    }

    fn observed(dir: &Path, spec: &Spec) -> ObservedAppInst {
        let pid = Self::pid(dir);
        ObservedAppInst {
            key: spec.key.clone(),
            container_ids: vec![
                dir.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            ],
            running: pid.is_some(),
            backend: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ports: spec
                .forwards
                .iter()
                .map(|(p, guest, host)| ((*p, *guest), *host))
                .collect(),
        }
    }

    /// Starts qemu as recorded in the VM's spec, detached from the CRM (it outlives a CRM restart).
    fn spawn(&self, dir: &Path, spec: &Spec) -> Result<()> {
        // A fresh console: readiness waits for this boot's "booted" line.
        let _ = std::fs::write(dir.join("console.log"), "");
        let log = std::fs::File::create(dir.join("qemu.log")).map_err(|e| err("qemu log", e))?;
        let child = std::process::Command::new("qemu-system-x86_64")
            .args(&spec.args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| err("qemu log", e))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| err("starting qemu-system-x86_64", e))?;
        std::fs::write(dir.join("pid"), child.id().to_string()).map_err(|e| err("pid file", e))?;
        // Reaped by a thread so it never lingers as a zombie while this CRM runs.
        std::thread::spawn(move || {
            let mut child = child;
            let pid = child.id();
            if let Ok(status) = child.wait() {
                tracing::info!(pid, %status, "qemu exited");
            }
        });
        Ok(())
    }

    /// Stops the VM: the ACPI power button (QMP `system_powerdown`; the project's guests power off at
    /// once), then QMP `quit`, then SIGTERM, then SIGKILL, each given a few seconds.
    async fn stop(&self, dir: &Path) {
        let Some(pid) = Self::pid(dir) else { return };
        let gone = async || {
            for _ in 0..30 {
                if !alive(pid, dir) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        let sock = dir.join("qmp.sock");
        for command in ["system_powerdown", "quit"] {
            let commands = [command];
            let asked = tokio::time::timeout(Duration::from_secs(3), qmp(&sock, &commands));
            if asked.await.is_ok() && gone().await {
                tracing::info!(pid, command, "VM stopped");
                return;
            }
        }
        for sig in ["-TERM", "-KILL"] {
            let _ = tokio::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .await;
            if gone().await {
                return;
            }
        }
        tracing::warn!(pid, dir = %dir.display(), "qemu did not stop");
    }

    /// Stops the VM in `dir` and removes the directory (disk, spec, sockets, logs), if it exists.
    async fn destroy(&self, dir: &Path) -> Result<()> {
        self.stop(dir).await;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("removing the VM directory", e)),
        }
    }

    /// Waits until every ready port answers, or the VM dies, or the boot deadline passes.
    async fn wait_ready(&self, dir: &Path, spec: &Spec, progress: &dyn Progress) -> Result<()> {
        let start = tokio::time::Instant::now();
        let deadline = start + self.cfg.boot_timeout;
        let mut reported = start;
        let pid: Option<u32> = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        loop {
            if pid.is_none_or(exited) {
                let why = format!("the VM stopped while booting: {}", self.tail(dir));
                // A forwarded port another process took meanwhile: worth another try on fresh ports.
                let clash = std::fs::read_to_string(dir.join("qemu.log"))
                    .is_ok_and(|l| l.contains("host forwarding"));
                return Err(if clash {
                    PlatformError::transient(why)
                } else {
                    PlatformError::permanent(why)
                });
            }
            // Until the guest's network is up, qemu holds a forwarded connection open as if a server
            // answered: ports count only once /init says the guest booted.
            let booted = std::fs::read_to_string(dir.join("console.log"))
                .is_ok_and(|c| c.contains("edge-vm: booted"));
            let mut up = booted;
            for (proto, guest, host) in spec.forwards.iter().filter(|_| booted) {
                if *proto == Proto::Tcp && spec.ready_ports.contains(guest) && !answers(*host).await
                {
                    up = false;
                }
            }
            if up {
                return Ok(());
            }
            if reported.elapsed() >= Duration::from_secs(10) {
                reported = tokio::time::Instant::now();
                progress.step(&format!(
                    "Waiting for the VM to answer ({} s)",
                    start.elapsed().as_secs()
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PlatformError::permanent(format!(
                    "the VM did not answer on its ports within {} s; console: {}",
                    self.cfg.boot_timeout.as_secs(),
                    self.tail(dir)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates the VM's directory, disk and user data and boots it until it answers; a VM that cannot
    /// come up leaves nothing behind (a retry starts afresh, on new ports).
    async fn create(&self, dir: &Path, vm: NewVm, progress: &dyn Progress) -> Result<Spec> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| err("creating the VM directory", e))?;
        let result = self.boot_new(dir, vm, progress).await;
        if result.is_err() {
            let _ = self.destroy(dir).await;
        }
        result
    }

    async fn boot_new(&self, dir: &Path, vm: NewVm, progress: &dyn Progress) -> Result<Spec> {
        progress.step("Creating disk");
        let mut cmd = tokio::process::Command::new("qemu-img");
        cmd.args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&vm.image)
            .arg(dir.join("disk.qcow2"));
        if let Some(gb) = vm.disk_gb {
            cmd.arg(format!("{gb}G"));
        }
        let out = cmd.output().await.map_err(|e| err("running qemu-img", e))?;
        if !out.status.success() {
            return Err(PlatformError::permanent(format!(
                "creating the VM's disk on {}: {}",
                vm.image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let files = std::iter::once(("user-data", &vm.user_data))
            .chain(vm.secrets.iter().map(|(name, text)| (*name, text)));
        for (name, text) in files {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(dir.join(name))
                .map_err(|e| err(&format!("writing {name}"), e))?;
            std::io::Write::write_all(&mut f, text.as_bytes())
                .map_err(|e| err(&format!("writing {name}"), e))?;
        }
        let mut forwards = Vec::new();
        let mut ready_ports = Vec::new();
        for (proto, guest, ready) in vm.ports {
            let host = free_port(proto).map_err(|e| err("finding a free port", e))?;
            forwards.push((proto, guest, host));
            if ready {
                ready_ports.push(guest);
            }
        }
        let hostfwd: String = forwards
            .iter()
            .map(|(p, guest, host)| format!(",hostfwd={}", forward_rule(*p, *host, *guest)))
            .collect();
        let d = dir.display();
        let images = self.cfg.images.display();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let args: Vec<String> = [
            "-name",
            &name,
            "-accel",
            &self.accel,
            "-cpu",
            "max",
            "-machine",
            "q35",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            &vm.ram.to_string(),
            "-smp",
            &vm.cpus.to_string(),
            "-kernel",
            &format!("{images}/edge-vm.kernel"),
            "-initrd",
            &format!("{images}/edge-vm.initrd"),
            "-append",
            "console=ttyS0 quiet panic=-1",
            "-serial",
            &format!("file:{d}/console.log"),
            "-drive",
            &format!("file={d}/disk.qcow2,if=virtio,format=qcow2"),
            "-netdev",
            &format!("user,id=n0,restrict=on{hostfwd}"),
            "-device",
            "virtio-net-pci,netdev=n0",
            "-fw_cfg",
            &format!("name=opt/edge/user-data,file={d}/user-data"),
            "-qmp",
            &format!("unix:{d}/qmp.sock,server=on,wait=off"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let spec = Spec {
            key: vm.key,
            args,
            forwards,
            ready_ports,
            cluster: vm.cluster,
        };
        std::fs::write(
            dir.join("spec.json"),
            serde_json::to_vec(&spec).unwrap_or_default(),
        )
        .map_err(|e| err("writing the VM spec", e))?;
        progress.step("Booting VM");
        self.spawn(dir, &spec)?;
        self.wait_ready(dir, &spec, progress).await?;
        Ok(spec)
    }

    /// Last lines of the VM's console and qemu's own messages.
    fn tail(&self, dir: &Path) -> String {
        let mut out = String::new();
        for f in ["console.log", "qemu.log"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            out.push_str(&lines[lines.len().saturating_sub(3)..].join(" | "));
        }
        if out.is_empty() {
            "(empty)".into()
        } else {
            out
        }
    }
}

/// A running VM of a CRM's `vms/` directory, for Shepherd.
pub struct RunningVm {
    pub observed: ObservedAppInst,
    pub pid: u32,
    /// its directory (disk, console)
    pub dir: PathBuf,
}

/// The VMs of `vms_dir` that run now.
pub fn running_vms(vms_dir: &Path) -> Vec<RunningVm> {
    let Ok(dirs) = std::fs::read_dir(vms_dir) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| {
            let dir = d.path();
            let spec = VmPlatform::read_spec(&dir).filter(|s| !s.cluster)?;
            let pid = VmPlatform::pid(&dir)?;
            Some(RunningVm {
                observed: VmPlatform::observed(&dir, &spec),
                pid,
                dir,
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl Platform for VmPlatform {
    fn features(&self) -> PlatformFeatures {
        PlatformFeatures {
            supports_vms: true,
            supports_docker_clusters: true,
            supports_shared_root_lb: true,
            ..Default::default()
        }
    }

    async fn check(&self) -> Result<Capacity> {
        let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kb: u64 = mem
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Ok(Capacity {
            vcpus,
            ram: ram_kb / 1024,
            disk: 0,
        })
    }

    fn vms(&self) -> Option<&dyn VmOps> {
        Some(self)
    }

    fn clusters(&self) -> Option<&dyn ClusterOps> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl VmOps for VmPlatform {
    async fn list_vms(&self) -> Result<Vec<ObservedAppInst>> {
        let mut out = Vec::new();
        let dirs = std::fs::read_dir(&self.cfg.dir).map_err(|e| err("listing VMs", e))?;
        for d in dirs.flatten() {
            let dir = d.path();
            match Self::read_spec(&dir) {
                Some(spec) if spec.cluster => {}
                Some(spec) => out.push(Self::observed(&dir, &spec)),
                // Left by a crash before its spec was written: nobody can want it.
                None => {
                    let _ = self.destroy(&dir).await;
                }
            }
        }
        Ok(out)
    }

    async fn create_vm(
        &self,
        app: &App,
        inst: &AppInst,
        flavor: Option<&Flavor>,
        progress: &dyn Progress,
    ) -> Result<ObservedAppInst> {
        let key = inst.key_string();
        let dir = self.vm_dir(&key);
        if let Some(spec) = Self::read_spec(&dir) {
            if Self::pid(&dir).is_none() {
                progress.step("Starting VM");
                self.spawn(&dir, &spec)?;
            }
            self.wait_ready(&dir, &spec, progress).await?;
            return Ok(Self::observed(&dir, &spec));
        }
        progress.step("Checking image");
        let (image, algo, want) = image_of(&self.cfg.images, &app.image_path)?;
        if !image.is_file() {
            return Err(PlatformError::permanent(format!(
                "image {} not found",
                image.display()
            )));
        }
        let have = digest(algo, &image).await?;
        if have != want {
            return Err(PlatformError::permanent(format!(
                "image {} has {algo} {have}, the App names {want}",
                image.display()
            )));
        }
        let mut user_data = String::new();
        for (k, v) in &app.env {
            user_data.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        if !app.command.is_empty() {
            user_data.push_str(&format!("EDGE_COMMAND={}\n", sh_quote(&app.command)));
        }
        let ports = guest_ports(inst);
        let (ram, cpus) = flavor.map_or((256, 1), |f| (f.ram.max(128), f.vcpus.max(1)));
        let vm = NewVm {
            key,
            image,
            disk_gb: flavor.map(|f| f.disk).filter(|d| *d > 0),
            user_data,
            secrets: Vec::new(),
            ports,
            ram,
            cpus,
            cluster: false,
        };
        let spec = self.create(&dir, vm, progress).await?;
        Ok(Self::observed(&dir, &spec))
    }

    async fn power_off(&self, key: &str) -> Result<()> {
        self.stop(&self.vm_dir(key)).await;
        Ok(())
    }

    async fn reboot(&self, key: &str, progress: &dyn Progress) -> Result<()> {
        let dir = self.vm_dir(key);
        let spec = Self::read_spec(&dir)
            .ok_or_else(|| PlatformError::permanent(format!("no VM of {key}")))?;
        // qemu runs with -no-reboot (a guest that reboots ends): a reboot is a stop and a fresh start.
        self.stop(&dir).await;
        progress.step("Booting VM");
        self.spawn(&dir, &spec)?;
        self.wait_ready(&dir, &spec, progress).await
    }

    async fn console_log(&self, key: &str, tail: usize) -> Result<String> {
        match std::fs::read(self.vm_dir(key).join("console.log")) {
            Ok(bytes) => Ok(super::last_lines(&String::from_utf8_lossy(&bytes), tail)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PlatformError::permanent(format!(
                    "AppInst \"{key}\" has no VM on this cloudlet (not created yet, or failed)"
                )))
            }
            Err(e) => Err(err("reading the console log", e)),
        }
    }

    async fn delete_vm(&self, key: &str) -> Result<()> {
        self.destroy(&self.vm_dir(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_name_a_file_and_a_checksum() {
        let images = Path::new("/img");
        let (f, a, h) = image_of(images, "edge-web.qcow2#sha256:ABC").unwrap();
        assert_eq!(
            (f, a, h.as_str()),
            (PathBuf::from("/img/edge-web.qcow2"), "sha256", "abc")
        );
        let (f, a, _) = image_of(images, "/srv/x.qcow2#md5:00").unwrap();
        assert_eq!((f, a), (PathBuf::from("/srv/x.qcow2"), "md5"));
        for (bad, msg) in [
            ("x.qcow2", "has no checksum"),
            ("x.qcow2#crc:1", "must be sha256:HEX or md5:HEX"),
            (
                "https://example.com/x.qcow2#md5:00",
                "cannot download images",
            ),
        ] {
            let e = image_of(images, bad).unwrap_err();
            assert!(
                e.message.contains(msg) && !e.transient,
                "{bad}: {}",
                e.message
            );
        }
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
