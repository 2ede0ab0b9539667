//! Tenant routes (docs/tenant-routes.md) through the tenant gateway, with
//! kube-rs clients whose server URL is `https://<gateway>/tenants/<t>`.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use arktos_crds::tenant::Tenant;
use arktos_e2e::cluster::kubeconfig;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::unique;
use crate::{Ctx, trial};
use arktos_e2e::harness::step;

pub const NAMES: &[&str] = &["tenants_get_isolated_apis_on_the_gateway"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(
            ctx,
            "helm_installs_upgrades_and_uninstalls_a_chart_in_a_tenant",
            |ctx| async move { helm_in_a_tenant(&ctx).await },
        ),
        trial(ctx, NAMES[0], tenants_get_isolated_apis_on_the_gateway),
        trial(
            ctx,
            "tenant_pod_lists_from_the_copy_are_current_and_page",
            |ctx| async move { lists_from_the_copy(&ctx).await },
        ),
    ]
}

/// A response header as text ("" when absent).
fn header(response: &http::Response<kube::client::Body>, name: http::header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `arktos_apiserver_list_cache_<name>_total` read from the gateway's
/// `/metrics` (as the cluster admin).
async fn list_cache_counter(ctx: &Ctx, name: &str) -> anyhow::Result<u64> {
    let (pki, _, gateway) = crate::support::local_parts(ctx)?;
    let root = gateway.trim_end_matches('/').trim_end_matches("/tenants");
    let admin = kubeconfig::client(root, &pki, "admin").await?;
    let text = admin
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let metric = format!("arktos_apiserver_list_cache_{name}_total ");
    text.lines()
        .find_map(|line| line.strip_prefix(&metric))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {metric} in the gateway's metrics"))
}

/// Pod lists through the gateway come from arktos-apiserver's copy
/// (`list_cache`), and are still exactly what kube-apiserver holds: a write
/// is in the very next list, a deleted pod is gone from it, pages cover
/// every pod once, selectors narrow as before.
async fn lists_from_the_copy(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let owner = crate::support::TenantOwner::create(ctx, "lists", json!({})).await?;
    for namespace in ["web", "db"] {
        owner.namespace(namespace).await?;
    }
    let mut expected = std::collections::BTreeSet::new();
    for i in 0..24 {
        let namespace = if i % 2 == 0 { "web" } else { "db" };
        let name = format!("p{i}");
        let mut pod = crate::support::restricted_pod(&name);
        // Held back from scheduling: only the API matters here.
        pod.spec.as_mut().context("spec")?.scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "arktos.io/e2e".into(),
            }]);
        Api::<Pod>::namespaced(owner.client.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await?;
        expected.insert((namespace.to_string(), name));
    }
    let hits_before = list_cache_counter(ctx, "hits").await?;
    let web: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
    let all: Api<Pod> = Api::all(owner.client.clone());
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<(String, String)> {
        list.items
            .into_iter()
            .map(|p| {
                (
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default(),
                )
            })
            .collect()
    };
    // Read your writes: each label change is in the next list, in one
    // namespace and across the tenant.
    for round in 0..10 {
        let name = format!("p{}", 2 * round);
        web.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"round": round.to_string()}}})),
        )
        .await?;
        let selector = format!("round={round}");
        let here = names(web.list(&ListParams::default().labels(&selector)).await?);
        let everywhere = names(all.list(&ListParams::default().labels(&selector)).await?);
        let want = vec![("web".to_string(), name.clone())];
        ensure!(
            here == want && everywhere == want,
            "round {round}: web lists {here:?}, the tenant lists {everywhere:?}"
        );
    }
    // A deleted pod is gone from the next list.
    Api::<Pod>::namespaced(owner.client.clone(), "db")
        .delete("p1", &Default::default())
        .await?;
    expected.remove(&("db".to_string(), "p1".to_string()));
    let db = names(
        Api::<Pod>::namespaced(owner.client.clone(), "db")
            .list(&ListParams::default())
            .await?,
    );
    ensure!(
        !db.iter().any(|(_, name)| name == "p1") && db.len() == 11,
        "db after deleting p1: {db:?}"
    );
    // Pages of 5 across the tenant: every pod once, tenant names only.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(5);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = all.list(&params).await?;
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        paged.extend(names(page));
        if token.is_none() {
            break;
        }
        ensure!(
            paged.len() <= expected.len(),
            "pages go on past every pod (a continue token that does not advance): {paged:?}"
        );
    }
    let unique: std::collections::BTreeSet<_> = paged.iter().cloned().collect();
    ensure!(
        unique == expected && paged.len() == expected.len(),
        "paged list: {paged:?}"
    );
    let hits = list_cache_counter(ctx, "hits").await? - hits_before;
    let misses = list_cache_counter(ctx, "misses").await?;
    eprintln!(
        "  pod lists answered from the copy: {hits} (misses so far in the cluster: {misses})"
    );
    // Most, not all: a list the watch is more than a moment behind on
    // goes the ordinary way, by design.
    ensure!(
        hits >= 13,
        "only {hits} of the test's 26 lists came from the copy"
    );
    Ok(())
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
    arktos_e2e::harness::created_tenant(name);
    crate::support::wait_ready(admin, name).await?;
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
    let (pki, admin_url, gateway) = crate::support::local_parts(&ctx)?;
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
        crate::support::issue_user(&pki, user)?;
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
    step("each tenant creates its namespace web");
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
    step("alice works in her namespace");
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
        .filter(|ns| !arktos_crds::naming::DEFAULT_NAMESPACES.contains(&ns.as_str()))
        .collect();
    ensure!(names == ["web"], "alice sees namespaces {names:?}");
    let everywhere = Api::<ConfigMap>::all(alice_client.clone())
        .list(&ListParams::default())
        .await?;
    ensure!(
        everywhere.items.iter().all(|m| {
            let ns = m.metadata.namespace.as_deref().unwrap_or_default();
            ns == "web" || arktos_crds::naming::DEFAULT_NAMESPACES.contains(&ns)
        }),
        "alice's -A list shows other namespaces"
    );
    ensure!(
        everywhere
            .items
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some("cfg"))
    );

    // Isolation: each attempt fails closed.
    step("isolation attempts");
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
    // Writes, deletes and watches by path into another tenant's namespace.
    step("writes, deletes and watches into another tenant's namespace");
    let foreign_maps: Api<ConfigMap> = Api::namespaced(alice_client.clone(), &other);
    let mut replacement = map.clone();
    replacement.metadata.name = Some("cfg".into());
    refused(
        "update by path",
        code(
            foreign_maps
                .replace("cfg", &PostParams::default(), &replacement)
                .await,
        )?,
        &[403, 404],
    )?;
    refused(
        "delete by path",
        code(foreign_maps.delete("cfg", &Default::default()).await)?,
        &[403, 404],
    )?;
    refused(
        "watch by path",
        code(
            foreign_maps
                .watch(&Default::default(), "0")
                .await
                .map(|_| ()),
        )?,
        &[403, 404],
    )?;
    refused(
        "patch by path",
        code(
            foreign_maps
                .patch(
                    "cfg",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"x": "y"}})),
                )
                .await,
        )?,
        &[403, 404],
    )?;
    step("the cluster's own namespaces");
    // The cluster's own namespaces are out of reach too: `kube-system` in a
    // tenant is the tenant's own (every tenant has one).
    let system_maps = Api::<ConfigMap>::namespaced(alice_client.clone(), "kube-system")
        .list(&ListParams::default())
        .await?;
    let cluster_map = system_maps
        .items
        .iter()
        .any(|m| m.metadata.name.as_deref() == Some("extension-apiserver-authentication"));
    refused(
        "the cluster's kube-system by path",
        if cluster_map { 200 } else { 404 },
        &[404],
    )?;
    let system_ns = Api::<Namespace>::all(alice_client.clone())
        .get("kube-system")
        .await?;
    let own = system_ns
        .metadata
        .labels
        .unwrap_or_default()
        .get(arktos_crds::naming::TENANT_LABEL)
        == Some(&acme);
    refused(
        "the cluster's kube-system namespace object",
        if own { 404 } else { 200 },
        &[404],
    )?;
    let by_name = Api::<Namespace>::all(alice_client.clone())
        .list(&ListParams::default().fields(&format!("metadata.name={other}")))
        .await?;
    refused(
        "namespace field selector",
        if by_name.items.is_empty() { 404 } else { 200 },
        &[404],
    )?;
    // A binding naming another tenant's service account binds one of her own.
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "cross"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": other}],
    }))?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(alice_client.clone(), "web")
        .create(&PostParams::default(), &binding)
        .await?;
    let stored = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(
        admin.clone(),
        &format!("{acme}--web"),
    )
    .get("cross")
    .await?;
    let subject_ns = stored.subjects.unwrap_or_default()[0]
        .namespace
        .clone()
        .unwrap_or_default();
    refused(
        "RBAC subject in another tenant",
        if subject_ns == format!("{acme}--{other}") {
            404
        } else {
            200
        },
        &[404],
    )?;
    // OpenAPI reaches kubectl in the form it asks for: `/openapi/v2` only
    // as protobuf (kubectl falls back to it when a v3 document fails).
    let request = http::Request::get("/openapi/v2")
        .header(
            http::header::ACCEPT,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(kube::client::Body::empty())?;
    let response = alice_client.send(request).await?;
    let content_type = header(&response, http::header::CONTENT_TYPE);
    let document = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    // Field 1 of openapi_v2.Document, `swagger: "2.0"`, comes first.
    ensure!(
        content_type.contains("protobuf") && document.starts_with(b"\x0a\x032.0"),
        "/openapi/v2 as protobuf through the gateway: {content_type}, {} bytes starting {:?}",
        document.len(),
        &document[..document.len().min(16)]
    );
    // An OpenAPI v3 document asked for by an outdated hash redirects to
    // the current one inside the tenant's route, and is cacheable there.
    let request =
        http::Request::get("/openapi/v3/api/v1?hash=0").body(kube::client::Body::empty())?;
    let response = alice_client.send(request).await?;
    let location = header(&response, http::header::LOCATION);
    ensure!(
        response.status() == http::StatusCode::MOVED_PERMANENTLY
            && location.starts_with(&format!("/tenants/{acme}/openapi/v3/api/v1?hash=")),
        "outdated OpenAPI hash: {} to {location:?}",
        response.status()
    );
    let current = location.trim_start_matches(&format!("/tenants/{acme}"));
    let request = http::Request::get(current).body(kube::client::Body::empty())?;
    let response = alice_client.send(request).await?;
    let cache_control = header(&response, http::header::CACHE_CONTROL);
    ensure!(
        response.status().is_success() && cache_control.contains("immutable"),
        "current OpenAPI hash: {}, Cache-Control {cache_control:?}",
        response.status()
    );
    // Cluster-scoped kinds a tenant must not see or touch.
    let raw = |path: String| {
        let client = alice_client.clone();
        async move {
            let request = http::Request::get(&path).body(Vec::new())?;
            anyhow::Ok(code(client.request::<serde_json::Value>(request).await)?)
        }
    };
    for path in [
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "/apis/apiregistration.k8s.io/v1/apiservices",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/tenancy.arktos.io/v1alpha1/tenants",
        "/apis/storage.tenancy.arktos.io/v1alpha1/tenantrecords",
        "/api/v1/persistentvolumes",
        "/api/v1/namespaces/web/../../nodes",
        "/api/v1/namespaces/web%2F..%2F..%2Fnodes/pods",
    ] {
        refused(path, raw(path.to_string()).await?, &[404])?;
    }
    let class: k8s_openapi::api::storage::v1::StorageClass =
        serde_json::from_value(json!({"metadata": {"name": "tenant-made"}, "provisioner": "x"}))?;
    refused(
        "writing a shared read-only object",
        code(
            Api::<k8s_openapi::api::storage::v1::StorageClass>::all(alice_client.clone())
                .create(&PostParams::default(), &class)
                .await,
        )?,
        &[403],
    )?;
    // The tenant label is Arktos': not removable by patch, not changeable on namespaces.
    let unlabel = json!([{"op": "remove", "path": "/metadata/labels/tenancy.arktos.io~1tenant"}]);
    refused(
        "removing the tenant label",
        code(
            alice_maps
                .patch(
                    "cfg",
                    &PatchParams::default(),
                    &Patch::<()>::Json(serde_json::from_value(unlabel)?),
                )
                .await,
        )?,
        &[400],
    )?;
    refused(
        "relabelling a namespace",
        code(
            Api::<Namespace>::all(alice_client.clone())
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"labels": {"tenancy.arktos.io/tenant": globex}}}),
                    ),
                )
                .await,
        )?,
        &[403, 405],
    )?;
    // Bob naming alice's storage namespace reaches only his own prefix.
    refused(
        "the other tenant's storage name",
        code(
            Api::<Namespace>::all(bob_client.clone())
                .delete(&format!("{acme}--web"), &Default::default())
                .await,
        )?,
        &[404],
    )?;
    // The aggregated path checks `use` the same way.
    let via_kube = kubeconfig::client(&admin_url, &pki, &alice).await?;
    let aggregated = format!(
        "/apis/tenancy.arktos.io/v1alpha1/tenants/{globex}/api/v1/namespaces/web/configmaps"
    );
    refused(
        "another tenant on the aggregated path",
        code(
            via_kube
                .request::<serde_json::Value>(http::Request::get(&aggregated).body(Vec::new())?)
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
    ensure!(attempts >= 30, "only {attempts} isolation attempts");
    eprintln!("tenant routes: {attempts} isolation attempts refused");
    Ok(())
}

/// Helm, unmodified, with a tenant kubeconfig: install (waiting for the
/// Deployment), upgrade with a new value, list, uninstall. Helm keeps its
/// release records as Secrets in the tenant's namespace.
async fn helm_in_a_tenant(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use crate::support::{TenantOwner, tenant_kubeconfig};
    let helm = {
        let local = ctx
            .cluster
            .local()
            .ok_or_else(|| anyhow::anyhow!("this test needs the local cluster (for helm)"))?;
        arktos_e2e::upstream::NodeTools::ensure(&local.spec().home)?.command("helm")
    };
    let owner = TenantOwner::create(ctx, "helm", json!({})).await?;
    owner.namespace("apps").await?;
    let kubeconfig = tenant_kubeconfig(ctx, &owner, "apps")?;
    let chart = std::env::temp_dir().join(format!("{}-chart", owner.tenant));
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )?;
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n")?;
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )?;
    std::fs::write(
        chart.join("templates/deployment.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      # Simulated nodes report the pod ready; `--wait` needs that.
      nodeSelector: {type: kwok}
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
      containers:
        - name: app
          image: registry.invalid/app:1
          securityContext:
            allowPrivilegeEscalation: false
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
"#,
    )?;
    let run = |args: Vec<String>| {
        let helm = helm.clone();
        let kubeconfig = kubeconfig.clone();
        async move {
            step(&format!("helm {}", args.join(" ")));
            let out = tokio::process::Command::new(helm)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--namespace", "apps"])
                .args(&args)
                .env(
                    "HELM_CACHE_HOME",
                    std::env::temp_dir().join("arktos-e2e-helm/cache"),
                )
                .env(
                    "HELM_CONFIG_HOME",
                    std::env::temp_dir().join("arktos-e2e-helm/config"),
                )
                .env(
                    "HELM_DATA_HOME",
                    std::env::temp_dir().join("arktos-e2e-helm/data"),
                )
                .output()
                .await?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            ensure!(
                out.status.success(),
                "helm {}: {stdout}{stderr}",
                args.join(" ")
            );
            anyhow::Ok(stdout)
        }
    };
    let chart_dir = chart.display().to_string();
    run(vec![
        "install".into(),
        "demo".into(),
        chart_dir.clone(),
        "--wait".into(),
        "--timeout".into(),
        "90s".into(),
    ])
    .await?;
    let configs: Api<ConfigMap> = Api::namespaced(owner.client.clone(), "apps");
    let greeting = || async {
        anyhow::Ok(
            configs
                .get("demo-greeting")
                .await?
                .data
                .unwrap_or_default()
                .remove("greeting"),
        )
    };
    ensure!(greeting().await?.as_deref() == Some("hello"));
    run(vec![
        "upgrade".into(),
        "demo".into(),
        chart_dir,
        "--set".into(),
        "greeting=bonjour".into(),
        "--wait".into(),
    ])
    .await?;
    ensure!(greeting().await?.as_deref() == Some("bonjour"));
    let list = run(vec!["list".into(), "-o".into(), "json".into()]).await?;
    let releases: serde_json::Value = serde_json::from_str(&list)?;
    ensure!(
        releases[0]["name"] == "demo"
            && releases[0]["revision"] == "2"
            && releases[0]["status"] == "deployed",
        "helm list: {list}"
    );
    run(vec!["uninstall".into(), "demo".into(), "--wait".into()]).await?;
    ensure!(
        configs.get_opt("demo-greeting").await?.is_none(),
        "uninstall left the ConfigMap"
    );
    let _ = std::fs::remove_dir_all(&chart);
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}
