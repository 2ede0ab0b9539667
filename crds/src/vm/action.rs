//! `Action` (`vm.arktos.io/v1alpha1`, namespaced): one operation on a VM
//! pod, carried out by the node agent of the pod's node.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RUNTIME_CLASS;
use super::shape::Observed;
use crate::status::{FieldError, FieldErrorType};

pub const KIND: &str = "Action";
pub const PLURAL: &str = "actions";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "vm.arktos.io/v1alpha1";
/// Longest `reboot.delaySeconds`.
pub const MAX_REBOOT_DELAY_SECONDS: u32 = 3600;

/// An operation on the VM of pod `podName`: exactly one of the operations.
// Several print columns share `type_ = "string"`, which clippy takes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "vm.arktos.io",
    version = "v1alpha1",
    kind = "Action",
    plural = "actions",
    namespaced,
    status = "ActionStatus",
    doc = "An operation (reboot, stop, start, snapshot, restore) on the VM of a pod.",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.podName"),
    printcolumn(name = "Operation", type_ = "string", json_path = ".status.operation"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ActionSpec {
    /// The VM pod, in the Action's namespace.
    #[serde(default)]
    pub pod_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<Reboot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reboot {
    /// Wait this long before the reset.
    #[serde(default)]
    pub delay_seconds: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Empty {}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's name, unique per VM.
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Restore {
    /// The name of a snapshot of the same VM.
    pub snapshot: String,
}

/// What an Action asks for, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Reboot { delay_seconds: u32 },
    Stop,
    Start,
    Snapshot { name: String },
    Restore { snapshot: String },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Reboot { .. } => "reboot",
            Operation::Stop => "stop",
            Operation::Start => "start",
            Operation::Snapshot { .. } => "snapshot",
            Operation::Restore { .. } => "restore",
        }
    }
}

impl ActionSpec {
    /// The one operation the spec names, or what is wrong with it.
    pub fn operation(&self) -> Result<Operation, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.pod_name.is_empty() {
            errors.push(FieldError::new(
                "spec.podName",
                FieldErrorType::Required,
                "the VM pod to act on",
            ));
        }
        let mut chosen = Vec::new();
        if let Some(reboot) = &self.reboot {
            if reboot.delay_seconds > MAX_REBOOT_DELAY_SECONDS {
                errors.push(
                    FieldError::new(
                        "spec.reboot.delaySeconds",
                        FieldErrorType::Invalid,
                        format!("must be at most {MAX_REBOOT_DELAY_SECONDS}"),
                    )
                    .with_value(reboot.delay_seconds.to_string()),
                );
            }
            chosen.push(Operation::Reboot {
                delay_seconds: reboot.delay_seconds,
            });
        }
        if self.stop.is_some() {
            chosen.push(Operation::Stop);
        }
        if self.start.is_some() {
            chosen.push(Operation::Start);
        }
        if let Some(snapshot) = &self.snapshot {
            if let Err(why) = snapshot_name(&snapshot.name) {
                errors.push(
                    FieldError::new("spec.snapshot.name", FieldErrorType::Invalid, why)
                        .with_value(snapshot.name.clone()),
                );
            }
            chosen.push(Operation::Snapshot {
                name: snapshot.name.clone(),
            });
        }
        if let Some(restore) = &self.restore {
            if let Err(why) = snapshot_name(&restore.snapshot) {
                errors.push(
                    FieldError::new("spec.restore.snapshot", FieldErrorType::Invalid, why)
                        .with_value(restore.snapshot.clone()),
                );
            }
            chosen.push(Operation::Restore {
                snapshot: restore.snapshot.clone(),
            });
        }
        if chosen.len() != 1 {
            errors.push(FieldError::new(
                "spec",
                FieldErrorType::Invalid,
                format!(
                    "exactly one of reboot, stop, start, snapshot, restore must be set ({} are)",
                    chosen.len()
                ),
            ));
        }
        if errors.is_empty() {
            Ok(chosen.remove(0))
        } else {
            Err(errors)
        }
    }
}

/// Snapshot names become libvirt snapshot names and file names: a DNS label.
pub fn snapshot_name(name: &str) -> Result<(), String> {
    if crate::naming::is_dns_label(name) {
        Ok(())
    } else {
        Err("a snapshot name is a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

/// What can be known of an Action before a node acts, from its pod: the
/// pod is a VM (`runtime_class`), and a snapshot to restore exists (as the
/// node agent last reported in `observed`). The gateway and the operators'
/// Action controller both ask this.
pub fn check_pod(
    pod_name: &str,
    runtime_class: Option<&str>,
    observed: &Observed,
    operation: &Operation,
) -> Result<(), FieldError> {
    if runtime_class != Some(RUNTIME_CLASS) {
        return Err(FieldError::new(
            "spec.podName",
            FieldErrorType::Invalid,
            format!(
                "pod {pod_name:?} is not a VM pod (its runtimeClassName is not {RUNTIME_CLASS}); actions apply to VMs only"
            ),
        )
        .with_value(pod_name));
    }
    match operation {
        Operation::Restore { snapshot } if !observed.snapshots.contains(snapshot) => {
            Err(FieldError::new(
                "spec.restore.snapshot",
                FieldErrorType::NotFound,
                format!(
                    "pod {pod_name:?} has no such snapshot (it has: {:?})",
                    observed.snapshots
                ),
            )
            .with_value(snapshot.clone()))
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ActionPhase {
    /// Accepted, waiting for the node agent.
    #[default]
    Pending,
    /// The node agent is carrying it out.
    Running,
    Succeeded,
    Failed,
}

impl ActionPhase {
    pub fn is_done(self) -> bool {
        matches!(self, ActionPhase::Succeeded | ActionPhase::Failed)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    #[serde(default)]
    pub phase: ActionPhase,
    /// reboot, stop, start, snapshot or restore.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// The node whose agent carries it out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Results: the snapshot taken, or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotResult {
    pub name: String,
    /// libvirt's name of the snapshot (unique on the node).
    pub id: String,
    /// Whether the guest's memory was saved too (the VM was running).
    pub memory: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_operation_is_accepted() {
        let spec = ActionSpec {
            pod_name: "vm1".into(),
            reboot: Some(Reboot { delay_seconds: 2 }),
            ..Default::default()
        };
        assert_eq!(
            spec.operation().unwrap(),
            Operation::Reboot { delay_seconds: 2 }
        );
        let none = ActionSpec {
            pod_name: "vm1".into(),
            ..Default::default()
        };
        let errors = none.operation().unwrap_err();
        assert!(errors[0].message().contains("exactly one"), "{errors:?}");
        let two = ActionSpec {
            pod_name: "vm1".into(),
            stop: Some(Empty {}),
            start: Some(Empty {}),
            ..Default::default()
        };
        assert!(two.operation().is_err());
    }

    #[test]
    fn snapshot_names_are_dns_labels() {
        assert!(snapshot_name("before-upgrade").is_ok());
        for bad in ["", "Upper", "-x", "x-", "a/b", &"a".repeat(64)] {
            assert!(snapshot_name(bad).is_err(), "{bad}");
        }
        let spec = ActionSpec {
            pod_name: "vm1".into(),
            restore: Some(Restore {
                snapshot: "../x".into(),
            }),
            ..Default::default()
        };
        assert!(spec.operation().is_err());
    }
}
