//! Simulated nodes: Node objects that KWOK recognises by annotation and
//! keeps Ready, with pods on them reported Running.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::Result;

/// KWOK manages the nodes carrying this annotation (and only those, so a
/// real kubelet node can live beside them).
pub const KWOK_SELECTOR: &str = "kwok.x-k8s.io/node=fake";
/// Label on every simulated node, for selectors in tests and workloads.
pub const KWOK_LABEL: &str = "type=kwok";
/// Taint on every simulated node (KWOK's convention): only pods that
/// tolerate it run there, so ordinary pods go to the real node.
pub const KWOK_TAINT: &str = "kwok.x-k8s.io/node";

pub fn node_name(index: u32) -> String {
    format!("kwok-node-{index}")
}

/// Creates nodes `kwok-node-0 .. count-1` that do not exist yet and deletes
/// simulated nodes beyond `count` (left from an earlier, larger start).
pub async fn register(client: &kube::Client, count: u32) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let wanted: Vec<String> = (0..count).map(node_name).collect();
    let existing = nodes
        .list(&ListParams::default().labels(KWOK_LABEL))
        .await?;
    for node in existing.items {
        let name = node.metadata.name.unwrap_or_default();
        if !wanted.contains(&name) {
            nodes.delete(&name, &DeleteParams::default()).await?;
        }
    }
    for name in wanted {
        match nodes.get_opt(&name).await? {
            None => {
                nodes
                    .create(&PostParams::default(), &simulated_node(&name))
                    .await?;
            }
            // Registered by an earlier version, without the taint.
            Some(node) if node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_none() => {
                let patch = serde_json::json!({"spec": {"taints": [kwok_taint()]}});
                nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn kwok_taint() -> Taint {
    Taint {
        key: KWOK_TAINT.into(),
        value: Some("fake".into()),
        effect: "NoSchedule".into(),
        ..Default::default()
    }
}

fn simulated_node(name: &str) -> Node {
    let (key, value) = KWOK_SELECTOR.split_once('=').expect("key=value");
    let (label_key, label_value) = KWOK_LABEL.split_once('=').expect("key=value");
    let labels = BTreeMap::from([
        (label_key.to_string(), label_value.to_string()),
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("node-role.kubernetes.io/agent".to_string(), String::new()),
    ]);
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity("32".into())),
        ("memory".to_string(), Quantity("256Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![kwok_taint()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                operating_system: "linux".into(),
                kubelet_version: "kwok".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
