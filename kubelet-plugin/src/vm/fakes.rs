//! Fakes of what the VM runtime drives, for unit tests of its orchestration
//! (no libvirt, no QEMU, no host links): a hypervisor of domains that are
//! only flags, and taps that are only names. Every call is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use arktos_crds::vm::shape::POWER_RUNNING;

use super::cri_view::now_ns;
use super::domain::Accel;
use super::hypervisor::Hypervisor;
use super::images::ImageCache;
use super::libvirt::{DomainFacts, LibvirtError};
use super::network::{Cni, PodNetwork, tap_name};
use super::records::{ContainerRecord, Phase, SandboxRecord};
use super::shape::{SizePolicy, VmShape};
use super::taps::Taps;
use super::translate::Translations;
use super::{VmConfig, VmRuntime};
use crate::ids::new_id;

/// How the fake answers `ping`.
#[derive(Clone)]
pub enum Ping {
    Answers,
    Hangs,
    Refuses(String),
}

/// Domains by name with whether they run, and their snapshots.
pub struct FakeHypervisor {
    ping: Ping,
    /// A guest that ignores the ACPI power button.
    pub ignores_power_button: bool,
    /// When set, a snapshot revert waits for a permit: a test holds an
    /// operation midway with it.
    pub revert_gate: Option<Arc<Semaphore>>,
    domains: Mutex<HashMap<String, bool>>,
    /// Snapshot names with whether they hold memory.
    snapshots: Mutex<Vec<(String, bool)>>,
    /// The device XML plugged into each domain.
    devices: Mutex<HashMap<String, Vec<String>>>,
    calls: Mutex<Vec<String>>,
}

impl FakeHypervisor {
    pub fn new(ping: Ping) -> Self {
        Self {
            ping,
            ignores_power_button: false,
            revert_gate: None,
            domains: Mutex::default(),
            snapshots: Mutex::default(),
            devices: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    pub fn running(self, name: &str) -> Self {
        self.set(name, true);
        self
    }

    pub fn with_snapshot(self, snapshot: &str, memory: bool) -> Self {
        self.snapshots
            .lock()
            .unwrap()
            .push((snapshot.into(), memory));
        self
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until call `call` was made (another task makes it).
    pub async fn called(&self, call: &str) {
        while !self.calls().iter().any(|c| c == call) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn set(&self, name: &str, active: bool) {
        self.domains.lock().unwrap().insert(name.into(), active);
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.domains.lock().unwrap().get(name) == Some(&true)
    }
}

impl Hypervisor for FakeHypervisor {
    async fn ping(&self) -> Result<String, LibvirtError> {
        match self.ping.clone() {
            Ping::Answers => Ok("fake 1.0".into()),
            Ping::Hangs => std::future::pending().await,
            Ping::Refuses(reason) => Err(LibvirtError::Unreachable {
                uri: "fake:///".into(),
                reason,
            }),
        }
    }
    async fn define(&self, _xml: String) -> Result<(), LibvirtError> {
        self.record("define".into());
        Ok(())
    }
    async fn start(&self, name: &str) -> Result<(), LibvirtError> {
        self.record(format!("start {name}"));
        self.set(name, true);
        Ok(())
    }
    async fn shutdown(&self, name: &str) -> Result<bool, LibvirtError> {
        self.record(format!("shutdown {name}"));
        let running = self.is_active(name);
        if running && !self.ignores_power_button {
            self.set(name, false);
        }
        Ok(running)
    }
    async fn destroy(&self, name: &str) -> Result<(), LibvirtError> {
        self.record(format!("destroy {name}"));
        self.set(name, false);
        Ok(())
    }
    async fn undefine(&self, name: &str) -> Result<(), LibvirtError> {
        self.record(format!("undefine {name}"));
        self.domains.lock().unwrap().remove(name);
        Ok(())
    }
    async fn facts(&self, name: &str) -> Result<Option<DomainFacts>, LibvirtError> {
        Ok(self
            .domains
            .lock()
            .unwrap()
            .get(name)
            .map(|&active| DomainFacts {
                active,
                running: active,
                vcpus: 1,
                memory_kib: 262_144,
                max_memory_kib: 262_144,
                used_kib: None,
                cpu_time_ns: 0,
            }))
    }
    async fn resize(&self, name: &str, vcpus: u32, memory_mib: u64) -> Result<(), LibvirtError> {
        self.record(format!("resize {name} {vcpus} {memory_mib}"));
        Ok(())
    }
    async fn define_vcpus(&self, name: &str, vcpus: u32) -> Result<(), LibvirtError> {
        self.record(format!("define_vcpus {name} {vcpus}"));
        Ok(())
    }
    async fn reset(&self, name: &str) -> Result<(), LibvirtError> {
        self.record(format!("reset {name}"));
        Ok(())
    }
    async fn snapshots(&self, _name: &str) -> Result<Vec<(String, bool)>, LibvirtError> {
        Ok(self.snapshots.lock().unwrap().clone())
    }
    async fn create_snapshot(&self, name: &str, snapshot: &str) -> Result<(), LibvirtError> {
        self.record(format!("snapshot {name} {snapshot}"));
        let memory = self.is_active(name);
        self.snapshots
            .lock()
            .unwrap()
            .push((snapshot.into(), memory));
        Ok(())
    }
    async fn revert_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        running: bool,
    ) -> Result<(), LibvirtError> {
        self.record(format!("revert {name} {snapshot}"));
        if let Some(gate) = &self.revert_gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.set(name, running);
        Ok(())
    }
    async fn attach(&self, name: &str, xml: String) -> Result<(), LibvirtError> {
        self.record(format!("attach {name}"));
        let mut devices = self.devices.lock().unwrap();
        devices.entry(name.into()).or_default().push(xml);
        Ok(())
    }
    async fn detach(&self, name: &str, xml: String) -> Result<(), LibvirtError> {
        self.record(format!("detach {name}"));
        if let Some(plugged) = self.devices.lock().unwrap().get_mut(name) {
            plugged.retain(|d| *d != xml);
        }
        Ok(())
    }
    async fn domain_xml(&self, name: &str) -> Result<String, LibvirtError> {
        let devices = self.devices.lock().unwrap();
        let plugged = devices.get(name).map(|d| d.concat()).unwrap_or_default();
        Ok(format!(
            "<domain type='qemu'><devices>{plugged}</devices></domain>"
        ))
    }
    async fn ours(&self) -> Result<Vec<(String, bool)>, LibvirtError> {
        Ok(self
            .domains
            .lock()
            .unwrap()
            .iter()
            .map(|(name, active)| (name.clone(), *active))
            .collect())
    }
}

/// Taps as names: where each is (`host` or its namespace).
#[derive(Default)]
pub struct FakeTaps {
    taps: Mutex<HashMap<String, String>>,
}

impl FakeTaps {
    /// Where tap `tap` is, if it exists.
    pub fn place(&self, tap: &str) -> Option<String> {
        self.taps.lock().unwrap().get(tap).cloned()
    }
}

impl Taps for FakeTaps {
    async fn create(&self, tap: &str) -> anyhow::Result<()> {
        self.taps.lock().unwrap().insert(tap.into(), "host".into());
        Ok(())
    }
    async fn plug(&self, tap: &str, netns: &str) -> anyhow::Result<()> {
        self.park(tap, netns).await
    }
    async fn park(&self, tap: &str, netns: &str) -> anyhow::Result<()> {
        let mut taps = self.taps.lock().unwrap();
        let place = taps
            .get_mut(tap)
            .ok_or_else(|| anyhow::anyhow!("no tap {tap}"))?;
        *place = netns.into();
        Ok(())
    }
    async fn remove(&self, tap: &str, _netns: &str) {
        self.taps.lock().unwrap().remove(tap);
    }
    async fn remove_extra(&self, tap: &str, _netns: &str) {
        self.taps.lock().unwrap().remove(tap);
    }
}

pub type FakeRuntime = VmRuntime<FakeHypervisor, FakeTaps>;

impl FakeRuntime {
    /// The fake the runtime drives.
    pub fn hypervisor(&self) -> &FakeHypervisor {
        &self.libvirt
    }
}

/// A runtime over `hypervisor` and fake taps, its state in a fresh
/// directory.
pub async fn runtime(hypervisor: FakeHypervisor) -> Arc<FakeRuntime> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("arktos-vm-test-{}", new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    // As QEMU needs it (checked at open).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let images = ImageCache::open(&dir.join("images"), Translations::default()).unwrap();
    let cfg = VmConfig {
        state_dir: dir.clone(),
        libvirt_uri: "fake:///".into(),
        accel: Accel::Tcg,
        accel_forced: true,
        sizes: SizePolicy {
            default_memory_mib: 256,
            min_memory_mib: 64,
            max_vcpus: 4,
            max_memory_mib: 4096,
        },
        cni: Cni {
            conf_dir: dir.join("cni"),
            bin_dirs: vec![],
            netns_prefix: "arktos-test-".into(),
        },
        stop_grace_cap: Duration::from_secs(30),
    };
    VmRuntime::open_with(hypervisor, FakeTaps::default(), cfg, images)
        .await
        .unwrap()
}

/// A VM pod as the runtime records it once started: sandbox `s-<id>` with
/// its network, and running container `id`.
pub async fn vm_pod(rt: &FakeRuntime, id: &str) {
    let sandbox_id = format!("s-{id}");
    let mut vm = rt.vms.hold(&sandbox_id).await;
    vm.put_sandbox(SandboxRecord {
        id: sandbox_id.clone(),
        name: format!("pod-{id}"),
        uid: format!("uid-{id}"),
        namespace: "default".into(),
        attempt: 0,
        labels: HashMap::new(),
        annotations: HashMap::new(),
        log_directory: String::new(),
        hostname: id.into(),
        network: Some(pod_network(&format!("ns-{id}"))),
        created_at: now_ns(),
        ready: true,
    })
    .await
    .unwrap();
    vm.put_container(ContainerRecord {
        id: id.into(),
        sandbox_id,
        name: "vm".into(),
        attempt: 0,
        image: "vm.test/guest.qcow2".into(),
        image_id: "sha256:0".into(),
        labels: HashMap::new(),
        annotations: HashMap::new(),
        log_path: String::new(),
        created_at: now_ns(),
        started_at: now_ns(),
        finished_at: 0,
        exit_code: 0,
        phase: Phase::Running,
        reason: String::new(),
        message: String::new(),
        shape: VmShape {
            vcpus: 1,
            max_vcpus: 2,
            memory_mib: 256,
            max_memory_mib: 512,
        },
        dir: rt.cfg.state_dir.join("vms").join(id),
        tap: tap_name(id),
        powered_off: false,
        power_spec_applied: POWER_RUNNING.into(),
        extra_nics: Vec::new(),
        data_disks: Vec::new(),
    })
    .await
    .unwrap();
}

/// The pod network a fake sandbox has.
pub fn pod_network(netns: &str) -> PodNetwork {
    PodNetwork {
        netns: netns.into(),
        ip: "10.88.0.9".into(),
        prefix: 16,
        gateway: Some("10.88.0.1".into()),
        mac: "52:54:00:00:00:09".into(),
        conflist: serde_json::Value::Null,
        result: serde_json::Value::Null,
    }
}
