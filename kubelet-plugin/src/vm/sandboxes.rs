//! VM pod sandboxes through the CRI: a sandbox is the pod's network
//! namespace, set up by the node's CNI plugins as for any pod.

use std::collections::HashMap;
use std::time::Instant;

use k8s_cri::v1 as cri;
use tonic::Status;

use super::cri_view::{self, now_ns};
use super::domain::domain_name;
use super::hypervisor::Hypervisor;
use super::network::{self, PodRef};
use super::owner::VmGuard;
use super::records::SandboxRecord;
use super::taps::Taps;
use super::{HANDLER, VmRuntime};
use crate::ids::new_id;

impl<H: Hypervisor, T: Taps> VmRuntime<H, T> {
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
        let mut vm = self.vms.hold(&id).await;
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
            network: Some(network.clone()),
            created_at: now_ns(),
            ready: true,
        };
        if let Err(e) = vm.put_sandbox(record).await {
            let _ = self.cfg.cni.teardown(&pod, &network).await;
            return Err(e);
        }
        tracing::info!(sandbox = %id, pod = %meta.name, namespace = %meta.namespace,
            ip = %network.ip, ms = started.elapsed().as_millis() as u64, "VM pod sandbox ready");
        Ok(id)
    }

    #[tracing::instrument(name = "stop_sandbox", skip_all, fields(sandbox = %id))]
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), Status> {
        let mut vm = self.vms.hold(id).await;
        self.stop_held_sandbox(&mut vm).await
    }

    /// Stops the pod's VMs at once and tears its network down.
    async fn stop_held_sandbox(&self, vm: &mut VmGuard<'_>) -> Result<(), Status> {
        let mut sandbox = vm.sandbox()?;
        for c in vm.containers() {
            self.stop_held(vm, &c.id, 0).await?;
        }
        if let Some(net) = &sandbox.network {
            let pod = PodRef {
                sandbox_id: &sandbox.id,
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
        vm.put_sandbox(sandbox).await
    }

    #[tracing::instrument(name = "remove_sandbox", skip_all, fields(sandbox = %id))]
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), Status> {
        if !self.owns_sandbox(id) {
            return Ok(());
        }
        let mut vm = self.vms.hold(id).await;
        if vm.sandbox().is_err() {
            // Removed while we waited.
            return Ok(());
        }
        self.stop_held_sandbox(&mut vm).await?;
        for c in vm.containers() {
            self.remove_held(&mut vm, &c.id).await?;
        }
        vm.forget_sandbox().await?;
        tracing::info!(sandbox = %id, "VM pod sandbox removed");
        Ok(())
    }

    pub async fn sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        let s = self.vms.known_sandbox(id)?;
        let mut info = HashMap::new();
        if verbose {
            let domains = self
                .vms
                .containers(|c| (c.sandbox_id == id).then(|| domain_name(&c.id)));
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

    pub fn list_sandboxes(&self, filter: Option<&cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        self.vms
            .sandboxes(|s| cri_view::sandbox_matches(s, filter).then(|| cri_view::sandbox(s)))
    }

    pub async fn sandbox_stats(&self, id: &str) -> Result<cri::PodSandboxStats, Status> {
        let s = self.vms.known_sandbox(id)?;
        let mut containers = Vec::new();
        for cid in self
            .vms
            .containers(|c| (c.sandbox_id == id).then(|| c.id.clone()))
        {
            if let Ok(st) = self.container_stats(&cid).await {
                containers.push(st);
            }
        }
        Ok(cri_view::sandbox_stats(&s, containers))
    }
}
