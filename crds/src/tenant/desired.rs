//! What a Tenant must have in the cluster, as plain objects: pure
//! functions of the Tenant (and its namespaces), tested without a cluster.
//! The tenant gateway creates a namespace's owners binding with them and
//! the tenant controller keeps them, so both write the same objects.

use std::collections::BTreeMap;

use crate::naming::{TENANT_LABEL, tenant_labels};
use crate::tenant::{GROUP, OwnerKind, PLURAL, Tenant};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use serde_json::json;

/// Marks everything the tenant controller keeps in place.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "arktos-operators");
/// RoleBinding in each tenant namespace making the owners admins (the
/// gateway creates it with the namespace; the controller keeps it).
pub const OWNERS_BINDING: &str = "arktos-tenant-owners";
/// NetworkPolicy admitting traffic only from the tenant's own namespaces.
pub const ISOLATION_POLICY: &str = "arktos-tenant-isolation";

pub fn owner_role_name(tenant: &str) -> String {
    format!("arktos:tenant:{tenant}:owner")
}

/// The ClusterRole giving a tenant's owners every right on the API groups
/// of its own CustomResourceDefinitions, bound in each of its namespaces
/// by [`OWNERS_CUSTOM_RESOURCES_BINDING`] (both kept by arktos-apiserver).
pub fn custom_resources_role_name(tenant: &str) -> String {
    format!("arktos:tenant:{tenant}:custom-resources")
}

/// The ClusterRole (and ClusterRoleBinding of the same name) giving a
/// tenant's owners every right on the cluster-scoped resources of its own
/// CRDs (kept by arktos-apiserver).
pub fn cluster_custom_resources_role_name(tenant: &str) -> String {
    format!("arktos:tenant:{tenant}:cluster-custom-resources")
}

pub const OWNERS_CUSTOM_RESOURCES_BINDING: &str = "arktos-tenant-owners-custom-resources";

fn labels(tenant: &str) -> BTreeMap<String, String> {
    let mut labels = owned_labels(tenant);
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels
}

fn owned_labels(tenant: &str) -> BTreeMap<String, String> {
    tenant_labels(tenant)
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

fn subjects(tenant: &Tenant, map_namespace: &dyn Fn(&str) -> String) -> serde_json::Value {
    let subjects: Vec<serde_json::Value> = tenant
        .spec
        .owners
        .iter()
        .map(|owner| match owner.kind {
            OwnerKind::User => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner.name}),
            OwnerKind::Group => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": owner.name}),
            OwnerKind::ServiceAccount => json!({"kind": "ServiceAccount", "name": owner.name,
                "namespace": map_namespace(owner.namespace.as_deref().unwrap_or_default())}),
        })
        .collect();
    serde_json::Value::Array(subjects)
}

/// The ClusterRole granting `use` of the tenant and its routes, and what
/// owners do with its namespaces.
pub fn owner_role(tenant: &str) -> ClusterRole {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": owner_role_name(tenant), "labels": labels(tenant)},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [tenant], "verbs": ["get", "use"]},
            {"apiGroups": [GROUP], "resources": ["tenants/api", "tenants/apis"], "resourceNames": [tenant],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": [GROUP], "resources": ["tenants/namespaces", "tenants/clusterroles", "tenants/clusterrolebindings", "tenants/customresourcedefinitions"],
             "resourceNames": [tenant], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        ],
    }))
    .expect("a valid ClusterRole")
}

pub fn owner_role_binding(
    tenant: &Tenant,
    map_namespace: &dyn Fn(&str) -> String,
) -> ClusterRoleBinding {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": owner_role_name(&name), "labels": labels(&name)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": owner_role_name(&name)},
        "subjects": subjects(tenant, map_namespace),
    }))
    .expect("a valid ClusterRoleBinding")
}

/// Labels every namespace of the tenant carries: the tenant, its bucket,
/// and its Pod Security Standard in all three modes.
pub fn namespace_labels(tenant: &Tenant) -> BTreeMap<String, String> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let level = tenant.spec.pod_security.as_str();
    let mut labels = owned_labels(&name);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            level.to_string(),
        );
    }
    labels
}

pub fn owners_binding(
    tenant: &Tenant,
    namespace: &str,
    map_namespace: &dyn Fn(&str) -> String,
) -> RoleBinding {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": OWNERS_BINDING, "namespace": namespace, "labels": labels(&name)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": subjects(tenant, map_namespace),
    }))
    .expect("a valid RoleBinding")
}

/// Admits traffic into the namespace only from the tenant's namespaces.
pub fn isolation_policy(tenant: &str, namespace: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": ISOLATION_POLICY, "namespace": namespace, "labels": labels(tenant)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}]}],
        },
    }))
    .expect("a valid NetworkPolicy")
}

/// The Service and EndpointSlice naming the tenant's API (the gateway) in
/// its `default` namespace, as `kubernetes` names the cluster's.
pub const API_SERVICE: &str = "kubernetes";

/// The tenant's `kubernetes` Service: no selector, its one endpoint is
/// the gateway's address for pods ([`api_endpoints`]).
pub fn api_service(tenant: &str, namespace: &str, gateway: std::net::SocketAddr) -> Service {
    let mut labels = labels(tenant);
    labels.insert("component".into(), "apiserver".into());
    labels.insert("provider".into(), "kubernetes".into());
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": API_SERVICE, "namespace": namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": gateway.port()}],
        },
    }))
    .expect("a valid Service")
}

/// The endpoint of the tenant's `kubernetes` Service: the gateway.
pub fn api_endpoints(
    tenant: &str,
    namespace: &str,
    gateway: std::net::SocketAddr,
) -> EndpointSlice {
    let mut labels = labels(tenant);
    labels.insert("kubernetes.io/service-name".into(), API_SERVICE.into());
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        "arktos-operators".into(),
    );
    let family = if gateway.is_ipv4() { "IPv4" } else { "IPv6" };
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": API_SERVICE, "namespace": namespace, "labels": labels},
        "addressType": family,
        "endpoints": [{"addresses": [gateway.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": gateway.port(), "protocol": "TCP"}],
    }))
    .expect("a valid EndpointSlice")
}

#[cfg(test)]
mod tests {
    use crate::tenant::{Owner, PodSecurityLevel, TenantSpec};

    use super::*;

    fn mk_tenant() -> Tenant {
        Tenant::new(
            "acme",
            TenantSpec {
                owners: vec![
                    Owner {
                        kind: OwnerKind::User,
                        name: "alice".into(),
                        namespace: None,
                    },
                    Owner {
                        kind: OwnerKind::ServiceAccount,
                        name: "ci".into(),
                        namespace: Some("web".into()),
                    },
                ],
                pod_security: PodSecurityLevel::Baseline,
                ..Default::default()
            },
        )
    }

    #[test]
    fn owners_may_use_only_their_tenant() {
        let role = owner_role("acme");
        for rule in role.rules.unwrap() {
            assert_eq!(rule.resource_names.unwrap(), ["acme"]);
            assert!(
                !rule.verbs.contains(&"escalate".to_string())
                    && !rule.verbs.contains(&"bind".to_string())
            );
        }
        let binding = owner_role_binding(&mk_tenant(), &|ns| format!("acme--{ns}"));
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects[0].name, "alice");
        assert_eq!(subjects[1].namespace.as_deref(), Some("acme--web"));
    }

    #[test]
    fn namespaces_carry_the_tenant_and_its_pod_security_level() {
        let labels = namespace_labels(&mk_tenant());
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(
            labels[crate::sharding::BUCKET_LABEL],
            crate::sharding::bucket_of("acme").to_string()
        );
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    }

    #[test]
    fn isolation_admits_only_the_tenants_namespaces() {
        let policy = isolation_policy("acme", "acme--web");
        let spec = policy.spec.unwrap();
        let from = &spec.ingress.unwrap()[0].from.clone().unwrap()[0];
        let selector = from
            .namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(selector[TENANT_LABEL], "acme");
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    }

    #[test]
    fn a_tenants_kubernetes_service_points_at_the_gateway_only() {
        let gateway: std::net::SocketAddr = "10.130.2.1:6458".parse().unwrap();
        let service = api_service("acme", "acme--default", gateway);
        let spec = service.spec.unwrap();
        assert_eq!(service.metadata.name.as_deref(), Some("kubernetes"));
        assert!(spec.selector.is_none(), "no pod backs it");
        assert_eq!(spec.ports.unwrap()[0].port, 443);
        let slice = api_endpoints("acme", "acme--default", gateway);
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "kubernetes");
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(
            slice.endpoints.unwrap()[0].addresses,
            vec!["10.130.2.1".to_string()]
        );
        assert_eq!(slice.ports.unwrap()[0].port, Some(6458));
    }
}
