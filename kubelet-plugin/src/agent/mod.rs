//! The node agent: the part of arktos-node that talks to the Kubernetes
//! API. It carries out the `Action`s labelled with its node, and keeps its
//! node's VM pods as their annotations ask (power state, extra NICs, data
//! disks), reporting what each VM has in the pod's `vm.arktos.io/observed`.
//! It watches only its own node's objects, so its cost does not grow with
//! the cluster.

mod actions;
mod pods;

use std::path::PathBuf;
use std::sync::Arc;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::vm::VmRuntime;
use crate::vm::hypervisor::Hypervisor;
use crate::vm::libvirt::Libvirt;
use crate::vm::taps::{HostTaps, Taps};

pub struct Agent<H: Hypervisor = Libvirt, N: Taps = HostTaps> {
    client: Client,
    node: String,
    vms: Arc<VmRuntime<H, N>>,
    recorder: Recorder,
    /// Outcomes of finished Actions, so that one finished just before a
    /// restart is reported, not done twice.
    outcomes: PathBuf,
}

impl<H: Hypervisor, N: Taps> Agent<H, N> {
    pub fn new(
        client: Client,
        node: &str,
        vms: Arc<VmRuntime<H, N>>,
        state_dir: &std::path::Path,
    ) -> Self {
        Self {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "arktos-node".into(),
                    instance: Some(node.to_string()),
                },
            ),
            client,
            node: node.to_string(),
            vms,
            outcomes: state_dir.join("actions"),
        }
    }

    /// Runs until the process ends; watch errors are retried with backoff.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = std::fs::create_dir_all(&self.outcomes) {
            tracing::error!(error = %e, dir = %self.outcomes.display(), "cannot keep Action outcomes; the node agent is off");
            return;
        }
        tracing::info!(node = %self.node, "node agent watching this node's VM pods and Actions");
        tokio::join!(self.clone().watch_actions(), self.clone().watch_pods());
    }

    async fn event<K>(&self, object: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!(error = %e, "cannot publish an event");
        }
    }
}

#[cfg(test)]
mod tests;
