//! The rules a Tenant must satisfy, beyond its schema. Each failure names
//! its field and the limit, for a 422 `Status`.

use super::{Owner, OwnerKind, Tenant, TenantQuota};
use crate::naming::{TenantName, is_dns_label};
use crate::quantity;
use crate::status::{FieldError, FieldErrorType};

/// Quota keys counted tenant-wide, as a ResourceQuota names them.
pub const QUOTA_KEYS: &[&str] = &[
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
    "cpu",
    "memory",
    "pods",
    "services",
    "services.loadbalancers",
    "services.nodeports",
    "persistentvolumeclaims",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
];

/// Checks a Tenant as it would be stored by a create.
pub fn validate(tenant: &Tenant) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::new(
            "metadata.name",
            FieldErrorType::Required,
            "name is required",
        ));
    } else if let Err(err) = TenantName::new(name) {
        errors.push(
            FieldError::new("metadata.name", FieldErrorType::Invalid, err.to_string())
                .with_value(name),
        );
    }
    if tenant
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|ns| !ns.is_empty())
    {
        errors.push(FieldError::new(
            "metadata.namespace",
            FieldErrorType::Forbidden,
            "not allowed on this type: Tenants are cluster-scoped",
        ));
    }
    let spec = &tenant.spec;
    errors.extend(check_owners(&spec.owners));
    if let Some(quota) = &spec.quota {
        errors.extend(check_quota(quota));
    }
    if !spec.partition.is_empty() && !is_dns_label(&spec.partition) {
        errors.push(
            FieldError::new(
                "spec.partition",
                FieldErrorType::Invalid,
                "a partition name must be a DNS label (lowercase letters, digits and '-')",
            )
            .with_value(&spec.partition),
        );
    }
    errors
}

fn check_owners(owners: &[Owner]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let field = format!("spec.owners[{i}]");
        if owner.name.is_empty() {
            errors.push(FieldError::new(
                format!("{field}.name"),
                FieldErrorType::Required,
                "an owner needs a name",
            ));
        }
        match (owner.kind, owner.namespace.as_deref()) {
            (OwnerKind::ServiceAccount, None | Some("")) => errors.push(FieldError::new(
                format!("{field}.namespace"),
                FieldErrorType::Required,
                "a ServiceAccount owner needs its namespace",
            )),
            (OwnerKind::User | OwnerKind::Group, Some(ns)) if !ns.is_empty() => {
                errors.push(FieldError::new(
                    format!("{field}.namespace"),
                    FieldErrorType::Forbidden,
                    "only ServiceAccount owners have a namespace",
                ))
            }
            _ => {}
        }
    }
    errors
}

fn check_quota(quota: &TenantQuota) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in &quota.hard {
        let field = format!("spec.quota.hard[{key}]");
        if !is_quota_key(key) {
            errors.push(
                FieldError::new(
                    field.clone(),
                    FieldErrorType::NotSupported,
                    format!(
                        "supported keys: {}, count/<resource>[.<group>], requests.<domain>/<name>",
                        QUOTA_KEYS.join(", ")
                    ),
                )
                .with_value(key),
            );
        }
        if !quantity::is_valid(&value.0) {
            errors.push(
                FieldError::new(
                    field,
                    FieldErrorType::Invalid,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )
                .with_value(&value.0),
            );
        } else if quantity::is_negative(&value.0) {
            errors.push(
                FieldError::new(
                    field,
                    FieldErrorType::Invalid,
                    "must be greater than or equal to 0",
                )
                .with_value(&value.0),
            );
        }
    }
    errors
}

/// Checks an update of `old` to `new`: everything `validate` checks, plus
/// what may not change.
pub fn validate_update(old: &Tenant, new: &Tenant) -> Vec<FieldError> {
    let mut errors = validate(new);
    if !new.spec.partition.is_empty() && old.spec.partition != new.spec.partition {
        errors.push(
            FieldError::new(
                "spec.partition",
                FieldErrorType::Invalid,
                "partition is immutable; move a tenant with its migration instead",
            )
            .with_value(&new.spec.partition),
        );
    }
    errors
}

fn is_quota_key(key: &str) -> bool {
    if QUOTA_KEYS.contains(&key) {
        return true;
    }
    if let Some(resource) = key.strip_prefix("count/") {
        return !resource.is_empty()
            && resource.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
    }
    if let Some(extended) = key.strip_prefix("requests.") {
        return extended
            .split_once('/')
            .is_some_and(|(domain, name)| domain.contains('.') && !name.is_empty());
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::tenant::{Owner, TenantQuota, TenantSpec};

    fn mk_tenant(name: &str) -> Tenant {
        Tenant::new(name, TenantSpec::default())
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_plain_tenant_is_valid() {
        assert!(validate(&mk_tenant("acme")).is_empty());
    }

    #[test]
    fn names_follow_the_tenant_name_rules() {
        for bad in [&"a".repeat(21), "a--b", "Acme"] {
            let errors = validate(&mk_tenant(bad));
            assert_eq!(fields(&errors), ["metadata.name"], "{bad}");
        }
        assert!(
            validate(&mk_tenant(&"a".repeat(21)))[0]
                .detail
                .contains("at most 20")
        );
    }

    #[test]
    fn quota_keys_and_quantities_are_checked() {
        let mut tenant = mk_tenant("acme");
        tenant.spec.quota = Some(TenantQuota {
            hard: BTreeMap::from([
                ("requests.cpu".into(), Quantity("20".into())),
                ("count/namespaces".into(), Quantity("10".into())),
                ("requests.memory".into(), Quantity("lots".into())),
                ("bananas".into(), Quantity("1".into())),
                ("pods".into(), Quantity("-1".into())),
            ]),
        });
        let errors = validate(&tenant);
        assert_eq!(
            fields(&errors),
            [
                "spec.quota.hard[bananas]",
                "spec.quota.hard[pods]",
                "spec.quota.hard[requests.memory]"
            ]
        );
    }

    #[test]
    fn owners_are_well_formed() {
        let mut tenant = mk_tenant("acme");
        tenant.spec.owners = vec![
            Owner {
                kind: OwnerKind::User,
                name: "alice".into(),
                namespace: None,
            },
            Owner {
                kind: OwnerKind::ServiceAccount,
                name: "ci".into(),
                namespace: None,
            },
            Owner {
                kind: OwnerKind::Group,
                name: "".into(),
                namespace: Some("x".into()),
            },
        ];
        assert_eq!(
            fields(&validate(&tenant)),
            [
                "spec.owners[1].namespace",
                "spec.owners[2].name",
                "spec.owners[2].namespace"
            ]
        );
    }

    #[test]
    fn partition_is_immutable() {
        let old = mk_tenant("acme");
        let mut new = old.clone();
        new.spec.partition = "east".into();
        let errors = validate_update(&old, &new);
        assert_eq!(fields(&errors), ["spec.partition"]);
        assert!(errors[0].detail.contains("immutable"));
    }
}
