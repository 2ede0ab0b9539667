//! The VM back end: pod sandboxes of handler `arktos-vm` are network
//! namespaces, and their one container is a libvirt domain.

mod boot;
pub mod console;
mod containers;
pub mod cri_view;
pub mod domain;
pub mod hypervisor;
pub mod images;
pub mod kvm;
pub mod libvirt;
mod monitor;
pub mod network;
pub mod operations;
mod owner;
pub mod records;
mod sandboxes;
pub mod seed;
pub mod shape;
pub mod taps;
pub mod translate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Status;

use self::domain::Accel;
use self::hypervisor::Hypervisor;
use self::images::{ImageCache, ImageError};
use self::libvirt::{DomainFacts, Libvirt, LibvirtError};
use self::network::Cni;
use self::owner::Vms;
use self::records::{Phase, Store};
use self::shape::{ShapeError, SizePolicy};
use self::taps::{HostTaps, Taps};

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

/// The VM back end of arktos-node, over hypervisor `H` (libvirt) and the
/// node's tap devices `T`.
pub struct VmRuntime<H: Hypervisor = Libvirt, T: Taps = HostTaps> {
    cfg: VmConfig,
    pub images: ImageCache,
    libvirt: H,
    taps: T,
    /// The VM pods' records, and their owners (`owner.rs`).
    vms: Vms,
    accel: std::sync::Mutex<AccelChoice>,
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

impl VmRuntime<Libvirt, HostTaps> {
    /// The runtime over libvirt at `cfg.libvirt_uri` and the host's links:
    /// see `open_with`.
    pub async fn open(cfg: VmConfig, images: ImageCache) -> anyhow::Result<Arc<Self>> {
        let libvirt = Libvirt::new(&cfg.libvirt_uri);
        Self::open_with(libvirt, HostTaps, cfg, images).await
    }
}

impl<H: Hypervisor, T: Taps> VmRuntime<H, T> {
    /// Opens the state; running containers get their console followed
    /// again, and the monitor then matches them with what the hypervisor
    /// runs (one whose domain stopped while arktos-node was away exited).
    pub async fn open_with(
        hypervisor: H,
        taps: T,
        cfg: VmConfig,
        images: ImageCache,
    ) -> anyhow::Result<Arc<Self>> {
        let vms = Vms::open(Store::open(&cfg.state_dir)?)?;
        reachable_by_qemu(&cfg.state_dir)?;
        let accel = remembered_accel(&cfg);
        let rt = Arc::new(Self {
            libvirt: hypervisor,
            taps,
            cfg,
            images,
            vms,
            accel: std::sync::Mutex::new(accel),
            health: Default::default(),
            observed: Default::default(),
        });
        let running = rt
            .vms
            .containers(|c| (c.phase == Phase::Running).then(|| c.clone()));
        for c in &running {
            rt.vms.hold(&c.sandbox_id).await.follow_console(c);
        }
        tracing::info!(
            sandboxes = rt.vms.sandboxes(|_| Some(())).len(),
            running = running.len(),
            "VM state recovered; the monitor checks it against libvirt"
        );
        Ok(rt)
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

    pub fn owns_sandbox(&self, id: &str) -> bool {
        self.vms.has_sandbox(id)
    }

    pub fn owns_container(&self, id: &str) -> bool {
        self.vms.has_container(id)
    }

    /// The VM sandbox a pod (by UID) runs in, if any.
    pub fn sandbox_of_pod(&self, uid: &str) -> Option<String> {
        self.vms
            .sandboxes(|s| (s.uid == uid).then(|| s.id.clone()))
            .pop()
    }
}

/// The accelerator chosen at the last start, unless the operator chose one:
/// a node that proved KVM unusable stays on TCG across restarts.
fn remembered_accel(cfg: &VmConfig) -> AccelChoice {
    let remembered = std::fs::read_to_string(cfg.state_dir.join("accel")).ok();
    match (cfg.accel_forced, remembered.as_deref().map(str::trim)) {
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
    }
}

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;
