//! Tenants on two partitions behind one gateway (issue 17; the Partitions
//! section of docs/architecture.md): a second control plane started and
//! registered while everything runs, placement, the same names in tenants
//! on either side, isolation across them, a tenant deleted from the
//! partition, and a partition that stops and returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use arktos_e2e::cluster::partitions::{kubeconfig_secret, start_partition};
use arktos_e2e::cluster::{LocalCluster, Ports};
use arktos_e2e::harness::step;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSchedulingGate};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{TenantOwner, eventually, kubectl_words, tenant_kubeconfig, unique};
use crate::{Ctx, disruptive_long_trial};

pub const NAMES: &[&str] = &[
    "tenants_on_two_partitions_work_alike_and_stay_apart",
    "a_partition_that_stops_fails_its_tenants_promptly_and_no_others",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        disruptive_long_trial(ctx, NAMES[0], Duration::from_secs(300), |ctx| async move {
            two_partitions(&ctx).await
        }),
        disruptive_long_trial(ctx, NAMES[1], Duration::from_secs(300), |ctx| async move {
            stopped_partition(&ctx).await
        }),
    ]
}

/// A partition started for one test, registered unschedulable once it has
/// the tenants the test placed there; unregistered at the end.
async fn with_partition<F, Fut>(ctx: &Arc<Ctx>, test: F) -> anyhow::Result<()>
where
    F: FnOnce(kube::Client, LocalCluster, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<LocalCluster>>,
{
    let root = ctx
        .cluster
        .local()
        .context("this test needs the local cluster")?
        .as_root()?;
    let name = unique("p");
    let partition = start_partition(&root, &name, Ports::find_free()?, 1).await?;
    let admin = ctx.cluster.client().await?;
    let outcome = test(admin.clone(), partition, name.clone()).await;
    let partitions = Api::<arktos_crds::partition::Partition>::all(admin.clone());
    let _ = partitions.delete(&name, &DeleteParams::default()).await;
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin, "arktos-system");
    let _ = secrets
        .delete(&kubeconfig_secret(&name), &DeleteParams::default())
        .await;
    outcome.map(drop)
}

async fn two_partitions(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    step("a second control plane starts and is registered as a Partition while everything runs");
    with_partition(ctx, |admin, partition, name| async move {
        on_two_partitions(ctx, &admin, &partition, &name).await?;
        Ok(partition)
    })
    .await
}

async fn stopped_partition(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    step("a partition with a tenant, and a tenant at the root");
    with_partition(ctx, |admin, mut partition, name| async move {
        let far = TenantOwner::create(ctx, "down", json!({"partition": name})).await?;
        let near = TenantOwner::create(ctx, "up", json!({"partition": "local"})).await?;
        for owner in [&far, &near] {
            owner.namespace("web").await?;
        }
        let patch = json!({"spec": {"unschedulable": true}});
        Api::<arktos_crds::partition::Partition>::all(admin)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let far_kubeconfig = tenant_kubeconfig(ctx, &far, "web")?;
        outage(&far, &far_kubeconfig, &near, &mut partition, &name).await?;
        Ok(partition)
    })
    .await
}

async fn on_two_partitions(
    ctx: &Arc<Ctx>,
    admin: &kube::Client,
    partition: &LocalCluster,
    name: &str,
) -> anyhow::Result<()> {
    step("placement: a tenant that names no partition goes to the emptiest, the new one");
    let far = TenantOwner::create(ctx, "far", json!({})).await?;
    let placed = far
        .get()
        .await?
        .and_then(|t| t.status)
        .and_then(|s| s.partition);
    ensure!(placed.as_deref() == Some(name), "placed on {placed:?}");
    let near = TenantOwner::create(ctx, "near", json!({"partition": "local"})).await?;

    same_names_alike(ctx, &far, &near).await?;
    isolation(ctx, &far, &near).await?;

    step("an unschedulable partition takes no new tenants");
    let patch = json!({"spec": {"unschedulable": true}});
    Api::<arktos_crds::partition::Partition>::all(admin.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let third = TenantOwner::create_unprovisioned(ctx, "third", json!({})).await?;
    let placed = third
        .get()
        .await?
        .and_then(|t| t.status)
        .and_then(|s| s.partition);
    ensure!(placed.as_deref() == Some("local"), "placed on {placed:?}");

    deletion_cleans_the_partition(admin, partition, &far).await
}

/// The same namespace and object names in both tenants; kubectl and kube-rs
/// through the one gateway URL; each tenant's `-A` shows only its own.
async fn same_names_alike(
    ctx: &Arc<Ctx>,
    far: &TenantOwner,
    near: &TenantOwner,
) -> anyhow::Result<()> {
    step("the same namespace and object names in tenants on either partition");
    for owner in [far, near] {
        owner.namespace("web").await?;
        let config: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "cfg"}, "data": {"tenant": owner.tenant}}))?;
        Api::<ConfigMap>::namespaced(owner.client.clone(), "web")
            .create(&Default::default(), &config)
            .await?;
        Api::<Pod>::namespaced(owner.client.clone(), "web")
            .create(&Default::default(), &gated_pod())
            .await?;
    }
    for owner in [far, near] {
        let config = tenant_kubeconfig(ctx, owner, "web")?;
        let (ok, out, err) =
            kubectl_words(ctx, &config, "get configmap cfg -o jsonpath={.data.tenant}").await?;
        ensure!(ok && out == owner.tenant, "{}: {out} {err}", owner.tenant);
        let (ok, out, err) = kubectl_words(ctx, &config, "get configmaps -A --no-headers").await?;
        let mine = out.lines().filter(|l| l.contains("cfg")).count();
        ensure!(
            ok && mine == 1 && !out.contains("--"),
            "{}: get configmaps -A: {out} {err}",
            owner.tenant
        );
        let (ok, out, err) = kubectl_words(ctx, &config, "get pods -A --no-headers").await?;
        ensure!(
            ok && out.lines().count() == 1 && out.starts_with("web") && out.contains("app"),
            "{}: get pods -A: {out} {err}",
            owner.tenant
        );
        let (ok, out, _) = kubectl_words(ctx, &config, "get namespaces -o name").await?;
        ensure!(
            ok && out.lines().count() == 4 && out.contains("namespace/web"),
            "{}: namespaces: {out}",
            owner.tenant
        );
        python_alike(&config, &owner.tenant).await?;
    }
    Ok(())
}

/// A pod the tenants' Pod Security level admits, held back from scheduling.
fn gated_pod() -> Pod {
    let mut pod = crate::support::restricted_pod("app");
    if let Some(spec) = pod.spec.as_mut() {
        spec.scheduling_gates = Some(vec![PodSchedulingGate {
            name: "arktos.io/e2e".into(),
        }]);
    }
    pod
}

/// The Python client reads, creates and lists across the tenant the same
/// whichever partition holds it.
const PYTHON_ALIKE: &str = r#"
import json, sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
core.create_namespaced_config_map("web", {"metadata": {"name": "from-python"}})
ours = ("cfg", "from-python")
print(json.dumps({
    "cfg": core.read_namespaced_config_map("cfg", "web").data["tenant"],
    "all": sorted("%s/%s" % (m.metadata.namespace, m.metadata.name)
                  for m in core.list_config_map_for_all_namespaces().items if m.metadata.name in ours),
}))
"#;

async fn python_alike(kubeconfig: &std::path::Path, tenant: &str) -> anyhow::Result<()> {
    let interpreter = crate::tenant_python::python().await?;
    let out = tokio::process::Command::new(&interpreter)
        .args(["-c", PYTHON_ALIKE])
        .arg(kubeconfig)
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{tenant}: python: {err}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        answer["cfg"] == tenant && answer["all"] == json!(["web/cfg", "web/from-python"]),
        "{tenant}: python saw {answer}"
    );
    Ok(())
}

/// Attempts by the tenant on the new partition on the other tenant's
/// objects: each fails closed, and nothing of the other's is seen.
async fn isolation(ctx: &Arc<Ctx>, far: &TenantOwner, near: &TenantOwner) -> anyhow::Result<()> {
    step("thirteen attempts across partitions fail closed");
    let mine = tenant_kubeconfig(ctx, far, "web")?;
    let theirs_as_me = crate::support::tenant_kubeconfig_for(ctx, &near.tenant, &far.user, "web")?;
    let storage = near.storage("web");
    let refused = [
        (&mine, format!("get configmap cfg -n {storage}")),
        (&mine, format!("get namespace {storage}")),
        (&theirs_as_me, "create configmap smuggled".to_string()),
        (&theirs_as_me, "get configmap cfg".to_string()),
        (&theirs_as_me, "get configmaps -A".to_string()),
        (&theirs_as_me, "delete configmap cfg".to_string()),
        (
            &theirs_as_me,
            "get --raw /api/v1/namespaces/web/configmaps?watch=1&timeoutSeconds=1".to_string(),
        ),
        (
            &mine,
            format!("get --raw /api/v1/namespaces/{storage}/configmaps"),
        ),
        (&mine, format!("get actions.vm.arktos.io -n {storage}")),
        (&theirs_as_me, "get actions.vm.arktos.io".to_string()),
        (&mine, format!("get pod app -n {storage}")),
    ];
    for (config, attempt) in &refused {
        let (ok, out, err) = kubectl_words(ctx, config, attempt).await?;
        ensure!(!ok && !out.contains(&near.tenant), "{attempt}: {out} {err}");
    }
    let empty = [
        format!(
            "get configmaps -A -l tenancy.arktos.io/tenant={}",
            near.tenant
        ),
        format!("get configmaps -A --field-selector metadata.namespace={storage}"),
    ];
    for attempt in &empty {
        let (_, out, err) = kubectl_words(ctx, &mine, attempt).await?;
        ensure!(
            !out.contains("cfg") && !out.contains(&near.tenant),
            "{attempt}: {out} {err}"
        );
    }
    step("a body naming the other tenant's namespace stays in the caller's tenant or is refused");
    let smuggled: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "smuggled", "namespace": storage}}))?;
    let created = Api::<ConfigMap>::namespaced(far.client.clone(), "web")
        .create(&Default::default(), &smuggled)
        .await;
    let landed = Api::<ConfigMap>::namespaced(near.client.clone(), "web")
        .get_opt("smuggled")
        .await?;
    ensure!(landed.is_none(), "landed in the other tenant: {created:?}");
    let cfg = Api::<ConfigMap>::namespaced(near.client.clone(), "web")
        .get("cfg")
        .await?;
    ensure!(cfg.data.unwrap_or_default().get("tenant") == Some(&near.tenant));
    Ok(())
}

/// The partition's kube-apiserver stops: its tenants get a prompt 503
/// naming it, the other tenant works throughout, watches resume after.
async fn outage(
    far: &TenantOwner,
    far_kubeconfig: &std::path::Path,
    near: &TenantOwner,
    partition: &mut LocalCluster,
    name: &str,
) -> anyhow::Result<()> {
    step("watches on both tenants, then the partition's kube-apiserver stops");
    let far_seen = watch_names(Api::namespaced(far.client.clone(), "web"));
    let near_seen = watch_names(Api::namespaced(near.client.clone(), "web"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    partition.kill("kube-apiserver")?;
    let far_configs: Api<ConfigMap> = Api::namespaced(far.client.clone(), "web");
    // kube-rs retries a 503 for minutes by default: this asks once.
    let once: Api<ConfigMap> = Api::namespaced(without_retries(far_kubeconfig).await?, "web");
    let asked = Instant::now();
    let answer = once.get_opt("cfg").await;
    let took = asked.elapsed();
    match &answer {
        Err(kube::Error::Api(status)) => ensure!(
            status.code == 503 && status.message.contains(name) && took < Duration::from_secs(2),
            "while down: {status:?} after {took:?}"
        ),
        other => anyhow::bail!("while down, want a 503 Status: {other:?} after {took:?}"),
    }

    step("the other partition's tenant creates, lists and watches meanwhile");
    let near_configs: Api<ConfigMap> = Api::namespaced(near.client.clone(), "web");
    for n in 0..3 {
        let config: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("during-{n}")}}))?;
        near_configs.create(&Default::default(), &config).await?;
    }
    let listed = near_configs.list(&ListParams::default()).await?;
    let during = listed
        .items
        .iter()
        .filter(|c| c.name_any().starts_with("during-"));
    ensure!(during.count() == 3, "listed: {:?}", listed.items.len());
    for n in 0..3 {
        seen(&near_seen, &format!("during-{n}")).await?;
    }

    step("the partition's kube-apiserver returns; the tenant's watch resumes");
    partition.start_again("kube-apiserver")?;
    eventually(
        "the partition answering again",
        Duration::from_secs(90),
        || async { Ok(far_configs.get_opt("cfg").await.is_ok()) },
    )
    .await?;
    let config: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "after"}}))?;
    far_configs.create(&Default::default(), &config).await?;
    seen(&far_seen, "after").await
}

/// A client of the kubeconfig at `path` without kube-rs' retries of 429,
/// 503 and 504.
async fn without_retries(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// The names of the ConfigMaps a kube-rs watcher (which resumes by itself,
/// with its default backoff) reports, as they come; the watcher stops when
/// this is dropped.
struct Watching {
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch_names(api: Api<ConfigMap>) -> Watching {
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::Event;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let events = kube::runtime::watcher(api, Default::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Ok(Event::Apply(object) | Event::InitApply(object)) = event {
                record.lock().expect("not poisoned").push(object.name_any());
            }
        }
    });
    Watching { seen, task }
}

async fn seen(watching: &Watching, name: &str) -> anyhow::Result<()> {
    let reported = || async {
        let seen = watching.seen.lock().expect("not poisoned");
        Ok(seen.iter().any(|n| n == name))
    };
    eventually(
        &format!("the watch reporting {name}"),
        Duration::from_secs(60),
        reported,
    )
    .await?;
    Ok(())
}

async fn deletion_cleans_the_partition(
    admin: &kube::Client,
    partition: &LocalCluster,
    far: &TenantOwner,
) -> anyhow::Result<()> {
    step("deleting the tenant on the partition removes everything of it there");
    Api::<arktos_crds::Tenant>::all(admin.clone())
        .delete(&far.tenant, &DeleteParams::default())
        .await?;
    eventually("the tenant gone", Duration::from_secs(120), || async {
        Ok(far.get().await?.is_none())
    })
    .await?;
    let there = partition.admin_client().await?;
    let prefix = format!("{}--", far.tenant);
    let namespaces = Api::<Namespace>::all(there.clone())
        .list(&ListParams::default())
        .await?;
    let left: Vec<String> = namespaces
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n.starts_with(&prefix))
        .collect();
    ensure!(
        left.is_empty(),
        "namespaces left in the partition: {left:?}"
    );
    let labelled =
        ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", far.tenant));
    let roles = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(there)
        .list(&labelled)
        .await?;
    ensure!(roles.items.is_empty(), "ClusterRoles left in the partition");
    Ok(())
}
