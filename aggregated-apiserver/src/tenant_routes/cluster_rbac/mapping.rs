//! A tenant's ClusterRoles and ClusterRoleBindings between the tenant's
//! form and the stored one (docs/tenant-routes.md, "ClusterRoles and
//! ClusterRoleBindings of a tenant"). Pure: tested below.

use arktos_crds::naming::{SHARED_CLUSTER_ROLES, TENANT_LABEL};
use arktos_crds::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Value, json};

use crate::tenant_routes::mapping::View;

/// On a tenant's stored ClusterRoleBinding: the ClusterRole it binds, by
/// its stored name. The stored binding itself binds [`INERT_ROLE`].
pub const ROLE_REF_ANNOTATION: &str = "tenancy.arktos.io/role-ref";
/// A ClusterRole with no rules (manifests/arktos-apiserver/rbac.yaml):
/// what a tenant's ClusterRoleBinding binds as stored, so that it grants
/// nothing cluster-wide. Its grant is carried out as RoleBindings in each
/// of the tenant's namespaces.
pub const INERT_ROLE: &str = "arktos:tenant-cluster-role-binding";
/// On each RoleBinding that carries out a tenant's ClusterRoleBinding: the
/// binding's stored name.
pub const CARRIES_LABEL: &str = "tenancy.arktos.io/cluster-role-binding";
/// The name of those RoleBindings is this, then the binding's tenant name.
pub const CARRIED_PREFIX: &str = "arktos:cluster-role-binding:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Role,
    Binding,
}

impl Kind {
    pub fn of(group: &str, resource: &str) -> Option<Self> {
        match (group, resource) {
            ("rbac.authorization.k8s.io", "clusterroles") => Some(Self::Role),
            ("rbac.authorization.k8s.io", "clusterrolebindings") => Some(Self::Binding),
            _ => None,
        }
    }

    pub fn resource(self) -> &'static str {
        match self {
            Self::Role => "clusterroles",
            Self::Binding => "clusterrolebindings",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Self::Role => "ClusterRole",
            Self::Binding => "ClusterRoleBinding",
        }
    }
}

fn invalid(kind: Kind, name: &str, field: &str, why: String) -> Status {
    status::invalid(
        &status::Subject {
            group: "rbac.authorization.k8s.io",
            resource: kind.resource(),
            kind: kind.kind(),
            name,
        },
        &[status::FieldError::new(
            field,
            status::FieldErrorType::Invalid,
            why,
        )],
    )
}

/// The stored name of the tenant's object `name`; shared ClusterRoles are
/// the cluster's and keep theirs.
pub fn storage_name(view: &View, kind: Kind, name: &str) -> Result<String, Status> {
    if kind == Kind::Role && SHARED_CLUSTER_ROLES.contains(&name) {
        return Ok(name.to_string());
    }
    view.tenant()
        .storage_cluster_object(name)
        .map_err(|e| invalid(kind, name, "metadata.name", e.to_string()))
}

/// Rewrites an object (or a merge, strategic merge or apply patch of one)
/// into storage terms.
pub fn to_storage(view: &View, kind: Kind, object: &mut Value) -> Result<(), Status> {
    if !object.is_object() {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let shown = name.clone().unwrap_or_default();
    if let Some(name) = &name {
        if kind == Kind::Role && SHARED_CLUSTER_ROLES.contains(&name.as_str()) {
            return Err(invalid(
                kind,
                name,
                "metadata.name",
                format!(
                    "{name:?} is a ClusterRole the cluster shares with every tenant; choose another name"
                ),
            ));
        }
        object["metadata"]["name"] = storage_name(view, kind, name)?.into();
    }
    if let Some(prefix) = object
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
    {
        object["metadata"]["generateName"] =
            format!("{}{prefix}", view.tenant().storage_prefix()).into();
    }
    // Labels, and service account subjects into storage namespaces.
    view.request_body(object, false)?;
    if let Some(selectors) = object
        .pointer_mut("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array_mut)
    {
        // A tenant's aggregated ClusterRole gathers the tenant's own
        // ClusterRoles only.
        for selector in selectors {
            if !selector["matchLabels"].is_object() {
                selector["matchLabels"] = json!({});
            }
            selector["matchLabels"][TENANT_LABEL] = view.tenant().as_str().into();
        }
    }
    if kind == Kind::Binding && object.get("roleRef").is_some_and(Value::is_object) {
        let role = object["roleRef"].clone();
        if role["kind"] != "ClusterRole" {
            return Err(invalid(
                kind,
                &shown,
                "roleRef.kind",
                "a ClusterRoleBinding binds a ClusterRole".into(),
            ));
        }
        // (`request_body` has mapped the name already.)
        let stored = role["name"].as_str().unwrap_or_default().to_string();
        if !object["metadata"]["annotations"].is_object() {
            object["metadata"]["annotations"] = json!({});
        }
        object["metadata"]["annotations"][ROLE_REF_ANNOTATION] = stored.into();
        object["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": INERT_ROLE});
    }
    Ok(())
}

/// Rewrites an answer (object, list, Table, watch event, Status) into the
/// tenant's terms; false when a single object is not the tenant's.
pub fn to_tenant(view: &View, value: &mut Value) -> bool {
    crate::tenant_routes::cluster_objects::answer(view, value, &object_to_tenant)
}

/// One stored object in the tenant's terms; false when not the tenant's.
fn object_to_tenant(view: &View, object: &mut Value) -> bool {
    let tenant = view.tenant();
    let stored = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let labelled = object
        .pointer(&format!(
            "/metadata/labels/{}",
            TENANT_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some(tenant.as_str());
    let Some(name) = tenant.tenant_cluster_object(&stored) else {
        return false;
    };
    if !(labelled || tenant.is_system()) {
        return false;
    }
    object["metadata"]["name"] = name.into();
    if let Some(selectors) = object
        .pointer_mut("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array_mut)
    {
        for selector in selectors {
            if let Some(labels) = selector["matchLabels"].as_object_mut() {
                labels.remove(TENANT_LABEL);
                if labels.is_empty() {
                    selector.as_object_mut().map(|s| s.remove("matchLabels"));
                }
            }
        }
    }
    let annotations = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut);
    if let Some(role) = annotations.and_then(|a| a.remove(ROLE_REF_ANNOTATION)) {
        // As stored: `response` shows it in the tenant's terms.
        object["roleRef"]["name"] = role;
        if object["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.is_empty())
        {
            object["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    view.response(object)
}

/// A stored object's name as the tenant knows it.
pub fn shown_name(view: &View, stored: &Value) -> String {
    let name = stored["metadata"]["name"].as_str().unwrap_or_default();
    view.tenant()
        .tenant_cluster_object(name)
        .unwrap_or(name)
        .to_string()
}

/// The RoleBinding that carries out the tenant's ClusterRoleBinding
/// `stored` (as stored) in storage namespace `namespace`.
pub fn carried_binding(stored: &Value, namespace: &str, tenant_name: &str) -> Value {
    let binding = stored["metadata"]["name"].as_str().unwrap_or_default();
    let role = stored
        .pointer(&format!(
            "/metadata/annotations/{}",
            ROLE_REF_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {
            "name": format!("{CARRIED_PREFIX}{tenant_name}"),
            "namespace": namespace,
            "labels": {CARRIES_LABEL: binding},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": stored.get("subjects").cloned().unwrap_or_else(|| json!([])),
    })
}

/// What a write must not leave behind, checked on the object it would
/// store (after a dry run): the tenant's label and name, its own
/// aggregation only, and a binding of the inert role.
pub fn check_stored(view: &View, kind: Kind, stored: &Value) -> Result<(), Status> {
    let name = stored["metadata"]["name"].as_str().unwrap_or_default();
    let shown = view.tenant().tenant_cluster_object(name).unwrap_or(name);
    let label = stored["metadata"]["labels"][TENANT_LABEL].as_str();
    if label != Some(view.tenant().as_str()) {
        return Err(invalid(
            kind,
            shown,
            "metadata.labels",
            format!("the label {TENANT_LABEL} is set by Arktos and cannot change"),
        ));
    }
    let selectors = stored
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array);
    for selector in selectors.into_iter().flatten() {
        if selector["matchLabels"][TENANT_LABEL].as_str() != Some(view.tenant().as_str()) {
            return Err(invalid(
                kind,
                shown,
                "aggregationRule.clusterRoleSelectors",
                "a tenant's ClusterRole aggregates the tenant's own ClusterRoles only".into(),
            ));
        }
    }
    if kind == Kind::Binding {
        let role = stored["metadata"]["annotations"][ROLE_REF_ANNOTATION]
            .as_str()
            .unwrap_or_default();
        let tenants = SHARED_CLUSTER_ROLES.contains(&role)
            || view.tenant().tenant_cluster_object(role).is_some();
        if stored["roleRef"]["name"] != INERT_ROLE || !tenants {
            return Err(invalid(
                kind,
                shown,
                "roleRef",
                "a tenant's ClusterRoleBinding binds one of the tenant's ClusterRoles or a shared one, and cannot change what it binds".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arktos_crds::naming::TenantName;

    use super::*;

    fn acme() -> View {
        View::new(TenantName::new("acme").unwrap())
    }

    #[test]
    fn a_cluster_role_is_stored_under_the_tenants_prefix_and_read_back() {
        let mut role = json!({"kind": "ClusterRole", "metadata": {"name": "reader", "labels": {"team": "a"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        to_storage(&acme(), Kind::Role, &mut role).unwrap();
        assert_eq!(role["metadata"]["name"], "acme--reader");
        assert_eq!(role["metadata"]["labels"][TENANT_LABEL], "acme");
        assert!(check_stored(&acme(), Kind::Role, &role).is_ok());
        assert!(to_tenant(&acme(), &mut role));
        assert_eq!(role["metadata"]["name"], "reader");
        assert_eq!(role["metadata"]["labels"]["team"], "a");
    }

    #[test]
    fn shared_names_are_refused_and_stay_the_clusters() {
        let mut role = json!({"metadata": {"name": "admin"}});
        let refused = to_storage(&acme(), Kind::Role, &mut role).unwrap_err();
        assert_eq!(refused.code, Some(422));
        assert_eq!(storage_name(&acme(), Kind::Role, "view").unwrap(), "view");
        assert_eq!(
            storage_name(&acme(), Kind::Binding, "view").unwrap(),
            "acme--view"
        );
    }

    #[test]
    fn aggregation_gathers_the_tenants_own_roles_only() {
        let mut role = json!({"metadata": {"name": "agg"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/agg": "true"}}, {}]}});
        to_storage(&acme(), Kind::Role, &mut role).unwrap();
        for selector in role["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .unwrap()
        {
            assert_eq!(selector["matchLabels"][TENANT_LABEL], "acme");
        }
        assert!(check_stored(&acme(), Kind::Role, &role).is_ok());
        let mut widened = role.clone();
        widened["aggregationRule"]["clusterRoleSelectors"][1] = json!({});
        assert!(check_stored(&acme(), Kind::Role, &widened).is_err());
        assert!(to_tenant(&acme(), &mut role));
        assert_eq!(
            role["aggregationRule"]["clusterRoleSelectors"],
            json!([{"matchLabels": {"rbac.example.com/agg": "true"}}, {}])
        );
    }

    #[test]
    fn a_binding_is_stored_inert_and_carried_out_per_namespace() {
        let mut binding = json!({"kind": "ClusterRoleBinding", "metadata": {"name": "readers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "web"},
                         {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ann"}]});
        to_storage(&acme(), Kind::Binding, &mut binding).unwrap();
        assert_eq!(binding["roleRef"]["name"], INERT_ROLE);
        assert_eq!(
            binding["metadata"]["annotations"][ROLE_REF_ANNOTATION],
            "acme--reader"
        );
        assert_eq!(binding["subjects"][0]["namespace"], "acme--web");
        assert!(check_stored(&acme(), Kind::Binding, &binding).is_ok());
        let carried = carried_binding(&binding, "acme--db", "readers");
        assert_eq!(
            carried["metadata"]["name"],
            "arktos:cluster-role-binding:readers"
        );
        assert_eq!(carried["roleRef"]["name"], "acme--reader");
        assert_eq!(carried["subjects"], binding["subjects"]);
        assert!(to_tenant(&acme(), &mut binding));
        assert_eq!(binding["roleRef"]["name"], "reader");
        assert_eq!(binding["subjects"][0]["namespace"], "web");
        assert!(binding["metadata"].get("annotations").is_none());
    }

    #[test]
    fn a_binding_of_a_shared_role_keeps_its_name_and_others_are_refused() {
        let mut binding = json!({"metadata": {"name": "viewers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}});
        to_storage(&acme(), Kind::Binding, &mut binding).unwrap();
        assert_eq!(
            binding["metadata"]["annotations"][ROLE_REF_ANNOTATION],
            "view"
        );
        let mut admin = json!({"metadata": {"name": "x"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}});
        to_storage(&acme(), Kind::Binding, &mut admin).unwrap();
        // "cluster-admin" of the tenant is the tenant's own (and absent).
        assert_eq!(
            admin["metadata"]["annotations"][ROLE_REF_ANNOTATION],
            "acme--cluster-admin"
        );
        let mut role_kind =
            json!({"metadata": {"name": "x"}, "roleRef": {"kind": "Role", "name": "r"}});
        assert!(to_storage(&acme(), Kind::Binding, &mut role_kind).is_err());
        let mut swapped = binding.clone();
        swapped["roleRef"]["name"] = "cluster-admin".into();
        assert!(check_stored(&acme(), Kind::Binding, &swapped).is_err());
    }

    #[test]
    fn other_tenants_and_the_clusters_objects_are_not_the_tenants() {
        for name in [
            "globex--reader",
            "arktos:tenant:acme:owner",
            "cluster-admin",
        ] {
            let mut object = json!({"metadata": {"name": name, "labels": {TENANT_LABEL: "acme"}}});
            assert!(!to_tenant(&acme(), &mut object), "{name}");
        }
        let mut unlabelled = json!({"metadata": {"name": "acme--reader"}});
        assert!(!to_tenant(&acme(), &mut unlabelled));
        let mut list = json!({"kind": "ClusterRoleList", "items": [
            {"metadata": {"name": "acme--a", "labels": {TENANT_LABEL: "acme"}}},
            {"metadata": {"name": "arktos:tenant:acme:owner", "labels": {TENANT_LABEL: "acme"}}}]});
        assert!(to_tenant(&acme(), &mut list));
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }
}
