//! What the node agent does to a running VM pod besides the CRI: power off
//! and on, reboot, snapshots, NIC and disk hot-plug, and what it observes.
//! Every operation holds the VM (`owner.rs`) from start to end, so the
//! monitor and the kubelet's calls never see it half done. Every operation
//! is idempotent: asking for the state the VM is already in succeeds and
//! changes nothing.

use std::time::Duration;

use arktos_crds::vm::shape::{Observed, POWER_RUNNING, POWER_SHUTDOWN};
use sha2::Digest;
use tonic::Status;

use super::containers::qemu_img_create;
use super::domain::{domain_name, xml_escape};
use super::hypervisor::Hypervisor;
use super::network::extra_tap_name;
use super::owner::VmGuard;
use super::records::{ContainerRecord, DataDisk, Phase};
use super::taps::Taps;
use super::{VmRuntime, internal};

/// How long a guest may take to let go of an unplugged NIC or disk.
const UNPLUG_WAIT: Duration = Duration::from_secs(30);

impl<H: Hypervisor, T: Taps> VmRuntime<H, T> {
    /// The VM container of a pod (by UID): the newest one not exited.
    pub fn vm_of_pod(&self, uid: &str) -> Option<String> {
        let sandbox = self.sandbox_of_pod(uid)?;
        self.vms
            .containers(|c| {
                (c.sandbox_id == sandbox && c.phase != Phase::Exited)
                    .then(|| (c.created_at, c.id.clone()))
            })
            .into_iter()
            .max()
            .map(|(_, id)| id)
    }

    /// Holds running container `id`'s VM, with its record.
    pub(super) async fn hold_running(
        &self,
        id: &str,
    ) -> Result<(VmGuard<'_>, ContainerRecord), Status> {
        let (vm, c) = self.vms.hold_container(id).await?;
        if c.phase != Phase::Running {
            return Err(Status::failed_precondition(format!(
                "VM container {id} is {:?}, not running",
                c.phase
            )));
        }
        Ok((vm, c))
    }

    pub async fn reboot(&self, id: &str) -> Result<(), Status> {
        let (_vm, c) = self.hold_running(id).await?;
        if c.powered_off {
            return Err(Status::failed_precondition(
                "the VM is powered off; start it instead",
            ));
        }
        self.libvirt.reset(&domain_name(id)).await?;
        tracing::info!(container = %id, "VM reset");
        Ok(())
    }

    /// Powers the guest off (ACPI button, then force after the grace) and
    /// keeps the pod: the kubelet still sees a running container. False
    /// when it was off already.
    pub async fn power_off(&self, id: &str) -> Result<bool, Status> {
        let (mut vm, c) = self.hold_running(id).await?;
        self.set_power(&mut vm, c, false).await
    }

    /// Boots a powered-off VM again; false when it was running.
    pub async fn power_on(&self, id: &str) -> Result<bool, Status> {
        let (mut vm, c) = self.hold_running(id).await?;
        self.set_power(&mut vm, c, true).await
    }

    /// Carries out the pod's `powerSpec` if it changed since it was last
    /// carried out (so stop and start Actions in between are not undone);
    /// `None` when there was nothing to do, else whether the power changed.
    pub async fn apply_power_spec(&self, id: &str, wanted: &str) -> Result<Option<bool>, Status> {
        let (mut vm, c) = self.hold_running(id).await?;
        if c.power_spec_applied == wanted {
            return Ok(None);
        }
        let changed = self.set_power(&mut vm, c, wanted != POWER_SHUTDOWN).await?;
        let mut c = vm.container(id)?;
        c.power_spec_applied = wanted.to_string();
        vm.put_container(c).await?;
        Ok(Some(changed))
    }

    /// Powers the VM held on or off.
    async fn set_power(
        &self,
        vm: &mut VmGuard<'_>,
        mut c: ContainerRecord,
        on: bool,
    ) -> Result<bool, Status> {
        if c.powered_off != on {
            return Ok(false);
        }
        if on {
            self.start_domain(vm, &c, None).await?;
            tracing::info!(container = %c.id, "VM powered on");
        } else {
            let off = self
                .power_off_domain(&domain_name(&c.id), self.cfg.stop_grace_cap)
                .await?;
            self.remove_taps(&c, &netns_of(vm)?).await;
            tracing::info!(container = %c.id, graceful = off, "VM powered off");
        }
        c.powered_off = !on;
        vm.put_container(c).await?;
        Ok(true)
    }

    /// Starts the defined domain with all its taps, fresh or from a
    /// snapshot (`running`: the snapshot holds memory, the guest resumes).
    async fn start_domain(
        &self,
        vm: &VmGuard<'_>,
        c: &ContainerRecord,
        snapshot: Option<(&str, bool)>,
    ) -> Result<(), Status> {
        let netns = netns_of(vm)?;
        let name = domain_name(&c.id);
        let taps: Vec<String> = std::iter::once(c.tap.clone())
            .chain(c.extra_nics.iter().map(|nic| extra_tap_name(&c.id, nic)))
            .collect();
        for tap in &taps {
            self.taps
                .create(tap)
                .await
                .map_err(|e| internal("creating a VM tap", format!("{e:#}")))?;
        }
        let started = match snapshot {
            None => self.libvirt.start(&name).await,
            Some((snapshot, true)) => self.libvirt.revert_snapshot(&name, snapshot, true).await,
            Some((snapshot, false)) => {
                match self.libvirt.revert_snapshot(&name, snapshot, false).await {
                    Ok(()) => self.libvirt.start(&name).await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = started {
            for tap in &taps {
                self.taps.remove_extra(tap, "").await;
            }
            return Err(e.into());
        }
        self.taps
            .plug(&c.tap, &netns)
            .await
            .map_err(|e| internal("wiring the VM into the pod network", format!("{e:#}")))?;
        for tap in &taps[1..] {
            self.taps
                .park(tap, &netns)
                .await
                .map_err(|e| internal("moving a NIC's tap into the pod", format!("{e:#}")))?;
        }
        Ok(())
    }

    pub(super) async fn remove_taps(&self, c: &ContainerRecord, netns: &str) {
        self.taps.remove(&c.tap, netns).await;
        for nic in &c.extra_nics {
            self.taps
                .remove_extra(&extra_tap_name(&c.id, nic), netns)
                .await;
        }
    }

    /// Takes snapshot `snapshot` (disk, and memory when the guest runs);
    /// one that exists already is the answer. Returns whether it holds memory.
    pub async fn snapshot(&self, id: &str, snapshot: &str) -> Result<bool, Status> {
        let (_vm, _c) = self.hold_running(id).await?;
        let name = domain_name(id);
        if let Some((_, memory)) = self
            .libvirt
            .snapshots(&name)
            .await?
            .into_iter()
            .find(|(s, _)| s == snapshot)
        {
            return Ok(memory);
        }
        self.libvirt.create_snapshot(&name, snapshot).await?;
        let memory = self
            .libvirt
            .snapshots(&name)
            .await?
            .into_iter()
            .any(|(s, memory)| s == snapshot && memory);
        tracing::info!(container = %id, snapshot, memory, "VM snapshot taken");
        Ok(memory)
    }

    /// Returns the VM to snapshot `snapshot`: with memory, the guest runs on
    /// from that moment; without, it boots from that disk (or stays off).
    pub async fn restore(&self, id: &str, snapshot: &str) -> Result<(), Status> {
        let (mut vm, mut c) = self.hold_running(id).await?;
        let name = domain_name(id);
        let Some((_, memory)) = self
            .libvirt
            .snapshots(&name)
            .await?
            .into_iter()
            .find(|(s, _)| s == snapshot)
        else {
            return Err(Status::not_found(format!(
                "the VM has no snapshot {snapshot:?}"
            )));
        };
        let result = async {
            self.libvirt.destroy(&name).await?;
            self.remove_taps(&c, &netns_of(&vm)?).await;
            if memory || !c.powered_off {
                self.start_domain(&vm, &c, Some((snapshot, memory))).await
            } else {
                self.libvirt
                    .revert_snapshot(&name, snapshot, false)
                    .await
                    .map_err(Status::from)
            }
        }
        .await;
        result?;
        if memory {
            c.powered_off = false;
        }
        tracing::info!(container = %id, snapshot, memory, "VM restored");
        vm.put_container(c).await
    }

    /// Plugs data disk `disk` of `size_bytes` (a new empty qcow2) into the VM.
    pub async fn attach_disk(&self, id: &str, disk: &str, size_bytes: u64) -> Result<(), Status> {
        let (mut vm, mut c) = self.hold_running(id).await?;
        if c.data_disks.iter().any(|d| d.name == disk) {
            return Ok(());
        }
        let name = domain_name(id);
        let xml = self.libvirt.domain_xml(&name).await?;
        let target = (b'c'..=b'z')
            .map(|letter| format!("vd{}", letter as char))
            .find(|t| !xml.contains(&format!("dev='{t}'")))
            .ok_or_else(|| Status::resource_exhausted("no free virtio disk slot"))?;
        let file = c.dir.join(format!("data-{disk}.qcow2"));
        qemu_img_create(
            "creating a data disk",
            &[&file.to_string_lossy(), &size_bytes.to_string()],
        )
        .await?;
        let record = DataDisk {
            name: disk.to_string(),
            target,
            size_bytes,
        };
        self.libvirt.attach(&name, disk_xml(&c, &record)).await?;
        tracing::info!(container = %id, disk, target = %record.target, "data disk plugged");
        c.data_disks.push(record);
        vm.put_container(c).await
    }

    /// Unplugs data disk `disk` and deletes it once the guest let go.
    pub async fn detach_disk(&self, id: &str, disk: &str) -> Result<(), Status> {
        let (mut vm, mut c) = self.hold_running(id).await?;
        let Some(record) = c.data_disks.iter().find(|d| d.name == disk).cloned() else {
            return Ok(());
        };
        let name = domain_name(id);
        let device = format!("dev='{}'", record.target);
        if self.libvirt.domain_xml(&name).await?.contains(&device) {
            self.libvirt.detach(&name, disk_xml(&c, &record)).await?;
            self.await_unplug(&name, &device).await?;
        }
        let _ = tokio::fs::remove_file(c.dir.join(format!("data-{disk}.qcow2"))).await;
        c.data_disks.retain(|d| d.name != disk);
        tracing::info!(container = %id, disk, "data disk unplugged");
        vm.put_container(c).await
    }

    /// Plugs NIC `nic`: a virtio NIC whose tap sits in the pod's namespace.
    pub async fn attach_nic(&self, id: &str, nic: &str) -> Result<(), Status> {
        let (mut vm, mut c) = self.hold_running(id).await?;
        if c.extra_nics.iter().any(|n| n == nic) {
            return Ok(());
        }
        let name = domain_name(id);
        let tap = extra_tap_name(id, nic);
        let live = !c.powered_off;
        if live {
            self.taps
                .create(&tap)
                .await
                .map_err(|e| internal("creating a NIC's tap", format!("{e:#}")))?;
        }
        if let Err(e) = self.libvirt.attach(&name, nic_xml(id, nic)).await {
            self.taps.remove_extra(&tap, "").await;
            return Err(e.into());
        }
        if live {
            self.taps
                .park(&tap, &netns_of(&vm)?)
                .await
                .map_err(|e| internal("moving a NIC's tap into the pod", format!("{e:#}")))?;
        }
        tracing::info!(container = %id, nic, tap, "NIC plugged");
        c.extra_nics.push(nic.to_string());
        vm.put_container(c).await
    }

    /// Unplugs NIC `nic` and removes its tap once the guest let go.
    pub async fn detach_nic(&self, id: &str, nic: &str) -> Result<(), Status> {
        let (mut vm, mut c) = self.hold_running(id).await?;
        if !c.extra_nics.iter().any(|n| n == nic) {
            return Ok(());
        }
        let name = domain_name(id);
        let tap = extra_tap_name(id, nic);
        if self
            .libvirt
            .domain_xml(&name)
            .await?
            .contains(&nic_mac(id, nic))
        {
            self.libvirt.detach(&name, nic_xml(id, nic)).await?;
            self.await_unplug(&name, &nic_mac(id, nic)).await?;
        }
        self.taps.remove_extra(&tap, &netns_of(&vm)?).await;
        c.extra_nics.retain(|n| n != nic);
        tracing::info!(container = %id, nic, "NIC unplugged");
        vm.put_container(c).await
    }

    async fn await_unplug(&self, name: &str, marker: &str) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + UNPLUG_WAIT;
        while tokio::time::Instant::now() < deadline {
            if !self.libvirt.domain_xml(name).await?.contains(marker) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Status::deadline_exceeded(format!(
            "the guest did not release the device within {}s (it must support PCI hot-unplug)",
            UNPLUG_WAIT.as_secs()
        )))
    }

    /// What the VM has now, as libvirt says, once no one else holds it (a
    /// restore destroys and reverts the domain: what libvirt says midway is
    /// no state to report).
    pub async fn observe(&self, id: &str) -> Result<Observed, Status> {
        let (_vm, c) = self.vms.hold_container(id).await?;
        let name = domain_name(id);
        let facts = self.libvirt.facts(&name).await?;
        let xml = self.libvirt.domain_xml(&name).await.unwrap_or_default();
        let active = facts.is_some_and(|f| f.active);
        Ok(Observed {
            power_state: if active && !c.powered_off {
                POWER_RUNNING
            } else {
                POWER_SHUTDOWN
            }
            .into(),
            vcpus: if active {
                facts.map(|f| f.vcpus).unwrap_or(c.shape.vcpus)
            } else {
                c.shape.vcpus
            },
            memory_mib: c.shape.memory_mib,
            nics: c
                .extra_nics
                .iter()
                .filter(|nic| xml.contains(&nic_mac(id, nic)))
                .cloned()
                .collect(),
            disks: c
                .data_disks
                .iter()
                .filter(|d| xml.contains(&format!("dev='{}'", d.target)))
                .map(|d| d.name.clone())
                .collect(),
            snapshots: self
                .libvirt
                .snapshots(&name)
                .await?
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            max_vcpus: c.shape.max_vcpus,
            max_memory_mib: c.shape.max_memory_mib,
            message: String::new(),
        })
    }
}

/// The pod network's namespace of the VM pod held.
fn netns_of(vm: &VmGuard<'_>) -> Result<String, Status> {
    vm.sandbox()?
        .network
        .map(|n| n.netns)
        .ok_or_else(|| Status::failed_precondition("VM pod sandbox has no network"))
}

fn disk_xml(c: &ContainerRecord, disk: &DataDisk) -> String {
    format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='{}' bus='virtio'/><serial>{}</serial></disk>",
        xml_escape(
            &c.dir
                .join(format!("data-{}.qcow2", disk.name))
                .to_string_lossy()
        ),
        disk.target,
        xml_escape(&disk.name),
    )
}

/// A stable locally administered MAC per container and NIC.
fn nic_mac(container_id: &str, nic: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{container_id}/{nic}/mac").as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

fn nic_xml(container_id: &str, nic: &str) -> String {
    format!(
        "<interface type='ethernet'><mac address='{}'/><target dev='{}' managed='no'/><model type='virtio'/></interface>",
        nic_mac(container_id, nic),
        extra_tap_name(container_id, nic),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_nics_get_stable_distinct_names_and_macs() {
        let (a, b) = (
            extra_tap_name("c0ffee", "eth1"),
            extra_tap_name("c0ffee", "eth2"),
        );
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("an"));
        assert_eq!(nic_mac("c0ffee", "eth1"), nic_mac("c0ffee", "eth1"));
        assert!(nic_xml("c0ffee", "eth1").contains(&format!("<target dev='{a}' managed='no'/>")));
    }
}
