//! `kubectl auth can-i`, `auth can-i --list` and `auth whoami` through a
//! tenant's route (docs/tenant-routes.md): answered in the tenant's terms,
//! yes and no, for an owner and for a user granted one namespace.

use std::sync::Arc;

use anyhow::ensure;
use arktos_e2e::harness::step;
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{
    TenantOwner, can_i, grant, issue_user, kubectl_words as kubectl, local_parts,
    tenant_kubeconfig_for,
};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &["kubectl_auth_can_i_and_whoami_answer_in_the_tenants_terms"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![trial(ctx, NAMES[0], |ctx| async move {
        self_reviews(&ctx).await
    })]
}

async fn self_reviews(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(ctx, "can", json!({})).await?;
    for namespace in ["web", "db"] {
        owner.namespace(namespace).await?;
    }
    let as_owner = tenant_kubeconfig_for(ctx, &owner.tenant, &owner.user, "web")?;

    step("the owner: yes in its namespaces and for its namespaces, no for the fleet's");
    for (question, want) in [
        ("create pods -n web", "yes"),
        ("delete configmaps -n db", "yes"),
        ("list pods --all-namespaces", "yes"),
        ("create namespaces", "yes"),
        ("list storageclasses.storage.k8s.io", "yes"),
        ("delete storageclasses.storage.k8s.io", "no"),
        ("get nodes", "no"),
        // A tenant's own CRDs and ClusterRoles.
        (
            "create customresourcedefinitions.apiextensions.k8s.io",
            "yes",
        ),
        ("create clusterroles.rbac.authorization.k8s.io", "yes"),
    ] {
        can_i(ctx, &as_owner, question, want).await?;
    }
    let (ok, out, err) = kubectl(
        ctx,
        &as_owner,
        "auth whoami -o jsonpath={.status.userInfo.username}",
    )
    .await?;
    ensure!(ok && out.trim() == owner.user, "auth whoami: {out} {err}");
    let (ok, out, err) = kubectl(ctx, &as_owner, "auth can-i --list -n web").await?;
    ensure!(
        ok && out.contains("configmaps") && !out.contains(&format!("{}--", owner.tenant)),
        "auth can-i --list: {out} {err}"
    );

    step("a reader of web alone: yes to reading web, no to the rest");
    let reader = format!("{}-reader", owner.tenant);
    let (pki, _, _) = local_parts(ctx)?;
    issue_user(&pki, &reader)?;
    grant(&owner.admin, &owner.tenant, &reader, &["tenants"], &["use"]).await?;
    let (ok, out, err) = kubectl(
        ctx,
        &as_owner,
        &format!("create rolebinding readers --clusterrole=view --user={reader} -n web"),
    )
    .await?;
    ensure!(ok, "binding the reader: {out} {err}");
    let as_reader = tenant_kubeconfig_for(ctx, &owner.tenant, &reader, "web")?;
    for (question, want) in [
        ("list pods", "yes"),
        ("get configmaps -n web", "yes"),
        ("create pods -n web", "no"),
        ("list pods -n db", "no"),
        ("list pods --all-namespaces", "no"),
        ("create namespaces", "no"),
        ("create clusterroles.rbac.authorization.k8s.io", "no"),
        // Another tenant's storage name only names a namespace of this
        // tenant's own prefix.
        ("list pods -n globex--web", "no"),
    ] {
        can_i(ctx, &as_reader, question, want).await?;
    }
    let (ok, out, err) = kubectl(ctx, &as_reader, "auth can-i --list").await?;
    ensure!(
        ok && out.contains("pods") && out.contains("[get list watch]"),
        "reader's auth can-i --list: {out} {err}"
    );
    let (ok, out, err) = kubectl(
        ctx,
        &as_reader,
        "auth whoami -o jsonpath={.status.userInfo.username}",
    )
    .await?;
    ensure!(ok && out.trim() == reader, "reader's whoami: {out} {err}");
    Ok(())
}
