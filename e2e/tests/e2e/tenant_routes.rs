//! Issue #4 (in progress): tenant routes through the tenant gateway, with
//! kube-rs clients whose server URL is `https://<gateway>/tenants/<t>`.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use arktos_crds::tenant::Tenant;
use arktos_e2e::cluster::kubeconfig;
use arktos_e2e::cluster::pki::{Leaf, Usage};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{ListParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::unique;
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &["tenants_get_isolated_apis_on_the_gateway"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![trial(
        ctx,
        NAMES[0],
        tenants_get_isolated_apis_on_the_gateway,
    )]
}

/// Creates tenant `name` owned by user `owner`, with the `use` grant the
/// tenant controller will give owners.
async fn mk_tenant(admin: &kube::Client, name: &str, owner: &str) -> anyhow::Result<()> {
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
        "spec": {"owners": [{"kind": "User", "name": owner}], "quota": {"hard": {"count/namespaces": "2"}}},
    }))?;
    tenants.create(&PostParams::default(), &tenant).await?;
    crate::support::grant_use(admin, name, owner).await
}

fn code<T: std::fmt::Debug>(result: kube::Result<T>) -> anyhow::Result<u16> {
    match result {
        Err(kube::Error::Api(status)) => Ok(status.code),
        Ok(value) => bail!("expected a refusal, got {value:?}"),
        Err(other) => bail!("expected an API error, got {other}"),
    }
}

async fn tenants_get_isolated_apis_on_the_gateway(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let (pki, admin_url, gateway) = {
        let local = ctx
            .cluster
            .local()
            .context("this test needs the local cluster")?;
        (
            local.pki().clone(),
            local.apiserver_url(),
            local.gateway_url(""),
        )
    };
    let gateway = gateway.trim_end_matches('/').to_string();
    let admin = kubeconfig::client(&admin_url, &pki, "admin").await?;
    let (acme, globex) = (unique("acme"), unique("globex"));
    let (alice, bob, mallory) = (
        format!("{acme}-alice"),
        format!("{globex}-bob"),
        unique("mallory"),
    );
    mk_tenant(&admin, &acme, &alice).await?;
    mk_tenant(&admin, &globex, &bob).await?;
    for user in [&alice, &bob, &mallory] {
        pki.issue_from_cluster_ca(&Leaf {
            name: user,
            common_name: user,
            organizations: &[],
            dns_names: &[],
            usage: Usage::Client,
        })?;
    }
    let as_user = |user: &str, tenant: &str, headers: Vec<(&'static str, &'static str)>| {
        let (pki, gateway, user, tenant) = (
            pki.clone(),
            gateway.clone(),
            user.to_string(),
            tenant.to_string(),
        );
        async move {
            kubeconfig::client_with(
                &format!("{gateway}/{tenant}"),
                &pki.ca_cert(),
                &pki.cert(&user),
                &pki.key(&user),
                &headers,
            )
            .await
        }
    };
    let alice_client = as_user(&alice, &acme, vec![]).await?;
    let bob_client = as_user(&bob, &globex, vec![]).await?;

    // Each creates its own namespace `web`, without conflict.
    for client in [&alice_client, &bob_client] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "web"}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
    }
    let storage: Vec<String> = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .filter(|n| n.ends_with("--web"))
        .collect();
    ensure!(
        storage.contains(&format!("{acme}--web")) && storage.contains(&format!("{globex}--web")),
        "{storage:?}"
    );

    // Alice works in her namespace with plain names.
    let alice_maps: Api<ConfigMap> = Api::namespaced(alice_client.clone(), "web");
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}}))?;
    let created = alice_maps.create(&PostParams::default(), &map).await?;
    ensure!(
        created.metadata.namespace.as_deref() == Some("web"),
        "{:?}",
        created.metadata.namespace
    );
    let names: Vec<String> = Api::<Namespace>::all(alice_client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    ensure!(names == ["web"], "alice sees namespaces {names:?}");
    let everywhere = Api::<ConfigMap>::all(alice_client.clone())
        .list(&ListParams::default())
        .await?;
    ensure!(
        everywhere
            .items
            .iter()
            .all(|m| m.metadata.namespace.as_deref() == Some("web")),
        "alice's -A list shows other namespaces"
    );
    ensure!(
        everywhere
            .items
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some("cfg"))
    );

    // Isolation: each attempt fails closed.
    let mut attempts = 0;
    let mut refused = |what: &str, code: u16, allowed: &[u16]| -> anyhow::Result<()> {
        attempts += 1;
        ensure!(allowed.contains(&code), "{what}: answered {code}");
        Ok(())
    };
    let bob_maps: Api<ConfigMap> = Api::namespaced(bob_client.clone(), "web");
    bob_maps.create(&PostParams::default(), &map).await?;
    // Alice's own route to globex: not hers.
    let alice_in_globex = as_user(&alice, &globex, vec![]).await?;
    refused(
        "use of another tenant",
        code(
            Api::<ConfigMap>::namespaced(alice_in_globex.clone(), "web")
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    refused(
        "another tenant's namespaces",
        code(
            Api::<Namespace>::all(alice_in_globex)
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    // Storage names of the other tenant only ever land in her own prefix.
    let other = format!("{globex}--web");
    refused(
        "path to a storage namespace",
        code(
            Api::<ConfigMap>::namespaced(alice_client.clone(), &other)
                .get("cfg")
                .await,
        )?,
        &[403, 404],
    )?;
    refused(
        "namespace object by storage name",
        code(
            Api::<Namespace>::all(alice_client.clone())
                .get(&other)
                .await,
        )?,
        &[404],
    )?;
    let by_field = Api::<ConfigMap>::all(alice_client.clone())
        .list(&ListParams::default().fields(&format!("metadata.namespace={other}")))
        .await?;
    refused(
        "field selector on a foreign namespace",
        if by_field.items.is_empty() { 404 } else { 200 },
        &[404],
    )?;
    let by_label = Api::<ConfigMap>::all(alice_client.clone())
        .list(&ListParams::default().labels(&format!("tenancy.arktos.io/tenant={globex}")))
        .await?;
    refused(
        "label selector on another tenant",
        if by_label.items.is_empty() { 404 } else { 200 },
        &[404],
    )?;
    let smuggled: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": other}}))?;
    refused(
        "body namespace of another tenant",
        code(alice_maps.create(&PostParams::default(), &smuggled).await)?,
        &[400, 404, 422],
    )?;
    refused(
        "nodes",
        code(
            Api::<Node>::all(alice_client.clone())
                .list(&ListParams::default())
                .await,
        )?,
        &[404],
    )?;
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "escalate"}, "rules": []}))?;
    refused(
        "cluster RBAC",
        code(
            Api::<ClusterRole>::all(alice_client.clone())
                .create(&PostParams::default(), &role)
                .await,
        )?,
        &[404],
    )?;
    refused(
        "tenant system",
        code(
            Api::<ConfigMap>::namespaced(as_user(&alice, "system", vec![]).await?, "default")
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    let impersonating = as_user(&alice, &acme, vec![("Impersonate-User", "system:admin")]).await?;
    refused(
        "impersonation headers",
        code(
            Api::<ConfigMap>::namespaced(impersonating, "web")
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    let forged = as_user(
        &mallory,
        &acme,
        vec![
            ("X-Remote-User", alice.clone().leak()),
            ("X-Remote-Group", "system:masters"),
        ],
    )
    .await?;
    refused(
        "forged identity headers",
        code(
            Api::<ConfigMap>::namespaced(forged, "web")
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    let outsider = as_user(&mallory, &acme, vec![]).await?;
    refused(
        "a user in no tenant",
        code(
            Api::<Namespace>::all(outsider)
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    // Bob's object is untouched and invisible to alice.
    ensure!(
        bob_maps
            .get("cfg")
            .await?
            .data
            .unwrap_or_default()
            .get("a")
            .map(String::as_str)
            == Some("b")
    );
    // Count quota of namespaces (2): a third is refused.
    let extra: Namespace = serde_json::from_value(json!({"metadata": {"name": "two"}}))?;
    Api::<Namespace>::all(alice_client.clone())
        .create(&PostParams::default(), &extra)
        .await?;
    let third: Namespace = serde_json::from_value(json!({"metadata": {"name": "three"}}))?;
    refused(
        "namespace quota",
        code(
            Api::<Namespace>::all(alice_client.clone())
                .create(&PostParams::default(), &third)
                .await,
        )?,
        &[403],
    )?;
    eprintln!("tenant routes: {attempts} isolation attempts refused");
    Ok(())
}
