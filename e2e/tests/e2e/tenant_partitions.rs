//! Tenants on two partitions behind one gateway (issue 17; the Partitions
//! section of docs/architecture.md): a second control plane started and
//! registered while everything runs, placement, the same names in tenants
//! on either side, isolation across them, and a tenant deleted from the
//! partition.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use arktos_e2e::cluster::partitions::{kubeconfig_secret, start_partition};
use arktos_e2e::cluster::{LocalCluster, Ports};
use arktos_e2e::harness::step;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{TenantOwner, eventually, kubectl_words, tenant_kubeconfig, unique};
use crate::{Ctx, disruptive_long_trial};

pub const NAMES: &[&str] = &["tenants_on_two_partitions_work_alike_and_stay_apart"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![disruptive_long_trial(
        ctx,
        NAMES[0],
        Duration::from_secs(420),
        |ctx| async move { two_partitions(&ctx).await },
    )]
}

async fn two_partitions(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    step("a second control plane starts and is registered as a Partition while everything runs");
    let root = ctx
        .cluster
        .local()
        .context("this test needs the local cluster")?
        .as_root()?;
    let name = unique("p");
    let partition = start_partition(&root, &name, Ports::find_free()?, 1).await?;
    let admin = ctx.cluster.client().await?;
    let outcome = on_two_partitions(ctx, &admin, &partition, &name).await;
    let partitions = Api::<arktos_crds::partition::Partition>::all(admin.clone());
    let _ = partitions.delete(&name, &DeleteParams::default()).await;
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin, "arktos-system");
    let _ = secrets
        .delete(&kubeconfig_secret(&name), &DeleteParams::default())
        .await;
    outcome
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
        let (ok, out, _) = kubectl_words(ctx, &config, "get namespaces -o name").await?;
        ensure!(
            ok && out.lines().count() == 4 && out.contains("namespace/web"),
            "{}: namespaces: {out}",
            owner.tenant
        );
    }
    Ok(())
}

/// Attempts by the tenant on the new partition on the other tenant's
/// objects: each fails closed, and nothing of the other's is seen.
async fn isolation(ctx: &Arc<Ctx>, far: &TenantOwner, near: &TenantOwner) -> anyhow::Result<()> {
    step("ten attempts across partitions fail closed");
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
