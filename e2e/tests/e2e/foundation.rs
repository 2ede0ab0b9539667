//! The local cluster itself: the API server, the controllers and scheduler,
//! simulated nodes, the aggregation layer, and the launcher's lifecycle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use arktos_e2e::cluster::{ClusterSpec, LocalCluster, Ports};
use arktos_e2e::home::ArktosHome;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use libtest_mimic::Trial;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::{Ctx, trial};

pub const NAMES: &[&str] = &[
    "apiserver_readyz_is_ok",
    "configmap_create_get_list_watch_delete",
    "pod_is_scheduled_onto_a_simulated_node_and_runs",
    "aggregation_layer_answers_kubectl_get_apiservices",
    "second_cluster_runs_beside_and_stops_without_leftovers",
    "killed_launcher_leaves_no_process_behind",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(ctx, NAMES[0], apiserver_readyz_is_ok),
        trial(ctx, NAMES[1], configmap_create_get_list_watch_delete),
        trial(
            ctx,
            NAMES[2],
            pod_is_scheduled_onto_a_simulated_node_and_runs,
        ),
        trial(
            ctx,
            NAMES[3],
            aggregation_layer_answers_kubectl_get_apiservices,
        ),
        trial(
            ctx,
            NAMES[4],
            second_cluster_runs_beside_and_stops_without_leftovers,
        ),
        trial(ctx, NAMES[5], killed_launcher_leaves_no_process_behind),
    ]
}

async fn apiserver_readyz_is_ok(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let client = ctx.cluster.client().await?;
    let request = http::Request::get("/readyz?verbose").body(Vec::new())?;
    let body = client.request_text(request).await?;
    ensure!(body.contains("readyz check passed"), "readyz said: {body}");
    Ok(())
}

async fn configmap_create_get_list_watch_delete(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let ns = ctx.cluster.namespace("configmap").await?;
    let maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let start = maps.list(&ListParams::default()).await?;
    let version = start
        .metadata
        .resource_version
        .context("list has a resourceVersion")?;
    let mut events = maps
        .watch(&WatchParams::default().timeout(60), &version)
        .await?
        .boxed();

    let mut map = ConfigMap::default();
    map.metadata.name = Some("settings".into());
    map.metadata.labels = Some(BTreeMap::from([("app".into(), "e2e".into())]));
    map.data = Some(BTreeMap::from([("color".into(), "blue".into())]));
    maps.create(&PostParams::default(), &map).await?;

    let fetched = maps.get("settings").await?;
    ensure!(
        fetched
            .data
            .unwrap_or_default()
            .get("color")
            .map(String::as_str)
            == Some("blue")
    );
    let listed = maps.list(&ListParams::default().labels("app=e2e")).await?;
    ensure!(
        listed.items.len() == 1,
        "listed {} config maps",
        listed.items.len()
    );

    let patch = serde_json::json!({"data": {"color": "green"}});
    maps.patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    maps.delete("settings", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match events.try_next().await? {
            Some(WatchEvent::Added(cm)) if cm.metadata.name.as_deref() == Some("settings") => {
                seen.push("ADDED")
            }
            Some(WatchEvent::Modified(cm)) if cm.metadata.name.as_deref() == Some("settings") => {
                let color = cm.data.unwrap_or_default().remove("color");
                ensure!(color.as_deref() == Some("green"), "modified to {color:?}");
                seen.push("MODIFIED")
            }
            Some(WatchEvent::Deleted(cm)) if cm.metadata.name.as_deref() == Some("settings") => {
                seen.push("DELETED")
            }
            Some(_) => {}
            None => bail!("watch ended after {seen:?}"),
        }
    }
    ensure!(seen == ["ADDED", "MODIFIED", "DELETED"], "saw {seen:?}");
    ns.delete().await?;
    Ok(())
}

async fn pod_is_scheduled_onto_a_simulated_node_and_runs(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let ns = ctx.cluster.namespace("pod").await?;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "registry.invalid/hello:1"}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get("hello").await?;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some("Running") {
            let node = node.context("a running pod has a node")?;
            ensure!(node.starts_with("kwok-node-"), "scheduled onto {node}");
            break;
        }
        if Instant::now() > deadline {
            bail!("pod not Running after 60s: node {node:?}, phase {phase:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ns.delete().await?;
    Ok(())
}

async fn aggregation_layer_answers_kubectl_get_apiservices(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let kubectl = match ctx.cluster.local() {
        Some(local) => local.upstream().command("kubectl"),
        None => "kubectl".into(),
    };
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(ctx.cluster.kubeconfig())
        .args(["get", "apiservices", "-o", "json"])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let items = list["items"].as_array().context("an APIService list")?;
    let available = |name: &str| {
        items.iter().any(|item| {
            item["metadata"]["name"] == name
                && item["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Available" && c["status"] == "True")
                })
        })
    };
    ensure!(available("v1."), "v1. is not Available");
    ensure!(available("v1.apps"), "v1.apps is not Available");
    ensure!(
        available("v1alpha1.tenancy.arktos.io"),
        "our APIService (a loopback server behind an ExternalName Service) is not Available"
    );
    Ok(())
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Waits until none of `pids` runs.
async fn all_gone(pids: &[(String, u32)], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<_> = pids.iter().filter(|(_, pid)| alive(*pid)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("still running after {}s: {left:?}", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn second_cluster_runs_beside_and_stops_without_leftovers(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let _ = ctx;
    let mut spec = ClusterSpec::new(
        format!("e2e-second-{}", std::process::id()),
        ArktosHome::from_env(),
        Ports::find_free()?,
    );
    spec.nodes = 1;
    for round in 1..=2 {
        let mut cluster = LocalCluster::start(spec.clone())
            .await
            .with_context(|| format!("start #{round}"))?;
        let pids = cluster.pids();
        let expected = 6
            + usize::from(arktos_e2e::cluster::OPERATOR_REPLICAS)
            + arktos_e2e::cluster::node::COMPONENTS.len();
        ensure!(
            pids.len() == expected,
            "expected {expected} components (5 upstream, arktos-apiserver, the arktos-operators replicas, the real node's registry, containerd, arktos-node and kubelet), got {pids:?}"
        );
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.admin_client().await?);
        let names: Vec<String> = nodes
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        ensure!(
            names.len() == 2
                && names
                    .iter()
                    .any(|n| n == arktos_e2e::cluster::node::NODE_NAME),
            "expected one simulated node and the real node, got {names:?}"
        );
        cluster.stop();
        all_gone(&pids, Duration::from_secs(5)).await?;
    }
    std::fs::remove_dir_all(spec.dir())?;
    // The real node's state lives outside the cluster folder.
    let _ = std::fs::remove_dir_all(std::path::Path::new("/var/lib/arktos").join(&spec.name));
    Ok(())
}

async fn killed_launcher_leaves_no_process_behind(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let _ = ctx;
    let name = format!("e2e-killed-{}", std::process::id());
    let home = ArktosHome::from_env();
    let ports = Ports::find_free()?;
    let log_path = std::env::temp_dir().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut launcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_arktos-local"))
        .args(["run", "--name", &name, "--nodes", "1"])
        .args(["--port-base", &ports.base.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let state_path = home.cluster_dir(&name).join("launcher.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let state: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&state_path) {
            break serde_json::from_str(&text)?;
        }
        if let Some(status) = launcher.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!("launcher exited early: {status}; last lines: {tail:?}");
        }
        ensure!(Instant::now() < deadline, "launcher not ready after 120s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pids: Vec<(String, u32)> = serde_json::from_value(state["components"].clone())?;
    ensure!(pids.iter().all(|(_, pid)| alive(*pid)));
    launcher.start_kill()?;
    launcher.wait().await?;
    all_gone(&pids, Duration::from_secs(5)).await?;
    std::fs::remove_dir_all(home.cluster_dir(&name))?;
    // A killed launcher cleans nothing up: the kubelet's bind mount of its
    // root and the real node's state are left, removed here.
    let state = std::path::Path::new("/var/lib/arktos").join(&name);
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(state.join("kubelet"))
        .status();
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&log_path);
    Ok(())
}
