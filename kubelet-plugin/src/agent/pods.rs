//! This node's VM pods: power state, extra NICs and data disks as their
//! annotations ask, and what each VM has written back to the pod.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arktos_crds::vm::RUNTIME_CLASS;
use arktos_crds::vm::annotations as ann;
use arktos_crds::vm::shape::{DataDisk, Nic, Observed, POWER_RUNNING, POWER_SHUTDOWN};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Agent;
use crate::vm::hypervisor::Hypervisor;
use crate::vm::taps::Taps;

/// How often every VM pod is looked at again without a change to it (the
/// VM's own changes: a guest that released a vCPU, one that powered off).
const RESYNC: Duration = Duration::from_secs(10);

/// Pods being reconciled, each with the newer version that came meanwhile.
type Busy = Arc<Mutex<HashMap<String, Option<Pod>>>>;

fn is_vm(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        == Some(RUNTIME_CLASS)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

impl<H: Hypervisor, N: Taps> Agent<H, N> {
    pub(super) async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let known: Arc<Mutex<HashMap<String, Pod>>> = Arc::default();
        let busy: Busy = Arc::default();
        let resync = {
            let (agent, known, busy) = (self.clone(), known.clone(), busy.clone());
            async move {
                loop {
                    tokio::time::sleep(RESYNC).await;
                    let pods: Vec<Pod> = known.lock().expect("known").values().cloned().collect();
                    for pod in pods {
                        agent.clone().reconcile_soon(pod, busy.clone());
                    }
                }
            }
        };
        let watch = async {
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))
                        if is_vm(&pod) =>
                    {
                        known
                            .lock()
                            .expect("known")
                            .insert(pod.uid().unwrap_or_default(), pod.clone());
                        self.clone().reconcile_soon(pod, busy.clone());
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        known
                            .lock()
                            .expect("known")
                            .remove(&pod.uid().unwrap_or_default());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
                }
            }
        };
        tokio::join!(watch, resync);
    }

    /// Reconciles the pod in the background; while one reconcile of it is
    /// under way, the newest version that arrives is reconciled right after.
    fn reconcile_soon(self: Arc<Self>, pod: Pod, busy: Busy) {
        let uid = pod.uid().unwrap_or_default();
        {
            let mut busy = busy.lock().expect("busy");
            if let Some(next) = busy.get_mut(&uid) {
                *next = Some(pod);
                return;
            }
            busy.insert(uid.clone(), None);
        }
        tokio::spawn(async move {
            let mut pod = pod;
            loop {
                self.reconcile(&pod).await;
                let mut busy = busy.lock().expect("busy");
                match busy.get_mut(&uid).and_then(Option::take) {
                    Some(next) => pod = next,
                    None => {
                        busy.remove(&uid);
                        return;
                    }
                }
            }
        });
    }

    #[tracing::instrument(name = "vm_pod", skip_all, fields(pod = %pod.name_any()))]
    pub(super) async fn reconcile(&self, pod: &Pod) {
        let Some(vm) = self.vms.vm_of_pod(&pod.uid().unwrap_or_default()) else {
            return;
        };
        let mut problems = self.apply_power(pod, &vm).await;
        // Unavailable while an Action operates on the VM: the Action
        // reports when it is done, and that report brings the pod back here.
        let Ok(observed) = self.vms.observe(&vm).await else {
            if !problems.is_empty() {
                tracing::warn!(pod = %pod.name_any(), problems = ?problems, "VM pod not as asked");
            }
            return;
        };
        problems.extend(self.converge_nics(pod, &vm, &observed).await);
        problems.extend(self.converge_disks(pod, &vm, &observed).await);
        if !problems.is_empty() {
            tracing::warn!(pod = %pod.name_any(), problems = ?problems, "VM pod not as asked");
        }
        self.write_observed(pod, &vm, problems.join("; ")).await;
    }

    /// Carries out the pod's `powerSpec` if it changed; the problems met.
    async fn apply_power(&self, pod: &Pod, vm: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let wanted_power = annotation(pod, ann::POWER_SPEC).unwrap_or(POWER_RUNNING);
        match self.vms.apply_power_spec(vm, wanted_power).await {
            Ok(Some(true)) => {
                let how = if wanted_power == POWER_SHUTDOWN {
                    "off"
                } else {
                    "on"
                };
                self.event(
                    pod,
                    false,
                    "PowerChanged",
                    format!("powerSpec {wanted_power}: the VM was powered {how}"),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("powerSpec {wanted_power}: {}", e.message())),
        }
        problems
    }

    /// Plugs and unplugs NICs until the VM has the pod's (the first is
    /// the pod's own network); the problems met.
    async fn converge_nics(&self, pod: &Pod, vm: &str, observed: &Observed) -> Vec<String> {
        let mut problems = Vec::new();
        let nics: Vec<Nic> = annotation(pod, ann::NICS)
            .and_then(|n| serde_json::from_str(n).ok())
            .unwrap_or_default();
        let wanted_nics: Vec<String> = nics.iter().skip(1).map(|n| n.name.clone()).collect();
        for nic in wanted_nics.iter().filter(|n| !observed.nics.contains(n)) {
            match self.vms.attach_nic(vm, nic).await {
                Ok(()) => {
                    self.event(
                        pod,
                        false,
                        "NicAttached",
                        format!("NIC {nic} plugged into the VM"),
                    )
                    .await
                }
                Err(e) => problems.push(format!("plugging NIC {nic}: {}", e.message())),
            }
        }
        for nic in observed.nics.iter().filter(|n| !wanted_nics.contains(n)) {
            match self.vms.detach_nic(vm, nic).await {
                Ok(()) => {
                    self.event(
                        pod,
                        false,
                        "NicDetached",
                        format!("NIC {nic} unplugged from the VM"),
                    )
                    .await
                }
                Err(e) => problems.push(format!("unplugging NIC {nic}: {}", e.message())),
            }
        }
        problems
    }

    /// Plugs and unplugs data disks until the VM has the pod's; the
    /// problems met.
    async fn converge_disks(&self, pod: &Pod, vm: &str, observed: &Observed) -> Vec<String> {
        let mut problems = Vec::new();
        let disks: Vec<DataDisk> = annotation(pod, ann::DISKS)
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        for disk in disks.iter().filter(|d| !observed.disks.contains(&d.name)) {
            let bytes = arktos_crds::quantity::to_milli(&disk.size)
                .map(|milli| (milli / 1000).max(0) as u64)
                .unwrap_or(0);
            match self.vms.attach_disk(vm, &disk.name, bytes).await {
                Ok(()) => {
                    self.event(
                        pod,
                        false,
                        "DiskAttached",
                        format!("disk {} ({}) plugged into the VM", disk.name, disk.size),
                    )
                    .await
                }
                Err(e) => problems.push(format!("plugging disk {}: {}", disk.name, e.message())),
            }
        }
        for disk in observed
            .disks
            .iter()
            .filter(|name| !disks.iter().any(|d| &&d.name == name))
        {
            match self.vms.detach_disk(vm, disk).await {
                Ok(()) => {
                    self.event(
                        pod,
                        false,
                        "DiskDetached",
                        format!("disk {disk} unplugged from the VM"),
                    )
                    .await
                }
                Err(e) => problems.push(format!("unplugging disk {disk}: {}", e.message())),
            }
        }
        problems
    }

    /// Reports what the VM has now in the pod's observed annotation,
    /// compared with the pod as it is now: the copy an Action started from
    /// may predate a report written while it ran.
    pub(super) async fn observe_pod(&self, pod: &Pod) {
        let Some(vm) = self.vms.vm_of_pod(&pod.uid().unwrap_or_default()) else {
            return;
        };
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let current = api.get(&pod.name_any()).await.ok();
        self.write_observed(current.as_ref().unwrap_or(pod), &vm, String::new())
            .await;
    }

    async fn write_observed(&self, pod: &Pod, vm: &str, message: String) {
        let Ok(mut observed) = self.vms.observe(vm).await else {
            return;
        };
        observed.message = message;
        let text = serde_json::to_string(&observed).unwrap_or_default();
        let current = annotation(pod, ann::OBSERVED).map(|o| Observed::from_annotation(Some(o)));
        if current.as_ref() == Some(&observed) {
            return;
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {ann::OBSERVED: text}}});
        if let Err(e) = api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(error = %e, pod = %pod.name_any(), "cannot report a VM's state");
        }
    }
}
