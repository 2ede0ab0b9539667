//! The in-cluster config of a tenant's pods points at its tenant's API.
//! client-go, kube-rs and the other clients find the API server through
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, which the kubelet fills from the
//! cluster's `kubernetes` Service; a container's own variables win over
//! the kubelet's, so new pods of a tenant get the gateway's address as
//! their own. The gateway knows the pod's service account token and serves
//! its tenant on plain paths (docs/tenant-routes.md).
//!
//! The namespace a pod learns from the downward API (the service account's
//! `namespace` file, which in-cluster clients default to, and any
//! `fieldRef: metadata.namespace`) is read from an annotation holding the
//! tenant's name for it, so it is the name the tenant's API knows.

use std::net::SocketAddr;

use serde_json::{Value, json};

use arktos_crds::naming::POD_NAMESPACE_ANNOTATION;
use json_patch::{PatchOperation, ReplaceOperation};

use super::add;

/// The variable that says a container chose its API server itself.
const HOST: &str = "KUBERNETES_SERVICE_HOST";

/// The variables a container of a tenant pod gets.
fn variables(gateway: SocketAddr) -> Vec<Value> {
    let (host, port) = (gateway.ip().to_string(), gateway.port().to_string());
    let url = format!("tcp://{gateway}");
    [
        (HOST, host.as_str()),
        ("KUBERNETES_SERVICE_PORT", port.as_str()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.as_str()),
        ("KUBERNETES_PORT", url.as_str()),
    ]
    .into_iter()
    .map(|(name, value)| json!({"name": name, "value": value}))
    .collect()
}

/// The JSON patch adding the variables to every container and init
/// container of `pod` that does not set `KUBERNETES_SERVICE_HOST` itself.
pub fn env_patch(pod: &Value, gateway: SocketAddr) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod["spec"][list].as_array() else {
            continue;
        };
        for (index, container) in containers.iter().enumerate() {
            let path = format!("/spec/{list}/{index}/env");
            match container["env"].as_array() {
                None => operations.push(add(&path, Value::Array(variables(gateway)))),
                Some(env) if env.iter().any(|v| v["name"] == HOST) => {}
                Some(_) => operations.extend(
                    variables(gateway)
                        .into_iter()
                        .map(|v| add(&format!("{path}/-"), v)),
                ),
            }
        }
    }
    operations
}

const STORAGE_NAMESPACE: &str = "metadata.namespace";

/// The JSON patch making every downward API read of the namespace read
/// [`POD_NAMESPACE_ANNOTATION`], set to `namespace` (the tenant's name).
pub fn namespace_patch(pod: &Value, namespace: &str) -> Vec<PatchOperation> {
    let annotation = format!("metadata.annotations['{POD_NAMESPACE_ANNOTATION}']");
    let mut reads = Vec::new();
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (v, volume) in volumes.iter().enumerate() {
        let items = |items: &Value, at: String| {
            let items = items.as_array().cloned().unwrap_or_default();
            (0..items.len())
                .filter(move |i| items[*i]["fieldRef"]["fieldPath"] == STORAGE_NAMESPACE)
                .map(move |i| format!("{at}/items/{i}/fieldRef/fieldPath"))
        };
        reads.extend(items(
            &volume["downwardAPI"]["items"],
            format!("/spec/volumes/{v}/downwardAPI"),
        ));
        let sources = volume["projected"]["sources"].as_array().cloned();
        for (s, source) in sources.unwrap_or_default().iter().enumerate() {
            reads.extend(items(
                &source["downwardAPI"]["items"],
                format!("/spec/volumes/{v}/projected/sources/{s}/downwardAPI"),
            ));
        }
    }
    for list in ["containers", "initContainers"] {
        let containers = pod["spec"][list].as_array().cloned().unwrap_or_default();
        for (c, container) in containers.iter().enumerate() {
            let env = container["env"].as_array().cloned().unwrap_or_default();
            reads.extend(
                (0..env.len())
                    .filter(|e| env[*e]["valueFrom"]["fieldRef"]["fieldPath"] == STORAGE_NAMESPACE)
                    .map(|e| format!("/spec/{list}/{c}/env/{e}/valueFrom/fieldRef/fieldPath")),
            );
        }
    }
    if reads.is_empty() {
        return Vec::new();
    }
    let mut operations = Vec::new();
    if pod["metadata"]["annotations"].is_null() {
        operations.push(add("/metadata/annotations", json!({})));
    }
    let key = POD_NAMESPACE_ANNOTATION
        .replace('~', "~0")
        .replace('/', "~1");
    operations.push(add(
        &format!("/metadata/annotations/{key}"),
        json!(namespace),
    ));
    operations.extend(reads.into_iter().map(|path| {
        PatchOperation::Replace(ReplaceOperation {
            path: path.parse().unwrap_or_default(),
            value: json!(annotation),
        })
    }));
    operations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(pod: Value) -> Value {
        let mut pod = pod;
        let gateway = "10.130.2.1:6458".parse().unwrap();
        let operations = env_patch(&pod, gateway);
        json_patch::patch(&mut pod, &operations).unwrap();
        pod
    }

    fn env_of(container: &Value, name: &str) -> Option<String> {
        container["env"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["value"].as_str().unwrap_or_default().to_string())
    }

    #[test]
    fn every_container_points_at_the_gateway_unless_it_chose_its_own() {
        let pod = patched(json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "app", "env": [{"name": "A", "value": "1"}]},
                {"name": "own", "env": [{"name": HOST, "value": "api.example"}]},
            ],
        }}));
        let (init, app, own) = (
            &pod["spec"]["initContainers"][0],
            &pod["spec"]["containers"][0],
            &pod["spec"]["containers"][1],
        );
        assert_eq!(env_of(init, HOST).as_deref(), Some("10.130.2.1"));
        assert_eq!(
            env_of(app, "KUBERNETES_SERVICE_PORT").as_deref(),
            Some("6458")
        );
        assert_eq!(env_of(app, "A").as_deref(), Some("1"), "kept");
        assert_eq!(
            env_of(app, "KUBERNETES_PORT").as_deref(),
            Some("tcp://10.130.2.1:6458")
        );
        assert_eq!(own["env"].as_array().unwrap().len(), 1, "left alone");
    }

    #[test]
    fn a_second_pass_changes_nothing() {
        let gateway = "10.130.2.1:6458".parse().unwrap();
        let once = patched(json!({"spec": {"containers": [{"name": "app"}]}}));
        assert!(env_patch(&once, gateway).is_empty());
    }

    #[test]
    fn every_downward_read_of_the_namespace_reads_the_tenants_name() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "volumes": [
                {"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
                ]}},
            ],
            "containers": [{"name": "app", "env": [
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ]}],
        }});
        let operations = namespace_patch(&pod, "web");
        json_patch::patch(&mut pod, &operations).unwrap();
        let annotation = "metadata.annotations['tenancy.arktos.io/namespace']";
        assert_eq!(
            pod["metadata"]["annotations"][POD_NAMESPACE_ANNOTATION],
            "web"
        );
        let volumes = &pod["spec"]["volumes"];
        assert_eq!(
            volumes[0]["projected"]["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            annotation
        );
        assert_eq!(
            volumes[1]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(
            volumes[1]["downwardAPI"]["items"][1]["fieldRef"]["fieldPath"],
            annotation
        );
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            annotation
        );
        assert!(
            namespace_patch(&pod, "web").is_empty(),
            "a second pass changes nothing"
        );
    }

    #[test]
    fn a_pod_that_never_reads_its_namespace_is_left_alone() {
        let pod = json!({"spec": {"containers": [{"name": "app"}]}});
        assert!(namespace_patch(&pod, "web").is_empty());
    }
}
