//! A tenant's own CustomResourceDefinitions through its route
//! (docs/tenant-routes.md): two tenants define `widgets.example.com` with
//! different schemas and use them with plain kubectl (apply, get with the
//! printer columns, explain, the status subresource, validation) and a
//! watch; neither sees the other's; the cluster stores them under each
//! tenant's group; conversion webhooks are refused; deleting the tenant
//! removes them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use arktos_crds::tenant::Tenant;
use arktos_e2e::harness::step;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, WatchEvent, WatchParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{
    TenantOwner, eventually, kubectl_apply, kubectl_words as kubectl, tenant_kubeconfig,
};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &[
    "tenants_define_the_same_crd_with_their_own_schemas",
    "a_tenants_cluster_scoped_crd_serves_its_objects_to_it_alone",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(ctx, NAMES[0], |ctx| async move { crds(&ctx).await }),
        trial(
            ctx,
            NAMES[1],
            |ctx| async move { cluster_scoped(&ctx).await },
        ),
    ]
}

/// `widgets.example.com` with one property of `spec` of type `kind`.
fn widgets(property: &str, kind: &str) -> String {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Value", "type": "string", "jsonPath": format!(".spec.{property}")}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {property: {"type": kind, "description": format!("the widget's {property}")}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]},
    })
    .to_string()
}

async fn crds(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let acme = TenantOwner::create(ctx, "crd", json!({})).await?;
    let quota = json!({"quota": {"hard": {"count/customresourcedefinitions": "1"}}});
    let globex = TenantOwner::create(ctx, "crdo", quota).await?;
    acme.namespace("web").await?;
    globex.namespace("web").await?;
    let (as_acme, as_globex) = (
        tenant_kubeconfig(ctx, &acme, "web")?,
        tenant_kubeconfig(ctx, &globex, "web")?,
    );

    step("each tenant defines widgets.example.com, with its own schema");
    for (config, property, kind) in [
        (&as_acme, "size", "integer"),
        (&as_globex, "color", "string"),
    ] {
        let (ok, out, err) = kubectl_apply(ctx, config, &widgets(property, kind)).await?;
        ensure!(ok, "{property}: {out} {err}");
        let (ok, out, err) = kubectl(
            ctx,
            config,
            "wait --for condition=established crd/widgets.example.com --timeout=60s",
        )
        .await?;
        ensure!(ok, "established: {out} {err}");
    }
    let (ok, out, err) = kubectl(ctx, &as_acme, "get crd -o name").await?;
    ensure!(
        ok && out.trim() == "customresourcedefinition.apiextensions.k8s.io/widgets.example.com",
        "acme's CRDs: {out} {err}"
    );

    step("a watch sees the tenant's widget as it is created");
    let resource = example_com("Widget", "widgets");
    let acme_widgets: Api<DynamicObject> =
        Api::namespaced_with(acme.client.clone(), "web", &resource);
    let mut events = acme_widgets
        .watch(&WatchParams::default(), "0")
        .await?
        .boxed();

    step("each uses its own: apply, get with printer columns, validation");
    let widget = |spec: serde_json::Value| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": spec}).to_string()
    };
    let (ok, out, err) = kubectl_apply(ctx, &as_acme, &widget(json!({"size": 3}))).await?;
    ensure!(ok, "acme's widget: {out} {err}");
    let (ok, out, err) = kubectl_apply(ctx, &as_globex, &widget(json!({"color": "red"}))).await?;
    ensure!(ok, "globex's widget: {out} {err}");
    let (ok, out, err) = kubectl_apply(ctx, &as_globex, &widget(json!({"size": 3}))).await?;
    ensure!(
        !ok && err.contains("unknown field \"spec.size\""),
        "globex's schema has no size: {out} {err}"
    );
    let (ok, out, err) = kubectl_apply(ctx, &as_acme, &widget(json!({"size": "big"}))).await?;
    ensure!(
        !ok && err.contains("spec.size"),
        "acme's size is an integer: {out} {err}"
    );
    let (ok, out, err) = kubectl(ctx, &as_acme, "get widgets").await?;
    ensure!(
        ok && out.contains("VALUE") && out.contains('3'),
        "printer columns: {out} {err}"
    );
    let (ok, out, err) = kubectl(ctx, &as_acme, "get widget w1 -o jsonpath={.apiVersion}").await?;
    ensure!(
        ok && out.trim() == "example.com/v1",
        "apiVersion: {out} {err}"
    );
    let added = first_added(&mut events).await?;
    ensure!(
        added.is_some_and(|w| w.metadata.name.as_deref() == Some("w1")),
        "the watch saw w1 added"
    );

    step("the status subresource and explain");
    let (ok, out, err) = kubectl(
        ctx,
        &as_acme,
        r#"patch widget w1 --subresource=status --type=merge -p {"status":{"ready":true}}"#,
    )
    .await?;
    ensure!(ok, "status: {out} {err}");
    let (ok, out, err) = kubectl(ctx, &as_acme, "explain widgets.spec.size").await?;
    ensure!(
        ok && out.contains("integer") && out.contains("the widget's size"),
        "explain: {out} {err}"
    );

    step("neither sees the other's; the cluster stores them apart");
    let (ok, out, err) = kubectl(ctx, &as_acme, "get --raw /apis").await?;
    ensure!(
        ok && !out.contains("tenants.arktos.io") && !out.contains(&globex.tenant),
        "discovery: {err}"
    );
    let stored = Api::<CustomResourceDefinition>::all(acme.admin.clone())
        .list(&ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", acme.tenant)))
        .await?;
    let names: Vec<_> = stored
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    ensure!(
        names
            == [format!(
                "widgets.example.com.{}.tenants.arktos.io",
                acme.tenant
            )],
        "stored: {names:?}"
    );

    step("conversion webhooks are refused");
    let webhook = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "gadgets", "kind": "Gadget"},
            "conversion": {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
                "clientConfig": {"url": "https://127.0.0.1:1/convert"}}},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
    let (ok, out, err) = kubectl_apply(ctx, &as_acme, &webhook.to_string()).await?;
    ensure!(
        !ok && err.contains("conversion webhooks"),
        "webhook: {out} {err}"
    );

    step("count/customresourcedefinitions holds");
    let gadgets = widgets("color", "string")
        .replace("widgets", "gadgets")
        .replace("\"widget\"", "\"gadget\"")
        .replace("Widget", "Gadget");
    let (ok, out, err) = kubectl_apply(ctx, &as_globex, &gadgets).await?;
    ensure!(
        !ok && err.contains("count/customresourcedefinitions"),
        "a second CRD beyond globex's quota of 1: {out} {err}"
    );

    step("deleting a tenant removes its CRDs");
    Api::<Tenant>::all(globex.admin.clone())
        .delete(&globex.tenant, &DeleteParams::default())
        .await?;
    let crds = Api::<CustomResourceDefinition>::all(globex.admin.clone());
    let label =
        ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", globex.tenant));
    eventually("globex's CRDs go", Duration::from_secs(120), || {
        let (crds, label) = (crds.clone(), label.clone());
        async move { Ok(crds.list(&label).await?.items.is_empty()) }
    })
    .await?;

    step("the tenant deletes its CRD through its route");
    let (ok, out, err) = kubectl(ctx, &as_acme, "delete crd widgets.example.com").await?;
    ensure!(ok, "deleting acme's CRD: {out} {err}");
    // Every CRD left makes each later namespace deletion (kube-controller-
    // manager lists every resource kind) longer.
    let crds = Api::<CustomResourceDefinition>::all(acme.admin.clone());
    let label = ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", acme.tenant));
    eventually("acme's CRD goes", Duration::from_secs(60), || {
        let (crds, label) = (crds.clone(), label.clone());
        async move { Ok(crds.list(&label).await?.items.is_empty()) }
    })
    .await?;
    Ok(())
}

/// `gizmos.example.com`: cluster-scoped, with a status subresource.
fn gizmos() -> String {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}})
    .to_string()
}

async fn cluster_scoped(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let acme = TenantOwner::create(ctx, "gizmo", json!({})).await?;
    let globex = TenantOwner::create(ctx, "gizmoo", json!({})).await?;
    acme.namespace("web").await?;
    globex.namespace("web").await?;
    let (as_acme, as_globex) = (
        tenant_kubeconfig(ctx, &acme, "web")?,
        tenant_kubeconfig(ctx, &globex, "web")?,
    );

    step("a tenant defines a cluster-scoped CRD and uses it");
    let (ok, out, err) = kubectl_apply(ctx, &as_acme, &gizmos()).await?;
    ensure!(ok, "gizmos: {out} {err}");
    let (ok, out, err) = kubectl(
        ctx,
        &as_acme,
        "wait --for condition=established crd/gizmos.example.com --timeout=60s",
    )
    .await?;
    ensure!(ok, "established: {out} {err}");
    let resource = example_com("Gizmo", "gizmos");
    let acme_gizmos: Api<DynamicObject> = Api::all_with(acme.client.clone(), &resource);
    let mut events = acme_gizmos
        .watch(&WatchParams::default(), "0")
        .await?
        .boxed();
    let gizmo = json!({"apiVersion": "example.com/v1", "kind": "Gizmo",
        "metadata": {"name": "g1"}, "spec": {"size": 2}})
    .to_string();
    // The owners' cluster-wide grant may take a moment to be in effect.
    eventually("acme's gizmo is created", Duration::from_secs(30), || {
        let (ctx, as_acme, gizmo) = (ctx.clone(), as_acme.clone(), gizmo.clone());
        async move { Ok(kubectl_apply(&ctx, &as_acme, &gizmo).await?.0) }
    })
    .await?;
    let (ok, out, err) = kubectl(ctx, &as_acme, "get gizmos -o name").await?;
    ensure!(
        ok && out.trim() == "gizmo.example.com/g1",
        "acme's gizmos: {out} {err}"
    );
    let (ok, out, err) = kubectl(
        ctx,
        &as_acme,
        r#"patch gizmo g1 --subresource=status --type=merge -p {"status":{"ready":true}}"#,
    )
    .await?;
    ensure!(ok, "status: {out} {err}");
    let (ok, out, err) = kubectl(ctx, &as_acme, "auth can-i delete gizmos").await?;
    ensure!(
        ok && out.trim() == "yes",
        "can-i delete gizmos: {out} {err}"
    );
    let added = first_added(&mut events).await?;
    ensure!(
        added.is_some_and(|g| g.metadata.name.as_deref() == Some("g1")
            && g.types.is_some_and(|t| t.api_version == "example.com/v1")),
        "the watch saw g1 added, in the tenant's group"
    );

    step("no other tenant sees it; the cluster stores it in the tenant's group");
    let (ok, out, err) = kubectl(ctx, &as_globex, "get gizmos").await?;
    ensure!(!ok && err.contains("gizmos"), "globex: {out} {err}");
    let stored = ApiResource {
        group: format!("example.com.{}.tenants.arktos.io", acme.tenant),
        api_version: format!("example.com.{}.tenants.arktos.io/v1", acme.tenant),
        ..resource.clone()
    };
    let names: Vec<String> = Api::<DynamicObject>::all_with(acme.admin.clone(), &stored)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|g| g.metadata.name)
        .collect();
    ensure!(names == ["g1"], "stored: {names:?}");

    step("deleting the tenant removes the CRD and the owners' cluster-wide grant");
    Api::<Tenant>::all(acme.admin.clone())
        .delete(&acme.tenant, &DeleteParams::default())
        .await?;
    let crds = Api::<CustomResourceDefinition>::all(acme.admin.clone());
    let bindings = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(acme.admin.clone());
    let label = ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", acme.tenant));
    eventually("acme's CRD and grant go", Duration::from_secs(120), || {
        let (crds, bindings, label) = (crds.clone(), bindings.clone(), label.clone());
        async move {
            Ok(crds.list(&label).await?.items.is_empty()
                && bindings.list(&label).await?.items.is_empty())
        }
    })
    .await?;
    Ok(())
}

/// A resource of group `example.com/v1`, as a tenant names it.
fn example_com(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The first object a watch reports added, waiting up to 30 s.
async fn first_added(
    events: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin),
) -> anyhow::Result<Option<DynamicObject>> {
    let added = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.try_next().await? {
            if let WatchEvent::Added(object) = event {
                return Ok::<_, kube::Error>(Some(object));
            }
        }
        Ok(None)
    })
    .await??;
    Ok(added)
}
