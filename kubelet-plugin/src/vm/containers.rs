//! A VM pod's container through the CRI: one libvirt domain, created from
//! a cached image, stopped with the ACPI button, resized live.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use k8s_cri::v1 as cri;
use tonic::Status;

use super::cri_view::{self, now_ns};
use super::domain::{DomainSpec, domain_name};
use super::hypervisor::Hypervisor;
use super::images::CachedImage;
use super::libvirt::LibvirtError;
use super::network::tap_name;
use super::owner::VmGuard;
use super::records::{ContainerRecord, Phase};
use super::seed::Seed;
use super::shape::{VmShape, Wanted};
use super::taps::Taps;
use super::{PUBLIC_KEY_ANNOTATION, USER_DATA_ANNOTATION, VCPU_UNPLUG_WAIT, VmRuntime, internal};
use crate::fsutil::remove_all;
use crate::ids::new_id;

impl<H: Hypervisor, T: Taps> VmRuntime<H, T> {
    #[tracing::instrument(name = "create_container", skip_all, fields(sandbox = %sandbox_id))]
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, Status> {
        let mut vm = self.vms.hold(sandbox_id).await;
        let sandbox = vm.sandbox()?;
        if !sandbox.ready {
            return Err(Status::failed_precondition(format!(
                "VM pod sandbox {sandbox_id} is not ready"
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("container config has no metadata"))?;
        check_no_other_container(&vm, &meta.name)?;
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
            dir: self.cfg.state_dir.join("vms").join(&id),
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
            let _ = remove_all(&record.dir).await;
            return Err(e);
        }
        vm.put_container(record).await?;
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
        let base = base.to_string_lossy();
        let disk = disk.to_string_lossy();
        qemu_img_create(
            "creating the VM's disk overlay",
            &["-F", &image.format, "-b", &base, &disk],
        )
        .await?;
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

    pub(super) fn domain_spec(&self, c: &ContainerRecord, mac: &str) -> DomainSpec {
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

    #[tracing::instrument(name = "stop_container", skip_all, fields(container = %id))]
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), Status> {
        let (mut vm, _) = self.vms.hold_container(id).await?;
        self.stop_held(&mut vm, id, timeout_secs).await
    }

    /// Stops container `id` of the VM pod held: the ACPI button, then the
    /// plug once the grace (capped) has passed.
    pub(super) async fn stop_held(
        &self,
        vm: &mut VmGuard<'_>,
        id: &str,
        timeout_secs: i64,
    ) -> Result<(), Status> {
        self.refresh(vm, id).await;
        let mut c = vm.container(id)?;
        if c.phase != Phase::Running {
            return Ok(());
        }
        c.powered_off = false;
        let grace = Duration::from_secs(timeout_secs.max(0) as u64).min(self.cfg.stop_grace_cap);
        let powered_off = self.power_off_domain(&domain_name(id), grace).await?;
        self.remove_taps(&c, &netns_or_none(vm)).await;
        vm.leave_console(&c).await;
        c.phase = Phase::Exited;
        c.finished_at = now_ns();
        (c.exit_code, c.reason) = if powered_off {
            (0, "Completed".to_string())
        } else {
            (137, "Killed".to_string())
        };
        tracing::info!(container = %id, graceful = powered_off, "VM stopped");
        vm.put_container(c).await
    }

    /// Presses the ACPI power button and waits up to `grace` for the guest
    /// to power off, then pulls the plug; true when the guest went itself.
    pub(super) async fn power_off_domain(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<bool, Status> {
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
        let Ok((mut vm, _)) = self.vms.hold_container(id).await else {
            return Ok(());
        };
        self.remove_held(&mut vm, id).await
    }

    /// Removes container `id` of the VM pod held: its domain, taps and files.
    pub(super) async fn remove_held(&self, vm: &mut VmGuard<'_>, id: &str) -> Result<(), Status> {
        let Ok(c) = vm.container(id) else {
            return Ok(());
        };
        self.libvirt.undefine(&domain_name(id)).await?;
        self.forget_observed(id);
        self.remove_taps(&c, &netns_or_none(vm)).await;
        vm.leave_console(&c).await;
        remove_all(&c.dir)
            .await
            .map_err(|e| internal("removing the VM's files", e))?;
        vm.forget_container(id).await?;
        tracing::info!(container = %id, "VM container removed");
        Ok(())
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        let mut c = self.vms.known_container(id)?;
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

    pub fn list_containers(&self, filter: Option<&cri::ContainerFilter>) -> Vec<cri::Container> {
        self.vms
            .containers(|c| cri_view::container_matches(c, filter).then(|| cri_view::container(c)))
    }

    /// Live vCPU and memory change of a running (or created) VM.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<&cri::LinuxContainerResources>,
    ) -> Result<(), Status> {
        let (mut vm, mut c) = self.vms.hold_container(id).await?;
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
        vm.put_container(c).await
    }

    /// Waits for a guest to release unplugged vCPUs (a slow TCG guest
    /// answers the ACPI eject after libvirt stopped waiting).
    async fn await_vcpus(&self, name: &str, vcpus: u32) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + VCPU_UNPLUG_WAIT;
        while tokio::time::Instant::now() < deadline {
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
        let c = self.vms.known_container(id)?;
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
        let ids = self
            .vms
            .containers(|c| cri_view::stats_matches(c, filter).then(|| c.id.clone()));
        let mut out = Vec::new();
        for id in ids {
            if let Ok(s) = self.container_stats(&id).await {
                out.push(s);
            }
        }
        out
    }

    /// Containers whose disk is built on a cached image.
    pub fn users_of_image(&self, image_id: &str) -> Vec<String> {
        self.vms
            .containers(|c| (c.image_id == image_id).then(|| c.id.clone()))
    }

    pub async fn remove_image(&self, reference: &str) -> Result<(), Status> {
        let Some(image) = self.images.find(reference).await else {
            return Ok(());
        };
        let users = self.users_of_image(&image.id);
        Ok(self.images.remove(reference, &users).await?)
    }
}

/// `qemu-img create -q -f qcow2 ARGS...`; a failure names `what` and says
/// what qemu-img said.
pub(super) async fn qemu_img_create(what: &str, args: &[&str]) -> Result<(), Status> {
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .args(args)
        .output()
        .await
        .map_err(|e| internal("qemu-img", e))?;
    if !out.status.success() {
        return Err(internal(what, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The pod network's namespace of the VM pod held, or "" when it has none
/// (taps are then looked for on the host only).
fn netns_or_none(vm: &VmGuard<'_>) -> String {
    vm.sandbox()
        .ok()
        .and_then(|s| s.network)
        .map(|n| n.netns)
        .unwrap_or_default()
}

/// A VM pod holds exactly one container that has not exited.
fn check_no_other_container(vm: &VmGuard<'_>, name: &str) -> Result<(), Status> {
    let busy: Vec<String> = vm
        .containers()
        .into_iter()
        .filter(|c| c.phase != Phase::Exited)
        .map(|c| c.name)
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "a VM pod holds exactly one container: sandbox {} already has {} (not exited), cannot add {name}",
        vm.sandbox_id(),
        busy.join(", "),
    )))
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
