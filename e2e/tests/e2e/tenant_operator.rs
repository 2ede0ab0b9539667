//! The tenant controller (docs/operators.md): provisioning within seconds, drift repair,
//! status, and deletion of everything a tenant owns.

use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arktos_crds::Tenant;
use arktos_e2e::cluster::kubeconfig;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{eventually, unique};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &["tenant_controller_provisions_repairs_and_deletes"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![trial(
        ctx,
        NAMES[0],
        tenant_controller_provisions_repairs_and_deletes,
    )]
}

async fn tenant_controller_provisions_repairs_and_deletes(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let (pki, admin_url, gateway) = crate::support::local_parts(&ctx)?;
    let admin = kubeconfig::client(&admin_url, &pki, "admin").await?;
    let tenant = unique("op");
    let owner = format!("{tenant}-owner");
    crate::support::issue_user(&pki, &owner)?;
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let object: Tenant = serde_json::from_value(json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant", "metadata": {"name": tenant},
        "spec": {"owners": [{"kind": "User", "name": owner}], "podSecurity": "baseline",
                 "quota": {"hard": {"count/namespaces": "5"}}},
    }))?;
    tenants.create(&PostParams::default(), &object).await?;

    // The owner's `use` grant appears without anyone granting it by hand.
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let role = format!("arktos:tenant:{tenant}:owner");
    let took = eventually("the owner's grant", Duration::from_secs(30), || async {
        Ok(roles.get_opt(&role).await?.is_some())
    })
    .await?;
    eprintln!(
        "tenant controller: owner grant after {} ms",
        took.as_millis()
    );
    let owner_client = kubeconfig::client_with(
        &format!("{gateway}{tenant}"),
        &pki.ca_cert(),
        &pki.cert(&owner),
        &pki.key(&owner),
        &[],
    )
    .await?;
    let created = Instant::now();
    for name in ["web", "db"] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        eventually(
            "creating a namespace as the owner",
            Duration::from_secs(30),
            || {
                let (client, ns) = (owner_client.clone(), ns.clone());
                async move {
                    Ok(Api::<Namespace>::all(client)
                        .create(&PostParams::default(), &ns)
                        .await
                        .is_ok())
                }
            },
        )
        .await?;
    }

    // Labels, owner bindings, policies for each namespace (the tenant's
    // default namespaces too, which it has from the start); status. How
    // fast is printed; the bound only ends the wait.
    let storage = |ns: &str| format!("{tenant}--{ns}");
    for ns in ["web", "db"]
        .into_iter()
        .chain(arktos_crds::naming::DEFAULT_NAMESPACES)
    {
        let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &storage(ns));
        let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &storage(ns));
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let name = storage(ns);
        eventually("namespace provisioning", Duration::from_secs(30), || {
            let (policies, bindings, namespaces, name) = (
                policies.clone(),
                bindings.clone(),
                namespaces.clone(),
                name.clone(),
            );
            async move {
                let labels = namespaces
                    .get(&name)
                    .await?
                    .metadata
                    .labels
                    .unwrap_or_default();
                Ok(labels
                    .get("pod-security.kubernetes.io/enforce")
                    .map(String::as_str)
                    == Some("baseline")
                    && policies.get_opt("arktos-tenant-isolation").await?.is_some()
                    && bindings.get_opt("arktos-tenant-owners").await?.is_some())
            }
        })
        .await?;
    }
    eprintln!(
        "tenant controller: 5 namespaces (3 default) provisioned {} ms after the owner's creates",
        created.elapsed().as_millis()
    );
    eventually("status with usage", Duration::from_secs(30), || {
        let tenants = tenants.clone();
        let tenant = tenant.clone();
        async move {
            let status = tenants.get(&tenant).await?.status.unwrap_or_default();
            // The three default namespaces are free: count/namespaces says 2.
            Ok(status.namespaces == Some(5)
                && status.used.get("count/namespaces").map(|q| q.0.as_str()) == Some("2")
                && status.phase == Some(arktos_crds::tenant::TenantPhase::Active))
        }
    })
    .await?;

    // The default namespaces cannot be deleted through the route, and do
    // not count against count/namespaces (5): three more of the owner's
    // own fit, a sixth does not.
    let owned: Api<Namespace> = Api::all(owner_client.clone());
    for default in arktos_crds::naming::DEFAULT_NAMESPACES {
        match owned.delete(default, &DeleteParams::default()).await {
            Err(kube::Error::Api(s))
                if s.code == 403 && s.message.contains("may not be deleted") => {}
            other => anyhow::bail!("deleting {default} through the route: {other:?}"),
        }
    }
    for name in ["a", "b", "c"] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        owned.create(&PostParams::default(), &ns).await?;
    }
    let sixth: Namespace = serde_json::from_value(json!({"metadata": {"name": "d"}}))?;
    match owned.create(&PostParams::default(), &sixth).await {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("count/namespaces") => {}
        other => anyhow::bail!("a sixth own namespace past count/namespaces=5: {other:?}"),
    }

    // Drift: delete a policy, tamper with a Pod Security label: both come back.
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &storage("web"));
    policies
        .delete("arktos-tenant-isolation", &DeleteParams::default())
        .await?;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .patch(&storage("web"), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})))
        .await?;
    let took = eventually("drift repair", Duration::from_secs(10), || {
        let (policies, namespaces, name) = (policies.clone(), namespaces.clone(), storage("web"));
        async move {
            let labels = namespaces
                .get(&name)
                .await?
                .metadata
                .labels
                .unwrap_or_default();
            Ok(policies.get_opt("arktos-tenant-isolation").await?.is_some()
                && labels
                    .get("pod-security.kubernetes.io/enforce")
                    .map(String::as_str)
                    == Some("baseline"))
        }
    })
    .await?;
    eprintln!(
        "tenant controller: drift repaired after {} ms",
        took.as_millis()
    );

    // Deletion removes the namespaces, the grant, then the tenant.
    tenants.delete(&tenant, &DeleteParams::default()).await?;
    // What was left at the last look, for the message should it time out.
    let last = std::sync::Mutex::new(String::new());
    let last_ref = &last;
    let took = eventually("tenant deletion", Duration::from_secs(90), || {
        let (tenants, namespaces, roles, tenant, role) = (
            tenants.clone(),
            namespaces.clone(),
            roles.clone(),
            tenant.clone(),
            role.clone(),
        );
        async move {
            let left = namespaces
                .list(
                    &kube::api::ListParams::default()
                        .labels(&format!("tenancy.arktos.io/tenant={tenant}")),
                )
                .await?
                .items
                .len();
            let tenant_left = tenants
                .get_opt(&tenant)
                .await?
                .map(|t| (t.metadata.finalizers, t.status.map(|s| s.conditions)));
            let role_left = roles.get_opt(&role).await?.is_some();
            *last_ref.lock().expect("last") = format!(
                "{left} namespaces left, tenant {tenant_left:?}, owner role left: {role_left}"
            );
            Ok(left == 0 && tenant_left.is_none() && !role_left)
        }
    })
    .await
    .with_context(|| last.lock().expect("last").clone())?;
    eprintln!(
        "tenant controller: tenant with 8 namespaces (3 default) deleted after {} ms",
        took.as_millis()
    );
    Ok(())
}
