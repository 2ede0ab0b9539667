//! Two tenants on the gateway (docs/tenant-routes.md): each gets a whole,
//! isolated API under plain names, and every way of reaching the other
//! tenant, the cluster, or another identity fails closed. Each test starts
//! from the same fixture (`TwoTenants`), so one broken rule does not hide
//! the others.

use std::sync::Arc;

use anyhow::{bail, ensure};
use arktos_crds::tenant::Tenant;
use arktos_e2e::cluster::kubeconfig;
use arktos_e2e::cluster::pki::Pki;
use arktos_e2e::harness::step;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::unique;
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &[
    "tenants_each_get_their_own_namespaces_under_plain_names",
    "a_tenant_cannot_reach_another_tenants_objects_by_any_path",
    "identities_cannot_be_borrowed_or_forged_on_a_tenant_route",
    "the_clusters_own_objects_stay_out_of_a_tenants_reach",
    "openapi_reaches_kubectl_through_a_tenant_route",
    "a_tenants_namespace_count_quota_holds_on_its_route",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(
            ctx,
            NAMES[0],
            |ctx| async move { own_namespaces(&ctx).await },
        ),
        trial(ctx, NAMES[1], |ctx| async move {
            other_tenants_objects(&ctx).await
        }),
        trial(ctx, NAMES[2], |ctx| async move {
            borrowed_identities(&ctx).await
        }),
        trial(
            ctx,
            NAMES[3],
            |ctx| async move { cluster_objects(&ctx).await },
        ),
        trial(ctx, NAMES[4], |ctx| async move { openapi(&ctx).await }),
        trial(
            ctx,
            NAMES[5],
            |ctx| async move { namespace_quota(&ctx).await },
        ),
    ]
}

/// Tenants acme (owner alice) and globex (owner bob), each with namespace
/// `web` holding ConfigMap `cfg`, and mallory, a user in no tenant.
struct TwoTenants {
    pki: Pki,
    admin_url: String,
    gateway: String,
    admin: kube::Client,
    acme: String,
    globex: String,
    alice: String,
    mallory: String,
    alice_client: kube::Client,
    bob_client: kube::Client,
}

impl TwoTenants {
    async fn new(ctx: &Ctx) -> anyhow::Result<Self> {
        let (pki, admin_url, gateway) = crate::support::local_parts(ctx)?;
        let gateway = gateway.trim_end_matches('/').to_string();
        let admin = kubeconfig::client(&admin_url, &pki, "admin").await?;
        let (acme, globex) = (unique("acme"), unique("globex"));
        let (alice, bob, mallory) = (
            format!("{acme}-alice"),
            format!("{globex}-bob"),
            unique("mallory"),
        );
        step("two tenants and their owners");
        mk_tenant(&admin, &acme, &alice).await?;
        mk_tenant(&admin, &globex, &bob).await?;
        for user in [&alice, &bob, &mallory] {
            crate::support::issue_user(&pki, user)?;
        }
        let alice_client = client_on(&pki, &gateway, &alice, &acme, &[]).await?;
        let bob_client = client_on(&pki, &gateway, &bob, &globex, &[]).await?;
        step("each tenant creates namespace web and ConfigMap cfg in it");
        for client in [&alice_client, &bob_client] {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "web"}}))?;
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await?;
            Api::<ConfigMap>::namespaced(client.clone(), "web")
                .create(&PostParams::default(), &config_map())
                .await?;
        }
        Ok(Self {
            pki,
            admin_url,
            gateway,
            admin,
            acme,
            globex,
            alice,
            mallory,
            alice_client,
            bob_client,
        })
    }

    /// `user`'s client on tenant `tenant`'s route, sending `headers` too.
    async fn as_user(
        &self,
        user: &str,
        tenant: &str,
        headers: &[(&'static str, &'static str)],
    ) -> anyhow::Result<kube::Client> {
        client_on(&self.pki, &self.gateway, user, tenant, headers).await
    }

    /// globex's `web` as the cluster stores it.
    fn globex_storage(&self) -> String {
        format!("{}--web", self.globex)
    }
}

/// `user`'s client on tenant `tenant`'s route of `gateway`.
async fn client_on(
    pki: &Pki,
    gateway: &str,
    user: &str,
    tenant: &str,
    headers: &[(&'static str, &'static str)],
) -> anyhow::Result<kube::Client> {
    Ok(kubeconfig::client_with(
        &format!("{gateway}/{tenant}"),
        &pki.ca_cert(),
        &pki.cert(user),
        &pki.key(user),
        headers,
    )
    .await?)
}

fn config_map() -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}}))
        .expect("a ConfigMap")
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

/// The HTTP code of a refusal.
fn code<T: std::fmt::Debug>(result: kube::Result<T>) -> anyhow::Result<u16> {
    match result {
        Err(kube::Error::Api(status)) => Ok(status.code),
        Ok(value) => bail!("expected a refusal, got {value:?}"),
        Err(other) => bail!("expected an API error, got {other}"),
    }
}

/// 404 when a list that must come back empty does, else 200.
fn empty_or_200<T: Clone>(list: &kube::core::ObjectList<T>) -> u16 {
    if list.items.is_empty() { 404 } else { 200 }
}

/// Attempts that must be refused, counted.
#[derive(Default)]
struct Refusals(usize);

impl Refusals {
    fn check(&mut self, what: &str, code: u16, allowed: &[u16]) -> anyhow::Result<()> {
        self.0 += 1;
        ensure!(allowed.contains(&code), "{what}: answered {code}");
        Ok(())
    }

    fn at_least(&self, test: &str, wanted: usize) -> anyhow::Result<()> {
        ensure!(self.0 >= wanted, "{test}: only {} attempts", self.0);
        eprintln!("{test}: {} attempts refused", self.0);
        Ok(())
    }
}

/// Each tenant has its own `web` (stored apart), and lists see only its own.
async fn own_namespaces(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let t = TwoTenants::new(ctx).await?;
    let storage: Vec<String> = Api::<Namespace>::all(t.admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .filter(|n| n.ends_with("--web"))
        .collect();
    ensure!(
        storage.contains(&format!("{}--web", t.acme)) && storage.contains(&t.globex_storage()),
        "{storage:?}"
    );
    step("alice works in her namespace with plain names");
    let created = Api::<ConfigMap>::namespaced(t.alice_client.clone(), "web")
        .get("cfg")
        .await?;
    ensure!(
        created.metadata.namespace.as_deref() == Some("web"),
        "{:?}",
        created.metadata.namespace
    );
    let names: Vec<String> = Api::<Namespace>::all(t.alice_client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .filter(|ns| !arktos_crds::naming::DEFAULT_NAMESPACES.contains(&ns.as_str()))
        .collect();
    ensure!(names == ["web"], "alice sees namespaces {names:?}");
    let everywhere = Api::<ConfigMap>::all(t.alice_client.clone())
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
    Ok(())
}

/// Another tenant's route, its storage names by path, selector, body,
/// RBAC subject or the aggregated path: each fails closed, and bob's
/// object is untouched.
async fn other_tenants_objects(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let t = TwoTenants::new(ctx).await?;
    let mut refused = Refusals::default();
    step("alice on globex's route");
    let alice_in_globex = t.as_user(&t.alice, &t.globex, &[]).await?;
    refused.check(
        "use of another tenant",
        code(
            Api::<ConfigMap>::namespaced(alice_in_globex.clone(), "web")
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    refused.check(
        "another tenant's namespaces",
        code(
            Api::<Namespace>::all(alice_in_globex)
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    step("globex's storage names on alice's route");
    // Storage names of the other tenant only ever land in her own prefix.
    let other = t.globex_storage();
    let alice_maps: Api<ConfigMap> = Api::namespaced(t.alice_client.clone(), "web");
    refused.check(
        "path to a storage namespace",
        code(
            Api::<ConfigMap>::namespaced(t.alice_client.clone(), &other)
                .get("cfg")
                .await,
        )?,
        &[403, 404],
    )?;
    refused.check(
        "namespace object by storage name",
        code(
            Api::<Namespace>::all(t.alice_client.clone())
                .get(&other)
                .await,
        )?,
        &[404],
    )?;
    let all_maps = Api::<ConfigMap>::all(t.alice_client.clone());
    let by_field = all_maps
        .list(&ListParams::default().fields(&format!("metadata.namespace={other}")))
        .await?;
    refused.check(
        "field selector on a foreign namespace",
        empty_or_200(&by_field),
        &[404],
    )?;
    let by_label = all_maps
        .list(&ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", t.globex)))
        .await?;
    refused.check(
        "label selector on another tenant",
        empty_or_200(&by_label),
        &[404],
    )?;
    let by_name = Api::<Namespace>::all(t.alice_client.clone())
        .list(&ListParams::default().fields(&format!("metadata.name={other}")))
        .await?;
    refused.check("namespace field selector", empty_or_200(&by_name), &[404])?;
    let smuggled: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": other}}))?;
    refused.check(
        "body namespace of another tenant",
        code(alice_maps.create(&PostParams::default(), &smuggled).await)?,
        &[400, 404, 422],
    )?;
    step("writes, deletes and watches into another tenant's namespace");
    let foreign_maps: Api<ConfigMap> = Api::namespaced(t.alice_client.clone(), &other);
    refused.check(
        "update by path",
        code(
            foreign_maps
                .replace("cfg", &PostParams::default(), &config_map())
                .await,
        )?,
        &[403, 404],
    )?;
    refused.check(
        "delete by path",
        code(foreign_maps.delete("cfg", &Default::default()).await)?,
        &[403, 404],
    )?;
    refused.check(
        "watch by path",
        code(
            foreign_maps
                .watch(&Default::default(), "0")
                .await
                .map(|_| ()),
        )?,
        &[403, 404],
    )?;
    refused.check(
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
    step("an RBAC subject in another tenant");
    // A binding naming another tenant's service account binds one of her own.
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "cross"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": other}],
    }))?;
    Api::<RoleBinding>::namespaced(t.alice_client.clone(), "web")
        .create(&PostParams::default(), &binding)
        .await?;
    let stored = Api::<RoleBinding>::namespaced(t.admin.clone(), &format!("{}--web", t.acme))
        .get("cross")
        .await?;
    let subject_ns = stored.subjects.unwrap_or_default()[0]
        .namespace
        .clone()
        .unwrap_or_default();
    let own = subject_ns == format!("{}--{other}", t.acme);
    refused.check(
        "RBAC subject in another tenant",
        if own { 404 } else { 200 },
        &[404],
    )?;
    step("bob names alice's storage namespace; alice uses the aggregated path");
    refused.check(
        "the other tenant's storage name",
        code(
            Api::<Namespace>::all(t.bob_client.clone())
                .delete(&format!("{}--web", t.acme), &Default::default())
                .await,
        )?,
        &[404],
    )?;
    let via_kube = kubeconfig::client(&t.admin_url, &t.pki, &t.alice).await?;
    let aggregated = format!(
        "/apis/tenancy.arktos.io/v1alpha1/tenants/{}/api/v1/namespaces/web/configmaps",
        t.globex
    );
    refused.check(
        "another tenant on the aggregated path",
        code(
            via_kube
                .request::<serde_json::Value>(http::Request::get(&aggregated).body(Vec::new())?)
                .await,
        )?,
        &[403],
    )?;
    let bobs = Api::<ConfigMap>::namespaced(t.bob_client.clone(), "web")
        .get("cfg")
        .await?;
    ensure!(
        bobs.data == config_map().data,
        "bob's cfg changed: {bobs:?}"
    );
    refused.at_least("another tenant's objects", 15)
}

/// Impersonation, forged front-proxy headers, a user in no tenant, and
/// the `system` tenant: each refused.
async fn borrowed_identities(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let t = TwoTenants::new(ctx).await?;
    let mut refused = Refusals::default();
    let list_maps = |client: kube::Client| async move {
        Api::<ConfigMap>::namespaced(client, "web")
            .list(&ListParams::default())
            .await
    };
    let system = t.as_user(&t.alice, "system", &[]).await?;
    refused.check(
        "tenant system",
        code(
            Api::<ConfigMap>::namespaced(system, "default")
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    let impersonating = t
        .as_user(&t.alice, &t.acme, &[("Impersonate-User", "system:admin")])
        .await?;
    refused.check(
        "impersonation headers",
        code(list_maps(impersonating).await)?,
        &[403],
    )?;
    let forged = t
        .as_user(
            &t.mallory,
            &t.acme,
            &[
                ("X-Remote-User", t.alice.clone().leak()),
                ("X-Remote-Group", "system:masters"),
            ],
        )
        .await?;
    refused.check(
        "forged identity headers",
        code(list_maps(forged).await)?,
        &[403],
    )?;
    let outsider = t.as_user(&t.mallory, &t.acme, &[]).await?;
    refused.check(
        "a user in no tenant",
        code(
            Api::<Namespace>::all(outsider)
                .list(&ListParams::default())
                .await,
        )?,
        &[403],
    )?;
    refused.at_least("borrowed identities", 4)
}

/// Nodes, the cluster's RBAC and CRDs, APIServices, webhooks, Tenants,
/// volumes, path tricks, shared read-only objects, the cluster's
/// kube-system and the tenant label: out of reach.
async fn cluster_objects(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let t = TwoTenants::new(ctx).await?;
    let alice = &t.alice_client;
    let mut refused = Refusals::default();
    refused.check(
        "nodes",
        code(
            Api::<Node>::all(alice.clone())
                .list(&ListParams::default())
                .await,
        )?,
        &[404],
    )?;
    step("cluster RBAC and CRDs: the tenant's own, never the cluster's");
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "escalate"}, "rules": []}))?;
    Api::<ClusterRole>::all(alice.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let roles = Api::<ClusterRole>::all(alice.clone())
        .list(&ListParams::default())
        .await?;
    let names: Vec<_> = roles
        .items
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    ensure!(names == ["escalate"], "alice's ClusterRoles: {names:?}");
    let cluster_has = Api::<ClusterRole>::all(t.admin.clone())
        .get_opt("escalate")
        .await?;
    ensure!(
        cluster_has.is_none(),
        "a tenant's ClusterRole is stored under its prefix"
    );
    let crds = http::Request::get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        .body(Vec::new())?;
    let crds = alice.request::<serde_json::Value>(crds).await?;
    ensure!(
        crds["items"].as_array().is_some_and(Vec::is_empty),
        "the cluster's CRDs are not the tenant's: {crds}"
    );
    step("cluster-scoped kinds and path tricks");
    for path in [
        "/apis/apiregistration.k8s.io/v1/apiservices",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        "/apis/tenancy.arktos.io/v1alpha1/tenants",
        "/apis/storage.tenancy.arktos.io/v1alpha1/tenantrecords",
        "/api/v1/persistentvolumes",
        "/api/v1/namespaces/web/../../nodes",
        "/api/v1/namespaces/web%2F..%2F..%2Fnodes/pods",
    ] {
        let request = http::Request::get(path).body(Vec::new())?;
        let answer = code(alice.request::<serde_json::Value>(request).await)?;
        refused.check(path, answer, &[404])?;
    }
    let class: StorageClass =
        serde_json::from_value(json!({"metadata": {"name": "tenant-made"}, "provisioner": "x"}))?;
    refused.check(
        "writing a shared read-only object",
        code(
            Api::<StorageClass>::all(alice.clone())
                .create(&PostParams::default(), &class)
                .await,
        )?,
        &[403],
    )?;
    step("the cluster's own kube-system");
    // `kube-system` in a tenant is the tenant's own (every tenant has one).
    let system_maps = Api::<ConfigMap>::namespaced(alice.clone(), "kube-system")
        .list(&ListParams::default())
        .await?;
    let cluster_map = system_maps
        .items
        .iter()
        .any(|m| m.metadata.name.as_deref() == Some("extension-apiserver-authentication"));
    refused.check(
        "the cluster's kube-system by path",
        if cluster_map { 200 } else { 404 },
        &[404],
    )?;
    let system_ns = Api::<Namespace>::all(alice.clone())
        .get("kube-system")
        .await?;
    let own = system_ns
        .metadata
        .labels
        .unwrap_or_default()
        .get(arktos_crds::naming::TENANT_LABEL)
        == Some(&t.acme);
    refused.check(
        "the cluster's kube-system namespace object",
        if own { 404 } else { 200 },
        &[404],
    )?;
    step("the tenant label");
    // Arktos' own: not removable by patch, not changeable on namespaces.
    let unlabel = json!([{"op": "remove", "path": "/metadata/labels/tenancy.arktos.io~1tenant"}]);
    refused.check(
        "removing the tenant label",
        code(
            Api::<ConfigMap>::namespaced(alice.clone(), "web")
                .patch(
                    "cfg",
                    &PatchParams::default(),
                    &Patch::<()>::Json(serde_json::from_value(unlabel)?),
                )
                .await,
        )?,
        &[400],
    )?;
    let relabel = json!({"metadata": {"labels": {"tenancy.arktos.io/tenant": t.globex}}});
    refused.check(
        "relabelling a namespace",
        code(
            Api::<Namespace>::all(alice.clone())
                .patch("web", &PatchParams::default(), &Patch::Merge(relabel))
                .await,
        )?,
        &[403, 405],
    )?;
    refused.at_least("the cluster's objects", 13)
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

/// OpenAPI reaches kubectl in the forms it asks for: `/openapi/v2` as
/// protobuf (kubectl falls back to it when a v3 document fails), and v3
/// documents by hash, redirected inside the tenant's route.
async fn openapi(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let t = TwoTenants::new(ctx).await?;
    let alice = &t.alice_client;
    step("/openapi/v2 as protobuf");
    let request = http::Request::get("/openapi/v2")
        .header(
            http::header::ACCEPT,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(kube::client::Body::empty())?;
    let response = alice.send(request).await?;
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
    step("an outdated OpenAPI v3 hash");
    let request =
        http::Request::get("/openapi/v3/api/v1?hash=0").body(kube::client::Body::empty())?;
    let response = alice.send(request).await?;
    let location = header(&response, http::header::LOCATION);
    let route = format!("/tenants/{}", t.acme);
    ensure!(
        response.status() == http::StatusCode::MOVED_PERMANENTLY
            && location.starts_with(&format!("{route}/openapi/v3/api/v1?hash=")),
        "outdated OpenAPI hash: {} to {location:?}",
        response.status()
    );
    let current = location.trim_start_matches(&route);
    let request = http::Request::get(current).body(kube::client::Body::empty())?;
    let response = alice.send(request).await?;
    let cache_control = header(&response, http::header::CACHE_CONTROL);
    ensure!(
        response.status().is_success() && cache_control.contains("immutable"),
        "current OpenAPI hash: {}, Cache-Control {cache_control:?}",
        response.status()
    );
    Ok(())
}

/// The tenants' quota allows two namespaces: `web` and one more.
async fn namespace_quota(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let t = TwoTenants::new(ctx).await?;
    let namespaces = Api::<Namespace>::all(t.alice_client.clone());
    let extra: Namespace = serde_json::from_value(json!({"metadata": {"name": "two"}}))?;
    namespaces.create(&PostParams::default(), &extra).await?;
    let third: Namespace = serde_json::from_value(json!({"metadata": {"name": "three"}}))?;
    let answer = code(namespaces.create(&PostParams::default(), &third).await)?;
    ensure!(answer == 403, "a third namespace: answered {answer}");
    Ok(())
}
