//! Where Partitions are stored: the internal CRD `PartitionRecord` in
//! `storage.tenancy.arktos.io`, with the Partition's schema, as Tenants are
//! stored in TenantRecords (see `tenant::storage`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::Partition;
use crate::tenant::STORAGE_GROUP;

pub const STORAGE_KIND: &str = "PartitionRecord";
pub const STORAGE_PLURAL: &str = "partitionrecords";

/// The CRD that stores Partitions, kept out of the `all` category.
pub fn storage_crd() -> CustomResourceDefinition {
    let mut crd = Partition::crd();
    crd.metadata.name = Some(format!("{STORAGE_PLURAL}.{STORAGE_GROUP}"));
    crd.metadata.labels = Some(
        [(
            "app.kubernetes.io/part-of".to_string(),
            "arktos".to_string(),
        )]
        .into(),
    );
    crd.spec.group = STORAGE_GROUP.to_string();
    crd.spec.names.kind = STORAGE_KIND.to_string();
    crd.spec.names.plural = STORAGE_PLURAL.to_string();
    crd.spec.names.singular = Some("partitionrecord".to_string());
    crd.spec.names.list_kind = Some(format!("{STORAGE_KIND}List"));
    crd.spec.names.short_names = None;
    crd.spec.names.categories = None;
    crd
}
