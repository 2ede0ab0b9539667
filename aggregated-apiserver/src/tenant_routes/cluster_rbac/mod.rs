//! A tenant's own ClusterRoles and ClusterRoleBindings (docs/tenant-routes.md,
//! "ClusterRoles and ClusterRoleBindings of a tenant"). Stored under the
//! tenant's prefix by arktos-apiserver after its own checks: the user may
//! use them (`tenants/clusterroles`, `tenants/clusterrolebindings`), could
//! grant the same in each of the tenant's namespaces (asked of
//! kube-apiserver as the user, with dry runs), and nothing of it reaches
//! outside the tenant. A binding is carried out as RoleBindings in each of
//! the tenant's namespaces, made as the user.

pub mod mapping;

use std::sync::Arc;

use arktos_crds::naming::{SHARED_CLUSTER_ROLES, TENANT_LABEL};
use arktos_crds::status;
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Status};
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};
use warp::reply::Response;

use self::mapping::{CARRIED_PREFIX, Kind, storage_name, to_storage, to_tenant};
use super::backend::{Outgoing, Rewrite};
use super::mapping::View;
use super::path::ResourcePath;
use super::plan::join;
use super::{TenantRoutes, map_body, protobuf, with_query};
use crate::authn::UserInfo;
use crate::authz::Attributes;
use crate::request::ApiRequest;
use crate::respond;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

fn subject(kind: Kind, name: &str) -> status::Subject<'_> {
    status::Subject {
        group: "rbac.authorization.k8s.io",
        resource: kind.resource(),
        kind: kind.kind(),
        name,
    }
}

fn is_shared(kind: Kind, name: &str) -> bool {
    kind == Kind::Role && SHARED_CLUSTER_ROLES.contains(&name)
}

impl TenantRoutes {
    pub(super) async fn cluster_rbac(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        kind: Kind,
        r: &ResourcePath,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let watch = r.watch || request.is_watch();
        let verb = crate::verb::of(&request.method, r.name.is_some(), watch);
        let tenant = view.tenant().as_str();
        self.authz
            .authorize(user, &Attributes::on_tenant(verb, kind.resource(), tenant))
            .await?;
        if r.subresource.is_some() {
            return Err(status::path_not_found(&request.path));
        }
        let name = r.name.as_deref();
        match (&request.method, name) {
            (&Method::GET, _) => {
                self.read_cluster_rbac(view, kind, name, watch, request)
                    .await
            }
            (&Method::DELETE, Some(name)) => {
                self.delete_cluster_rbac(view, kind, name, request).await
            }
            (&Method::POST, None) | (&Method::PUT | &Method::PATCH, Some(_)) => {
                self.write_cluster_rbac(user, view, kind, name, request)
                    .await
            }
            (method, _) => Err(status::method_not_allowed(
                method.as_str(),
                &format!("{} of a tenant (by name, one at a time)", kind.resource()),
            )),
        }
    }

    async fn read_cluster_rbac(
        &self,
        view: Arc<View>,
        kind: Kind,
        name: Option<&str>,
        watch: bool,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let one = name.map(|n| storage_name(&view, kind, n)).transpose()?;
        let collection = join(&[RBAC, kind.resource()]);
        // The cluster's shared roles are read as they are.
        let rewrite: Rewrite = if name.is_some_and(|n| is_shared(kind, n)) {
            Arc::new(|_: &mut Value| true)
        } else {
            let view = view.clone();
            Arc::new(move |value: &mut Value| to_tenant(&view, value))
        };
        let storage = |name: &str| storage_name(&view, kind, name);
        let read = super::cluster_objects::Read {
            collection: &collection,
            one,
            storage_name: &storage,
            watch,
        };
        self.read_own(&view, read, request, rewrite).await
    }

    /// The tenant's object `name` as stored, or 404.
    async fn own_cluster_rbac(&self, view: &View, kind: Kind, name: &str) -> Result<Value, Status> {
        let stored = storage_name(view, kind, name)?;
        let outgoing =
            Outgoing::get_as_us(join(&[RBAC, kind.resource(), &stored]), "application/json");
        let (code, mut object) = self.backend.json(outgoing).await?;
        let found = object.clone();
        if code.is_success() && !is_shared(kind, name) && to_tenant(view, &mut object) {
            Ok(found)
        } else {
            Err(status::not_found(&subject(kind, name)))
        }
    }

    async fn delete_cluster_rbac(
        &self,
        view: Arc<View>,
        kind: Kind,
        name: &str,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        if is_shared(kind, name) {
            return Err(status::forbidden(
                &subject(kind, name),
                "the cluster's shared ClusterRoles are read-only for tenants",
            ));
        }
        self.own_cluster_rbac(&view, kind, name).await?;
        let params = request.params();
        let uri = with_query(
            join(&[RBAC, kind.resource(), &storage_name(&view, kind, name)?]),
            &params,
        );
        let content_type = request.content_type();
        let outgoing = Outgoing::delete_as_us(uri, &content_type, &request.body);
        let (code, mut answer) = self.backend.json(outgoing).await?;
        let dry_run = params.iter().any(|(k, _)| k == "dryRun");
        if kind == Kind::Binding && code.is_success() && !dry_run {
            self.withdraw_binding(&view, name).await?;
        }
        to_tenant(&view, &mut answer);
        Ok(respond::json(code, &answer))
    }

    /// Removes the RoleBindings that carried out binding `name`.
    async fn withdraw_binding(&self, view: &View, name: &str) -> Result<(), Status> {
        for namespace in self.storage_namespaces(view).await? {
            let uri = join(&[
                RBAC,
                "namespaces",
                &namespace,
                "rolebindings",
                &format!("{CARRIED_PREFIX}{name}"),
            ]);
            let outgoing = Outgoing::delete_as_us(uri, "", &[]);
            let (code, answer) = self.backend.json(outgoing).await?;
            if !(code.is_success() || code == StatusCode::NOT_FOUND) {
                tracing::warn!(%code, %answer, namespace, binding = name, "cannot withdraw a carried binding");
                return Err(status::internal(&format!(
                    "the binding is deleted but still carried out in namespace {}",
                    view.namespace_to_tenant(&namespace).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// The request's body in storage terms, and its content type.
    fn cluster_rbac_body(
        &self,
        view: &View,
        kind: Kind,
        request: &ApiRequest,
    ) -> Result<(Vec<u8>, String), Status> {
        let content_type = request.content_type();
        if content_type == "application/json-patch+json" {
            return Ok((map_body(view, request, false)?, content_type));
        }
        let mut object = if content_type == protobuf::CONTENT_TYPE {
            protobuf::cluster_rbac_as_json(&request.body)?
        } else {
            request.json_body()?
        };
        to_storage(view, kind, &mut object)?;
        let bytes = serde_json::to_vec(&object).map_err(|e| status::internal(&e.to_string()))?;
        let sent_as = if request.method == Method::PATCH {
            content_type
        } else {
            "application/json".into()
        };
        Ok((bytes, sent_as))
    }

    async fn write_cluster_rbac(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        kind: Kind,
        name: Option<&str>,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        if let Some(name) = name.filter(|n| is_shared(kind, n)) {
            return Err(status::forbidden(
                &subject(kind, name),
                "the cluster's shared ClusterRoles are read-only for tenants",
            ));
        }
        let (body, content_type) = self.cluster_rbac_body(&view, kind, request)?;
        let path = match name {
            Some(name) => join(&[RBAC, kind.resource(), &storage_name(&view, kind, name)?]),
            None => join(&[RBAC, kind.resource()]),
        };
        let mut params = request.params();
        let dry_run = params.iter().any(|(k, _)| k == "dryRun");
        params.retain(|(k, _)| k != "dryRun");
        let mut trial = params.clone();
        trial.push(("dryRun".into(), "All".into()));
        // What the write would store, checked before anything is stored.
        let (code, stored) = self
            .backend
            .json(Outgoing::write(
                request.method.clone(),
                with_query(path.clone(), &trial),
                &content_type,
                body.clone(),
                None,
            ))
            .await?;
        if !code.is_success() {
            return Ok(tenant_answer(&view, code, stored));
        }
        mapping::check_stored(&view, kind, &stored)?;
        if kind == Kind::Role {
            self.check_not_aggregated_by_cluster(&view, &stored).await?;
        }
        self.check_grantable(user, &view, kind, &stored).await?;
        if dry_run {
            return Ok(tenant_answer(&view, code, stored));
        }
        // For real: a create as sent; a change as the object checked, as
        // long as nothing changed it since (its resourceVersion).
        let (method, uri, body) = if request.method == Method::POST {
            (Method::POST, with_query(path, &params), body)
        } else {
            let uri = with_query(
                join(&[
                    RBAC,
                    kind.resource(),
                    stored["metadata"]["name"].as_str().unwrap_or_default(),
                ]),
                &params,
            );
            let checked =
                serde_json::to_vec(&stored).map_err(|e| status::internal(&e.to_string()))?;
            (Method::PUT, uri, checked)
        };
        let content_type = if method == Method::POST {
            content_type
        } else {
            "application/json".into()
        };
        let (code, written) = self
            .backend
            .json(Outgoing::write(method, uri, &content_type, body, None))
            .await?;
        if code.is_success() && kind == Kind::Binding {
            self.carry_out(user, &view, &written, None).await?;
        }
        Ok(tenant_answer(&view, code, written))
    }

    /// Refuses a ClusterRole that a ClusterRole of the cluster (or of
    /// another tenant) aggregates: its rules would flow there.
    async fn check_not_aggregated_by_cluster(
        &self,
        view: &View,
        stored: &Value,
    ) -> Result<(), Status> {
        let outgoing = Outgoing::get_as_us(join(&[RBAC, "clusterroles"]), "application/json");
        let (code, roles) = self.backend.json(outgoing).await?;
        if !code.is_success() {
            return Err(status::service_unavailable(
                "cannot read the cluster's ClusterRoles",
            ));
        }
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(stored["metadata"]["labels"].clone()).unwrap_or_default();
        let own = |role: &Value| {
            role["metadata"]["labels"][TENANT_LABEL].as_str() == Some(view.tenant().as_str())
        };
        for role in roles["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| !own(r))
        {
            let selectors = role
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array);
            for selector in selectors.into_iter().flatten() {
                let selects = serde_json::from_value::<LabelSelector>(selector.clone())
                    .ok()
                    .and_then(|s| Selector::try_from(s).ok())
                    .is_none_or(|s| s.matches(&labels));
                if selects {
                    let name = stored["metadata"]["name"].as_str().unwrap_or_default();
                    let shown = view.tenant().tenant_cluster_object(name).unwrap_or(name);
                    return Err(status::forbidden(
                        &subject(Kind::Role, shown),
                        &format!(
                            "its labels would add its rules to ClusterRole {:?} of the cluster, whose aggregationRule selects them",
                            role["metadata"]["name"].as_str().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The user could grant the same in each of the tenant's namespaces:
    /// kube-apiserver's escalation rules (and the tenant policy) decide,
    /// on dry runs made as the user.
    async fn check_grantable(
        &self,
        user: &UserInfo,
        view: &View,
        kind: Kind,
        stored: &Value,
    ) -> Result<(), Status> {
        let shown = mapping::shown_name(view, stored);
        for namespace in self.storage_namespaces(view).await? {
            let (resource, object) = match kind {
                Kind::Role => (
                    "roles",
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "arktos-grant-check", "namespace": namespace},
                    "rules": stored.get("rules").cloned().unwrap_or_else(|| json!([]))}),
                ),
                Kind::Binding => (
                    "rolebindings",
                    mapping::carried_binding(stored, &namespace, &shown),
                ),
            };
            let uri = join(&[RBAC, "namespaces", &namespace, resource]) + "?dryRun=All";
            let body = serde_json::to_vec(&object).map_err(|e| status::internal(&e.to_string()))?;
            let outgoing = Outgoing::write(Method::POST, uri, "application/json", body, Some(user));
            let (code, answer) = self.backend.json(outgoing).await?;
            if !code.is_success() {
                let why = view.text(answer["message"].as_str().unwrap_or_default());
                let tenant_namespace = view.namespace_to_tenant(&namespace).unwrap_or_default();
                return Err(status::forbidden(
                    &subject(kind, &shown),
                    &format!(
                        "it would grant in namespace {tenant_namespace} what you may not grant there: {why}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Carries out binding `stored` as RoleBindings made as the user, in
    /// namespace `only` or in each of the tenant's namespaces.
    pub(super) async fn carry_out(
        &self,
        user: &UserInfo,
        view: &View,
        stored: &Value,
        only: Option<&str>,
    ) -> Result<(), Status> {
        let shown = mapping::shown_name(view, stored);
        let namespaces = match only {
            Some(namespace) => vec![namespace.to_string()],
            None => self.storage_namespaces(view).await?,
        };
        let mut failed = Vec::new();
        for namespace in namespaces {
            let binding = mapping::carried_binding(stored, &namespace, &shown);
            let uri = join(&[
                RBAC,
                "namespaces",
                &namespace,
                "rolebindings",
                &format!("{CARRIED_PREFIX}{shown}"),
            ]) + "?fieldManager=arktos-tenant-cluster-role-binding&force=true";
            let body =
                serde_json::to_vec(&binding).map_err(|e| status::internal(&e.to_string()))?;
            let outgoing = Outgoing::write(
                Method::PATCH,
                uri,
                "application/apply-patch+yaml",
                body,
                Some(user),
            );
            let (code, answer) = self.backend.json(outgoing).await?;
            if !code.is_success() {
                tracing::warn!(%code, %answer, namespace, binding = %shown, "cannot carry out a tenant's ClusterRoleBinding");
                failed.push(
                    view.namespace_to_tenant(&namespace)
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(status::internal(&format!(
                "ClusterRoleBinding {shown} is stored but not in effect in namespaces {}",
                failed.join(", ")
            )))
        }
    }

    /// Carries out each of the tenant's ClusterRoleBindings in its new
    /// namespace `storage`, as the user who created it.
    pub(super) async fn carry_out_in(
        &self,
        user: &UserInfo,
        view: &View,
        storage: &str,
    ) -> Result<(), Status> {
        let bindings = join(&[RBAC, "clusterrolebindings"]);
        let list = self
            .labelled(view, &bindings, "ClusterRoleBindings")
            .await?;
        for binding in &list {
            let name = binding["metadata"]["name"].as_str().unwrap_or_default();
            if view.tenant().tenant_cluster_object(name).is_some() {
                self.carry_out(user, view, binding, Some(storage)).await?;
            }
        }
        Ok(())
    }
}

/// kube-apiserver's answer in the tenant's terms.
fn tenant_answer(view: &View, code: StatusCode, mut answer: Value) -> Response {
    to_tenant(view, &mut answer);
    respond::json(code, &answer)
}
