//! Where Tenants are stored: an internal CRD, `TenantRecord` in
//! `storage.tenancy.arktos.io`, with the Tenant's schema. kube-apiserver
//! gives it etcd persistence, resourceVersions, optimistic concurrency,
//! watch with bookmarks, and server-side apply; arktos-apiserver translates
//! between the two kinds and adds what a CRD cannot express. Only
//! arktos-apiserver (and cluster admins) may touch records.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, ValidationRule,
};
use kube::CustomResourceExt;

use super::Tenant;

pub const STORAGE_GROUP: &str = "storage.tenancy.arktos.io";
pub const STORAGE_VERSION: &str = "v1alpha1";
pub const STORAGE_KIND: &str = "TenantRecord";
pub const STORAGE_PLURAL: &str = "tenantrecords";

/// The CRD that stores Tenants: the Tenant's own generated schema under the
/// internal group, with `partition` immutable and the record kept out of
/// the `all` category.
pub fn storage_crd() -> CustomResourceDefinition {
    let mut crd = as_record(Tenant::crd(), STORAGE_KIND, STORAGE_PLURAL);
    for version in &mut crd.spec.versions {
        let partition = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|props| props.get_mut("spec"))
            .and_then(|spec| spec.properties.as_mut())
            .and_then(|props| props.get_mut("partition"));
        if let Some(partition) = partition {
            immutable(partition);
        }
    }
    crd
}

/// `crd` (a served kind's generated CRD) as the internal record kind
/// `kind`/`plural` of the storage group that stores it.
pub(crate) fn as_record(
    mut crd: CustomResourceDefinition,
    kind: &str,
    plural: &str,
) -> CustomResourceDefinition {
    crd.metadata.name = Some(format!("{plural}.{STORAGE_GROUP}"));
    crd.metadata.labels = Some(
        [(
            "app.kubernetes.io/part-of".to_string(),
            "arktos".to_string(),
        )]
        .into(),
    );
    crd.spec.group = STORAGE_GROUP.to_string();
    crd.spec.names.kind = kind.to_string();
    crd.spec.names.plural = plural.to_string();
    crd.spec.names.singular = Some(kind.to_lowercase());
    crd.spec.names.list_kind = Some(format!("{kind}List"));
    crd.spec.names.short_names = None;
    crd.spec.names.categories = None;
    crd
}

fn immutable(field: &mut JSONSchemaProps) {
    field.x_kubernetes_validations = Some(vec![ValidationRule {
        rule: "self == oldSelf".into(),
        message: Some("partition is immutable".into()),
        ..Default::default()
    }]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_crd_is_the_tenant_schema_under_the_internal_group() {
        let crd = storage_crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("tenantrecords.storage.tenancy.arktos.io")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let spec = &schema.properties.as_ref().unwrap()["spec"];
        let partition = &spec.properties.as_ref().unwrap()["partition"];
        assert_eq!(
            partition.x_kubernetes_validations.as_ref().unwrap()[0].rule,
            "self == oldSelf"
        );
    }
}
