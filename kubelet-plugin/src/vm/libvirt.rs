//! The libvirt calls arktos-node makes. libvirt's API blocks, so each call
//! runs on the blocking pool with a connection of its own (a restarted
//! libvirtd costs nothing but the next call's connect).

use virt::connect::Connect;
use virt::domain::DomainState;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;

use super::domain::DOMAIN_PREFIX;
use super::hypervisor::Hypervisor;

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("libvirt: {0}")]
    Call(String),
    #[error("the guest of {0} has not released its vCPU yet")]
    VcpuUnplugPending(String),
    #[error("libvirt is not reachable at {uri}: {reason}")]
    Unreachable { uri: String, reason: String },
}

/// What libvirt says of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainFacts {
    pub active: bool,
    /// Running, not paused (a guest KVM cannot run ends up paused).
    pub running: bool,
    pub vcpus: u32,
    pub memory_kib: u64,
    pub max_memory_kib: u64,
    /// Memory the guest uses (given minus what it could give back), from
    /// the balloon's statistics; `None` before the guest reports them.
    pub used_kib: Option<u64>,
    pub cpu_time_ns: u64,
}

#[derive(Clone)]
pub struct Libvirt {
    uri: String,
}

fn is_no_domain(e: &virt::error::Error) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoDomain))
}

fn is_not_running(e: &virt::error::Error) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::OperationInvalid))
}

impl Libvirt {
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
        }
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connect) -> Result<T, virt::error::Error> + Send + 'static,
    ) -> Result<T, LibvirtError> {
        let uri = self.uri.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connect::open(Some(&uri)).map_err(|e| LibvirtError::Unreachable {
                uri: uri.clone(),
                reason: e.message().to_string(),
            })?;
            f(&conn).map_err(|e| LibvirtError::Call(e.message().to_string()))
        })
        .await
        .map_err(|e| LibvirtError::Call(e.to_string()))?
    }
}

impl Hypervisor for Libvirt {
    /// Checks libvirtd answers; the message says why not.
    async fn ping(&self) -> Result<String, LibvirtError> {
        self.with(|c| {
            c.hyp_version()
                .map(|v| format!("QEMU {}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000))
        })
        .await
    }

    async fn define(&self, xml: String) -> Result<(), LibvirtError> {
        self.with(move |c| c.define_domain_xml(&xml).map(|_| ()))
            .await
    }

    async fn start(&self, name: &str) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| c.lookup_domain_by_name(&name)?.create().map(|_| ()))
            .await
    }

    /// Presses the ACPI power button; false when the domain is not running.
    async fn shutdown(&self, name: &str) -> Result<bool, LibvirtError> {
        let name = name.to_string();
        self.with(move |c| match c.lookup_domain_by_name(&name) {
            Ok(d) => match d.shutdown() {
                Ok(_) => Ok(true),
                Err(e) if is_not_running(&e) => Ok(false),
                Err(e) => Err(e),
            },
            Err(e) if is_no_domain(&e) => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// Stops the domain at once; not running or absent is fine.
    async fn destroy(&self, name: &str) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| match c.lookup_domain_by_name(&name) {
            Ok(d) => match d.destroy() {
                Ok(()) => Ok(()),
                Err(e) if is_not_running(&e) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) if is_no_domain(&e) => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }

    /// Destroys and forgets the domain with its snapshots; absent is fine.
    async fn undefine(&self, name: &str) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| match c.lookup_domain_by_name(&name) {
            Ok(d) => {
                if d.is_active()? {
                    d.destroy()?;
                }
                d.undefine_flags(
                    sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                        | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
                )
            }
            Err(e) if is_no_domain(&e) => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }

    /// None when libvirt has no such domain.
    async fn facts(&self, name: &str) -> Result<Option<DomainFacts>, LibvirtError> {
        let name = name.to_string();
        self.with(move |c| match c.lookup_domain_by_name(&name) {
            Ok(d) => {
                let info = d.info()?;
                // Not judged from the state: a domain "in shutdown" (or
                // suspended by its guest) still has its QEMU process, its
                // taps and its memory; only libvirt's own answer says so.
                let active = d.is_active()?;
                Ok(Some(DomainFacts {
                    active,
                    running: matches!(
                        info.state,
                        Enum::Known(DomainState::Running | DomainState::Blocked)
                    ),
                    vcpus: info.nr_virt_cpu,
                    memory_kib: info.memory,
                    max_memory_kib: info.max_mem,
                    used_kib: if active { guest_used_kib(&d) } else { None },
                    cpu_time_ns: info.cpu_time,
                }))
            }
            Err(e) if is_no_domain(&e) => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// Applies memory, then vCPUs, to the running domain and its definition.
    /// Removing a vCPU needs the guest to let it go (ACPI eject); libvirt
    /// waits a few seconds for that, a slow guest takes longer: then
    /// `VcpuUnplugPending`, and the caller waits for the count to drop.
    async fn resize(&self, name: &str, vcpus: u32, memory_mib: u64) -> Result<(), LibvirtError> {
        let name = name.to_string();
        let name_for_error = name.clone();
        let result = self
            .with(move |c| {
                let d = c.lookup_domain_by_name(&name)?;
                let live = d.is_active()?;
                let mem_flags =
                    sys::VIR_DOMAIN_MEM_CONFIG | if live { sys::VIR_DOMAIN_MEM_LIVE } else { 0 };
                d.set_memory_flags(memory_mib * 1024, mem_flags)?;
                if live {
                    d.set_vcpus_flags(vcpus, sys::VIR_DOMAIN_VCPU_LIVE)?;
                }
                d.set_vcpus_flags(vcpus, sys::VIR_DOMAIN_VCPU_CONFIG)?;
                Ok(())
            })
            .await;
        match result {
            Err(LibvirtError::Call(m)) if m.contains("unplug request timed out") => {
                Err(LibvirtError::VcpuUnplugPending(name_for_error))
            }
            other => other,
        }
    }

    /// Records a vCPU count in the definition only (after a slow unplug).
    async fn define_vcpus(&self, name: &str, vcpus: u32) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| {
            c.lookup_domain_by_name(&name)?
                .set_vcpus_flags(vcpus, sys::VIR_DOMAIN_VCPU_CONFIG)
        })
        .await
    }

    /// A hard reset, as the reset button: the guest boots again.
    async fn reset(&self, name: &str) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| c.lookup_domain_by_name(&name)?.reset())
            .await
    }

    /// The domain's snapshots, by name, with whether each holds memory
    /// (taken while the guest ran).
    async fn snapshots(&self, name: &str) -> Result<Vec<(String, bool)>, LibvirtError> {
        let name = name.to_string();
        self.with(move |c| {
            let mut out = Vec::new();
            for snapshot in c.lookup_domain_by_name(&name)?.list_all_snapshots(0)? {
                let xml = snapshot.xml_desc(0)?;
                out.push((snapshot.name()?, xml.contains("<state>running</state>")));
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    /// An internal snapshot (disk, and memory when the guest runs). The
    /// safe bindings cannot create one, libvirt's own client can.
    async fn create_snapshot(&self, name: &str, snapshot: &str) -> Result<(), LibvirtError> {
        let out = tokio::process::Command::new("virsh")
            .args(["-c", &self.uri, "snapshot-create-as", "--atomic"])
            .args(["--domain", name, "--name", snapshot])
            .output()
            .await
            .map_err(|e| LibvirtError::Call(format!("running virsh: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LibvirtError::Call(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    /// Returns the (inactive) domain to a snapshot; with `running` the guest
    /// resumes from the saved memory.
    async fn revert_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        running: bool,
    ) -> Result<(), LibvirtError> {
        let (name, wanted) = (name.to_string(), snapshot.to_string());
        let found = self
            .with(move |c| {
                let domain = c.lookup_domain_by_name(&name)?;
                for candidate in domain.list_all_snapshots(0)? {
                    if candidate.name()? == wanted {
                        let flags = if running {
                            sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
                        } else {
                            0
                        };
                        candidate.revert(flags)?;
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(LibvirtError::Call(format!(
                "the VM has no snapshot {snapshot:?}"
            )))
        }
    }

    /// Plugs a device (XML) into the running domain and its definition.
    async fn attach(&self, name: &str, xml: String) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| {
            let d = c.lookup_domain_by_name(&name)?;
            d.attach_device_flags(&xml, affect(d.is_active()?))
        })
        .await
    }

    /// Unplugs a device: the definition at once, the running guest once it
    /// lets go (ACPI eject; poll `domain_xml` to see it gone).
    async fn detach(&self, name: &str, xml: String) -> Result<(), LibvirtError> {
        let name = name.to_string();
        self.with(move |c| {
            let d = c.lookup_domain_by_name(&name)?;
            d.detach_device_flags(&xml, affect(d.is_active()?))
        })
        .await
    }

    /// The live definition (or the stored one of an inactive domain).
    async fn domain_xml(&self, name: &str) -> Result<String, LibvirtError> {
        let name = name.to_string();
        self.with(move |c| c.lookup_domain_by_name(&name)?.xml_desc(0))
            .await
    }

    /// Names of the domains arktos-node defined, with whether they run.
    async fn ours(&self) -> Result<Vec<(String, bool)>, LibvirtError> {
        self.with(|c| {
            let mut out = Vec::new();
            for d in c.list_all_domains(0)? {
                let name = d.name()?;
                if name.starts_with(DOMAIN_PREFIX) {
                    out.push((name, d.is_active()?));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// What a running guest uses: the balloon's current size minus what the
/// guest reports it could do without (`usable`, else `unused`).
fn guest_used_kib(d: &virt::domain::Domain) -> Option<u64> {
    let stats = d.memory_stats(0).ok()?;
    let stat = |tag: u32| stats.iter().find(|s| s.tag == tag).map(|s| s.val);
    let actual = stat(sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)?;
    let spare = stat(sys::VIR_DOMAIN_MEMORY_STAT_USABLE)
        .or_else(|| stat(sys::VIR_DOMAIN_MEMORY_STAT_UNUSED))?;
    Some(actual.saturating_sub(spare))
}

fn affect(live: bool) -> u32 {
    sys::VIR_DOMAIN_AFFECT_CONFIG | if live { sys::VIR_DOMAIN_AFFECT_LIVE } else { 0 }
}
