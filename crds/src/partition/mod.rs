//! `Partition` (`tenancy.arktos.io/v1alpha1`, cluster-scoped): a backend
//! control plane that holds tenants, an ordinary Kubernetes cluster reached
//! with the kubeconfig in a Secret of the root cluster. The root cluster
//! itself is the partition `tenant::DEFAULT_PARTITION` and needs no object.

pub mod placement;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const KIND: &str = "Partition";
pub const PLURAL: &str = "partitions";
/// The key of the kubeconfig in the Secret when the reference names none.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The largest weight: placement compares tenants per unit of weight.
pub const MAX_WEIGHT: u32 = 1000;

/// A tenant partition: where its tenants' objects live, how much of the
/// fleet's tenants it should take, and whether it takes new ones.
// kube's `printcolumn(...)` repeats `type_` for columns of one type.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "tenancy.arktos.io",
    version = "v1alpha1",
    kind = "Partition",
    plural = "partitions",
    status = "PartitionStatus",
    doc = "A tenant partition: an unmodified Kubernetes control plane that holds some tenants.",
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".spec.weight"),
    printcolumn(name = "Tenants", type_ = "integer", json_path = ".status.tenants"),
    printcolumn(
        name = "Unschedulable",
        type_ = "boolean",
        json_path = ".spec.unschedulable"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSpec {
    /// The Secret (in the root cluster) holding the kubeconfig that reaches
    /// the partition's kube-apiserver as arktos-apiserver's identity there.
    pub kubeconfig_secret: SecretKeyRef,
    /// This partition's share of new tenants relative to the others (1 to
    /// `MAX_WEIGHT`; 0 takes none, like `unschedulable`).
    #[serde(default = "one")]
    pub weight: u32,
    /// Place no new tenants here; tenants already here stay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
}

/// A key of a Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    /// `kubeconfig` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

impl SecretKeyRef {
    pub fn key(&self) -> &str {
        if self.key.is_empty() {
            KUBECONFIG_KEY
        } else {
            &self.key
        }
    }
}

/// What the gateway last saw of the partition.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Its kube-apiserver answered `/readyz` at the last probe.
    #[serde(default)]
    pub ready: bool,
    /// Its kube-apiserver's `gitVersion`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Tenants placed here.
    #[serde(default)]
    pub tenants: u64,
    /// Why the last probe failed, if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// When the partition was last probed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
}

fn one() -> u32 {
    1
}

/// What is wrong with a Partition's spec, as field errors.
pub fn validate(spec: &PartitionSpec) -> Vec<crate::status::FieldError> {
    use crate::status::{FieldError, FieldErrorType};
    let mut errors = Vec::new();
    let secret = &spec.kubeconfig_secret;
    for (field, value) in [
        ("spec.kubeconfigSecret.namespace", &secret.namespace),
        ("spec.kubeconfigSecret.name", &secret.name),
    ] {
        if value.is_empty() {
            errors.push(FieldError::new(
                field,
                FieldErrorType::Required,
                "the Secret holding the partition's kubeconfig".to_string(),
            ));
        } else if !crate::naming::is_dns_label(value) && field.ends_with("namespace") {
            errors.push(FieldError::new(
                field,
                FieldErrorType::Invalid,
                "must be a namespace name".to_string(),
            ));
        }
    }
    if spec.weight > MAX_WEIGHT {
        errors.push(FieldError::new(
            "spec.weight",
            FieldErrorType::Invalid,
            format!("must be at most {MAX_WEIGHT}"),
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> PartitionSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn weight_defaults_to_one_and_the_key_to_kubeconfig() {
        let spec = spec(
            serde_json::json!({"kubeconfigSecret": {"namespace": "arktos-system", "name": "p2"}}),
        );
        assert_eq!(spec.weight, 1);
        assert!(!spec.unschedulable);
        assert_eq!(spec.kubeconfig_secret.key(), "kubeconfig");
        assert!(validate(&spec).is_empty());
    }

    #[test]
    fn a_partition_needs_its_secret_and_a_bounded_weight() {
        let bad = spec(
            serde_json::json!({"kubeconfigSecret": {"namespace": "", "name": ""}, "weight": 5000}),
        );
        let fields: Vec<String> = validate(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.kubeconfigSecret.namespace",
                "spec.kubeconfigSecret.name",
                "spec.weight"
            ]
        );
    }
}
