//! What an object uses of a tenant's quota, per quota key, in thousandths.
//! Pure functions of the object, shared by admission (which charges a
//! create) and the tenant controller (which recounts stored objects).

use std::collections::BTreeMap;

use arktos_crds::quantity;
use serde_json::Value;

/// Usage per quota key, in thousandths of the key's unit.
pub type Usage = BTreeMap<String, i128>;

/// A resource whose objects count against quota, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl Counted {
    /// The `count/<plural>[.<group>]` quota key.
    pub fn count_key(&self) -> String {
        if self.group.is_empty() {
            format!("count/{}", self.plural)
        } else {
            format!("count/{}.{}", self.plural, self.group)
        }
    }
}

/// Every resource the tenant-wide quota counts (the quota webhook is
/// registered for exactly these).
pub const COUNTED: &[Counted] = &[
    core("Pod", "pods"),
    core("Service", "services"),
    core("PersistentVolumeClaim", "persistentvolumeclaims"),
    // Not Secrets: counting them would mean the right to list every
    // Secret in the cluster.
    core("ConfigMap", "configmaps"),
    Counted {
        namespaced: false,
        ..core("Namespace", "namespaces")
    },
    Counted {
        group: "apps",
        ..core("Deployment", "deployments")
    },
    Counted {
        group: "apps",
        ..core("StatefulSet", "statefulsets")
    },
    Counted {
        group: "batch",
        ..core("Job", "jobs")
    },
    Counted {
        group: "batch",
        ..core("CronJob", "cronjobs")
    },
];

const fn core(kind: &'static str, plural: &'static str) -> Counted {
    Counted {
        group: "",
        version: "v1",
        kind,
        plural,
        namespaced: true,
    }
}

pub fn counted(group: &str, plural: &str) -> Option<&'static Counted> {
    COUNTED
        .iter()
        .find(|c| c.group == group && c.plural == plural)
}

/// The resources whose objects matter to a quota with these keys.
pub fn counted_for<'a>(keys: impl IntoIterator<Item = &'a String>) -> Vec<&'static Counted> {
    let keys: Vec<&String> = keys.into_iter().collect();
    COUNTED
        .iter()
        .filter(|c| {
            keys.iter().any(|key| {
                **key == c.count_key()
                    || (c.plural == "pods" && is_pod_key(key))
                    || (c.plural == "services" && key.starts_with("services"))
                    || (c.plural == "persistentvolumeclaims"
                        && (*key == "persistentvolumeclaims" || *key == "requests.storage"))
            })
        })
        .collect()
}

fn is_pod_key(key: &str) -> bool {
    matches!(key, "pods" | "cpu" | "memory" | "ephemeral-storage")
        || key.starts_with("requests.") && !matches!(key, "requests.storage")
        || key.starts_with("limits.")
}

/// Why a pod cannot be charged: the quota tracks a resource one of its
/// containers leaves unspecified (as kube-apiserver's ResourceQuota says).
#[derive(Debug, PartialEq, Eq)]
pub struct Unspecified {
    pub keys: Vec<String>,
    pub containers: Vec<String>,
}

/// What `object` (of `resource`) uses, for every key it touches. Terminal
/// pods use nothing.
pub fn usage(resource: &Counted, object: &Value) -> Usage {
    let mut usage = Usage::new();
    match resource.plural {
        "pods" => {
            let phase = object.pointer("/status/phase").and_then(Value::as_str);
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return usage;
            }
            usage.insert("pods".into(), 1000);
            for (resource_name, amount) in pod_amounts(object, "requests") {
                if matches!(
                    resource_name.as_str(),
                    "cpu" | "memory" | "ephemeral-storage"
                ) {
                    usage.insert(resource_name.clone(), amount);
                }
                usage.insert(format!("requests.{resource_name}"), amount);
            }
            for (resource_name, amount) in pod_amounts(object, "limits") {
                usage.insert(format!("limits.{resource_name}"), amount);
            }
        }
        "services" => {
            usage.insert("services".into(), 1000);
            let kind = object.pointer("/spec/type").and_then(Value::as_str);
            if matches!(kind, Some("NodePort" | "LoadBalancer")) {
                let ports = object
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                usage.insert("services.nodeports".into(), 1000 * ports as i128);
            }
            if kind == Some("LoadBalancer") {
                usage.insert("services.loadbalancers".into(), 1000);
            }
        }
        // A tenant's default namespaces come with it, free.
        "namespaces"
            if object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(arktos_crds::naming::is_default_storage_namespace) =>
        {
            return usage;
        }
        "persistentvolumeclaims" => {
            usage.insert("persistentvolumeclaims".into(), 1000);
            let storage = object
                .pointer("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .and_then(quantity::to_milli)
                .unwrap_or(0);
            usage.insert("requests.storage".into(), storage);
        }
        _ => {}
    }
    usage.insert(resource.count_key(), 1000);
    usage
}

/// The pod's effective requests or limits per resource, as the scheduler
/// and quota reckon them: the larger of the app containers' sum (with
/// sidecar init containers) and the biggest ordinary init container, plus
/// the pod overhead.
fn pod_amounts(pod: &Value, which: &str) -> BTreeMap<String, i128> {
    let containers = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let amounts = |container: &Value| -> BTreeMap<String, i128> {
        container
            .pointer(&format!("/resources/{which}"))
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), quantity::to_milli(v.as_str()?)?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut sum: BTreeMap<String, i128> = BTreeMap::new();
    let mut init_peak: BTreeMap<String, i128> = BTreeMap::new();
    for container in containers("containers") {
        for (k, v) in amounts(&container) {
            *sum.entry(k).or_default() += v;
        }
    }
    for init in containers("initContainers") {
        let sidecar = init.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        for (k, v) in amounts(&init) {
            if sidecar {
                *sum.entry(k).or_default() += v;
            } else {
                let peak = init_peak.entry(k).or_default();
                *peak = (*peak).max(v);
            }
        }
    }
    for (k, v) in init_peak {
        let total = sum.entry(k).or_default();
        *total = (*total).max(v);
    }
    if which == "requests"
        && let Some(overhead) = pod.pointer("/spec/overhead").and_then(Value::as_object)
    {
        for (k, v) in overhead {
            if let Some(v) = v.as_str().and_then(quantity::to_milli) {
                *sum.entry(k.clone()).or_default() += v;
            }
        }
    }
    sum
}

/// Pod quota keys among `hard` that some container of the pod leaves
/// unspecified: such a pod cannot be charged fairly, so it is refused.
pub fn unspecified(pod: &Value, hard: &[&String]) -> Option<Unspecified> {
    let mut keys = Vec::new();
    let mut names = Vec::new();
    for key in hard {
        let (which, resource) = match key.split_once('.') {
            Some((which @ ("requests" | "limits"), resource)) if resource != "storage" => {
                (which, resource)
            }
            _ if matches!(key.as_str(), "cpu" | "memory") => ("requests", key.as_str()),
            _ => continue,
        };
        let missing: Vec<String> = ["containers", "initContainers"]
            .iter()
            .flat_map(|field| {
                pod.pointer(&format!("/spec/{field}"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|c| {
                c.pointer(&format!("/resources/{which}/{resource}"))
                    .is_none()
            })
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        if !missing.is_empty() {
            keys.push((*key).clone());
            for name in missing {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    (!keys.is_empty()).then_some(Unspecified {
        keys,
        containers: names,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pods() -> &'static Counted {
        counted("", "pods").unwrap()
    }

    #[test]
    fn a_pod_uses_the_larger_of_its_containers_and_init_containers() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "500m"}}}],
            "overhead": {"cpu": "10m"},
        }});
        let usage = usage(pods(), &pod);
        assert_eq!(usage["pods"], 1000);
        assert_eq!(usage["count/pods"], 1000);
        assert_eq!(usage["requests.cpu"], 510);
        assert_eq!(usage["cpu"], 510);
        assert_eq!(usage["requests.memory"], 64 * 1024 * 1024 * 1000);
        assert_eq!(usage["limits.cpu"], 1000);
    }

    #[test]
    fn terminal_pods_use_nothing() {
        let pod =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded"}});
        assert!(usage(pods(), &pod).is_empty());
    }

    #[test]
    fn services_and_claims_count_what_they_expose_and_store() {
        let service = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let usage_of = usage(counted("", "services").unwrap(), &service);
        assert_eq!(usage_of["services"], 1000);
        assert_eq!(usage_of["services.nodeports"], 2000);
        let claim = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let usage_of = usage(counted("", "persistentvolumeclaims").unwrap(), &claim);
        assert_eq!(usage_of["requests.storage"], (1i128 << 30) * 1000);
        let deployment = usage(counted("apps", "deployments").unwrap(), &json!({}));
        assert_eq!(deployment["count/deployments.apps"], 1000);
    }

    #[test]
    fn a_tenants_default_namespaces_are_free() {
        let namespaces = counted("", "namespaces").unwrap();
        let default = usage(namespaces, &json!({"metadata": {"name": "acme--default"}}));
        assert!(default.is_empty());
        let own = usage(namespaces, &json!({"metadata": {"name": "acme--web"}}));
        assert_eq!(own["count/namespaces"], 1000);
    }

    #[test]
    fn quota_keys_pick_the_resources_to_count() {
        let keys = [
            "pods".to_string(),
            "requests.storage".into(),
            "count/namespaces".into(),
        ];
        let plurals: Vec<&str> = counted_for(&keys).iter().map(|c| c.plural).collect();
        assert_eq!(plurals, ["pods", "persistentvolumeclaims", "namespaces"]);
    }

    #[test]
    fn a_pod_without_the_tracked_requests_is_refused() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}}},
            {"name": "b"},
        ]}});
        let cpu = "requests.cpu".to_string();
        let pods_key = "pods".to_string();
        let missing = unspecified(&pod, &[&cpu, &pods_key]).unwrap();
        assert_eq!(missing.keys, ["requests.cpu"]);
        assert_eq!(missing.containers, ["b"]);
        assert!(unspecified(&pod, &[&pods_key]).is_none());
    }
}
