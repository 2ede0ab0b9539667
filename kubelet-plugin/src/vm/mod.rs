//! The VM back end: pod sandboxes of handler `arktos-vm` are network
//! namespaces, and their one container is a libvirt domain.

pub mod console;
pub mod cri_view;
pub mod domain;
pub mod hypervisor;
pub mod images;
pub mod kvm;
pub mod libvirt;
pub mod network;
pub mod operations;
pub mod records;
pub mod seed;
pub mod shape;
pub mod translate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_cri::v1 as cri;
use tokio::sync::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tonic::Status;

use self::console::ConsoleLog;
use self::cri_view::now_ns;
use self::domain::{Accel, DomainSpec, domain_name};
use self::hypervisor::Hypervisor;
use self::images::{CachedImage, ImageCache, ImageError};
use self::libvirt::{DomainFacts, Libvirt, LibvirtError};
use self::network::{Cni, PodRef, tap_name};
use self::records::{ContainerRecord, Phase, SandboxRecord, Store};
use self::seed::Seed;
use self::shape::{ShapeError, SizePolicy, VmShape, Wanted};
use crate::fsutil::remove_all;
use crate::ids::new_id;

/// The RuntimeClass handler whose pods are VMs.
pub const HANDLER: &str = arktos_crds::vm::RUNTIME_CLASS;
/// Pod or container annotation: cloud-init user-data, base64.
pub const USER_DATA_ANNOTATION: &str = arktos_crds::vm::annotations::USER_DATA;
/// Pod or container annotation: SSH public keys for the guest, one a line.
pub const PUBLIC_KEY_ANNOTATION: &str = arktos_crds::vm::annotations::PUBLIC_KEY;

pub struct VmConfig {
    pub state_dir: PathBuf,
    pub libvirt_uri: String,
    pub accel: Accel,
    /// Whether `accel` was chosen by the operator; otherwise KVM is trusted
    /// only once a guest has booted under it.
    pub accel_forced: bool,
    pub sizes: SizePolicy,
    pub cni: Cni,
    /// Longest wait for a guest to power off after the ACPI button.
    pub stop_grace_cap: Duration,
}

/// The VM back end of arktos-node, over hypervisor `H` (libvirt).
pub struct VmRuntime<H: Hypervisor = Libvirt> {
    cfg: VmConfig,
    store: Store,
    pub images: ImageCache,
    libvirt: H,
    sandboxes: RwLock<HashMap<String, SandboxRecord>>,
    containers: RwLock<HashMap<String, ContainerRecord>>,
    /// Lifecycle calls of one sandbox (and its container) run one at a time.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    tailers: Mutex<HashMap<String, JoinHandle<()>>>,
    accel: std::sync::Mutex<AccelChoice>,
    /// Containers whose domain a VM operation has stopped on purpose for a
    /// moment (restore): not to be taken for exited.
    operating: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// What the monitor last heard from libvirt: CRI Status and the health
    /// endpoints answer from it, never with a libvirt call of their own.
    health: std::sync::RwLock<LibvirtHealth>,
    /// Running VMs as the monitor last saw them; CRI status, lists and
    /// stats read these, so a slow libvirt never holds up the kubelet.
    observed: std::sync::Mutex<HashMap<String, DomainFacts>>,
}

/// libvirt's last answer to the monitor, and when it came.
#[derive(Clone, Debug)]
pub struct LibvirtHealth {
    /// The hypervisor's version, or why libvirt did not answer.
    pub answer: Result<String, String>,
    pub checked_at: Option<Instant>,
}

impl Default for LibvirtHealth {
    fn default() -> Self {
        Self {
            answer: Err("libvirt has not been asked yet".into()),
            checked_at: None,
        }
    }
}

/// The accelerator VMs get, and whether a guest has proved it works.
#[derive(Clone, Copy, Debug)]
struct AccelChoice {
    accel: Accel,
    proven: bool,
}

/// How long the first KVM guest must run before KVM counts as usable:
/// nested KVM that cannot run guests stops them within seconds (KVM
/// internal error, the domain pauses).
const KVM_PROOF: Duration = Duration::from_secs(8);
/// How long a guest may take to release unplugged vCPUs.
const VCPU_UNPLUG_WAIT: Duration = Duration::from_secs(10);
/// How often the monitor asks libvirt about itself and the running VMs.
const MONITOR_PERIOD: Duration = Duration::from_secs(1);
/// A libvirt that takes longer than this to answer counts as not ready.
const LIBVIRT_ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// QEMU runs as an unprivileged user (libvirt's DAC driver hands it the
/// files), so every directory above the VM files must let others through.
/// Refusing at start beats a "Permission denied" at the first VM.
fn reachable_by_qemu(state_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut dir = Some(state_dir);
    while let Some(d) = dir {
        let mode = std::fs::metadata(d)?.permissions().mode();
        if mode & 0o001 == 0 {
            if d == state_dir {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711))?;
            } else {
                anyhow::bail!(
                    "QEMU cannot reach VM files under {}: {} has mode {:o}, others need search (x) permission; run `chmod o+x {}` or choose another --state-dir",
                    state_dir.display(),
                    d.display(),
                    mode & 0o7777,
                    d.display()
                );
            }
        }
        dir = d.parent();
    }
    Ok(())
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

impl From<LibvirtError> for Status {
    fn from(e: LibvirtError) -> Self {
        match e {
            LibvirtError::Unreachable { .. } => Status::unavailable(e.to_string()),
            LibvirtError::Call(_) | LibvirtError::VcpuUnplugPending(_) => {
                Status::internal(e.to_string())
            }
        }
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Unreachable { .. } => Status::not_found(e.to_string()),
            ImageError::NotAnImage { .. } | ImageError::Corrupt { .. } => {
                Status::invalid_argument(e.to_string())
            }
            ImageError::InUse(..) => Status::failed_precondition(e.to_string()),
            ImageError::Io(_) => Status::internal(e.to_string()),
        }
    }
}

impl From<ShapeError> for Status {
    fn from(e: ShapeError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl VmRuntime<Libvirt> {
    /// The runtime over libvirt at `cfg.libvirt_uri`: see `open_with`.
    pub async fn open(cfg: VmConfig, images: ImageCache) -> anyhow::Result<Arc<Self>> {
        let libvirt = Libvirt::new(&cfg.libvirt_uri);
        Self::open_with(libvirt, cfg, images).await
    }
}

impl<H: Hypervisor> VmRuntime<H> {
    /// Opens the state, then matches it with what the hypervisor runs:
    /// containers whose domain stopped while arktos-node was away are
    /// marked exited, and running ones get their console followed again.
    pub async fn open_with(
        hypervisor: H,
        cfg: VmConfig,
        images: ImageCache,
    ) -> anyhow::Result<Arc<Self>> {
        let store = Store::open(&cfg.state_dir)?;
        reachable_by_qemu(&cfg.state_dir)?;
        let remembered = std::fs::read_to_string(cfg.state_dir.join("accel")).ok();
        let accel = match (cfg.accel_forced, remembered.as_deref().map(str::trim)) {
            (false, Some("tcg")) => AccelChoice {
                accel: Accel::Tcg,
                proven: true,
            },
            (false, Some("kvm")) if cfg.accel == Accel::Kvm => AccelChoice {
                accel: Accel::Kvm,
                proven: true,
            },
            _ => AccelChoice {
                accel: cfg.accel,
                proven: cfg.accel_forced || cfg.accel == Accel::Tcg,
            },
        };
        let (sandboxes, containers) = store.load()?;
        let rt = Arc::new(Self {
            libvirt: hypervisor,
            cfg,
            store,
            images,
            sandboxes: RwLock::new(sandboxes.into_iter().map(|s| (s.id.clone(), s)).collect()),
            containers: RwLock::new(containers.into_iter().map(|c| (c.id.clone(), c)).collect()),
            locks: Mutex::new(HashMap::new()),
            tailers: Mutex::new(HashMap::new()),
            accel: std::sync::Mutex::new(accel),
            operating: Arc::default(),
            health: Default::default(),
            observed: Default::default(),
        });
        let ids: Vec<String> = rt.containers.read().await.keys().cloned().collect();
        for id in &ids {
            let running = rt
                .containers
                .read()
                .await
                .get(id)
                .is_some_and(|c| c.phase == Phase::Running);
            if running {
                rt.follow_console(id).await;
            }
        }
        tracing::info!(
            sandboxes = rt.sandboxes.read().await.len(),
            containers = ids.len(),
            "VM state recovered; the monitor checks it against libvirt"
        );
        Ok(rt)
    }

    /// Starts the monitor: every `MONITOR_PERIOD` it asks libvirt whether it
    /// answers, then brings each running VM's record in line with its
    /// domain (a guest that powered itself off has exited). It is the only
    /// place where libvirt's state is polled.
    pub fn spawn_monitor(self: &Arc<Self>) -> JoinHandle<()> {
        let rt = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                rt.check_libvirt_and_vms().await;
                tokio::time::sleep(MONITOR_PERIOD).await;
            }
        })
    }

    async fn check_libvirt_and_vms(&self) {
        let answer = match tokio::time::timeout(LIBVIRT_ANSWER_WITHIN, self.libvirt.ping()).await {
            Ok(Ok(version)) => Ok(version),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "libvirt did not answer within {}s",
                LIBVIRT_ANSWER_WITHIN.as_secs()
            )),
        };
        let reachable = answer.is_ok();
        let was = std::mem::replace(
            &mut *self.health.write().expect("health lock"),
            LibvirtHealth {
                answer,
                checked_at: Some(Instant::now()),
            },
        );
        let now = self.libvirt_health();
        if was.answer.is_ok() != reachable || was.checked_at.is_none() {
            match &now.answer {
                Ok(v) => {
                    tracing::info!(hypervisor = %v, accel = self.accel().domain_type(), "libvirt answers")
                }
                Err(e) => {
                    tracing::warn!(reason = %e, "libvirt is not ready: VM calls wait or fail until it is")
                }
            }
        }
        if !reachable {
            return;
        }
        let running: Vec<String> = self
            .containers
            .read()
            .await
            .values()
            .filter(|c| c.phase == Phase::Running)
            .map(|c| c.id.clone())
            .collect();
        for id in running {
            self.refresh(&id).await;
        }
    }

    /// libvirt's last answer to the monitor.
    pub fn libvirt_health(&self) -> LibvirtHealth {
        self.health.read().expect("health lock").clone()
    }

    /// The facts the monitor last saw of a running VM.
    fn observed(&self, id: &str) -> Option<DomainFacts> {
        self.observed
            .lock()
            .expect("observed lock")
            .get(id)
            .copied()
    }

    pub fn accel(&self) -> Accel {
        self.accel.lock().expect("accel lock").accel
    }

    fn accel_unproven(&self) -> bool {
        let a = self.accel.lock().expect("accel lock");
        a.accel == Accel::Kvm && !a.proven
    }

    fn kvm_proven(&self) -> bool {
        let a = self.accel.lock().expect("accel lock");
        a.accel == Accel::Kvm && a.proven
    }

    fn settle_accel(&self, accel: Accel) {
        *self.accel.lock().expect("accel lock") = AccelChoice {
            accel,
            proven: true,
        };
        let _ = std::fs::write(
            self.cfg.state_dir.join("accel"),
            accel.domain_type().replace("qemu", "tcg"),
        );
    }

    pub async fn owns_sandbox(&self, id: &str) -> bool {
        self.sandboxes.read().await.contains_key(id)
    }

    pub async fn owns_container(&self, id: &str) -> bool {
        self.containers.read().await.contains_key(id)
    }

    /// The VM sandbox a pod (by UID) runs in, if any.
    pub async fn sandbox_of_pod(&self, uid: &str) -> Option<String> {
        self.sandboxes
            .read()
            .await
            .values()
            .find(|s| s.uid == uid)
            .map(|s| s.id.clone())
    }

    async fn lock(&self, sandbox_id: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .await
            .entry(sandbox_id.to_string())
            .or_default()
            .clone()
    }

    async fn sandbox(&self, id: &str) -> Result<SandboxRecord, Status> {
        self.sandboxes
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("VM pod sandbox {id} not found")))
    }

    async fn container(&self, id: &str) -> Result<ContainerRecord, Status> {
        self.containers
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("VM container {id} not found")))
    }

    async fn put_sandbox(&self, s: SandboxRecord) -> Result<(), Status> {
        self.store
            .save_sandbox(&s)
            .await
            .map_err(|e| internal("saving sandbox record", e))?;
        self.sandboxes.write().await.insert(s.id.clone(), s);
        Ok(())
    }

    async fn put_container(&self, c: ContainerRecord) -> Result<(), Status> {
        self.store
            .save_container(&c)
            .await
            .map_err(|e| internal("saving container record", e))?;
        self.containers.write().await.insert(c.id.clone(), c);
        Ok(())
    }

    // ---- sandboxes ----

    #[tracing::instrument(name = "run_sandbox", skip_all, fields(pod = config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default()))]
    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, Status> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("pod sandbox config has no metadata"))?;
        if meta.name.is_empty() || meta.uid.is_empty() {
            return Err(Status::invalid_argument(
                "pod sandbox metadata needs a name and a uid",
            ));
        }
        let host_network = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32);
        if host_network {
            return Err(Status::invalid_argument(
                "a VM pod cannot use the host network (hostNetwork: true)",
            ));
        }
        let id = new_id();
        let lock = self.lock(&id).await;
        let _guard = lock.lock().await;
        let started = Instant::now();
        let pod = PodRef {
            sandbox_id: &id,
            name: &meta.name,
            namespace: &meta.namespace,
            uid: &meta.uid,
        };
        let network = self
            .cfg
            .cni
            .setup(&pod)
            .await
            .map_err(|e| Status::internal(format!("setting up the pod network: {e:#}")))?;
        let record = SandboxRecord {
            id: id.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            namespace: meta.namespace.clone(),
            attempt: meta.attempt,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            log_directory: config.log_directory.clone(),
            hostname: if config.hostname.is_empty() {
                meta.name.clone()
            } else {
                config.hostname.clone()
            },
            network: Some(network),
            created_at: now_ns(),
            ready: true,
        };
        if let Err(e) = self.put_sandbox(record.clone()).await {
            let _ = self
                .cfg
                .cni
                .teardown(&pod, record.network.as_ref().expect("set"))
                .await;
            return Err(e);
        }
        tracing::info!(sandbox = %id, pod = %meta.name, namespace = %meta.namespace,
            ip = %record.network.as_ref().map(|n| n.ip.as_str()).unwrap_or(""),
            ms = started.elapsed().as_millis() as u64, "VM pod sandbox ready");
        Ok(id)
    }

    #[tracing::instrument(name = "stop_sandbox", skip_all, fields(sandbox = %id))]
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), Status> {
        let lock = self.lock(id).await;
        let _guard = lock.lock().await;
        let mut sandbox = self.sandbox(id).await?;
        for cid in self.containers_of(id).await {
            self.stop_locked(&cid, 0).await?;
        }
        if let Some(net) = &sandbox.network {
            let pod = PodRef {
                sandbox_id: id,
                name: &sandbox.name,
                namespace: &sandbox.namespace,
                uid: &sandbox.uid,
            };
            self.cfg
                .cni
                .teardown(&pod, net)
                .await
                .map_err(|e| Status::internal(format!("tearing down the pod network: {e:#}")))?;
        }
        sandbox.network = None;
        sandbox.ready = false;
        self.put_sandbox(sandbox).await
    }

    #[tracing::instrument(name = "remove_sandbox", skip_all, fields(sandbox = %id))]
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), Status> {
        if !self.owns_sandbox(id).await {
            return Ok(());
        }
        self.stop_sandbox(id).await?;
        let lock = self.lock(id).await;
        {
            let _guard = lock.lock().await;
            for cid in self.containers_of(id).await {
                self.remove_locked(&cid).await?;
            }
            self.store
                .delete_sandbox(id)
                .await
                .map_err(|e| internal("deleting sandbox record", e))?;
            self.sandboxes.write().await.remove(id);
        }
        self.locks.lock().await.remove(id);
        tracing::info!(sandbox = %id, "VM pod sandbox removed");
        Ok(())
    }

    async fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        self.containers
            .read()
            .await
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }

    pub async fn sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        let s = self.sandbox(id).await?;
        let mut info = HashMap::new();
        if verbose {
            let domains: Vec<String> = self
                .containers_of(id)
                .await
                .iter()
                .map(|c| domain_name(c))
                .collect();
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "runtimeHandler": HANDLER,
                    "netns": s.network.as_ref().map(|n| network::netns_path(&n.netns)),
                    "domains": domains,
                    "accel": self.accel().domain_type(),
                })
                .to_string(),
            );
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri_view::sandbox_status(&s)),
            info,
            ..Default::default()
        })
    }

    pub async fn list_sandboxes(
        &self,
        filter: Option<&cri::PodSandboxFilter>,
    ) -> Vec<cri::PodSandbox> {
        self.sandboxes
            .read()
            .await
            .values()
            .filter(|s| cri_view::sandbox_matches(s, filter))
            .map(cri_view::sandbox)
            .collect()
    }

    // ---- containers ----

    #[tracing::instrument(name = "create_container", skip_all, fields(sandbox = %sandbox_id))]
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, Status> {
        let lock = self.lock(sandbox_id).await;
        let _guard = lock.lock().await;
        let sandbox = self.sandbox(sandbox_id).await?;
        if !sandbox.ready {
            return Err(Status::failed_precondition(format!(
                "VM pod sandbox {sandbox_id} is not ready"
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("container config has no metadata"))?;
        self.check_no_other_container(sandbox_id, &meta.name)
            .await?;
        let (reference, image) = self.pulled_image(&config).await?;
        let wanted = Wanted::from_resources(
            config.linux.as_ref().and_then(|l| l.resources.as_ref()),
            &self.cfg.sizes,
        );
        let mut annotations = sandbox.annotations.clone();
        annotations.extend(config.annotations.clone());
        let shape = VmShape::new(wanted, &annotations, &self.cfg.sizes)?;
        let (user_data, public_keys) = guest_inputs(&annotations)?;
        let network = sandbox
            .network
            .clone()
            .ok_or_else(|| Status::failed_precondition("VM pod sandbox has no network"))?;

        let id = new_id();
        let dir = self.cfg.state_dir.join("vms").join(&id);
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: reference.clone(),
            image_id: image.id.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            log_path: log_path(&sandbox.log_directory, &config.log_path),
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            phase: Phase::Created,
            reason: String::new(),
            message: String::new(),
            shape,
            dir: dir.clone(),
            tap: tap_name(&id),
            powered_off: false,
            // The VM boots running: a later `powerSpec: Shutdown` is a change.
            power_spec_applied: arktos_crds::vm::shape::POWER_RUNNING.into(),
            extra_nics: Vec::new(),
            data_disks: Vec::new(),
        };
        let seed = Seed {
            instance_id: &id,
            hostname: &sandbox.hostname,
            public_keys,
            user_data,
            network: Some(&network),
        };
        if let Err(e) = self.prepare(&record, &image, &seed, &network.mac).await {
            let _ = self.libvirt.undefine(&domain_name(&id)).await;
            let _ = remove_all(&dir).await;
            return Err(e);
        }
        self.put_container(record).await?;
        tracing::info!(container = %id, sandbox = %sandbox_id, image = %reference,
            vcpus = shape.vcpus, memory_mib = shape.memory_mib, "VM container created");
        Ok(id)
    }

    /// The image a container config names, as this node pulled it.
    async fn pulled_image(
        &self,
        config: &cri::ContainerConfig,
    ) -> Result<(String, CachedImage), Status> {
        let reference = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self.images.find(&reference).await.ok_or_else(|| {
            Status::not_found(format!("VM image {reference:?} is not pulled on this node"))
        })?;
        Ok((reference, image))
    }

    /// A VM pod holds exactly one container that has not exited.
    async fn check_no_other_container(&self, sandbox_id: &str, name: &str) -> Result<(), Status> {
        let busy: Vec<String> = self
            .containers
            .read()
            .await
            .values()
            .filter(|c| c.sandbox_id == sandbox_id && c.phase != Phase::Exited)
            .map(|c| c.name.clone())
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "a VM pod holds exactly one container: sandbox {sandbox_id} already has {} (not exited), cannot add {name}",
            busy.join(", "),
        )))
    }

    /// Disk overlay, seed, log directory and the domain definition.
    async fn prepare(
        &self,
        c: &ContainerRecord,
        image: &CachedImage,
        seed: &Seed<'_>,
        mac: &str,
    ) -> Result<(), Status> {
        tokio::fs::create_dir_all(&c.dir)
            .await
            .map_err(|e| internal("creating VM directory", e))?;
        let disk = c.dir.join("disk.qcow2");
        let base = self.images.path_of(image);
        let out = tokio::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", &image.format, "-b"])
            .arg(&base)
            .arg(&disk)
            .output()
            .await
            .map_err(|e| internal("qemu-img", e))?;
        if !out.status.success() {
            return Err(internal(
                "creating the VM's disk overlay",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        let iso = c.dir.join("seed.iso");
        seed.write(&c.dir, &iso)
            .await
            .map_err(|e| internal("writing the cloud-init seed", format!("{e:#}")))?;
        if let Some(parent) = Path::new(&c.log_path).parent()
            && !c.log_path.is_empty()
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| internal("creating the log directory", e))?;
        }
        self.libvirt
            .define(self.domain_spec(c, mac).to_xml())
            .await?;
        Ok(())
    }

    fn domain_spec(&self, c: &ContainerRecord, mac: &str) -> DomainSpec {
        DomainSpec {
            container_id: c.id.clone(),
            sandbox_id: c.sandbox_id.clone(),
            accel: self.accel(),
            shape: c.shape,
            disk: c.dir.join("disk.qcow2"),
            seed: c.dir.join("seed.iso"),
            tap: c.tap.clone(),
            mac: mac.to_string(),
            console: c.dir.join("console.raw"),
        }
    }

    async fn boot(&self, name: &str, tap: &str, netns: &str) -> Result<(), Status> {
        network::create_tap(tap)
            .await
            .map_err(|e| internal("creating the VM's tap", format!("{e:#}")))?;
        self.libvirt.start(name).await?;
        network::plug_tap(tap, netns)
            .await
            .map_err(|e| internal("wiring the VM into the pod network", format!("{e:#}")))?;
        Ok(())
    }

    /// The first guest under unproven KVM: if QEMU cannot start it ("failed
    /// to set MSR") or it stops within KVM_PROOF (KVM internal error, the
    /// domain pauses), KVM is unusable here.
    async fn prove_kvm(&self, c: &ContainerRecord, mac: &str, netns: &str) -> Result<(), Status> {
        let name = domain_name(&c.id);
        let deadline = Instant::now() + KVM_PROOF;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if !self.libvirt.facts(&name).await?.is_some_and(|f| f.running) {
                tracing::warn!(container = %c.id, "the guest stopped under KVM");
                return self.fall_back_to_tcg(c, mac, netns).await;
            }
        }
        // Another guest may have found KVM unusable meanwhile: TCG stays.
        if self.accel_unproven() {
            tracing::info!("a guest ran under KVM: KVM is usable on this node");
            self.settle_accel(Accel::Kvm);
        }
        Ok(())
    }

    /// Switches the node to QEMU TCG for good and boots the guest again.
    async fn fall_back_to_tcg(
        &self,
        c: &ContainerRecord,
        mac: &str,
        netns: &str,
    ) -> Result<(), Status> {
        tracing::warn!("KVM is unusable on this node: VMs run under QEMU TCG from now on");
        let name = domain_name(&c.id);
        // Undefined first: a new definition of the name needs a new UUID.
        self.libvirt.undefine(&name).await?;
        network::remove_tap(&c.tap, netns).await;
        self.settle_accel(Accel::Tcg);
        self.libvirt
            .define(self.domain_spec(c, mac).to_xml())
            .await?;
        self.boot(&name, &c.tap, netns).await
    }

    #[tracing::instrument(name = "start_container", skip_all, fields(container = %id))]
    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let c = self.container(id).await?;
        let lock = self.lock(&c.sandbox_id).await;
        let _guard = lock.lock().await;
        let mut c = self.container(id).await?;
        if c.phase != Phase::Created {
            return Err(Status::failed_precondition(format!(
                "VM container {id} is {:?}, only a created container can start",
                c.phase
            )));
        }
        let sandbox = self.sandbox(&c.sandbox_id).await?;
        let (netns, mac) = sandbox
            .network
            .as_ref()
            .map(|n| (n.netns.clone(), n.mac.clone()))
            .ok_or_else(|| Status::failed_precondition("VM pod sandbox has no network"))?;
        let started = Instant::now();
        let name = domain_name(id);
        // Guests created together all start under unproven KVM; the first
        // to fail settles the node on TCG, and the others must follow it
        // rather than fail for good.
        let mut under_kvm = self
            .libvirt
            .domain_xml(&name)
            .await
            .is_ok_and(|xml| xml.starts_with("<domain type='kvm'"));
        if under_kvm && self.accel() == Accel::Tcg {
            self.libvirt.undefine(&name).await?;
            self.libvirt
                .define(self.domain_spec(&c, &mac).to_xml())
                .await?;
            under_kvm = false;
        }
        let result = match self.boot(&name, &c.tap, &netns).await {
            Err(e) if under_kvm && !self.kvm_proven() => {
                tracing::warn!(container = %id, error = %e.message(), "the guest did not start under KVM");
                self.fall_back_to_tcg(&c, &mac, &netns).await
            }
            Err(e) => Err(e),
            Ok(()) if under_kvm && !self.kvm_proven() => self.prove_kvm(&c, &mac, &netns).await,
            Ok(()) => Ok(()),
        };
        if let Err(e) = result {
            let _ = self.libvirt.destroy(&name).await;
            network::remove_tap(&c.tap, &netns).await;
            // As containerd does: a container that failed to start has
            // exited, so the kubelet's next attempt can create another.
            c.phase = Phase::Exited;
            c.finished_at = now_ns();
            c.exit_code = 128;
            c.reason = "StartError".into();
            c.message = e.message().to_string();
            self.put_container(c).await?;
            return Err(e);
        }
        c.phase = Phase::Running;
        c.started_at = now_ns();
        self.put_container(c).await?;
        self.follow_console(id).await;
        tracing::info!(container = %id, ms = started.elapsed().as_millis() as u64, "VM started");
        Ok(())
    }

    async fn follow_console(&self, id: &str) {
        let Ok(c) = self.container(id).await else {
            return;
        };
        if c.log_path.is_empty() {
            return;
        }
        let handle = ConsoleLog {
            raw: c.dir.join("console.raw"),
            log: PathBuf::from(&c.log_path),
        }
        .follow();
        if let Some(old) = self.tailers.lock().await.insert(id.to_string(), handle) {
            old.abort();
        }
    }

    async fn unfollow_console(&self, c: &ContainerRecord) {
        if let Some(handle) = self.tailers.lock().await.remove(&c.id) {
            handle.abort();
            // What the guest printed last still reaches the log.
            if !c.log_path.is_empty() {
                let log = ConsoleLog {
                    raw: c.dir.join("console.raw"),
                    log: PathBuf::from(&c.log_path),
                };
                let mut offset = tokio::fs::read_to_string(c.dir.join("console.offset"))
                    .await
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                let _ = log.pump(&mut offset, &mut Vec::new()).await;
            }
        }
    }

    #[tracing::instrument(name = "stop_container", skip_all, fields(container = %id))]
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), Status> {
        let c = self.container(id).await?;
        let lock = self.lock(&c.sandbox_id).await;
        let _guard = lock.lock().await;
        self.stop_locked(id, timeout_secs).await
    }

    async fn stop_locked(&self, id: &str, timeout_secs: i64) -> Result<(), Status> {
        self.refresh_locked(id).await;
        let mut c = self.container(id).await?;
        if c.phase != Phase::Running {
            return Ok(());
        }
        c.powered_off = false;
        let name = domain_name(id);
        let grace = Duration::from_secs(timeout_secs.max(0) as u64).min(self.cfg.stop_grace_cap);
        let powered_off = self.power_off_domain(&name, grace).await?;
        if let Some(net) = self
            .sandbox(&c.sandbox_id)
            .await
            .ok()
            .and_then(|s| s.network)
        {
            self.remove_taps(&c, &net.netns).await;
        } else {
            self.remove_taps(&c, "").await;
        }
        self.unfollow_console(&c).await;
        c.phase = Phase::Exited;
        c.finished_at = now_ns();
        (c.exit_code, c.reason) = if powered_off {
            (0, "Completed".to_string())
        } else {
            (137, "Killed".to_string())
        };
        tracing::info!(container = %id, graceful = powered_off, "VM stopped");
        self.put_container(c).await
    }

    /// Presses the ACPI power button and waits up to `grace` for the guest
    /// to power off, then pulls the plug; true when the guest went itself.
    async fn power_off_domain(&self, name: &str, grace: Duration) -> Result<bool, Status> {
        if !grace.is_zero() && self.libvirt.shutdown(name).await? {
            // tokio's clock, so that tests can let the grace pass at once.
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                if !self.libvirt.facts(name).await?.is_some_and(|f| f.active) {
                    return Ok(true);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.libvirt.destroy(name).await?;
        Ok(false)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let Ok(c) = self.container(id).await else {
            return Ok(());
        };
        let lock = self.lock(&c.sandbox_id).await;
        let _guard = lock.lock().await;
        self.remove_locked(id).await
    }

    async fn remove_locked(&self, id: &str) -> Result<(), Status> {
        let Ok(c) = self.container(id).await else {
            return Ok(());
        };
        self.libvirt.undefine(&domain_name(id)).await?;
        self.observed.lock().expect("observed lock").remove(id);
        if let Some(net) = self
            .sandbox(&c.sandbox_id)
            .await
            .ok()
            .and_then(|s| s.network)
        {
            self.remove_taps(&c, &net.netns).await;
        } else {
            self.remove_taps(&c, "").await;
        }
        self.unfollow_console(&c).await;
        remove_all(&c.dir)
            .await
            .map_err(|e| internal("removing the VM's files", e))?;
        self.store
            .delete_container(id)
            .await
            .map_err(|e| internal("deleting container record", e))?;
        self.containers.write().await.remove(id);
        tracing::info!(container = %id, "VM container removed");
        Ok(())
    }

    /// Brings a running container's record in line with its domain: a guest
    /// that powered itself off, or a domain that vanished, has exited.
    async fn refresh(&self, id: &str) {
        let Ok(c) = self.container(id).await else {
            return;
        };
        if c.phase != Phase::Running || c.powered_off {
            return;
        }
        // Under the VM's lock, with the record read again: an operation
        // powering the VM off holds the lock, and a record read before it
        // began, written back after, would mark a VM stopped on purpose as
        // exited (the kubelet then replaces the container). Busy: skip.
        let lock = self.lock(&c.sandbox_id).await;
        let Ok(_guard) = lock.try_lock() else {
            return;
        };
        self.refresh_locked(id).await;
    }

    /// [`Self::refresh`] for a caller holding the VM's lock.
    async fn refresh_locked(&self, id: &str) {
        let Ok(mut c) = self.container(id).await else {
            return;
        };
        if c.phase != Phase::Running
            || c.powered_off
            || self.operating.lock().expect("operating").contains(id)
        {
            return;
        }
        let facts = match self.libvirt.facts(&domain_name(id)).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot ask libvirt about a VM");
                return;
            }
        };
        {
            let mut observed = self.observed.lock().expect("observed lock");
            match facts {
                Some(f) if f.active => observed.insert(id.to_string(), f),
                _ => observed.remove(id),
            };
        }
        let (code, reason, message) = match facts {
            Some(f) if f.active => return,
            Some(_) => (0, "Completed", "the guest powered off"),
            None => (255, "Error", "the VM's libvirt domain is gone"),
        };
        c.phase = Phase::Exited;
        c.finished_at = now_ns();
        c.exit_code = code;
        c.reason = reason.to_string();
        c.message = message.to_string();
        self.unfollow_console(&c).await;
        let _ = self.put_container(c).await;
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        let mut c = self.container(id).await?;
        // What the VM has now, not what was asked: a vCPU the guest has not
        // released yet, a balloon still on its way.
        if c.phase == Phase::Running
            && let Some(f) = self.observed(id)
        {
            c.shape.vcpus = f.vcpus;
        }
        let mut info = HashMap::new();
        if verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "domain": domain_name(id),
                    "accel": self.accel().domain_type(),
                    "disk": c.dir.join("disk.qcow2"),
                    "shape": c.shape,
                })
                .to_string(),
            );
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(cri_view::container_status(&c)),
            info,
        })
    }

    pub async fn list_containers(
        &self,
        filter: Option<&cri::ContainerFilter>,
    ) -> Vec<cri::Container> {
        self.containers
            .read()
            .await
            .values()
            .filter(|c| cri_view::container_matches(c, filter))
            .map(cri_view::container)
            .collect()
    }

    /// Live vCPU and memory change of a running (or created) VM.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<&cri::LinuxContainerResources>,
    ) -> Result<(), Status> {
        let c = self.container(id).await?;
        let lock = self.lock(&c.sandbox_id).await;
        let _guard = lock.lock().await;
        let mut c = self.container(id).await?;
        if c.phase == Phase::Exited {
            return Err(Status::failed_precondition(format!(
                "VM container {id} has exited"
            )));
        }
        let wanted = Wanted::from_resources(resources, &self.cfg.sizes);
        let shape = c.shape.resized(wanted, &self.cfg.sizes)?;
        let name = domain_name(id);
        match self
            .libvirt
            .resize(&name, shape.vcpus, shape.memory_mib)
            .await
        {
            Ok(()) => {}
            Err(LibvirtError::VcpuUnplugPending(_)) => {
                // The definition has the new count; the running guest keeps
                // the vCPU until it releases it (status reports what it has).
                self.libvirt.define_vcpus(&name, shape.vcpus).await?;
                if let Err(e) = self.await_vcpus(&name, shape.vcpus).await {
                    tracing::warn!(container = %id, error = %e.message(), "vCPU removal pending in the guest");
                }
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(container = %id, vcpus = shape.vcpus, memory_mib = shape.memory_mib, "VM resized");
        c.shape = shape;
        self.put_container(c).await
    }

    /// Waits for a guest to release unplugged vCPUs (a slow TCG guest
    /// answers the ACPI eject after libvirt stopped waiting).
    async fn await_vcpus(&self, name: &str, vcpus: u32) -> Result<(), Status> {
        let deadline = Instant::now() + VCPU_UNPLUG_WAIT;
        while Instant::now() < deadline {
            if self
                .libvirt
                .facts(name)
                .await?
                .is_some_and(|f| f.vcpus <= vcpus)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Status::deadline_exceeded(format!(
            "the guest did not release vCPUs down to {vcpus} within {}s (it must support ACPI CPU hot-unplug)",
            VCPU_UNPLUG_WAIT.as_secs()
        )))
    }

    pub async fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, Status> {
        let c = self.container(id).await?;
        let facts = self.observed(id).filter(|_| c.phase == Phase::Running);
        let disk = tokio::fs::metadata(c.dir.join("disk.qcow2"))
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(cri_view::container_stats(
            &c,
            facts,
            disk,
            &self.cfg.state_dir,
        ))
    }

    pub async fn list_stats(
        &self,
        filter: Option<&cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let ids: Vec<String> = self
            .containers
            .read()
            .await
            .values()
            .filter(|c| cri_view::stats_matches(c, filter))
            .map(|c| c.id.clone())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(s) = self.container_stats(&id).await {
                out.push(s);
            }
        }
        out
    }

    pub async fn sandbox_stats(&self, id: &str) -> Result<cri::PodSandboxStats, Status> {
        let s = self.sandbox(id).await?;
        let mut containers = Vec::new();
        for cid in self.containers_of(id).await {
            if let Ok(st) = self.container_stats(&cid).await {
                containers.push(st);
            }
        }
        Ok(cri_view::sandbox_stats(&s, containers))
    }

    /// Containers whose disk is built on a cached image.
    pub async fn users_of_image(&self, image_id: &str) -> Vec<String> {
        self.containers
            .read()
            .await
            .values()
            .filter(|c| c.image_id == image_id)
            .map(|c| c.id.clone())
            .collect()
    }

    pub async fn remove_image(&self, reference: &str) -> Result<(), Status> {
        let Some(image) = self.images.find(reference).await else {
            return Ok(());
        };
        let users = self.users_of_image(&image.id).await;
        Ok(self.images.remove(reference, &users).await?)
    }
}

/// Where the CRI log of a container goes (none when the sandbox has no log
/// directory).
fn log_path(directory: &str, relative: &str) -> String {
    if directory.is_empty() || relative.is_empty() {
        return String::new();
    }
    Path::new(directory).join(relative).display().to_string()
}

/// The user data (base64 in its annotation) and the SSH public keys (one
/// per line) the guest's seed carries.
fn guest_inputs(
    annotations: &HashMap<String, String>,
) -> Result<(Option<Vec<u8>>, Vec<String>), Status> {
    let user_data = match annotations.get(USER_DATA_ANNOTATION) {
        None => None,
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "annotation {USER_DATA_ANNOTATION} is not base64: {e}"
                    ))
                })?,
        ),
    };
    let public_keys = annotations
        .get(PUBLIC_KEY_ANNOTATION)
        .map(|k| {
            k.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok((user_data, public_keys))
}

#[cfg(test)]
mod tests;
