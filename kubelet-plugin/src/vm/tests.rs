//! The VM runtime's orchestration against a fake hypervisor: what it does
//! when the hypervisor is slow, unreachable, or a guest will not power off.
//! (No libvirt, no QEMU: what libvirt itself does is the e2e suite's.)

use std::collections::HashMap;
use std::sync::Mutex;

use super::hypervisor::Hypervisor;
use super::libvirt::{DomainFacts, LibvirtError};
use super::translate::Translations;
use super::*;

/// How the fake answers `ping`.
#[derive(Clone)]
enum Ping {
    Answers,
    Hangs,
    Refuses(String),
}

/// Domains by name with whether they run; every call recorded.
struct FakeHypervisor {
    ping: Ping,
    /// A guest that ignores the ACPI power button.
    ignores_power_button: bool,
    domains: Mutex<HashMap<String, bool>>,
    calls: Mutex<Vec<String>>,
}

impl FakeHypervisor {
    fn new(ping: Ping) -> Self {
        Self {
            ping,
            ignores_power_button: false,
            domains: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    fn running(self, name: &str) -> Self {
        self.domains.lock().unwrap().insert(name.into(), true);
        self
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn set(&self, name: &str, active: bool) {
        self.domains.lock().unwrap().insert(name.into(), active);
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
        let running = self.domains.lock().unwrap().get(name).copied() == Some(true);
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
        Ok(Vec::new())
    }
    async fn create_snapshot(&self, name: &str, snapshot: &str) -> Result<(), LibvirtError> {
        self.record(format!("snapshot {name} {snapshot}"));
        Ok(())
    }
    async fn revert_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        _running: bool,
    ) -> Result<(), LibvirtError> {
        self.record(format!("revert {name} {snapshot}"));
        Ok(())
    }
    async fn attach(&self, name: &str, _xml: String) -> Result<(), LibvirtError> {
        self.record(format!("attach {name}"));
        Ok(())
    }
    async fn detach(&self, name: &str, _xml: String) -> Result<(), LibvirtError> {
        self.record(format!("detach {name}"));
        Ok(())
    }
    async fn domain_xml(&self, _name: &str) -> Result<String, LibvirtError> {
        Ok(String::new())
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

/// A runtime over `hypervisor` with its state in a fresh directory.
async fn runtime(hypervisor: FakeHypervisor) -> Arc<VmRuntime<FakeHypervisor>> {
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
    VmRuntime::open_with(hypervisor, cfg, images).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hypervisor_that_does_not_answer_shows_as_slow_and_health_still_answers_at_once() {
    let rt = runtime(FakeHypervisor::new(Ping::Hangs)).await;
    assert!(rt.libvirt_health().answer.is_err(), "not asked yet");
    rt.check_libvirt_and_vms().await;
    let health = rt.libvirt_health();
    let reason = health.answer.expect_err("a hung hypervisor is not ready");
    assert!(reason.contains("did not answer within 5s"), "{reason}");
    assert!(health.checked_at.is_some());
}

#[tokio::test]
async fn an_unreachable_hypervisor_is_reported_with_its_reason() {
    let rt = runtime(FakeHypervisor::new(Ping::Refuses("socket gone".into()))).await;
    rt.check_libvirt_and_vms().await;
    let reason = rt.libvirt_health().answer.expect_err("unreachable");
    assert!(reason.contains("socket gone"), "{reason}");
}

#[tokio::test]
async fn a_hypervisor_that_answers_is_ready() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    rt.check_libvirt_and_vms().await;
    assert_eq!(rt.libvirt_health().answer.as_deref(), Ok("fake 1.0"));
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_ignores_the_power_button_is_destroyed_after_the_grace() {
    let mut fake = FakeHypervisor::new(Ping::Answers).running("arktos-x");
    fake.ignores_power_button = true;
    let rt = runtime(fake).await;
    let graceful = rt
        .power_off_domain("arktos-x", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!graceful);
    assert_eq!(
        rt.libvirt.calls(),
        ["shutdown arktos-x", "destroy arktos-x"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_powers_off_in_time_is_not_destroyed() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running("arktos-y")).await;
    let graceful = rt
        .power_off_domain("arktos-y", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(graceful);
    assert_eq!(rt.libvirt.calls(), ["shutdown arktos-y"]);
}

#[tokio::test(start_paused = true)]
async fn no_grace_destroys_at_once() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running("arktos-z")).await;
    let graceful = rt
        .power_off_domain("arktos-z", Duration::ZERO)
        .await
        .unwrap();
    assert!(!graceful);
    assert_eq!(rt.libvirt.calls(), ["destroy arktos-z"]);
}

/// A running VM container `id` of sandbox `s-<id>`, as the runtime records it.
async fn running_container(rt: &VmRuntime<FakeHypervisor>, id: &str) {
    let record = ContainerRecord {
        id: id.into(),
        sandbox_id: format!("s-{id}"),
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
        power_spec_applied: arktos_crds::vm::shape::POWER_RUNNING.into(),
        extra_nics: Vec::new(),
        data_disks: Vec::new(),
    };
    rt.put_container(record).await.unwrap();
}

#[tokio::test]
async fn a_guest_that_powered_itself_off_is_an_exited_container() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    running_container(&rt, "c1").await;
    rt.libvirt.set(&domain_name("c1"), false);
    rt.check_libvirt_and_vms().await;
    let c = rt.container("c1").await.unwrap();
    assert_eq!((c.phase, c.reason.as_str()), (Phase::Exited, "Completed"));
}

#[tokio::test]
async fn a_vm_whose_domain_is_gone_exited_with_an_error() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    running_container(&rt, "c2").await;
    rt.check_libvirt_and_vms().await;
    let c = rt.container("c2").await.unwrap();
    assert_eq!((c.phase, c.exit_code), (Phase::Exited, 255));
}

/// A race fixed before: the monitor read a VM whose domain an operation
/// (a restore) had stopped for a moment, and wrote it back as exited, so
/// the kubelet replaced the container. While the operation holds the VM,
/// the monitor leaves it alone.
#[tokio::test]
async fn the_monitor_leaves_a_vm_alone_while_an_operation_holds_it() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    running_container(&rt, "c3").await;
    rt.libvirt.set(&domain_name("c3"), false);
    let (held, _) = rt.locked("c3").await.unwrap();
    rt.check_libvirt_and_vms().await;
    assert_eq!(rt.container("c3").await.unwrap().phase, Phase::Running);
    drop(held);
    rt.check_libvirt_and_vms().await;
    assert_eq!(rt.container("c3").await.unwrap().phase, Phase::Exited);
}

/// A VM powered off by an Action or `powerSpec` is still a running
/// container to the kubelet (its pod keeps its node, disk and IP).
#[tokio::test]
async fn a_vm_powered_off_on_purpose_stays_a_running_container() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running(&domain_name("c4"))).await;
    running_container(&rt, "c4").await;
    assert_eq!(rt.libvirt.calls(), Vec::<String>::new());
    // No sandbox network in this test: power off through the record.
    let (held, c) = rt.locked("c4").await.unwrap();
    let graceful = rt
        .power_off_domain(&domain_name(&c.id), Duration::from_secs(1))
        .await
        .unwrap();
    let mut c = c;
    c.powered_off = true;
    rt.put_container(c).await.unwrap();
    drop(held);
    assert!(graceful);
    rt.check_libvirt_and_vms().await;
    let c = rt.container("c4").await.unwrap();
    assert_eq!((c.phase, c.powered_off), (Phase::Running, true));
}
