//! Actions labelled with this node: each is carried out once, its phase and
//! results written to its status, with an Event. An outcome is kept on disk
//! before it is reported, so a restart in between reports it instead of
//! acting again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arktos_crds::vm::NODE_LABEL;
use arktos_crds::vm::action::{Action, ActionPhase, ActionStatus, Operation, SnapshotResult};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Agent;
use crate::vm::hypervisor::Hypervisor;
use crate::vm::taps::Taps;

const FIELD_MANAGER: &str = "arktos-node";

/// What one Action came to.
struct Outcome {
    phase: ActionPhase,
    message: String,
    snapshot: Option<SnapshotResult>,
}

impl<H: Hypervisor, N: Taps> Agent<H, N> {
    pub(super) async fn watch_actions(self: Arc<Self>) {
        let api: Api<Action> = Api::all(self.client.clone());
        let config = watcher::Config::default().labels(&format!("{NODE_LABEL}={}", self.node));
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut events = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let action = match event {
                Ok(action) => action,
                Err(e) => {
                    tracing::warn!(error = %e, "watching Actions");
                    continue;
                }
            };
            let done = action.status.as_ref().is_some_and(|s| s.phase.is_done());
            let uid = action.uid().unwrap_or_default();
            if done || !busy.lock().expect("busy").insert(uid.clone()) {
                continue;
            }
            let (agent, busy) = (self.clone(), busy.clone());
            // Actions run side by side (a delayed reboot must not hold up
            // others); one VM's operations are serialised by arktos-node.
            tokio::spawn(async move {
                agent.carry_out(action).await;
                busy.lock().expect("busy").remove(&uid);
            });
        }
    }

    pub(super) async fn carry_out(&self, action: Action) {
        let uid = action.uid().unwrap_or_default();
        let namespace = action.namespace().unwrap_or_default();
        let api: Api<Action> = Api::namespaced(self.client.clone(), &namespace);
        let outcome_file = self.outcomes.join(format!("{uid}.json"));
        let operation = match action.spec.operation() {
            Ok(op) => op,
            Err(errors) => {
                let why = errors.iter().map(|e| e.message()).collect::<Vec<_>>();
                let outcome = Outcome {
                    phase: ActionPhase::Failed,
                    message: why.join("; "),
                    snapshot: None,
                };
                self.report(&api, &action, "", outcome).await;
                return;
            }
        };
        if let Ok(saved) = std::fs::read(&outcome_file)
            && let Ok(status) = serde_json::from_slice::<ActionStatus>(&saved)
        {
            let outcome = Outcome {
                phase: status.phase,
                message: status.message,
                snapshot: status.snapshot,
            };
            self.report(&api, &action, operation.name(), outcome).await;
            return;
        }
        let started = json!({"status": {
            "phase": ActionPhase::Running, "operation": operation.name(),
            "nodeName": self.node, "startTime": Time(Timestamp::now()),
        }});
        if let Err(e) = api
            .patch_status(
                &action.name_any(),
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&started),
            )
            .await
        {
            tracing::warn!(error = %e, action = %action.name_any(), "cannot mark an Action running");
        }
        tracing::info!(action = %action.name_any(), namespace, operation = operation.name(), pod = %action.spec.pod_name, "carrying out an Action");
        let outcome = self.perform(&namespace, &action, &operation).await;
        let status = ActionStatus {
            phase: outcome.phase,
            message: outcome.message.clone(),
            snapshot: outcome.snapshot.clone(),
            ..Default::default()
        };
        if let Ok(bytes) = serde_json::to_vec(&status) {
            let _ = std::fs::write(&outcome_file, bytes);
        }
        self.report(&api, &action, operation.name(), outcome).await;
    }

    async fn perform(&self, namespace: &str, action: &Action, operation: &Operation) -> Outcome {
        let failed = |message: String| Outcome {
            phase: ActionPhase::Failed,
            message,
            snapshot: None,
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = match pods.get_opt(&action.spec.pod_name).await {
            Ok(Some(pod)) => pod,
            Ok(None) => return failed(format!("pod {:?} not found", action.spec.pod_name)),
            Err(e) => return failed(format!("reading pod {:?}: {e}", action.spec.pod_name)),
        };
        let Some(vm) = self.vms.vm_of_pod(&pod.uid().unwrap_or_default()) else {
            return failed(format!(
                "pod {:?} has no VM running on node {}",
                action.spec.pod_name, self.node
            ));
        };
        let mut snapshot = None;
        let result = match operation {
            Operation::Reboot { delay_seconds } => {
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(*delay_seconds))).await;
                self.vms
                    .reboot(&vm)
                    .await
                    .map(|()| "the VM was reset and boots again".to_string())
            }
            Operation::Stop => self.vms.power_off(&vm).await.map(|changed| {
                if changed {
                    "the VM was powered off"
                } else {
                    "the VM was already off"
                }
                .to_string()
            }),
            Operation::Start => self.vms.power_on(&vm).await.map(|changed| {
                if changed {
                    "the VM was powered on"
                } else {
                    "the VM was already running"
                }
                .to_string()
            }),
            Operation::Snapshot { name } => self.vms.snapshot(&vm, name).await.map(|memory| {
                snapshot = Some(SnapshotResult {
                    name: name.clone(),
                    id: format!("{}/{name}", crate::vm::domain::domain_name(&vm)),
                    memory,
                });
                if memory {
                    format!("snapshot {name:?} holds the disk and the running guest's memory")
                } else {
                    format!("snapshot {name:?} holds the disk")
                }
            }),
            Operation::Restore { snapshot: name } => self
                .vms
                .restore(&vm, name)
                .await
                .map(|()| format!("the VM was returned to snapshot {name:?}")),
        };
        // The pod's observed state changes with most actions (power,
        // snapshots): report it now rather than at the next resync.
        self.observe_pod(&pod).await;
        match result {
            Ok(message) => Outcome {
                phase: ActionPhase::Succeeded,
                message,
                snapshot,
            },
            Err(e) => failed(e.message().to_string()),
        }
    }

    async fn report(&self, api: &Api<Action>, action: &Action, operation: &str, outcome: Outcome) {
        let succeeded = outcome.phase == ActionPhase::Succeeded;
        let now = Time(Timestamp::now());
        let condition = Condition {
            type_: "Complete".into(),
            status: if succeeded { "True" } else { "False" }.into(),
            reason: if succeeded { "Succeeded" } else { "Failed" }.into(),
            message: outcome.message.clone(),
            last_transition_time: now.clone(),
            observed_generation: action.metadata.generation,
        };
        let mut status = json!({
            "phase": outcome.phase, "message": outcome.message,
            "nodeName": self.node, "completionTime": now, "conditions": [condition],
        });
        if !operation.is_empty() {
            status["operation"] = operation.into();
        }
        if let Some(snapshot) = &outcome.snapshot {
            status["snapshot"] = serde_json::to_value(snapshot).unwrap_or_default();
        }
        if let Err(e) = api
            .patch_status(
                &action.name_any(),
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            tracing::warn!(error = %e, action = %action.name_any(), "cannot write an Action's outcome");
            return;
        }
        tracing::info!(action = %action.name_any(), phase = ?outcome.phase, message = %outcome.message, "Action finished");
        let reason = if succeeded { "Completed" } else { "Failed" };
        self.event(action, !succeeded, reason, outcome.message)
            .await;
    }
}
