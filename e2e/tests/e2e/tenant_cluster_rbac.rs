//! A tenant's own ClusterRoles and ClusterRoleBindings through its route
//! (docs/tenant-routes.md), with plain kubectl: a tenant ClusterRole bound
//! by a tenant ClusterRoleBinding grants across all of that tenant's
//! namespaces, present and future, and nothing outside it; another tenant
//! keeps its own of the same name; escalation is refused; deleting the
//! tenant removes them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use arktos_crds::tenant::Tenant;
use arktos_e2e::harness::step;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{
    TenantOwner, can_i, eventually, grant, issue_user, kubectl_with, kubectl_words as kubectl,
    local_parts, tenant_kubeconfig_for,
};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &["tenant_cluster_roles_and_bindings_grant_inside_the_tenant_only"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![trial(ctx, NAMES[0], |ctx| async move {
        cluster_rbac(&ctx).await
    })]
}

/// May `user` list pods in storage namespace `namespace` ("" for every
/// namespace), as kube-apiserver itself decides.
async fn allowed(admin: &kube::Client, user: &str, namespace: &str) -> anyhow::Result<bool> {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {"user": user, "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": namespace}},
    }))?;
    let answer = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn cluster_rbac(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let acme = TenantOwner::create(ctx, "crb", json!({})).await?;
    let globex = TenantOwner::create(ctx, "crbo", json!({})).await?;
    for namespace in ["web", "db"] {
        acme.namespace(namespace).await?;
    }
    globex.namespace("web").await?;
    let owner = tenant_kubeconfig_for(ctx, &acme.tenant, &acme.user, "web")?;
    let other = tenant_kubeconfig_for(ctx, &globex.tenant, &globex.user, "web")?;
    let reader = format!("{}-reader", acme.tenant);
    let (pki, _, _) = local_parts(ctx)?;
    issue_user(&pki, &reader)?;
    grant(&acme.admin, &acme.tenant, &reader, &["tenants"], &["use"]).await?;
    let as_reader = tenant_kubeconfig_for(ctx, &acme.tenant, &reader, "web")?;

    step("each tenant defines its own pod-reader; neither sees the other's");
    let (ok, out, err) = kubectl(
        ctx,
        &owner,
        "create clusterrole pod-reader --verb=get,list,watch --resource=pods,configmaps",
    )
    .await?;
    ensure!(ok, "acme's pod-reader: {out} {err}");
    let (ok, out, err) = kubectl(
        ctx,
        &other,
        "create clusterrole pod-reader --verb=get --resource=secrets",
    )
    .await?;
    ensure!(ok, "globex's pod-reader: {out} {err}");
    let (ok, out, err) = kubectl(ctx, &owner, "get clusterroles -o name").await?;
    ensure!(
        ok && out.trim() == "clusterrole.rbac.authorization.k8s.io/pod-reader",
        "acme lists its own only: {out} {err}"
    );
    let (ok, out, err) = kubectl(
        ctx,
        &other,
        "get clusterrole pod-reader -o jsonpath={.rules[0].resources}",
    )
    .await?;
    ensure!(
        ok && out.contains("secrets") && !out.contains("pods"),
        "globex's own: {out} {err}"
    );
    let (ok, out, _) = kubectl(ctx, &owner, "get clusterrole view -o name").await?;
    ensure!(
        ok && out.contains("view"),
        "the shared view role is readable: {out}"
    );

    step("a tenant ClusterRoleBinding grants in each of the tenant's namespaces");
    let (ok, out, err) = kubectl(
        ctx,
        &owner,
        &format!("create clusterrolebinding readers --clusterrole=pod-reader --user={reader}"),
    )
    .await?;
    ensure!(ok, "binding: {out} {err}");
    for (question, want) in [
        ("list pods -n web", "yes"),
        ("get configmaps -n db", "yes"),
        ("list pods --all-namespaces", "yes"),
        ("create pods -n web", "no"),
        ("list secrets -n web", "no"),
    ] {
        can_i(ctx, &as_reader, question, want).await?;
    }
    let (ok, out, err) = kubectl(ctx, &as_reader, "get configmaps -n db -o name").await?;
    ensure!(ok, "the reader reads db: {out} {err}");
    step("and in a namespace made after it");
    acme.namespace("api").await?;
    can_i(ctx, &as_reader, "list pods -n api", "yes").await?;

    step("nothing outside the tenant: not cluster-wide, not in another tenant");
    ensure!(!allowed(&acme.admin, &reader, "").await?, "cluster-wide");
    ensure!(
        !allowed(&acme.admin, &reader, &globex.storage("web")).await?,
        "globex's web"
    );
    ensure!(
        allowed(&acme.admin, &reader, &acme.storage("web")).await?,
        "acme's web"
    );
    let stored = Api::<ClusterRoleBinding>::all(acme.admin.clone())
        .get(&format!("{}--readers", acme.tenant))
        .await?;
    ensure!(
        stored.role_ref.name == "arktos:tenant-cluster-role-binding",
        "stored inert: {:?}",
        stored.role_ref
    );

    step("escalation is refused");
    let node_reader = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "node-reader"}, "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]}"#;
    let (ok, out, err) =
        kubectl_with(ctx, &owner, &["apply", "-f", "-"], Some(node_reader)).await?;
    ensure!(
        !ok && err.contains("may not grant"),
        "rules on nodes: {out} {err}"
    );
    let (ok, out, err) = kubectl(
        ctx,
        &owner,
        &format!("create clusterrolebinding admins --clusterrole=cluster-admin --user={reader}"),
    )
    .await?;
    ensure!(
        !ok && err.contains("cluster-admin"),
        "binding cluster-admin: {out} {err}"
    );
    let (ok, out, err) = kubectl(
        ctx,
        &owner,
        "create clusterrole viewer-plus --verb=get --resource=configmaps",
    )
    .await?;
    ensure!(ok, "{out} {err}");
    let (ok, out, err) = kubectl(
        ctx,
        &owner,
        "label clusterrole viewer-plus rbac.authorization.k8s.io/aggregate-to-view=true",
    )
    .await?;
    ensure!(
        !ok && err.contains("\"view\""),
        "joining the cluster's view: {out} {err}"
    );

    step("deleting the binding withdraws it");
    let (ok, out, err) = kubectl(ctx, &owner, "delete clusterrolebinding readers").await?;
    ensure!(ok, "{out} {err}");
    can_i(ctx, &as_reader, "list pods -n web", "no").await?;

    step("deleting a tenant removes its ClusterRoles and bindings");
    let (ok, out, err) = kubectl(
        ctx,
        &other,
        "create clusterrolebinding self --clusterrole=pod-reader --user=someone",
    )
    .await?;
    ensure!(ok, "{out} {err}");
    Api::<Tenant>::all(globex.admin.clone())
        .delete(&globex.tenant, &DeleteParams::default())
        .await?;
    let label =
        ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", globex.tenant));
    let (roles, bindings) = (
        Api::<ClusterRole>::all(globex.admin.clone()),
        Api::<ClusterRoleBinding>::all(globex.admin.clone()),
    );
    eventually(
        "globex's ClusterRoles and bindings go",
        Duration::from_secs(120),
        || {
            let (roles, bindings, label) = (roles.clone(), bindings.clone(), label.clone());
            async move {
                Ok(roles.list(&label).await?.items.is_empty()
                    && bindings.list(&label).await?.items.is_empty())
            }
        },
    )
    .await?;
    Ok(())
}
