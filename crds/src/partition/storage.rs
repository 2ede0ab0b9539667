//! Where Partitions are stored: the internal CRD `PartitionRecord` in
//! `storage.tenancy.arktos.io`, with the Partition's schema, as Tenants are
//! stored in TenantRecords (see `tenant::storage`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::Partition;
use crate::tenant::storage::as_record;

pub const STORAGE_KIND: &str = "PartitionRecord";
pub const STORAGE_PLURAL: &str = "partitionrecords";

/// The CRD that stores Partitions, kept out of the `all` category.
pub fn storage_crd() -> CustomResourceDefinition {
    as_record(Partition::crd(), STORAGE_KIND, STORAGE_PLURAL)
}
