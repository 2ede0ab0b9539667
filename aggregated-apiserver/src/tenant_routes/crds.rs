//! A tenant's own CustomResourceDefinitions (docs/tenant-routes.md, "CRDs
//! of a tenant"). Stored by arktos-apiserver with the group mapped into the
//! tenant's domain (`widgets.example.com` of `acme` is
//! `widgets.example.com.acme.tenants.arktos.io`), so kube-apiserver serves
//! them unmodified and no two tenants collide. Owners manage them
//! (`tenants/customresourcedefinitions`), within `count/customresourcedefinitions`;
//! conversion webhooks are refused; the owners get every right on the
//! tenant's own groups in each of its namespaces.

use std::sync::Arc;

use arktos_crds::naming::TENANT_LABEL;
use arktos_crds::status;
use arktos_crds::tenant::{CRD_COUNT_KEY, Tenant, desired};
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Value, json};
use warp::reply::Response;

use super::backend::{Outgoing, Rewrite};
use super::cluster_objects;
use super::mapping::View;
use super::path::ResourcePath;
use super::plan::join;
use super::{TenantRoutes, with_query};
use crate::authn::UserInfo;
use crate::authz::Attributes;
use crate::request::ApiRequest;
use crate::respond;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
/// How many CRDs a tenant may define when its quota says nothing.
pub const DEFAULT_LIMIT: usize = 10;

fn subject(name: &str) -> status::Subject<'_> {
    status::Subject {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        name,
    }
}

fn invalid(name: &str, field: &str, why: String) -> Status {
    status::invalid(
        &subject(name),
        &[status::FieldError::new(
            field,
            status::FieldErrorType::Invalid,
            why,
        )],
    )
}

/// `widgets.example.com` as stored.
pub fn storage_name(view: &View, name: &str) -> Result<String, Status> {
    let (plural, group) = name.split_once('.').ok_or_else(|| {
        invalid(
            name,
            "metadata.name",
            "must be spec.names.plural.spec.group".into(),
        )
    })?;
    let group = view
        .tenant()
        .storage_group(group)
        .map_err(|e| invalid(name, "spec.group", e.to_string()))?;
    Ok(format!("{plural}.{group}"))
}

/// A CRD (or a merge, strategic merge or apply patch of one) in storage
/// terms; conversion webhooks refused.
pub fn to_storage(view: &View, crd: &mut Value) -> Result<(), Status> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    refuse_conversion_webhook(&name, crd)?;
    if !name.is_empty() {
        crd["metadata"]["name"] = storage_name(view, &name)?.into();
    }
    if let Some(group) = crd["spec"]["group"].as_str() {
        let stored = view
            .tenant()
            .storage_group(group)
            .map_err(|e| invalid(&name, "spec.group", e.to_string()))?;
        crd["spec"]["group"] = stored.into();
    }
    if crd.is_object() {
        if !crd["metadata"]["labels"].is_object() {
            crd["metadata"]["labels"] = json!({});
        }
        crd["metadata"]["labels"][TENANT_LABEL] = view.tenant().as_str().into();
    }
    Ok(())
}

/// One stored CRD in the tenant's terms; false when not the tenant's.
fn object_to_tenant(view: &View, crd: &mut Value) -> bool {
    let labelled = crd["metadata"]["labels"][TENANT_LABEL].as_str() == Some(view.tenant().as_str());
    let group = crd["spec"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(own) = view.tenant().tenant_group(&group).map(str::to_string) else {
        return false;
    };
    if !labelled {
        return false;
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    crd["metadata"]["name"] = view.text(name).into();
    crd["spec"]["group"] = own.into();
    for condition in crd
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(message) = condition["message"].as_str() {
            condition["message"] = view.text(message).into();
        }
    }
    true
}

pub fn to_tenant(view: &View, value: &mut Value) -> bool {
    cluster_objects::answer(view, value, &object_to_tenant)
}

/// What a write must not leave behind, on the object it would store.
fn check_stored(view: &View, stored: &Value) -> Result<(), Status> {
    let mut shown = stored.clone();
    let name = view.text(stored["metadata"]["name"].as_str().unwrap_or_default());
    if !object_to_tenant(view, &mut shown) {
        return Err(invalid(
            &name,
            "metadata.labels",
            format!("the label {TENANT_LABEL} and the group are set by Arktos"),
        ));
    }
    // A patch can add the webhook without naming it in the request.
    refuse_conversion_webhook(&name, stored)
}

fn refuse_conversion_webhook(name: &str, crd: &Value) -> Result<(), Status> {
    if crd["spec"]["conversion"]["strategy"] == "Webhook" {
        return Err(invalid(
            name,
            "spec.conversion.strategy",
            "conversion webhooks are not available to a tenant's CRDs: the webhook would be called by the cluster's control plane with its trust".into(),
        ));
    }
    Ok(())
}

impl TenantRoutes {
    pub(super) async fn tenant_crds(
        &self,
        user: &UserInfo,
        tenant: &Tenant,
        view: Arc<View>,
        r: &ResourcePath,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let watch = r.watch || request.is_watch();
        let (name, subresource) = (r.name.as_deref(), r.subresource.as_deref());
        let verb = crate::verb::of(&request.method, name.is_some(), watch);
        let tenant_name = view.tenant().as_str();
        let asked = Attributes::on_tenant(verb, "customresourcedefinitions", tenant_name);
        self.authz.authorize(user, &asked).await?;
        match (&request.method, name, subresource) {
            (&Method::GET, _, None | Some("status")) => {
                self.read_crds(view, name, subresource, watch, request)
                    .await
            }
            (&Method::DELETE, Some(name), None) => {
                self.delete_crd(tenant, &view, name, request).await
            }
            (&Method::POST, None, None) | (&Method::PUT | &Method::PATCH, Some(_), None) => {
                self.write_crd(tenant, &view, name, request).await
            }
            (method, _, _) => Err(status::method_not_allowed(
                method.as_str(),
                "a tenant's CustomResourceDefinitions (by name, one at a time; status is kube-apiserver's)",
            )),
        }
    }

    async fn read_crds(
        &self,
        view: Arc<View>,
        name: Option<&str>,
        subresource: Option<&str>,
        watch: bool,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let one = match name {
            Some(name) => Some(join(&[
                &storage_name(&view, name)?,
                subresource.unwrap_or_default(),
            ])),
            None => None,
        };
        let rewrite: Rewrite = {
            let view = view.clone();
            Arc::new(move |value: &mut Value| to_tenant(&view, value))
        };
        let storage = |name: &str| storage_name(&view, name);
        let read = cluster_objects::Read {
            collection: CRDS,
            one,
            storage_name: &storage,
            watch,
        };
        self.read_own(&view, read, request, rewrite).await
    }

    async fn delete_crd(
        &self,
        tenant: &Tenant,
        view: &View,
        name: &str,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let stored = storage_name(view, name)?;
        let (code, mut current) = self
            .backend
            .json(Outgoing::get_as_us(
                join(&[CRDS, &stored]),
                "application/json",
            ))
            .await?;
        if !code.is_success() || !object_to_tenant(view, &mut current) {
            return Err(status::not_found(&subject(name)));
        }
        let params = request.params();
        let content_type = request.content_type();
        let uri = with_query(join(&[CRDS, &stored]), &params);
        let outgoing = Outgoing::delete_as_us(uri, &content_type, &request.body);
        let (code, mut answer) = self.backend.json(outgoing).await?;
        if code.is_success() && !params.iter().any(|(k, _)| k == "dryRun") {
            self.catalog.unsettle();
            self.grant_own_groups(tenant, view, None).await?;
        }
        to_tenant(view, &mut answer);
        Ok(respond::json(code, &answer))
    }

    async fn write_crd(
        &self,
        tenant: &Tenant,
        view: &View,
        name: Option<&str>,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let content_type = request.content_type();
        let body = if content_type == "application/json-patch+json" {
            request.body.to_vec()
        } else {
            let mut crd = request.json_body()?;
            to_storage(view, &mut crd)?;
            serde_json::to_vec(&crd).map_err(|e| status::internal(&e.to_string()))?
        };
        let path = match name {
            Some(name) => join(&[CRDS, &storage_name(view, name)?]),
            None => CRDS.to_string(),
        };
        if request.method == Method::POST {
            self.check_crd_quota(tenant, view).await?;
        }
        let mut params = request.params();
        let dry_run = params.iter().any(|(k, _)| k == "dryRun");
        params.retain(|(k, _)| k != "dryRun");
        let mut trial = params.clone();
        trial.push(("dryRun".into(), "All".into()));
        let sent_as = if request.method == Method::PATCH {
            content_type.as_str()
        } else {
            "application/json"
        };
        let uri = with_query(path.clone(), &trial);
        let (code, stored) = self
            .store_crd(request.method.clone(), uri, sent_as, body.clone())
            .await?;
        if !code.is_success() || dry_run {
            let mut answer = stored;
            to_tenant(view, &mut answer);
            return Ok(respond::json(code, &answer));
        }
        check_stored(view, &stored)?;
        let written = if request.method == Method::POST {
            self.store_crd(Method::POST, with_query(path, &params), sent_as, body)
                .await?
        } else {
            let stored_name = stored["metadata"]["name"].as_str().unwrap_or_default();
            let checked =
                serde_json::to_vec(&stored).map_err(|e| status::internal(&e.to_string()))?;
            let uri = with_query(join(&[CRDS, stored_name]), &params);
            self.store_crd(Method::PUT, uri, "application/json", checked)
                .await?
        };
        let (code, mut written) = written;
        if code.is_success() {
            self.catalog.unsettle();
            self.grant_own_groups(tenant, view, Some(&written)).await?;
        }
        to_tenant(view, &mut written);
        Ok(respond::json(code, &written))
    }

    /// Writes (or tries, with `dryRun`) a CRD as arktos-apiserver.
    async fn store_crd(
        &self,
        method: Method,
        uri: String,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Value), Status> {
        self.backend
            .json(Outgoing::write(method, uri, content_type, body, None))
            .await
    }

    /// `count/customresourcedefinitions` of the tenant's quota (or
    /// [`DEFAULT_LIMIT`]).
    async fn check_crd_quota(&self, tenant: &Tenant, view: &View) -> Result<(), Status> {
        let limit = tenant
            .spec
            .quota
            .as_ref()
            .and_then(|q| q.hard.get(CRD_COUNT_KEY))
            .and_then(|q| q.0.parse::<usize>().ok())
            .unwrap_or(DEFAULT_LIMIT);
        let used = self.own_crds(view).await?.len();
        if used >= limit {
            return Err(status::quota_exceeded(
                &subject(""),
                view.tenant().as_str(),
                &[status::QuotaExcess {
                    key: CRD_COUNT_KEY.into(),
                    requested: "1".into(),
                    used: used.to_string(),
                    limited: limit.to_string(),
                }],
            ));
        }
        Ok(())
    }

    /// The tenant's CRDs as stored.
    async fn own_crds(&self, view: &View) -> Result<Vec<Value>, Status> {
        let crds = self
            .labelled(view, CRDS, "CustomResourceDefinitions")
            .await?;
        Ok(crds
            .into_iter()
            .filter(|crd| object_to_tenant(view, &mut crd.clone()))
            .collect())
    }

    /// Gives the tenant's owners every right on the tenant's own groups
    /// (`also`: a CRD just written, which a list may not show yet): the
    /// ClusterRole `custom_resources_role_name`, bound in each of its
    /// namespaces, and for the cluster-scoped resources among them the
    /// ClusterRole `cluster_custom_resources_role_name`, bound cluster-wide
    /// (their groups are the tenant's alone).
    pub(super) async fn grant_own_groups(
        &self,
        tenant: &Tenant,
        view: &View,
        also: Option<&Value>,
    ) -> Result<(), Status> {
        let mut crds = self.own_crds(view).await?;
        if let Some(written) = also {
            crds.retain(|crd| crd["metadata"]["name"] != written["metadata"]["name"]);
            crds.push(written.clone());
        }
        let name = view.tenant().as_str();
        let (namespaced, cluster) = own_group_rules(&crds);
        let role = |role: String, rules: Value| {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": role, "labels": {TENANT_LABEL: name}}, "rules": rules})
        };
        let roles = [
            (desired::custom_resources_role_name(name), namespaced),
            (
                desired::cluster_custom_resources_role_name(name),
                cluster.clone(),
            ),
        ];
        for (role_name, rules) in roles {
            let uri = join(&[RBAC, "clusterroles", &role_name]);
            self.apply_as_us(&uri, &role(role_name.clone(), rules))
                .await?;
        }
        if cluster.as_array().is_some_and(|r| !r.is_empty()) {
            self.bind_own_cluster_resources(tenant, view).await?;
        }
        for namespace in self.storage_namespaces(view).await? {
            self.bind_own_groups(tenant, view, &namespace).await?;
        }
        Ok(())
    }

    /// Binds the owners to `cluster_custom_resources_role_name`, cluster-wide.
    async fn bind_own_cluster_resources(&self, tenant: &Tenant, view: &View) -> Result<(), Status> {
        let tenant_name = view.tenant().as_str();
        let role = desired::cluster_custom_resources_role_name(tenant_name);
        let mut binding = serde_json::to_value(super::owners_binding(tenant, view, ""))
            .map_err(|e| status::internal(&e.to_string()))?;
        binding["kind"] = "ClusterRoleBinding".into();
        binding["metadata"] = json!({"name": role, "labels": {TENANT_LABEL: tenant_name}});
        binding["roleRef"]["name"] = role.clone().into();
        self.apply_as_us(&join(&[RBAC, "clusterrolebindings", &role]), &binding)
            .await
    }

    /// Binds the tenant's owners to `custom_resources_role_name` in `namespace`.
    pub(super) async fn bind_own_groups(
        &self,
        tenant: &Tenant,
        view: &View,
        namespace: &str,
    ) -> Result<(), Status> {
        let binding = super::owners_binding(tenant, view, namespace);
        let mut binding =
            serde_json::to_value(binding).map_err(|e| status::internal(&e.to_string()))?;
        binding["metadata"]["name"] = desired::OWNERS_CUSTOM_RESOURCES_BINDING.into();
        // Ours, not the operators': kept by re-applying it, which their
        // admission policy would refuse on an object labelled as theirs.
        binding["metadata"]["labels"] = json!({TENANT_LABEL: view.tenant().as_str()});
        binding["roleRef"]["name"] =
            desired::custom_resources_role_name(view.tenant().as_str()).into();
        let uri = join(&[
            RBAC,
            "namespaces",
            namespace,
            "rolebindings",
            desired::OWNERS_CUSTOM_RESOURCES_BINDING,
        ]);
        self.apply_as_us(&uri, &binding).await
    }

    async fn apply_as_us(&self, path: &str, object: &Value) -> Result<(), Status> {
        let outgoing = Outgoing::write(
            Method::PATCH,
            format!("{path}?fieldManager=arktos-apiserver&force=true"),
            "application/apply-patch+yaml",
            serde_json::to_vec(object).map_err(|e| status::internal(&e.to_string()))?,
            None,
        );
        let (code, answer) = self.backend.json(outgoing).await?;
        if code.is_success() {
            Ok(())
        } else {
            tracing::warn!(%code, %answer, path, "cannot grant a tenant's owners its own groups");
            Err(status::internal(
                "cannot grant the tenant's owners its own API groups",
            ))
        }
    }
}

/// The owners' rules on the tenant's own CRDs (stored): every right on
/// their groups in the tenant's namespaces, and on each cluster-scoped
/// resource (with its status and scale) cluster-wide.
fn own_group_rules(crds: &[Value]) -> (Value, Value) {
    let mut groups: Vec<&str> = crds
        .iter()
        .filter_map(|crd| crd["spec"]["group"].as_str())
        .collect();
    groups.sort();
    groups.dedup();
    let namespaced = if groups.is_empty() {
        json!([])
    } else {
        json!([{"apiGroups": groups, "resources": ["*"], "verbs": ["*"]}])
    };
    let cluster: Vec<Value> = crds
        .iter()
        .filter(|crd| crd["spec"]["scope"] == "Cluster")
        .map(|crd| {
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
            json!({"apiGroups": [crd["spec"]["group"]],
                "resources": [plural, format!("{plural}/status"), format!("{plural}/scale")],
                "verbs": ["*"]})
        })
        .collect();
    (namespaced, Value::Array(cluster))
}

#[cfg(test)]
mod tests {
    use arktos_crds::naming::TenantName;

    use super::*;

    fn acme() -> View {
        View::new(TenantName::new("acme").unwrap())
    }

    fn widgets() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget"}, "versions": []}})
    }

    #[test]
    fn a_crd_is_stored_in_the_tenants_group_and_read_back() {
        let mut crd = widgets();
        to_storage(&acme(), &mut crd).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "widgets.example.com.acme.tenants.arktos.io"
        );
        assert_eq!(crd["spec"]["group"], "example.com.acme.tenants.arktos.io");
        assert_eq!(crd["metadata"]["labels"][TENANT_LABEL], "acme");
        assert!(check_stored(&acme(), &crd).is_ok());
        assert!(to_tenant(&acme(), &mut crd));
        assert_eq!(crd["metadata"]["name"], "widgets.example.com");
        assert_eq!(crd["spec"]["group"], "example.com");
    }

    #[test]
    fn conversion_webhooks_and_other_tenants_crds_are_refused() {
        let mut crd = widgets();
        crd["spec"]["conversion"] = json!({"strategy": "Webhook"});
        assert_eq!(to_storage(&acme(), &mut crd).unwrap_err().code, Some(422));
        let mut cluster = widgets();
        cluster["spec"]["scope"] = "Cluster".into();
        to_storage(&acme(), &mut cluster).expect("cluster-scoped CRDs are a tenant's too");
        let mut globex = widgets();
        to_storage(&View::new(TenantName::new("globex").unwrap()), &mut globex).unwrap();
        assert!(!to_tenant(&acme(), &mut globex.clone()));
        assert!(check_stored(&acme(), &globex).is_err());
        let mut admins = widgets();
        assert!(!to_tenant(&acme(), &mut admins), "the cluster's own CRDs");
    }

    #[test]
    fn owners_get_their_groups_in_namespaces_and_their_cluster_scoped_resources_only() {
        let crd = |group: &str, plural: &str, scope: &str| json!({"spec": {"group": group, "scope": scope, "names": {"plural": plural}}});
        let (namespaced, cluster) = own_group_rules(&[
            crd(
                "example.com.acme.tenants.arktos.io",
                "widgets",
                "Namespaced",
            ),
            crd("example.com.acme.tenants.arktos.io", "gizmos", "Cluster"),
            crd("other.io.acme.tenants.arktos.io", "things", "Namespaced"),
        ]);
        assert_eq!(
            namespaced[0]["apiGroups"],
            json!([
                "example.com.acme.tenants.arktos.io",
                "other.io.acme.tenants.arktos.io"
            ])
        );
        assert_eq!(cluster.as_array().unwrap().len(), 1);
        assert_eq!(
            cluster[0]["resources"],
            json!(["gizmos", "gizmos/status", "gizmos/scale"])
        );
        assert_eq!(own_group_rules(&[]), (json!([]), json!([])));
    }
}
