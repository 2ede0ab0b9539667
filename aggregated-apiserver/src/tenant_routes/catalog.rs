//! What the cluster serves, as far as tenants are concerned: for each
//! group-version, its resources, whether they are namespaced, and which
//! cluster-scoped ones tenants may read. Read from kube-apiserver's
//! aggregated discovery and refreshed, so CRDs an administrator installs
//! appear in every tenant's API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arktos_crds::naming::split_tenant_group;
use arktos_crds::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;
use tokio::sync::RwLock;

/// Cluster-scoped resources every tenant may read (get, list, watch).
pub const SHARED_READ_ONLY: &[(&str, &str)] = &[
    ("storage.k8s.io", "storageclasses"),
    ("node.k8s.io", "runtimeclasses"),
    ("scheduling.k8s.io", "priorityclasses"),
];

/// Groups tenants never see: ours, and the cluster's own machinery.
pub const HIDDEN_GROUPS: &[&str] = &[
    "tenancy.arktos.io",
    "storage.tenancy.arktos.io",
    "apiregistration.k8s.io",
    "admissionregistration.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "resource.k8s.io",
    "storagemigration.k8s.io",
];

/// Cluster-scoped resources each tenant has its own of (see
/// `cluster_rbac`).
pub const TENANT_SCOPED: &[(&str, &str)] = &[
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
];

/// Groups of which tenants see only what is listed above (self reviews,
/// their own CustomResourceDefinitions), nothing else.
const LISTED_ONLY_GROUPS: &[&str] = &[
    "authorization.k8s.io",
    "authentication.k8s.io",
    "apiextensions.k8s.io",
];

/// The reviews a user asks about themselves: of the authentication and
/// authorization groups, the only resources tenants see (answered by
/// `self_review`; reviews about others would reach past the tenant).
pub const SELF_REVIEWS: &[(&str, &str)] = &[
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
];

/// Namespaced resources and subresources tenants may not use: binding pods
/// to nodes, and proxying into the cluster network.
pub const BLOCKED: &[&str] = &["bindings", "pods/binding", "pods/proxy", "services/proxy"];

/// One resource as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub namespaced: bool,
    pub kind: String,
    pub verbs: Vec<String>,
}

/// Everything a tenant may use, by group-version ("" group for core).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// (group, version) → resource (or "resource/subresource") → details.
    pub versions: BTreeMap<(String, String), BTreeMap<String, Resource>>,
    /// The raw aggregated discovery documents, filtered for tenants.
    pub core: Value,
    pub groups: Value,
    /// The groups of tenants' own CustomResourceDefinitions, by tenant,
    /// named as the tenant names them (kept out of everything above).
    pub tenant_groups: BTreeMap<String, Vec<Value>>,
}

impl Catalog {
    pub fn resource(&self, group: &str, version: &str, resource: &str) -> Option<&Resource> {
        self.versions
            .get(&(group.to_string(), version.to_string()))?
            .get(resource)
    }

    /// `resource` ("pods" or "pods/log") of `group` in whichever version
    /// serves it (a review's question need not name a version).
    pub fn find(&self, group: &str, resource: &str) -> Option<&Resource> {
        self.versions
            .iter()
            .filter(|((g, _), _)| g == group)
            .find_map(|(_, resources)| resources.get(resource))
    }

    pub fn self_review(group: &str, resource: &str) -> bool {
        SELF_REVIEWS.contains(&(group, resource))
    }

    pub fn shared_read_only(group: &str, resource: &str) -> bool {
        SHARED_READ_ONLY.contains(&(group, resource))
    }

    /// Builds the tenant view from kube-apiserver's aggregated discovery of
    /// `/api` and `/apis`.
    pub fn from_discovery(core: &Value, groups: &Value) -> Self {
        let mut catalog = Catalog::default();
        let mut groups = groups.clone();
        if let Some(items) = groups["items"].as_array_mut() {
            items.retain(|group| {
                let name = group["metadata"]["name"].as_str().unwrap_or_default();
                let Some((tenant, own)) = split_tenant_group(name) else {
                    return true;
                };
                let mut group = group.clone();
                group["metadata"]["name"] = own.into();
                catalog
                    .tenant_groups
                    .entry(tenant.to_string())
                    .or_default()
                    .push(group);
                false
            });
        }
        catalog.core = filter_group_list(core, &mut catalog, false);
        catalog.groups = filter_group_list(&groups, &mut catalog, false);
        catalog
    }

    /// The groups tenant `tenant` defines itself, as it names them.
    pub fn own_groups(&self, tenant: &str) -> Vec<String> {
        self.tenant_groups
            .get(tenant)
            .into_iter()
            .flatten()
            .filter_map(|g| g["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// What tenant `tenant` sees: the cluster's groups and its own, its own
    /// winning over a cluster group of the same name (Arktos'
    /// `LocalCRDFirst`); `None` when it defines none (it sees `self`).
    pub fn for_tenant(&self, tenant: &str) -> Option<Catalog> {
        let own = self.tenant_groups.get(tenant)?;
        let names = self.own_groups(tenant);
        let mut view = Catalog {
            versions: self.versions.clone(),
            core: self.core.clone(),
            groups: self.groups.clone(),
            tenant_groups: BTreeMap::from([(tenant.to_string(), own.clone())]),
        };
        view.versions.retain(|(g, _), _| !names.contains(g));
        if let Some(items) = view.groups["items"].as_array_mut() {
            items.retain(|g| !names.iter().any(|n| g["metadata"]["name"] == n.as_str()));
        }
        let list = serde_json::json!({"items": own});
        let own = filter_group_list(&list, &mut view, true);
        if let (Some(items), Some(own)) =
            (view.groups["items"].as_array_mut(), own["items"].as_array())
        {
            items.extend(own.iter().cloned());
        }
        Some(view)
    }
}

/// Keeps, in an `APIGroupDiscoveryList`, what tenants may use, and records
/// it; `own`: the groups are a tenant's own, cluster-scoped resources too.
fn filter_group_list(list: &Value, catalog: &mut Catalog, own: bool) -> Value {
    let mut out = list.clone();
    let mut kept_groups = Vec::new();
    for group in list["items"].as_array().into_iter().flatten() {
        let name = group["metadata"]["name"].as_str().unwrap_or_default();
        if HIDDEN_GROUPS.contains(&name) {
            continue;
        }
        let mut group = group.clone();
        let mut kept_versions = Vec::new();
        for version in group["versions"].as_array().into_iter().flatten() {
            let version_name = version["version"].as_str().unwrap_or_default();
            let entries = catalog
                .versions
                .entry((name.to_string(), version_name.to_string()))
                .or_default();
            let kept: Vec<Value> = version["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|resource| keep_resource(name, resource, entries, own))
                .collect();
            if kept.is_empty() {
                if entries.is_empty() {
                    catalog
                        .versions
                        .remove(&(name.to_string(), version_name.to_string()));
                }
                continue;
            }
            let mut version = version.clone();
            version["resources"] = Value::Array(kept);
            kept_versions.push(version);
        }
        if !kept_versions.is_empty() {
            group["versions"] = Value::Array(kept_versions);
            kept_groups.push(group);
        }
    }
    out["items"] = Value::Array(kept_groups);
    out
}

/// A resource of `group` as tenants see it (and recorded in `entries`
/// with its subresources), or `None` when tenants may not use it.
fn keep_resource(
    group: &str,
    resource: &Value,
    entries: &mut BTreeMap<String, Resource>,
    own: bool,
) -> Option<Value> {
    let plural = resource["resource"].as_str().unwrap_or_default();
    let namespaced = resource["scope"] == "Namespaced";
    let shared = Catalog::shared_read_only(group, plural);
    let is_namespaces = group.is_empty() && plural == "namespaces";
    let listed = Catalog::self_review(group, plural) || TENANT_SCOPED.contains(&(group, plural));
    if !(namespaced || own || shared || is_namespaces || listed)
        || BLOCKED.contains(&plural)
        || (LISTED_ONLY_GROUPS.contains(&group) && !listed)
    {
        return None;
    }
    let mut resource = resource.clone();
    if shared {
        resource["verbs"] = serde_json::json!(["get", "list", "watch"]);
        resource["subresources"] = serde_json::json!([]);
    }
    let kind = resource["responseKind"]["kind"]
        .as_str()
        .unwrap_or_default();
    entries.insert(
        plural.to_string(),
        Resource {
            namespaced,
            kind: kind.to_string(),
            verbs: verbs_of(&resource),
        },
    );
    if let Some(subresources) = resource["subresources"].as_array_mut() {
        let full = |sub: &Value| {
            format!(
                "{plural}/{}",
                sub["subresource"].as_str().unwrap_or_default()
            )
        };
        subresources.retain(|sub| !BLOCKED.contains(&full(sub).as_str()));
        for sub in subresources.iter() {
            entries.insert(
                full(sub),
                Resource {
                    namespaced,
                    kind: String::new(),
                    verbs: verbs_of(sub),
                },
            );
        }
    }
    Some(resource)
}

fn verbs_of(resource: &Value) -> Vec<String> {
    resource["verbs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The catalog, fetched from kube-apiserver and kept fresh, and each
/// tenant's view of it (for tenants that define groups of their own).
pub struct CatalogCache {
    client: kube::Client,
    partition: String,
    cached: RwLock<Option<(Instant, std::sync::Arc<Catalog>)>>,
    views: RwLock<BTreeMap<String, (Instant, std::sync::Arc<Catalog>)>>,
    /// Until then, discovery is asked anew at every turn (a tenant just
    /// defined or removed a CRD, which kube-apiserver's discovery shows a
    /// moment later).
    unsettled_until: std::sync::Mutex<Option<Instant>>,
}

const FRESH_FOR: Duration = Duration::from_secs(30);
/// Discovery is small: an answer slower than this means the partition is
/// in trouble, and its tenants should hear so rather than wait.
const DISCOVERY_WITHIN: Duration = Duration::from_secs(5);
pub const AGGREGATED_ACCEPT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

impl CatalogCache {
    /// The catalog of the partition `partition` that `client` reaches.
    pub fn new(client: kube::Client, partition: &str) -> Self {
        Self {
            client,
            partition: partition.to_string(),
            cached: RwLock::new(None),
            views: RwLock::new(BTreeMap::new()),
            unsettled_until: std::sync::Mutex::new(None),
        }
    }

    /// Discovery is about to change (a tenant's CRD was written): asked
    /// anew for a while.
    pub fn unsettle(&self) {
        let until = Instant::now() + Duration::from_secs(15);
        *self.unsettled_until.lock().expect("unsettled") = Some(until);
    }

    /// What tenant `tenant` sees (see [`Catalog::for_tenant`]).
    pub async fn view(
        &self,
        tenant: &str,
        refresh: bool,
    ) -> Result<std::sync::Arc<Catalog>, Status> {
        let base = self.get(refresh).await?;
        let built = self.cached.read().await.as_ref().map(|(at, _)| *at);
        if let Some((at, view)) = self.views.read().await.get(tenant)
            && Some(*at) == built
        {
            return Ok(view.clone());
        }
        let Some(view) = base.for_tenant(tenant) else {
            return Ok(base);
        };
        let view = std::sync::Arc::new(view);
        if let Some(at) = built {
            let mut views = self.views.write().await;
            views.retain(|_, (seen, _)| *seen == at);
            views.insert(tenant.to_string(), (at, view.clone()));
        }
        Ok(view)
    }

    /// The catalog; `refresh` asks anew unless it is very recent (for a
    /// resource not found, e.g. a CRD installed a moment ago).
    pub async fn get(&self, refresh: bool) -> Result<std::sync::Arc<Catalog>, Status> {
        let unsettled = self
            .unsettled_until
            .lock()
            .expect("unsettled")
            .is_some_and(|until| Instant::now() < until);
        if let Some((at, catalog)) = self.cached.read().await.as_ref() {
            let age = at.elapsed();
            let stale = (refresh && age > Duration::from_secs(2))
                || (unsettled && age > Duration::from_millis(500));
            if age < FRESH_FOR && !stale {
                return Ok(catalog.clone());
            }
        }
        let core = self.fetch("/api").await?;
        let groups = self.fetch("/apis").await?;
        let catalog = std::sync::Arc::new(Catalog::from_discovery(&core, &groups));
        *self.cached.write().await = Some((Instant::now(), catalog.clone()));
        Ok(catalog)
    }

    async fn fetch(&self, path: &str) -> Result<Value, Status> {
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, AGGREGATED_ACCEPT)
            .body(Vec::new())
            .map_err(|e| status::internal(&e.to_string()))?;
        let asked = self.client.request::<Value>(request);
        let answer = tokio::time::timeout(DISCOVERY_WITHIN, asked).await;
        answer
            .map_err(|_| format!("no answer within {} s", DISCOVERY_WITHIN.as_secs()))
            .and_then(|answer| answer.map_err(|e| e.to_string()))
            .map_err(|err| {
                tracing::warn!(partition = %self.partition, error = %err, path, "discovery failed");
                status::service_unavailable(&format!(
                    "partition {:?}: its discovery is not available right now",
                    self.partition
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(name: &str, scope: &str, kind: &str) -> Value {
        json!({"resource": name, "scope": scope, "responseKind": {"kind": kind}, "verbs": ["get", "list", "create", "delete"],
               "subresources": [{"subresource": "status", "verbs": ["get"]}, {"subresource": "binding", "verbs": ["create"]}]})
    }

    #[test]
    fn tenants_see_namespaced_resources_and_shared_read_only_ones() {
        let core = json!({"items": [{"metadata": {"name": ""}, "versions": [{"version": "v1", "resources": [
            resource("pods", "Namespaced", "Pod"),
            resource("nodes", "Cluster", "Node"),
            resource("namespaces", "Cluster", "Namespace"),
            resource("bindings", "Namespaced", "Binding"),
        ]}]}]});
        let groups = json!({"items": [
            {"metadata": {"name": "storage.k8s.io"}, "versions": [{"version": "v1", "resources": [
                resource("storageclasses", "Cluster", "StorageClass"), resource("csinodes", "Cluster", "CSINode")]}]},
            {"metadata": {"name": "apiextensions.k8s.io"}, "versions": [{"version": "v1", "resources": [
                resource("customresourcedefinitions", "Cluster", "CustomResourceDefinition")]}]},
        ]});
        let catalog = Catalog::from_discovery(&core, &groups);
        assert!(catalog.resource("", "v1", "pods").unwrap().namespaced);
        assert!(catalog.resource("", "v1", "pods/status").is_some());
        assert!(catalog.resource("", "v1", "pods/binding").is_none());
        assert!(catalog.resource("", "v1", "nodes").is_none());
        assert!(catalog.resource("", "v1", "bindings").is_none());
        assert!(catalog.resource("", "v1", "namespaces").is_some());
        assert_eq!(
            catalog
                .resource("storage.k8s.io", "v1", "storageclasses")
                .unwrap()
                .verbs,
            ["get", "list", "watch"]
        );
        assert!(
            catalog
                .resource("storage.k8s.io", "v1", "csinodes")
                .is_none()
        );
        assert!(
            catalog
                .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .is_some(),
            "a tenant's own CRDs"
        );
        assert_eq!(catalog.groups["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn of_the_review_groups_tenants_see_only_the_self_reviews() {
        let review = |name: &str, scope: &str| json!({"resource": name, "scope": scope, "verbs": ["create"]});
        let groups = json!({"items": [
            {"metadata": {"name": "authorization.k8s.io"}, "versions": [{"version": "v1", "resources": [
                review("selfsubjectaccessreviews", "Cluster"), review("selfsubjectrulesreviews", "Cluster"),
                review("subjectaccessreviews", "Cluster"), review("localsubjectaccessreviews", "Namespaced")]}]},
            {"metadata": {"name": "authentication.k8s.io"}, "versions": [{"version": "v1", "resources": [
                review("selfsubjectreviews", "Cluster"), review("tokenreviews", "Cluster")]}]},
        ]});
        let catalog = Catalog::from_discovery(&json!({"items": []}), &groups);
        let authorization = &catalog.versions[&("authorization.k8s.io".into(), "v1".into())];
        assert_eq!(
            authorization.keys().collect::<Vec<_>>(),
            ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
        );
        assert!(
            catalog
                .find("authentication.k8s.io", "selfsubjectreviews")
                .is_some()
        );
        assert!(
            catalog
                .find("authentication.k8s.io", "tokenreviews")
                .is_none()
        );
    }

    #[test]
    fn a_tenant_sees_its_own_groups_by_its_names_and_no_one_elses() {
        let widgets = |group: &str| {
            json!({"metadata": {"name": group}, "versions": [{"version": "v1",
            "resources": [resource("widgets", "Namespaced", "Widget"),
                resource("gizmos", "Cluster", "Gizmo")]}]})
        };
        let groups = json!({"items": [
            widgets("example.com"),
            widgets("example.com.acme.tenants.arktos.io"),
            widgets("example.com.globex.tenants.arktos.io"),
            widgets("other.io.globex.tenants.arktos.io"),
        ]});
        let catalog = Catalog::from_discovery(&json!({"items": []}), &groups);
        assert_eq!(catalog.versions.len(), 1, "the cluster's group only");
        assert_eq!(catalog.own_groups("acme"), ["example.com"]);
        assert!(catalog.for_tenant("initech").is_none());
        let acme = catalog.for_tenant("acme").unwrap();
        assert_eq!(
            acme.versions.keys().collect::<Vec<_>>(),
            [&("example.com".to_string(), "v1".to_string())]
        );
        let names: Vec<&str> = acme.groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["example.com"], "its own, in place of the cluster's");
        assert_eq!(acme.own_groups("acme"), ["example.com"]);
        assert_eq!(
            acme.groups["items"][0]["versions"][0]["resources"][0]["resource"],
            "widgets"
        );
        let gizmos = acme.resource("example.com", "v1", "gizmos");
        assert!(
            gizmos.is_some_and(|g| !g.namespaced),
            "its own cluster-scoped resources too"
        );
        assert!(
            catalog.resource("example.com", "v1", "gizmos").is_none(),
            "not the cluster's"
        );
    }
}
