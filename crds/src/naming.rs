//! The one mapping between a tenant's view and the cluster's storage.
//!
//! Tenant `acme`, namespace `web` is stored as namespace `acme--web`. Tenant
//! names are DNS labels of at most 20 characters without `--`, so the first
//! `--` of a storage name always ends the tenant part. Names that do not fit
//! are rejected, never truncated or hashed. The `system` tenant maps to the
//! cluster's own namespaces unchanged.

use std::fmt;

/// Longest tenant name.
pub const MAX_TENANT_NAME: usize = 20;
/// Longest namespace name Kubernetes accepts (a DNS label).
pub const MAX_NAMESPACE_NAME: usize = 63;
/// Between the tenant and its namespace in a storage name.
pub const SEPARATOR: &str = "--";
/// The tenant whose namespaces are the cluster's own.
pub const SYSTEM_TENANT: &str = "system";
/// Label on every namespace of a tenant and every object in it.
pub const TENANT_LABEL: &str = "tenancy.arktos.io/tenant";

/// The labels every object of tenant `tenant` carries: the tenant, and its
/// bucket on the sharding ring (`sharding::BUCKET_LABEL`), so that sharded
/// controllers and list caches can ask the API server for one share of
/// the tenants' objects with a label selector.
pub fn tenant_labels(tenant: &str) -> [(&'static str, String); 2] {
    [
        (TENANT_LABEL, tenant.to_string()),
        (
            crate::sharding::BUCKET_LABEL,
            crate::sharding::bucket_of(tenant).to_string(),
        ),
    ]
}
/// The label kube-apiserver puts on every namespace, its name as value:
/// a tenant sees (and selects on) its own name there, not the storage name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Annotation on a tenant's pods: the namespace's name in the tenant. Their
/// downward API (the service account's `namespace` file, `POD_NAMESPACE`)
/// reads it instead of the storage name.
pub const POD_NAMESPACE_ANNOTATION: &str = "tenancy.arktos.io/namespace";
/// API groups of tenants' own CustomResourceDefinitions are stored under
/// this domain: `example.com` of tenant `acme` is
/// `example.com.acme.tenants.arktos.io`, so no two tenants (and no group
/// of the cluster's) ever collide.
pub const TENANT_GROUPS_DOMAIN: &str = "tenants.arktos.io";
/// Longest API group (a DNS subdomain).
pub const MAX_GROUP: usize = 253;
/// Longest name of a cluster-scoped object (a path segment).
pub const MAX_CLUSTER_OBJECT_NAME: usize = 253;
/// The cluster's ClusterRoles every tenant reads and binds under their own
/// names; a tenant cannot define its own of these names.
pub const SHARED_CLUSTER_ROLES: [&str; 3] = ["admin", "edit", "view"];
/// Namespaces every tenant has from the start, as every Kubernetes cluster
/// (and every Arktos tenant) does. The tenant controller keeps them; they
/// cannot be deleted through a tenant route and do not count against
/// `count/namespaces`.
pub const DEFAULT_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Whether a storage namespace is one of its tenant's default namespaces.
pub fn is_default_storage_namespace(storage: &str) -> bool {
    split_storage_namespace(storage).is_some_and(|(_, ns)| DEFAULT_NAMESPACES.contains(&ns))
}

/// Why a name cannot be used; the message names the rule and the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "tenant name {0:?} must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    TenantNotDnsLabel(String),
    #[error("tenant name {name:?} is {len} characters long; at most {MAX_TENANT_NAME} are allowed")]
    TenantTooLong { name: String, len: usize },
    #[error("tenant name {0:?} must not contain {SEPARATOR:?}")]
    TenantHasSeparator(String),
    #[error(
        "namespace name {0:?} must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    NamespaceNotDnsLabel(String),
    #[error(
        "namespace name {name:?} is {len} characters long; in tenant {tenant:?} at most {max} are allowed"
    )]
    NamespaceTooLong {
        tenant: String,
        name: String,
        len: usize,
        max: usize,
    },
    #[error(
        "API group {0:?} must be a DNS subdomain: lowercase letters, digits, '-' and '.', with a dot"
    )]
    GroupNotSubdomain(String),
    #[error(
        "API group {name:?} is {len} characters long; in tenant {tenant:?} at most {max} are allowed"
    )]
    GroupTooLong {
        tenant: String,
        name: String,
        len: usize,
        max: usize,
    },
    #[error("name {0:?} may not be empty, '.' or '..', nor contain '/' or '%'")]
    NotPathSegment(String),
    #[error(
        "name {name:?} is {len} characters long; in tenant {tenant:?} at most {max} are allowed"
    )]
    ClusterObjectTooLong {
        tenant: String,
        name: String,
        len: usize,
        max: usize,
    },
}

/// A valid tenant name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);

impl TenantName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if !is_dns_label(name) {
            return Err(NameError::TenantNotDnsLabel(name.to_string()));
        }
        if name.len() > MAX_TENANT_NAME {
            return Err(NameError::TenantTooLong {
                name: name.to_string(),
                len: name.len(),
            });
        }
        if name.contains(SEPARATOR) {
            return Err(NameError::TenantHasSeparator(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn system() -> Self {
        Self(SYSTEM_TENANT.to_string())
    }

    pub fn is_system(&self) -> bool {
        self.0 == SYSTEM_TENANT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The longest namespace name this tenant can use.
    pub fn max_namespace_len(&self) -> usize {
        if self.is_system() {
            MAX_NAMESPACE_NAME
        } else {
            MAX_NAMESPACE_NAME - self.0.len() - SEPARATOR.len()
        }
    }

    /// What every storage namespace of this tenant starts with (empty for
    /// the system tenant).
    pub fn storage_prefix(&self) -> String {
        if self.is_system() {
            String::new()
        } else {
            format!("{}{SEPARATOR}", self.0)
        }
    }

    /// The storage name of the tenant's namespace `namespace`.
    pub fn storage_namespace(&self, namespace: &str) -> Result<StorageNamespace, NameError> {
        if !is_dns_label(namespace) {
            return Err(NameError::NamespaceNotDnsLabel(namespace.to_string()));
        }
        let max = self.max_namespace_len();
        if namespace.len() > max {
            return Err(NameError::NamespaceTooLong {
                tenant: self.0.clone(),
                name: namespace.to_string(),
                len: namespace.len(),
                max,
            });
        }
        if self.is_system() {
            return Ok(StorageNamespace(namespace.to_string()));
        }
        Ok(StorageNamespace(format!(
            "{}{SEPARATOR}{namespace}",
            self.0
        )))
    }

    /// The tenant's own name for a storage namespace, or `None` when the
    /// storage namespace belongs to another tenant (or, for `system`, to any
    /// tenant at all).
    pub fn tenant_namespace<'a>(&self, storage: &'a str) -> Option<&'a str> {
        match split_storage_namespace(storage) {
            Some((tenant, namespace)) if tenant == self.0 => Some(namespace),
            Some(_) => None,
            None if self.is_system() => Some(storage),
            None => None,
        }
    }
}

impl TenantName {
    /// The storage name of the tenant's own cluster-scoped object `name`
    /// (a ClusterRole or ClusterRoleBinding of the tenant): prefixed as its
    /// namespaces are, unchanged for the system tenant.
    pub fn storage_cluster_object(&self, name: &str) -> Result<String, NameError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
            return Err(NameError::NotPathSegment(name.to_string()));
        }
        let prefix = self.storage_prefix();
        let max = MAX_CLUSTER_OBJECT_NAME - prefix.len();
        if name.len() > max {
            return Err(NameError::ClusterObjectTooLong {
                tenant: self.0.clone(),
                name: name.to_string(),
                len: name.len(),
                max,
            });
        }
        Ok(format!("{prefix}{name}"))
    }

    /// The tenant's name for a cluster-scoped object stored as `storage`,
    /// or `None` when it is not the tenant's.
    pub fn tenant_cluster_object<'a>(&self, storage: &'a str) -> Option<&'a str> {
        if self.is_system() {
            return Some(storage);
        }
        storage
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix(SEPARATOR))
            .filter(|name| !name.is_empty())
    }
}

impl TenantName {
    /// What the tenant's API groups end with as stored.
    fn group_suffix(&self) -> String {
        format!(".{}.{TENANT_GROUPS_DOMAIN}", self.0)
    }

    /// The stored API group of the tenant's own group `group` (of a
    /// CustomResourceDefinition it defines); unchanged for the system
    /// tenant.
    pub fn storage_group(&self, group: &str) -> Result<String, NameError> {
        let labels_ok = group.split('.').all(is_dns_label);
        if !group.contains('.') || !labels_ok {
            return Err(NameError::GroupNotSubdomain(group.to_string()));
        }
        if self.is_system() {
            return Ok(group.to_string());
        }
        let suffix = self.group_suffix();
        let max = MAX_GROUP - suffix.len();
        if group.len() > max {
            return Err(NameError::GroupTooLong {
                tenant: self.0.clone(),
                name: group.to_string(),
                len: group.len(),
                max,
            });
        }
        Ok(format!("{group}{suffix}"))
    }

    /// The tenant's own name of stored group `storage`, when it is one of
    /// the tenant's.
    pub fn tenant_group<'a>(&self, storage: &'a str) -> Option<&'a str> {
        storage
            .strip_suffix(&self.group_suffix())
            .filter(|g| !g.is_empty())
    }
}

/// Whether a stored API group is some tenant's own.
pub fn is_tenant_group(group: &str) -> bool {
    split_tenant_group(group).is_some()
}

/// Splits `example.com.acme.tenants.arktos.io` into `("acme",
/// "example.com")`.
pub fn split_tenant_group(storage: &str) -> Option<(&str, &str)> {
    let rest = storage.strip_suffix(&format!(".{TENANT_GROUPS_DOMAIN}"))?;
    let (group, tenant) = rest.rsplit_once('.')?;
    (TenantName::new(tenant).is_ok() && !group.is_empty()).then_some((tenant, group))
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A namespace name as stored in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageNamespace(String);

impl StorageNamespace {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorageNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `acme--web` into `("acme", "web")`; `None` for a namespace of the
/// system tenant (no separator, or a prefix that is no valid tenant name).
pub fn split_storage_namespace(storage: &str) -> Option<(&str, &str)> {
    let (tenant, namespace) = storage.split_once(SEPARATOR)?;
    let valid = TenantName::new(tenant).is_ok() && !namespace.is_empty();
    valid.then_some((tenant, namespace))
}

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAMESPACE_NAME
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantName {
        TenantName::new(name).unwrap()
    }

    #[test]
    fn maps_a_tenant_namespace_both_ways() {
        let acme = tenant("acme");
        let stored = acme.storage_namespace("web").unwrap();
        assert_eq!(stored.as_str(), "acme--web");
        assert_eq!(acme.tenant_namespace(stored.as_str()), Some("web"));
        assert_eq!(split_storage_namespace("acme--web"), Some(("acme", "web")));
    }

    #[test]
    fn a_namespace_may_itself_contain_the_separator() {
        let acme = tenant("acme");
        let stored = acme.storage_namespace("a--b").unwrap();
        assert_eq!(stored.as_str(), "acme--a--b");
        assert_eq!(acme.tenant_namespace(stored.as_str()), Some("a--b"));
    }

    #[test]
    fn a_tenant_never_maps_another_tenants_namespace() {
        let acme = tenant("acme");
        assert_eq!(acme.tenant_namespace("globex--web"), None);
        assert_eq!(acme.tenant_namespace("kube-system"), None);
        assert_eq!(acme.tenant_namespace("acme"), None);
        assert_eq!(acme.tenant_namespace("acme-web"), None);
    }

    #[test]
    fn system_sees_only_the_clusters_own_namespaces() {
        let system = TenantName::system();
        assert_eq!(
            system.storage_namespace("kube-system").unwrap().as_str(),
            "kube-system"
        );
        assert_eq!(system.tenant_namespace("kube-system"), Some("kube-system"));
        assert_eq!(system.tenant_namespace("acme--web"), None);
    }

    #[test]
    fn tenant_names_follow_the_rules() {
        assert!(TenantName::new("a").is_ok());
        assert!(TenantName::new(&"a".repeat(20)).is_ok());
        assert_eq!(
            TenantName::new(&"a".repeat(21)),
            Err(NameError::TenantTooLong {
                name: "a".repeat(21),
                len: 21
            })
        );
        assert!(matches!(
            TenantName::new("a--b"),
            Err(NameError::TenantHasSeparator(_))
        ));
        for bad in ["", "Acme", "-acme", "acme-", "ac_me", "ac.me"] {
            assert!(
                matches!(TenantName::new(bad), Err(NameError::TenantNotDnsLabel(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_namespace_too_long_for_its_tenant_is_rejected_not_truncated() {
        let t = tenant(&"t".repeat(20));
        let max = 63 - 20 - 2;
        assert_eq!(t.max_namespace_len(), max);
        let fits = "n".repeat(max);
        assert_eq!(t.storage_namespace(&fits).unwrap().as_str().len(), 63);
        let err = t.storage_namespace(&"n".repeat(max + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "namespace name {:?} is {} characters long; in tenant {:?} at most {max} are allowed",
                "n".repeat(max + 1),
                max + 1,
                "t".repeat(20)
            )
        );
    }

    #[test]
    fn bad_namespace_names_are_rejected() {
        let acme = tenant("acme");
        for bad in ["", "Web", "web.", "-web", "w_b"] {
            assert!(
                matches!(
                    acme.storage_namespace(bad),
                    Err(NameError::NamespaceNotDnsLabel(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn maps_a_tenants_cluster_object_both_ways() {
        let acme = tenant("acme");
        let stored = acme.storage_cluster_object("pod-reader:v1").unwrap();
        assert_eq!(stored, "acme--pod-reader:v1");
        assert_eq!(acme.tenant_cluster_object(&stored), Some("pod-reader:v1"));
        assert_eq!(acme.tenant_cluster_object("globex--pod-reader"), None);
        assert_eq!(acme.tenant_cluster_object("acme--"), None);
        for bad in ["", "..", "a/b", "a%2f"] {
            assert!(matches!(
                acme.storage_cluster_object(bad),
                Err(NameError::NotPathSegment(_))
            ));
        }
        let long = "r".repeat(MAX_CLUSTER_OBJECT_NAME - 5);
        assert!(
            acme.storage_cluster_object(&long)
                .unwrap_err()
                .to_string()
                .contains("at most 247")
        );
        assert_eq!(
            TenantName::system().storage_cluster_object("view").unwrap(),
            "view"
        );
    }

    #[test]
    fn maps_a_tenants_api_group_both_ways() {
        let acme = tenant("acme");
        let stored = acme.storage_group("example.com").unwrap();
        assert_eq!(stored, "example.com.acme.tenants.arktos.io");
        assert!(is_tenant_group(&stored));
        assert_eq!(split_tenant_group(&stored), Some(("acme", "example.com")));
        assert!(!is_tenant_group("example.com"));
        assert_eq!(acme.tenant_group(&stored), Some("example.com"));
        assert_eq!(tenant("globex").tenant_group(&stored), None);
        assert_eq!(acme.tenant_group("example.com"), None);
        for bad in ["example", "Example.com", "a..b", ""] {
            assert!(matches!(
                acme.storage_group(bad),
                Err(NameError::GroupNotSubdomain(_))
            ));
        }
        let long = format!("{}.com", "a".repeat(60)).repeat(4);
        assert!(matches!(
            acme.storage_group(&long),
            Err(NameError::GroupTooLong { .. })
        ));
        assert_eq!(
            TenantName::system().storage_group("example.com").unwrap(),
            "example.com"
        );
    }
}
