//! One tenant reconcile against the in-memory API server (`fake_api`):
//! what it writes, in which order, and what it reports.

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::*;
use crate::tenant::{Context, Writes};
use arktos_crds::fake_api::FakeApi;

const TENANT: &str = "/apis/tenancy.arktos.io/v1alpha1/tenants/acme";
const NAMESPACES: &str = "/api/v1/namespaces";

fn context(api: &FakeApi) -> Arc<Context> {
    let client = api.client();
    Arc::new(Context {
        client: client.clone(),
        root: client.clone(),
        partition: crate::tenant::Partition {
            name: "local".into(),
            is_root: true,
        },
        log: Arc::default(),
        ledgers: Arc::new(crate::quota::ledger::Ledgers::new(client.clone())),
        departures: Arc::default(),
        recorder: Recorder::new(client, Reporter::from("arktos-operators")),
        metrics: crate::metrics::Metrics::new(),
        written: Arc::new(Writes::unwatched()),
        tenant_api: None,
    })
}

/// Tenant `acme`, already carrying the finalizer (so the reconcile goes
/// straight to apply or cleanup), stored in the fake too.
fn tenant(api: &FakeApi, extra: Value) -> Arc<Tenant> {
    let mut object = json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "acme", "uid": "u1", "generation": 1,
            "finalizers": [FINALIZER], "resourceVersion": "1"},
        "spec": {"owners": [{"kind": "User", "name": "alice"}]}
    });
    json_patch::merge(&mut object, &extra);
    api.put(TENANT, object.clone());
    Arc::new(serde_json::from_value(object).expect("a Tenant"))
}

fn namespace(api: &FakeApi, name: &str, deleting: bool) {
    let mut object = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {TENANT_LABEL: "acme"}}});
    if deleting {
        object["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z".into();
    }
    api.put(&format!("{NAMESPACES}/{name}"), object);
}

fn position(writes: &[String], wanted: &str) -> usize {
    writes
        .iter()
        .position(|w| w == wanted)
        .unwrap_or_else(|| panic!("no {wanted} in {writes:#?}"))
}

#[tokio::test]
async fn a_new_tenant_gets_its_grant_default_namespaces_bindings_and_policies() {
    let api = FakeApi::default();
    let tenant = tenant(&api, json!({}));
    reconcile(tenant, context(&api)).await.expect("applied");

    let writes = api.writes();
    let role = format!(
        "PATCH /apis/rbac.authorization.k8s.io/v1/clusterroles/{}",
        desired::owner_role_name("acme")
    );
    let binding = role.replace("clusterroles", "clusterrolebindings");
    // The grant first: owners can use the tenant before anything else.
    assert_eq!(&writes[..2], [role, binding]);
    for default in ["default", "kube-system", "kube-public"] {
        let storage = format!("acme--{default}");
        let created = position(&writes, &format!("PATCH {NAMESPACES}/{storage}"));
        let bound = position(
            &writes,
            &format!(
                "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/{storage}/rolebindings/{}",
                desired::OWNERS_BINDING
            ),
        );
        let isolated = position(
            &writes,
            &format!(
                "PATCH /apis/networking.k8s.io/v1/namespaces/{storage}/networkpolicies/{}",
                desired::ISOLATION_POLICY
            ),
        );
        assert!(created < bound && bound < isolated, "{writes:#?}");
        let stored = api.get(&format!("{NAMESPACES}/{storage}")).expect("stored");
        assert_eq!(stored["metadata"]["labels"][TENANT_LABEL], "acme");
    }
    // Status last (events aside), once everything is in place.
    let last = writes.iter().rev().find(|w| !w.contains("/events"));
    assert_eq!(last, Some(&format!("PATCH {TENANT}/status")));
    let status = &api.get(TENANT).expect("the tenant")["status"];
    assert_eq!(status["phase"], "Active");
    assert_eq!(status["namespaces"], 3);
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["used"]["count/namespaces"], "0", "defaults are free");
}

#[tokio::test]
async fn namespaces_of_the_tenant_are_relabelled_and_counted() {
    let api = FakeApi::default();
    let tenant = tenant(&api, json!({"spec": {"networkIsolation": false}}));
    namespace(&api, "acme--web", false);
    namespace(&api, "acme--old", true);
    // Someone's namespace that merely looks like the tenant's is not.
    api.put(
        &format!("{NAMESPACES}/globex--web"),
        json!({"metadata": {"name": "globex--web", "labels": {TENANT_LABEL: "acme"}}}),
    );
    reconcile(tenant, context(&api)).await.expect("applied");

    let writes = api.writes();
    assert!(
        writes
            .iter()
            .all(|w| !w.contains("acme--old/") && !w.contains("globex--web")),
        "{writes:#?}"
    );
    assert!(
        writes.iter().all(|w| !w.contains("networkpolicies")),
        "no isolation asked: {writes:#?}"
    );
    let web = api.get(&format!("{NAMESPACES}/acme--web")).expect("web");
    assert_eq!(
        web["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let status = &api.get(TENANT).expect("the tenant")["status"];
    assert_eq!(status["namespaces"], 4, "web and the three defaults");
    assert_eq!(status["used"]["count/namespaces"], "1");
}

#[tokio::test]
async fn cleanup_deletes_namespaces_and_reports_progress_until_none_are_left() {
    let api = FakeApi::default();
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-12-07T00:00:00Z"}});
    let tenant = tenant(&api, deleting.clone());
    namespace(&api, "acme--web", false);
    namespace(&api, "acme--gone", true);
    let error = reconcile(tenant, context(&api))
        .await
        .expect_err("namespaces remain");
    assert!(error.in_progress(), "{error}");
    let writes = api.writes();
    assert!(writes.contains(&format!("DELETE {NAMESPACES}/acme--web")));
    assert!(
        !writes.contains(&format!("DELETE {NAMESPACES}/acme--gone")),
        "one being deleted is left to go: {writes:#?}"
    );
    let status = &api.get(TENANT).expect("the tenant")["status"];
    assert_eq!(status["phase"], "Terminating");
    assert_eq!(
        status["conditions"][0]["message"],
        "deleting the tenant: 2 namespaces left"
    );
    // The grant outlives the namespaces: owners watch the deletion.
    assert!(
        writes.iter().all(|w| !w.contains("clusterrole")),
        "{writes:#?}"
    );
}

#[tokio::test]
async fn cleanup_with_nothing_left_removes_the_grant_and_releases_the_tenant() {
    let api = FakeApi::default();
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-12-07T00:00:00Z"}});
    let tenant = tenant(&api, deleting);
    let roles = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    let labelled = |tenant: &str| json!({"labels": {"tenancy.arktos.io/tenant": tenant}});
    for (name, tenant) in [
        (desired::owner_role_name("acme"), "acme"),
        ("acme--reader".to_string(), "acme"),
        ("globex--reader".to_string(), "globex"),
    ] {
        let mut metadata = labelled(tenant);
        metadata["name"] = name.clone().into();
        api.put(&format!("{roles}/{name}"), json!({"metadata": metadata}));
    }
    reconcile(tenant, context(&api)).await.expect("released");
    let writes = api.writes();
    for collection in [
        roles,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    ] {
        assert!(
            writes.contains(&format!("DELETE {collection}")),
            "{writes:#?}"
        );
    }
    assert!(api.get(&format!("{roles}/acme--reader")).is_none());
    assert!(
        api.get(&format!("{roles}/{}", desired::owner_role_name("acme")))
            .is_none()
    );
    assert!(api.get(&format!("{roles}/globex--reader")).is_some());
    let finalizers = &api.get(TENANT).expect("the tenant")["metadata"]["finalizers"];
    assert_eq!(finalizers, &json!([]), "the finalizer is removed");
}

#[tokio::test]
async fn a_tenant_of_another_partition_is_left_to_that_partitions_instances() {
    let api = FakeApi::default();
    let elsewhere = tenant(&api, json!({"spec": {"partition": "p2"}}));
    let requests_before = api.requests().len();
    reconcile(elsewhere, context(&api))
        .await
        .expect("nothing to do");
    assert_eq!(
        api.requests().len(),
        requests_before,
        "{:?}",
        api.requests()
    );
    let here = tenant(&api, json!({"spec": {"partition": "local"}}));
    reconcile(here, context(&api)).await.expect("provisioned");
    assert!(api.requests().len() > requests_before);
}

#[tokio::test]
async fn the_system_tenant_is_never_touched() {
    let api = FakeApi::default();
    let system: Tenant = serde_json::from_value(json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": SYSTEM_TENANT}, "spec": {}
    }))
    .expect("a Tenant");
    reconcile(Arc::new(system), context(&api))
        .await
        .expect("nothing to do");
    assert_eq!(api.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_quota_on_crds_reports_the_tenants_own() {
    let api = FakeApi::default();
    let quota = json!({"spec": {"quota": {"hard": {"count/customresourcedefinitions": "5"}}}});
    let tenant = tenant(&api, quota);
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    for (name, owner) in [
        ("widgets.example.com.acme.tenants.arktos.io", "acme"),
        ("gadgets.example.com.acme.tenants.arktos.io", "acme"),
        ("widgets.example.com.globex.tenants.arktos.io", "globex"),
    ] {
        api.put(
            &format!("{crds}/{name}"),
            json!({"metadata": {"name": name, "labels": {TENANT_LABEL: owner}}}),
        );
    }
    reconcile(tenant, context(&api)).await.expect("applied");
    let status = &api.get(TENANT).expect("the tenant")["status"];
    assert_eq!(status["used"]["count/customresourcedefinitions"], "2");
}
