//! The local cluster itself: the API server, the controllers and scheduler,
//! simulated nodes, the aggregation layer, and the launcher's lifecycle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use arktos_e2e::cluster::{ClusterSpec, LocalCluster, Ports, leftovers};
use arktos_e2e::home::ArktosHome;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use libtest_mimic::Trial;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Ctx, disruptive_long_trial, trial};

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
        disruptive_long_trial(
            ctx,
            NAMES[5],
            Duration::from_secs(360),
            killed_launcher_leaves_no_process_behind,
        ),
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

/// SIGCONTs a SIGSTOPped process however the test ends.
struct Frozen(Pid);

impl Frozen {
    fn stop(pid: u32) -> anyhow::Result<Self> {
        let pid = Pid::from_raw(pid as i32);
        kill(pid, Signal::SIGSTOP)?;
        Ok(Self(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn pid_of(program: &str) -> anyhow::Result<u32> {
    let out = std::process::Command::new("pidof").arg(program).output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("{program} is not running"))
}

/// A VM pod on the real node of a cluster whose launcher then dies while
/// libvirt is stuck (SIGSTOPped, as a libvirt re-probing QEMU for seconds
/// per call is stuck): its processes die with it, and what libvirt and the
/// kernel still hold (the VM, its network namespace, the bridge, the node
/// address) is listed by `arktos-local status` and removed by the next
/// start or `arktos-local down`.
async fn killed_launcher_leaves_no_process_behind(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let _ = ctx;
    let name = format!("e2e-killed-{}", std::process::id());
    let home = ArktosHome::from_env();
    let ports = Ports::find_free()?;
    let log_path = std::env::temp_dir().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let launcher_bin = env!("CARGO_BIN_EXE_arktos-local");
    let mut launcher = tokio::process::Command::new(launcher_bin)
        .args(["run", "--name", &name, "--nodes", "1"])
        .args(["--port-base", &ports.base.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let state_path = home.cluster_dir(&name).join("launcher.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    let state: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&state_path) {
            break serde_json::from_str(&text)?;
        }
        if let Some(status) = launcher.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!("launcher exited early: {status}; last lines: {tail:?}");
        }
        ensure!(Instant::now() < deadline, "launcher not ready after 180s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pids: Vec<(String, u32)> = serde_json::from_value(state["components"].clone())?;
    ensure!(pids.iter().all(|(_, pid)| alive(*pid)));

    // A VM pod; once its sandbox (network namespace) exists, libvirt stops
    // answering while the VM is being created.
    let kubeconfig = state["kubeconfig"].as_str().context("kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config)?, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vm"},
        "spec": {"runtimeClassName": "arktos-vm", "containers": [{"name": "vm",
            "image": format!("{}0.3.5/cirros-0.3.5-x86_64-disk.img", arktos_e2e::cluster::node::CIRROS_PREFIX),
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let prefix = leftovers::netns_prefix(&name);
    let netns = || {
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&prefix))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !netns() {
        ensure!(Instant::now() < deadline, "no VM sandbox after 120s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frozen = Frozen::stop(pid_of("libvirtd")?)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    launcher.start_kill()?;
    launcher.wait().await?;
    all_gone(&pids, Duration::from_secs(10)).await?;

    // libvirt answers again, and may finish what it was asked before.
    drop(frozen);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::process::Command::new(launcher_bin)
        .args(["status", "--name", &name])
        .output()?;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(
        status.contains(&prefix),
        "`arktos-local status` should list the VM's network namespace; it said: {status}"
    );
    let down = std::process::Command::new(launcher_bin)
        .args(["down", "--name", &name])
        .output()?;
    let own = leftovers::Owner::Cluster {
        name: name.clone(),
        base: ports.base,
    };
    let left = leftovers::Leftovers::find(&own);
    ensure!(
        left.is_empty(),
        "after `arktos-local down` ({}), left behind: {left}",
        String::from_utf8_lossy(&down.stderr).trim()
    );
    println!(
        "  killed launcher: status listed {}; down removed them",
        status
            .lines()
            .find(|l| l.contains("left behind"))
            .unwrap_or_default()
    );
    std::fs::remove_dir_all(home.cluster_dir(&name))?;
    // The node state of a cluster that is not ephemeral (its image cache)
    // is kept on purpose; this one is done.
    let state = std::path::Path::new(leftovers::STATE_ROOT).join(&name);
    leftovers::unmount_below(&state);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&log_path);
    Ok(())
}
