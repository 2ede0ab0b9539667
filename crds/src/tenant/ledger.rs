//! The tenant-wide quota ledger: one `QuotaLedger` per tenant (named like
//! the tenant, in `storage.tenancy.arktos.io`), listing every object
//! charged against the tenant's quota. Admission adds a charge with an
//! optimistic-concurrency write before a create may proceed, so concurrent
//! creates anywhere in the tenant, on any webhook replica, are serialised
//! by kube-apiserver's resourceVersion check; the tenant controller confirms
//! charges of stored objects and drops those of objects that are gone.
//! Only arktos-operators (and cluster admins) may touch ledgers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const LEDGER_PLURAL: &str = "quotaledgers";

/// Every object charged against one tenant's quota.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "storage.tenancy.arktos.io",
    version = "v1alpha1",
    kind = "QuotaLedger",
    plural = "quotaledgers",
    doc = "Internal: the charges against one tenant's tenant-wide quota. Written by arktos-operators only."
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLedgerSpec {
    /// Charges by key: the object's UID (or, before it has one, its
    /// resource, namespace and name).
    #[serde(default)]
    pub charges: BTreeMap<String, Charge>,
}

/// What one object uses.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    /// `<resource>/<storage namespace>/<name>`, for people reading the ledger.
    pub object: String,
    /// Usage per quota key, as quantities.
    pub usage: BTreeMap<String, String>,
    /// Set from admission until the controller sees the object stored; a
    /// charge whose create never completed is dropped after a grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
}
