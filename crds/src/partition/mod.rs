//! `Partition` (`tenancy.arktos.io/v1alpha1`, cluster-scoped): a backend
//! control plane that holds tenants, an ordinary Kubernetes cluster reached
//! with the kubeconfig in a Secret of the root cluster. The root cluster
//! itself is a partition too (`tenant::ROOT_PARTITION` unless renamed) and
//! needs no object.

pub mod connect;
pub mod placement;
mod storage;

pub use storage::{STORAGE_KIND, STORAGE_PLURAL, storage_crd};

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
    #[schemars(range(max = 1000))]
    pub weight: u32,
    /// Place no new tenants here; tenants already here stay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
}

/// A key of a Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
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
    }

    #[test]
    fn the_stored_schema_bounds_the_weight_and_needs_the_secret() {
        let crd = storage_crd();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["weight"]["maximum"],
            f64::from(MAX_WEIGHT)
        );
        let secret = &spec["properties"]["kubeconfigSecret"];
        assert_eq!(secret["properties"]["name"]["minLength"], 1);
        assert_eq!(secret["required"], serde_json::json!(["name", "namespace"]));
        assert_eq!(crd.spec.names.kind, "PartitionRecord");
        assert_eq!(crd.spec.scope, "Cluster");
    }
}
