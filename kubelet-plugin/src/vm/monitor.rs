//! The monitor: the one place that polls libvirt. Every `MONITOR_PERIOD` it
//! asks libvirt whether it answers, then brings each running VM's record in
//! line with its domain (a guest that powered itself off has exited). CRI
//! status, lists, stats and the health endpoints answer from what it saw.

use std::time::Instant;

use super::cri_view::now_ns;
use super::domain::domain_name;
use super::hypervisor::Hypervisor;
use super::libvirt::DomainFacts;
use super::owner::VmGuard;
use super::records::Phase;
use super::taps::Taps;
use super::{LIBVIRT_ANSWER_WITHIN, LibvirtHealth, MONITOR_PERIOD, VmRuntime};

use std::sync::Arc;
use tokio::task::JoinHandle;

impl<H: Hypervisor, T: Taps> VmRuntime<H, T> {
    pub fn spawn_monitor(self: &Arc<Self>) -> JoinHandle<()> {
        let rt = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                rt.check_libvirt_and_vms().await;
                tokio::time::sleep(MONITOR_PERIOD).await;
            }
        })
    }

    /// One round of the monitor.
    pub(crate) async fn check_libvirt_and_vms(&self) {
        if !self.check_libvirt().await {
            return;
        }
        let running = self.vms.containers(|c| {
            (c.phase == Phase::Running && !c.powered_off)
                .then(|| (c.sandbox_id.clone(), c.id.clone()))
        });
        for (sandbox_id, id) in running {
            // A VM someone holds is being changed on purpose (a restore
            // stops its domain for a moment): what libvirt says of it now
            // is no news. The next round looks again.
            if let Some(mut vm) = self.vms.try_hold(&sandbox_id) {
                self.refresh(&mut vm, &id).await;
            }
        }
    }

    /// Asks libvirt whether it answers, records the answer, and says so in
    /// the log when that changed; whether it answered.
    async fn check_libvirt(&self) -> bool {
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
        if was.answer.is_ok() != reachable || was.checked_at.is_none() {
            match &self.libvirt_health().answer {
                Ok(v) => {
                    tracing::info!(hypervisor = %v, accel = self.accel().domain_type(), "libvirt answers")
                }
                Err(e) => {
                    tracing::warn!(reason = %e, "libvirt is not ready: VM calls wait or fail until it is")
                }
            }
        }
        reachable
    }

    /// libvirt's last answer to the monitor.
    pub fn libvirt_health(&self) -> LibvirtHealth {
        self.health.read().expect("health lock").clone()
    }

    /// The facts the monitor last saw of a running VM.
    pub(super) fn observed(&self, id: &str) -> Option<DomainFacts> {
        self.observed
            .lock()
            .expect("observed lock")
            .get(id)
            .copied()
    }

    pub(super) fn forget_observed(&self, id: &str) {
        self.observed.lock().expect("observed lock").remove(id);
    }

    /// Brings running container `id`'s record in line with its domain: a
    /// guest that powered itself off, or a domain that vanished, has exited.
    pub(super) async fn refresh(&self, vm: &mut VmGuard<'_>, id: &str) {
        let Ok(mut c) = vm.container(id) else {
            return;
        };
        if c.phase != Phase::Running || c.powered_off {
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
        vm.leave_console(&c).await;
        let _ = vm.put_container(c).await;
    }
}
