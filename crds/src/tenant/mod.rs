//! `Tenant` (`tenancy.arktos.io/v1alpha1`, cluster-scoped): the object the
//! whole system understands, served by arktos-apiserver.

pub mod desired;
mod ledger;
pub(crate) mod storage;
pub mod validation;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use ledger::{Charge, LEDGER_PLURAL, QuotaLedger, QuotaLedgerSpec};
pub use storage::{STORAGE_GROUP, STORAGE_KIND, STORAGE_PLURAL, STORAGE_VERSION, storage_crd};

pub const GROUP: &str = "tenancy.arktos.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Tenant";
pub const PLURAL: &str = "tenants";
pub const API_VERSION: &str = "tenancy.arktos.io/v1alpha1";
/// The quota key counting a tenant's own CustomResourceDefinitions.
pub const CRD_COUNT_KEY: &str = "count/customresourcedefinitions";
/// The name the root cluster (the one that hosts the APIService) has as a
/// partition unless arktos-apiserver's `--root-partition` says otherwise.
pub const ROOT_PARTITION: &str = "local";

/// A tenant: its owners, tenant-wide quota, pod security level, network
/// isolation and the partition (backend control plane) that holds it.
// kube's `printcolumn(...)` repeats `type_` for columns of one type.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "tenancy.arktos.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    status = "TenantStatus",
    doc = "A tenant of the cluster: an isolated Kubernetes API with its own namespaces, owners and tenant-wide quota.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.namespaces"
    ),
    printcolumn(name = "Partition", type_ = "string", json_path = ".spec.partition"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Users, groups and service accounts that administer the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Owner>,
    /// Limits that hold across all the tenant's namespaces together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<TenantQuota>,
    /// The Pod Security Standard enforced in every namespace of the tenant.
    #[serde(default)]
    pub pod_security: PodSecurityLevel,
    /// Deny traffic from other tenants' pods (allow within the tenant and DNS).
    #[serde(default = "enabled")]
    pub network_isolation: bool,
    /// Ways of exposing Services outside the cluster the tenant may use;
    /// all off unless the platform team allows them.
    #[serde(default, skip_serializing_if = "ServiceExposure::is_none")]
    pub service_exposure: ServiceExposure,
    /// Whether the tenant's pods may pick their node (`spec.nodeName`, or a
    /// node selector or affinity on `kubernetes.io/hostname`); off unless
    /// the platform team allows it: tenants cannot see nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_targeting: bool,
    /// The backend control plane that holds the tenant's objects: set by an
    /// admin at creation, else chosen by arktos-apiserver's placement (as
    /// the scheduler sets a pod's `spec.nodeName`). Immutable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
}

/// Service exposure beyond ClusterIP: each reaches outside the tenant.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExposure {
    /// Services of type NodePort (and the node ports of LoadBalancers).
    #[serde(default)]
    pub node_port: bool,
    /// Services of type LoadBalancer.
    #[serde(default)]
    pub load_balancer: bool,
    /// `spec.externalIPs` on Services.
    #[serde(default, rename = "externalIPs")]
    pub external_ips: bool,
}

impl ServiceExposure {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for TenantSpec {
    fn default() -> Self {
        Self {
            owners: Vec::new(),
            quota: None,
            pod_security: PodSecurityLevel::default(),
            network_isolation: true,
            service_exposure: ServiceExposure::default(),
            node_targeting: false,
            partition: String::new(),
        }
    }
}

fn enabled() -> bool {
    true
}

/// An owner of a tenant, as in an RBAC subject.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
    /// Only for `ServiceAccount`: its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum OwnerKind {
    User,
    Group,
    ServiceAccount,
}

/// Tenant-wide hard limits, keyed like a ResourceQuota's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct TenantQuota {
    #[serde(default)]
    pub hard: BTreeMap<String, Quantity>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    #[default]
    Restricted,
    Baseline,
}

impl PodSecurityLevel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Restricted => "restricted",
            Self::Baseline => "baseline",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// How many namespaces the tenant has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<u32>,
    /// Usage against `spec.quota.hard`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The partition that holds the tenant (where it was placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TenantPhase {
    Active,
    Terminating,
}
