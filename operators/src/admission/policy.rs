//! What no tenant may do, whatever its Pod Security level: pure checks of
//! an object, each violation naming the field and why.

use arktos_crds::naming::{SHARED_CLUSTER_ROLES, TenantName};
use arktos_crds::tenant::ServiceExposure;
use arktos_crds::tenant::desired;
use serde_json::Value;

fn items<'a>(value: &'a Value, pointer: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// Host access and privilege a pod asks for.
pub fn pod(pod: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod.pointer(&format!("/spec/{field}")) == Some(&Value::Bool(true)) {
            violations.push(format!("spec.{field}: host namespaces are not allowed"));
        }
    }
    for (i, volume) in items(pod, "/spec/volumes") {
        if volume.get("hostPath").is_some() {
            violations.push(format!(
                "spec.volumes[{i}].hostPath: host paths are not allowed"
            ));
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for (i, container) in items(pod, &format!("/spec/{list}")) {
            let at = format!("spec.{list}[{i}]");
            let context = container.get("securityContext");
            let flag = |name: &str| context.and_then(|c| c.get(name)) == Some(&Value::Bool(true));
            if flag("privileged") {
                violations.push(format!(
                    "{at}.securityContext.privileged: privileged containers are not allowed"
                ));
            }
            if flag("allowPrivilegeEscalation") {
                violations.push(format!(
                    "{at}.securityContext.allowPrivilegeEscalation: privilege escalation is not allowed"
                ));
            }
            let added: Vec<&str> = context
                .and_then(|c| c.pointer("/capabilities/add"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|cap| !matches!(*cap, "NET_BIND_SERVICE" | "CAP_NET_BIND_SERVICE"))
                .collect();
            if !added.is_empty() {
                violations.push(format!(
                    "{at}.securityContext.capabilities.add: adding capabilities is not allowed ({})",
                    added.join(", ")
                ));
            }
            if context
                .and_then(|c| c.get("procMount"))
                .and_then(Value::as_str)
                == Some("Unmasked")
            {
                violations.push(format!(
                    "{at}.securityContext.procMount: Unmasked is not allowed"
                ));
            }
            for (j, port) in items(container, "/ports") {
                if port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    violations.push(format!(
                        "{at}.ports[{j}].hostPort: host ports are not allowed"
                    ));
                }
            }
        }
    }
    violations
}

/// Exposure outside the cluster that the tenant was not allowed.
/// Where a workload of this resource keeps its pod spec (`None`: it has none).
pub fn pod_spec_pointer(group: &str, resource: &str) -> Option<&'static str> {
    match (group, resource) {
        ("", "pods") => Some("/spec"),
        ("", "podtemplates") => Some("/template/spec"),
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Some("/spec/template/spec"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The node label that names one node.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A pod spec that picks its node instead of leaving it to the scheduler:
/// `nodeName`, or a node selector or node affinity on the node's hostname
/// label or name. `at` is the spec's field path.
pub fn node_targeting(spec: &Value, at: &str) -> Vec<String> {
    const WHY: &str = "tenants may not choose nodes (they cannot see them); the Tenant's spec.nodeTargeting allows it";
    let mut violations = Vec::new();
    if spec
        .get("nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        violations.push(format!("{at}.nodeName: {WHY}"));
    }
    if spec
        .pointer("/nodeSelector")
        .and_then(|s| s.get(HOSTNAME_LABEL))
        .is_some()
    {
        violations.push(format!("{at}.nodeSelector[{HOSTNAME_LABEL}]: {WHY}"));
    }
    let names_a_node = |term: &Value| {
        items(term, "/matchExpressions").any(|(_, e)| e["key"] == HOSTNAME_LABEL)
            || items(term, "/matchFields").any(|(_, f)| f["key"] == "metadata.name")
    };
    let affinity = format!("{at}.affinity.nodeAffinity");
    for (i, term) in items(
        spec,
        "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    ) {
        if names_a_node(term) {
            violations.push(format!(
                "{affinity}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]: {WHY}"
            ));
        }
    }
    for (i, preferred) in items(
        spec,
        "/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
    ) {
        if preferred.get("preference").is_some_and(names_a_node) {
            violations.push(format!(
                "{affinity}.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference: {WHY}"
            ));
        }
    }
    violations
}

pub fn service(service: &Value, allowed: &ServiceExposure) -> Vec<String> {
    let mut violations = Vec::new();
    match service.pointer("/spec/type").and_then(Value::as_str) {
        Some("NodePort") if !allowed.node_port => {
            violations.push("spec.type: NodePort Services are not allowed for this tenant".into())
        }
        Some("LoadBalancer") if !allowed.load_balancer => violations
            .push("spec.type: LoadBalancer Services are not allowed for this tenant".into()),
        _ => {}
    }
    let external = service
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    if external && !allowed.external_ips {
        violations.push("spec.externalIPs: external IPs are not allowed for this tenant".into());
    }
    violations
}

/// Bindings that would reach beyond the tenant or grant more than admin.
pub fn role_binding(binding: &Value, tenant: &TenantName) -> Vec<String> {
    let mut violations = Vec::new();
    let role_kind = binding.pointer("/roleRef/kind").and_then(Value::as_str);
    let role_name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // The tenant's own ClusterRoles (stored under its prefix) and the
    // cluster's shared ones.
    let bindable = SHARED_CLUSTER_ROLES.contains(&role_name)
        || (!tenant.is_system() && tenant.tenant_cluster_object(role_name).is_some())
        || role_name == desired::custom_resources_role_name(tenant.as_str());
    if role_kind == Some("ClusterRole") && !bindable {
        violations.push(format!(
            "roleRef.name: ClusterRole {role_name:?} may not be bound in a tenant namespace (allowed: the tenant's own ClusterRoles and {})",
            SHARED_CLUSTER_ROLES.join(", ")
        ));
    }
    let prefix = tenant.storage_prefix();
    for (i, subject) in items(binding, "/subjects") {
        let kind = subject
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = subject
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = subject
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "ServiceAccount" if !namespace.starts_with(&prefix) => violations.push(format!(
                "subjects[{i}].namespace: service accounts outside the tenant may not be bound"
            )),
            "User" | "Group" if name.starts_with("system:") => violations.push(format!(
                "subjects[{i}].name: {kind} {name:?} is a system identity and may not be bound"
            )),
            _ => {}
        }
    }
    violations
}

/// A protected label that an update changes or removes.
pub fn changed_labels(old: &Value, new: &Value, protected: impl Fn(&str) -> bool) -> Vec<String> {
    let labels = |v: &Value| {
        v.pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (before, after) = (labels(old), labels(new));
    let mut keys: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| protected(k))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("metadata.labels[{k}]: may not be changed or removed"))
        .collect()
}

/// The tenant's bucket label (`arktos_crds::sharding::BUCKET_LABEL`) may
/// be added, with the tenant's own bucket, to an object made before it was
/// stamped; it may not be changed or removed.
pub fn bucket_change(
    tenant: &TenantName,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Option<String> {
    let key = arktos_crds::sharding::BUCKET_LABEL;
    let bucket = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/metadata/labels"))
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // A deletion carries no new object: nothing to judge.
    let new = new?;
    let expected = arktos_crds::sharding::bucket_of(tenant.as_str()).to_string();
    let fine = match (bucket(old), bucket(Some(new))) {
        (_, Some(after)) => after == expected,
        (before, None) => before.is_none(),
    };
    (!fine).then(|| format!("metadata.labels[{key}]: may not be changed or removed"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_bucket_label_may_only_be_added_with_the_tenants_bucket() {
        let tenant = TenantName::new("acme").unwrap();
        let key = arktos_crds::sharding::BUCKET_LABEL;
        let right = arktos_crds::sharding::bucket_of("acme").to_string();
        let wrong = ((arktos_crds::sharding::bucket_of("acme") as u16 + 1) % 256).to_string();
        let with = |bucket: &str| json!({"metadata": {"labels": {key: bucket}}});
        let without = json!({"metadata": {}});
        assert_eq!(bucket_change(&tenant, None, Some(&with(&right))), None);
        assert_eq!(
            bucket_change(&tenant, Some(&without), Some(&with(&right))),
            None
        );
        assert_eq!(bucket_change(&tenant, Some(&without), Some(&without)), None);
        assert!(bucket_change(&tenant, None, Some(&with(&wrong))).is_some());
        assert!(bucket_change(&tenant, Some(&with(&right)), Some(&with(&wrong))).is_some());
        assert!(bucket_change(&tenant, Some(&with(&right)), Some(&without)).is_some());
        assert_eq!(
            bucket_change(&tenant, Some(&with(&right)), None),
            None,
            "a deletion removes nothing from the object"
        );
    }

    #[test]
    fn pods_may_not_pick_their_node() {
        let at = "spec";
        assert!(node_targeting(&json!({"containers": []}), at).is_empty());
        let named = node_targeting(&json!({"nodeName": "n1"}), at);
        assert!(
            named[0].starts_with("spec.nodeName: tenants may not choose nodes"),
            "{named:?}"
        );
        let selected = node_targeting(
            &json!({"nodeSelector": {"kubernetes.io/hostname": "n1", "disk": "ssd"}}),
            at,
        );
        assert_eq!(selected.len(), 1);
        assert!(selected[0].starts_with("spec.nodeSelector[kubernetes.io/hostname]"));
        let affinity = json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}}]}}});
        let refused = node_targeting(&affinity, at);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].contains("nodeSelectorTerms[1]"));
        assert!(
            refused[1].contains("preferredDuringSchedulingIgnoredDuringExecution[0].preference")
        );
    }

    #[test]
    fn workloads_keep_their_pod_spec_where_kubernetes_does() {
        assert_eq!(pod_spec_pointer("", "pods"), Some("/spec"));
        assert_eq!(
            pod_spec_pointer("apps", "deployments"),
            Some("/spec/template/spec")
        );
        assert_eq!(
            pod_spec_pointer("batch", "cronjobs"),
            Some("/spec/jobTemplate/spec/template/spec")
        );
        assert_eq!(pod_spec_pointer("", "configmaps"), None);
    }

    #[test]
    fn pods_may_not_reach_the_host_or_gain_privilege() {
        let bad = json!({"spec": {
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c",
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true,
                    "capabilities": {"add": ["SYS_ADMIN", "NET_BIND_SERVICE"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}]}],
        }});
        let violations = pod(&bad);
        assert_eq!(violations.len(), 8, "{violations:?}");
        assert!(violations.iter().any(|v| v.contains("(SYS_ADMIN)")));
        let good = json!({"spec": {"containers": [{"name": "c",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}});
        assert!(pod(&good).is_empty());
    }

    #[test]
    fn services_reach_outside_only_when_allowed() {
        let node_port = json!({"spec": {"type": "NodePort", "externalIPs": ["192.0.2.1"]}});
        assert_eq!(service(&node_port, &ServiceExposure::default()).len(), 2);
        let allowed = ServiceExposure {
            node_port: true,
            external_ips: true,
            ..Default::default()
        };
        assert!(service(&node_port, &allowed).is_empty());
        assert!(
            service(
                &json!({"spec": {"type": "ClusterIP"}}),
                &ServiceExposure::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn bindings_stay_inside_the_tenant() {
        let tenant = TenantName::new("acme").unwrap();
        let bad = json!({"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [
            {"kind": "ServiceAccount", "name": "x", "namespace": "globex--web"},
            {"kind": "Group", "name": "system:authenticated"},
            {"kind": "User", "name": "alice"},
        ]});
        assert_eq!(role_binding(&bad, &tenant).len(), 3);
        let good = json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [
            {"kind": "ServiceAccount", "name": "x", "namespace": "acme--web"}]});
        assert!(role_binding(&good, &tenant).is_empty());
        let own = json!({"roleRef": {"kind": "ClusterRole", "name": "acme--reader"}});
        assert!(role_binding(&own, &tenant).is_empty());
        let others = json!({"roleRef": {"kind": "ClusterRole", "name": "globex--reader"}});
        assert_eq!(role_binding(&others, &tenant).len(), 1);
        let custom = json!({"roleRef": {"kind": "ClusterRole", "name": "arktos:tenant:acme:custom-resources"}});
        assert!(role_binding(&custom, &tenant).is_empty());
        let theirs = json!({"roleRef": {"kind": "ClusterRole", "name": "arktos:tenant:globex:custom-resources"}});
        assert_eq!(role_binding(&theirs, &tenant).len(), 1);
    }

    #[test]
    fn protected_labels_cannot_change_or_go() {
        let old = json!({"metadata": {"labels": {"tenancy.arktos.io/tenant": "acme", "app": "x"}}});
        let removed = json!({"metadata": {"labels": {"app": "y"}}});
        let protected = |k: &str| k == "tenancy.arktos.io/tenant";
        assert_eq!(changed_labels(&old, &removed, protected).len(), 1);
        assert!(changed_labels(&old, &old, protected).is_empty());
    }
}
