//! Tenant routes: watches on the tenant gateway: long-lived, exactly the
//! tenant's events in order with tenant names, and an informer-style
//! list+watch that resumes after arktos-apiserver restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use arktos_e2e::cluster::arktos::{self, APISERVER};
use arktos_e2e::cluster::kubeconfig;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::unique;
use crate::{Ctx, disruptive_trial, long_trial};

/// How long the long watch stays open (the acceptance asks for 5 minutes;
/// `ARKTOS_E2E_LONG_WATCH_SECS` shortens it for quick local runs).
fn long_watch() -> Duration {
    let secs = std::env::var("ARKTOS_E2E_LONG_WATCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

pub const NAMES: &[&str] = &[
    "gateway_watch_stays_open_and_delivers_only_the_tenants_events_in_order",
    "gateway_list_and_watch_resumes_after_an_apiserver_restart",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        long_trial(
            ctx,
            NAMES[0],
            long_watch() + Duration::from_secs(120),
            gateway_watch_stays_open_and_delivers_only_the_tenants_events_in_order,
        ),
        disruptive_trial(
            ctx,
            NAMES[1],
            gateway_list_and_watch_resumes_after_an_apiserver_restart,
        ),
    ]
}

/// A tenant with one owner, a namespace `web`, and the owner's gateway client.
pub async fn mk_tenant_with_namespace(
    ctx: &Ctx,
    prefix: &str,
) -> anyhow::Result<(String, kube::Client, kube::Client)> {
    let (pki, admin_url, gateway) = crate::support::local_parts(ctx)?;
    let admin = kubeconfig::client(&admin_url, &pki, "admin").await?;
    let tenant = unique(prefix);
    let user = format!("{tenant}-owner");
    crate::support::issue_user(&pki, &user)?;
    let tenants: Api<arktos_crds::Tenant> = Api::all(admin.clone());
    let object: arktos_crds::Tenant = serde_json::from_value(json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant", "metadata": {"name": tenant},
        "spec": {"owners": [{"kind": "User", "name": user}]},
    }))?;
    tenants.create(&PostParams::default(), &object).await?;
    crate::support::grant_use(&admin, &tenant, &user).await?;
    let client = kubeconfig::client_with(
        &format!("{}{tenant}", gateway),
        &pki.ca_cert(),
        &pki.cert(&user),
        &pki.key(&user),
        &[],
    )
    .await?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "web"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok((tenant, client, admin))
}

fn mk_map(name: &str, value: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "data": {"v": value}}),
    )?)
}

async fn gateway_watch_stays_open_and_delivers_only_the_tenants_events_in_order(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let (tenant, mine, admin) = mk_tenant_with_namespace(&ctx, "lw").await?;
    let (_, theirs, _) = mk_tenant_with_namespace(&ctx, "lx").await?;
    let my_maps: Api<ConfigMap> = Api::namespaced(mine.clone(), "web");
    let their_maps: Api<ConfigMap> = Api::namespaced(theirs, "web");
    let start = my_maps
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let duration = long_watch();
    let params =
        WatchParams::default().timeout(u32::try_from(duration.as_secs() + 60).unwrap_or(u32::MAX));
    let mut events = my_maps.watch(&params, &start).await?.boxed();

    // Changes in both tenants, spread over the whole duration.
    let writer = {
        let (my_maps, their_maps) = (my_maps.clone(), their_maps.clone());
        tokio::spawn(async move {
            let mut expected = Vec::new();
            let deadline = Instant::now() + duration;
            let mut i = 0;
            while Instant::now() < deadline {
                let name = format!("m{i}");
                my_maps
                    .create(&PostParams::default(), &mk_map(&name, "1")?)
                    .await?;
                their_maps
                    .create(&PostParams::default(), &mk_map(&name, "1")?)
                    .await?;
                my_maps
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"v": "2"}})),
                    )
                    .await?;
                my_maps.delete(&name, &DeleteParams::default()).await?;
                expected.extend([
                    ("ADDED", name.clone()),
                    ("MODIFIED", name.clone()),
                    ("DELETED", name),
                ]);
                i += 1;
                tokio::time::sleep(Duration::from_secs(10).min(duration / 4)).await;
            }
            anyhow::Ok(expected)
        })
    };
    let expected = writer.await??;
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), events.try_next())
            .await
            .context("the watch went quiet")??
            .context("the watch ended early")?;
        let (kind, map) = match event {
            WatchEvent::Added(m) => ("ADDED", m),
            WatchEvent::Modified(m) => ("MODIFIED", m),
            WatchEvent::Deleted(m) => ("DELETED", m),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => bail!("watch error {e:?}"),
        };
        let namespace = map.metadata.namespace.clone().unwrap_or_default();
        ensure!(namespace == "web", "an event from namespace {namespace:?}");
        let name = map.metadata.name.unwrap_or_default();
        if name == "kube-root-ca.crt" {
            continue;
        }
        seen.push((kind, name));
    }
    ensure!(
        seen == expected,
        "events differ: seen {seen:?}, expected {expected:?}"
    );
    eprintln!(
        "gateway watch of tenant {tenant}: {} events in order over {}s",
        seen.len(),
        duration.as_secs()
    );
    let _ = admin;
    Ok(())
}

async fn gateway_list_and_watch_resumes_after_an_apiserver_restart(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let (tenant, mine, admin) = mk_tenant_with_namespace(&ctx, "rs").await?;
    let my_maps: Api<ConfigMap> = Api::namespaced(mine.clone(), "web");
    // kube-controller-manager publishes the root CA into every new
    // namespace; let that happen before the list the watch resumes from.
    crate::support::eventually("kube-root-ca.crt", Duration::from_secs(30), || {
        let my_maps = my_maps.clone();
        async move { Ok(my_maps.get_opt("kube-root-ca.crt").await?.is_some()) }
    })
    .await?;
    my_maps
        .create(&PostParams::default(), &mk_map("before", "1")?)
        .await?;
    let listed = my_maps.list(&ListParams::default()).await?;
    let version = listed.metadata.resource_version.context("rv")?;
    ensure!(
        listed
            .items
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some("before"))
    );

    // arktos-apiserver goes away; the tenant's objects change meanwhile.
    let (port, gateway_port, pki) = {
        let mut local = ctx
            .cluster
            .local()
            .context("this test needs the local cluster")?;
        local.stop_component(APISERVER);
        (
            local.apiserver_port(),
            local.gateway_port(),
            local.pki().clone(),
        )
    };
    let storage: Api<ConfigMap> = Api::namespaced(admin.clone(), &format!("{tenant}--web"));
    storage
        .create(&PostParams::default(), &mk_map("during", "1")?)
        .await?;
    ctx.cluster
        .local()
        .context("local")?
        .start_arktos_apiserver(APISERVER, port, gateway_port)?;
    let timeout = Duration::from_secs(60);
    arktos::wait_for_ready(&pki, port, timeout).await?;
    arktos::wait_for_apiservice(&admin, arktos::APISERVICE, timeout).await?;
    arktos::wait_for_openapi(&admin, "apis/tenancy.arktos.io/v1alpha1", timeout).await?;

    let mut resumed = my_maps
        .watch(&WatchParams::default().timeout(60), &version)
        .await?
        .boxed();
    my_maps
        .create(&PostParams::default(), &mk_map("after", "1")?)
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), resumed.try_next())
            .await
            .context("quiet")??
        {
            Some(WatchEvent::Added(m)) => {
                ensure!(m.metadata.namespace.as_deref() == Some("web"));
                seen.push(m.metadata.name.unwrap_or_default());
            }
            Some(WatchEvent::Bookmark(_)) => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    ensure!(seen == ["during", "after"], "resumed watch saw {seen:?}");
    Ok(())
}
