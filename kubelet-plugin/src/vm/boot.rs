//! Starting a VM container: its tap, its domain, and on a node where KVM
//! is not yet proven, the proof (or the fall back to QEMU TCG for good).

use std::time::{Duration, Instant};

use tonic::Status;

use super::cri_view::now_ns;
use super::domain::{Accel, domain_name};
use super::hypervisor::Hypervisor;
use super::records::{ContainerRecord, Phase};
use super::taps::Taps;
use super::{KVM_PROOF, VmRuntime, internal};

impl<H: Hypervisor, T: Taps> VmRuntime<H, T> {
    #[tracing::instrument(name = "start_container", skip_all, fields(container = %id))]
    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let (mut vm, mut c) = self.vms.hold_container(id).await?;
        if c.phase != Phase::Created {
            return Err(Status::failed_precondition(format!(
                "VM container {id} is {:?}, only a created container can start",
                c.phase
            )));
        }
        let (netns, mac) = vm
            .sandbox()?
            .network
            .map(|n| (n.netns, n.mac))
            .ok_or_else(|| Status::failed_precondition("VM pod sandbox has no network"))?;
        let started = Instant::now();
        if let Err(e) = self.boot_under_chosen_accel(&c, &mac, &netns).await {
            let _ = self.libvirt.destroy(&domain_name(id)).await;
            self.taps.remove(&c.tap, &netns).await;
            // As containerd does: a container that failed to start has
            // exited, so the kubelet's next attempt can create another.
            c.phase = Phase::Exited;
            c.finished_at = now_ns();
            c.exit_code = 128;
            c.reason = "StartError".into();
            c.message = e.message().to_string();
            vm.put_container(c).await?;
            return Err(e);
        }
        c.phase = Phase::Running;
        c.started_at = now_ns();
        vm.put_container(c.clone()).await?;
        vm.follow_console(&c);
        tracing::info!(container = %id, ms = started.elapsed().as_millis() as u64, "VM started");
        Ok(())
    }

    /// Boots the domain under the node's accelerator; the first guest under
    /// unproven KVM proves it or settles the node on TCG.
    async fn boot_under_chosen_accel(
        &self,
        c: &ContainerRecord,
        mac: &str,
        netns: &str,
    ) -> Result<(), Status> {
        let name = domain_name(&c.id);
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
                .define(self.domain_spec(c, mac).to_xml())
                .await?;
            under_kvm = false;
        }
        match self.boot(&name, &c.tap, netns).await {
            Err(e) if under_kvm && !self.kvm_proven() => {
                tracing::warn!(container = %c.id, error = %e.message(), "the guest did not start under KVM");
                self.fall_back_to_tcg(c, mac, netns).await
            }
            Err(e) => Err(e),
            Ok(()) if under_kvm && !self.kvm_proven() => self.prove_kvm(c, mac, netns).await,
            Ok(()) => Ok(()),
        }
    }

    async fn boot(&self, name: &str, tap: &str, netns: &str) -> Result<(), Status> {
        self.taps
            .create(tap)
            .await
            .map_err(|e| internal("creating the VM's tap", format!("{e:#}")))?;
        self.libvirt.start(name).await?;
        self.taps
            .plug(tap, netns)
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
        self.taps.remove(&c.tap, netns).await;
        self.settle_accel(Accel::Tcg);
        self.libvirt
            .define(self.domain_spec(c, mac).to_xml())
            .await?;
        self.boot(&name, &c.tap, netns).await
    }
}
