//! Tenant routes: a complete Kubernetes API per tenant, served the same way
//! on the tenant gateway (`/tenants/{t}/...` and the Arktos paths) and on
//! the aggregated path (`/apis/tenancy.arktos.io/v1alpha1/tenants/{t}/...`).
//!
//! A request is allowed to use tenant T when a SubjectAccessReview for
//! `use` on `tenants/T` says so. Namespaced requests go to kube-apiserver
//! as the user (impersonation), in the tenant's storage namespaces, so RBAC
//! applies there as usual. What Arktos manages itself (the tenant's
//! namespaces, cluster-wide lists narrowed to the tenant, shared read-only
//! objects) is done as arktos-apiserver after our own checks.

pub(crate) mod backend;
pub mod catalog;
mod cluster_objects;
pub mod cluster_rbac;
pub mod crds;
mod duplicates;
pub mod health;
pub mod list_cache;
mod list_stream;
pub mod mapping;
mod namespace_patch;
pub mod partitioned;
pub mod path;
pub mod plan;
mod protobuf;
pub mod selectors;
mod self_review;
mod vm_pods;

use std::sync::Arc;

use arktos_crds::naming::TenantName;
use arktos_crds::status::{self, Subject};
use arktos_crds::tenant::{GROUP, PLURAL, Tenant, desired};
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Value, json};
use warp::reply::Response;

use self::backend::{Backend, Outgoing, Rewrite};
use self::catalog::{AGGREGATED_ACCEPT, Catalog, CatalogCache};
use self::mapping::{View, namespace_subject};
use self::path::{ResourcePath, TenantPath};
use self::plan::{Forward, Identity, Incoming, NamespaceOp, Plan, join};
use crate::authn::UserInfo;
use crate::authz::{Attributes, Authorizers};
use crate::request::{ApiRequest, encode_query};
use crate::respond;

/// The tenant routes of one partition: its kube-apiserver, the catalog and
/// list copies kept of it, and who decides there. One per partition, shared
/// by all its tenants (see `partitioned`).
pub struct TenantRoutes {
    backend: Backend,
    catalog: CatalogCache,
    authz: Authorizers,
    list_cache: list_cache::ListCache,
    health: health::Health,
}

fn tenant_subject(name: &str) -> Subject<'_> {
    Subject {
        group: GROUP,
        resource: PLURAL,
        kind: "Tenant",
        name,
    }
}

impl TenantRoutes {
    /// Routes to the partition `partition` that `client` reaches.
    pub fn new(client: kube::Client, partition: &str, authz: Authorizers) -> Self {
        Self {
            backend: Backend::new(client.clone(), partition),
            catalog: CatalogCache::new(client, partition),
            authz,
            list_cache: list_cache::ListCache::default(),
            health: health::Health::new(partition),
        }
    }

    /// The partition's kube-apiserver, as arktos-apiserver.
    pub fn client(&self) -> &kube::Client {
        self.backend.client()
    }

    /// Whether the partition answers, as its probe last found.
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// Answers lists of `resources` from copies kept by watches (see
    /// `list_cache`) of the tenants in `share`; starts the watches, which
    /// end with these routes.
    pub fn with_list_cache(
        mut self,
        resources: &[list_cache::CachedResource],
        metrics: crate::metrics::ListCacheMetrics,
        share: &tokio::sync::watch::Receiver<arktos_crds::sharding::ring::Range>,
    ) -> Self {
        self.list_cache = list_cache::ListCache::start(&self.backend, resources, metrics, share);
        self
    }

    /// Serves `path` (as the tenant writes it) of the tenant `tenant`, once
    /// the root has let `user` use it; `parsed` is `path` parsed (by the
    /// router, once).
    #[tracing::instrument(name = "tenant_route", skip_all, fields(tenant = %name.as_str(), user = %user.name))]
    async fn serve(
        &self,
        user: &UserInfo,
        tenant: &Tenant,
        name: TenantName,
        path: &str,
        parsed: Option<TenantPath>,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let view = Arc::new(View::new(name));
        let tenant_name = view.tenant().as_str().to_string();
        match parsed.ok_or_else(|| status::path_not_found(path))? {
            TenantPath::Discovery {
                group,
                version,
                legacy_root,
            } => {
                let catalog = self.catalog.view(&tenant_name, false).await?;
                discovery(
                    &catalog,
                    request,
                    group.as_deref(),
                    version.as_deref(),
                    legacy_root,
                )
            }
            TenantPath::Version => self.pass_as_us("/version".into(), path, request).await,
            TenantPath::OpenApi(document) => self.openapi(&view, &document, path, request).await,
            TenantPath::Resource(r) if r.is_crds() && !view.tenant().is_system() => {
                self.tenant_crds(user, tenant, view, &r, request).await
            }
            TenantPath::Resource(resource) if resource.is_namespaces() => {
                self.namespaces(user, tenant, view, &resource, request)
                    .await
            }
            TenantPath::Resource(resource) => self.resource(user, view, &resource, request).await,
        }
    }

    /// `uri` as arktos-apiserver; `tenant_path` is the path as the tenant
    /// wrote it (the request's path without the tenant's prefix).
    async fn pass_as_us(
        &self,
        uri: String,
        tenant_path: &str,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let accept = request.accept();
        let outgoing = Outgoing::get_as_us(uri, &accept);
        let prefix = request.path.strip_suffix(tenant_path).unwrap_or_default();
        self.backend
            .pass_through(outgoing, &request.headers, prefix)
            .await
    }

    async fn openapi(
        &self,
        view: &View,
        path: &str,
        tenant_path: &str,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let catalog = self.catalog.view(view.tenant().as_str(), false).await?;
        let own = view.with_groups(catalog.own_groups(view.tenant().as_str()));
        if let Some(reply) = self.own_group_openapi(&own, path).await? {
            return Ok(reply);
        }
        let visible = |gv_path: &str| {
            let parts: Vec<&str> = gv_path.split('/').collect();
            match parts.as_slice() {
                ["api", version] => catalog
                    .versions
                    .contains_key(&(String::new(), version.to_string())),
                ["apis", group, version] => catalog
                    .versions
                    .contains_key(&(group.to_string(), version.to_string())),
                _ => false,
            }
        };
        if path == "/openapi/v3" {
            let outgoing = Outgoing::get_as_us(path.into(), "application/json");
            let (code, mut index) = self.backend.json(outgoing).await?;
            if let Some(paths) = index.get_mut("paths").and_then(Value::as_object_mut) {
                let documents = std::mem::take(paths);
                for (key, mut document) in documents {
                    // The tenant's own groups, by its own names.
                    if let Some(group) = key.strip_prefix("apis/").and_then(|k| k.split('/').next())
                        && arktos_crds::naming::is_tenant_group(group)
                    {
                        if view.tenant().tenant_group(group).is_some() {
                            let url = document["serverRelativeURL"].as_str().unwrap_or_default();
                            document["serverRelativeURL"] = own.text(url).into();
                            paths.insert(own.text(&key), document);
                        }
                        continue;
                    }
                    if visible(&key) {
                        paths.insert(key, document);
                    }
                }
            }
            return Ok(respond::json(code, &index));
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/")
            && !visible(gv)
        {
            return Err(status::path_not_found(path));
        }
        self.pass_as_us(format!("{path}?{}", request.query), tenant_path, request)
            .await
    }

    /// The OpenAPI document of one of the tenant's own groups, in its
    /// names (`kubectl explain` finds kinds by group there); `None` for
    /// any other path.
    async fn own_group_openapi(&self, view: &View, path: &str) -> Result<Option<Response>, Status> {
        let Some(gv) = path.strip_prefix("/openapi/v3/") else {
            return Ok(None);
        };
        let parts: Vec<&str> = gv.split('/').collect();
        let ["apis", group, version] = parts.as_slice() else {
            return Ok(None);
        };
        if !view.owns_group(group) {
            return Ok(None);
        }
        let stored = view
            .tenant()
            .storage_group(group)
            .map_err(|e| status::bad_request(&e.to_string()))?;
        let uri = format!("/openapi/v3/apis/{stored}/{version}");
        let (code, document) = self
            .backend
            .json(Outgoing::get_as_us(uri, "application/json"))
            .await?;
        // Group names appear as written and reversed (schema names).
        let reversed = |g: &str| g.split('.').rev().collect::<Vec<_>>().join(".");
        let text = document
            .to_string()
            .replace(&stored, group)
            .replace(&reversed(&stored), &reversed(group));
        let document: Value = serde_json::from_str(&text).unwrap_or(document);
        Ok(Some(respond::json(code, &document)))
    }

    /// A namespaced resource (or a list of one across the tenant), a
    /// shared read-only cluster resource, or a VM pod's action.
    async fn resource(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        r: &ResourcePath,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        if arktos_crds::naming::is_tenant_group(&r.group) {
            // Tenants name their own groups as they wrote them.
            return Err(status::path_not_found(&request.path));
        }
        let tenant = view.tenant().as_str();
        // An Action is no resource of the catalog: asking for its entry
        // would refetch discovery on every Action.
        let (entry, catalog) = if plan::is_action(r) {
            (None, self.catalog.view(tenant, false).await?)
        } else {
            self.catalog_entry(tenant, r).await?
        };
        let own = catalog.own_groups(tenant);
        let view = if own.is_empty() {
            view
        } else {
            Arc::new(view.with_groups(own))
        };
        let mapped;
        let r = if view.owns_group(&r.group) {
            let group = view
                .tenant()
                .storage_group(&r.group)
                .map_err(|e| status::bad_request(&e.to_string()))?;
            mapped = ResourcePath { group, ..r.clone() };
            &mapped
        } else {
            r
        };
        let incoming = Incoming::of(request, r);
        match plan::resource(&view, r, entry.as_ref(), &incoming)? {
            Plan::Action {
                namespace,
                pod,
                params,
            } => {
                self.create_action(user, view, &namespace, &pod, request, &params)
                    .await
            }
            Plan::PatchVmPod {
                namespace,
                pod,
                params,
            } => {
                self.patch_vm_pod(user, view, &namespace, &pod, request, &params)
                    .await
            }
            Plan::SelfReview(review) => self.self_review(user, &view, review, request).await,
            Plan::ClusterRbac(kind) => self.cluster_rbac(user, view, kind, r, request).await,
            Plan::Forward(forward) => self.forward(user, view, r, request, forward).await,
        }
    }

    /// What tenant `tenant`'s catalog says of `r`, and that catalog;
    /// refreshed once when it does not know `r` (a CRD installed since).
    async fn catalog_entry(
        &self,
        tenant: &str,
        r: &ResourcePath,
    ) -> Result<(Option<catalog::Resource>, Arc<Catalog>), Status> {
        let key = r.full_resource();
        let catalog = self.catalog.view(tenant, false).await?;
        if let Some(entry) = catalog.resource(&r.group, &r.version, &key) {
            return Ok((Some(entry.clone()), catalog));
        }
        let catalog = self.catalog.view(tenant, true).await?;
        Ok((
            catalog.resource(&r.group, &r.version, &key).cloned(),
            catalog,
        ))
    }

    /// Carries out a [`Forward`]: checks, body, then the list cache, the
    /// bridge or kube-apiserver.
    async fn forward(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        r: &ResourcePath,
        request: &ApiRequest,
        forward: Forward,
    ) -> Result<Response, Status> {
        if let Some(verb) = forward.check_each_namespace {
            self.authorize_each_namespace(user, &view, r, verb).await?;
        }
        let as_user = (forward.identity == Identity::User).then_some(user);
        let mut warnings = Vec::new();
        if forward.body == plan::Body::Mapped {
            let (method, path) = (&forward.method, &forward.path);
            match self
                .try_duplicate_fields(as_user, &view, request, method, path, &forward.params)
                .await?
            {
                duplicates::Tried::Refused(reply) => return Ok(reply),
                duplicates::Tried::Warnings(found) => warnings = found,
            }
        }
        let body = self
            .forward_body(user, &view, request, &forward.body)
            .await?;
        let rewrite = answer_rewrite(view.clone(), forward.vm_answers);
        let uri = with_query(forward.path, &forward.params);
        if forward.bridge
            && let Some(slot) = &request.upgrade
        {
            // exec, attach, port-forward: the upgraded connection is
            // bridged byte for byte to kube-apiserver, as the user.
            let outgoing = Outgoing {
                method: forward.method,
                uri,
                accept: "*/*",
                content_type: "",
                body: None,
                as_user,
                watch: false,
                list: None,
            };
            return self
                .backend
                .upgrade(outgoing, &request.headers, slot.clone(), rewrite)
                .await;
        }
        let list = forward.streamed_list.map(|l| list_stream::ListRewrite {
            view: view.clone(),
            vm_kind: l.vm_kind,
        });
        if let Some(list) = &list
            && let Some(reply) = self.list_from_copy(r, &uri, as_user, &list.view).await
        {
            return Ok(reply);
        }
        let outgoing = Outgoing {
            method: forward.method,
            uri,
            accept: &request.accept(),
            content_type: request
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
            body,
            as_user,
            watch: forward.watch,
            list,
        };
        let mut reply = self.backend.send(outgoing, rewrite).await?;
        for warning in warnings {
            reply.headers_mut().append("warning", warning);
        }
        Ok(reply)
    }

    /// A list of `r` answered from the list cache (see `list_cache`), if
    /// it keeps `r` and can answer.
    async fn list_from_copy(
        &self,
        r: &ResourcePath,
        uri: &str,
        as_user: Option<&UserInfo>,
        view: &View,
    ) -> Option<Response> {
        if r.name.is_some() {
            return None;
        }
        let store = self.list_cache.store(&r.group, &r.version, &r.resource)?;
        store
            .answer(&self.backend, uri.to_string(), as_user, view)
            .await
    }

    /// A list across the tenant's namespaces is allowed when the user may
    /// `verb` the resource in each of them.
    async fn authorize_each_namespace(
        &self,
        user: &UserInfo,
        view: &View,
        r: &ResourcePath,
        verb: &str,
    ) -> Result<(), Status> {
        for namespace in self.storage_namespaces(view).await? {
            let attributes = Attributes::Resource {
                verb: verb.into(),
                group: r.group.clone(),
                resource: r.resource.clone(),
                subresource: String::new(),
                namespace,
                name: String::new(),
            };
            self.authz
                .authorize(user, &attributes)
                .await
                .map_err(|denied| {
                    let mut denied = serde_json::to_value(denied).unwrap_or_default();
                    view.response(&mut denied);
                    serde_json::from_value(denied)
                        .unwrap_or_else(|_| status::internal("authorization"))
                })?;
        }
        Ok(())
    }

    /// The storage names of the tenant's namespaces.
    async fn storage_namespaces(&self, view: &View) -> Result<Vec<String>, Status> {
        let namespaces = self
            .labelled(view, "/api/v1/namespaces", "namespaces")
            .await?;
        Ok(namespaces
            .iter()
            .filter_map(|ns| ns["metadata"]["name"].as_str())
            .filter(|name| view.namespace_to_tenant(name).is_some())
            .map(str::to_string)
            .collect())
    }

    /// The body a [`Forward`] sends, as its plan says.
    async fn forward_body(
        &self,
        user: &UserInfo,
        view: &View,
        request: &ApiRequest,
        body: &plan::Body,
    ) -> Result<Option<Vec<u8>>, Status> {
        Ok(match body {
            plan::Body::None => None,
            plan::Body::AsSent => Some(request.body.to_vec()),
            plan::Body::Mapped => Some(map_body(view, request, false)?),
            plan::Body::VmPod { namespace, kind } => {
                let mut value = request.json_body()?;
                self.vm_body(user, namespace, kind, &mut value).await?;
                view.request_body(&mut value, false)?;
                Some(serde_json::to_vec(&value).map_err(|e| status::internal(&e.to_string()))?)
            }
        })
    }

    /// The tenant's own namespaces, managed by Arktos: owners (a
    /// SubjectAccessReview on `tenants/namespaces`) list, create and delete
    /// them; their names, labels and count are ours to keep right.
    async fn namespaces(
        &self,
        user: &UserInfo,
        tenant: &Tenant,
        view: Arc<View>,
        r: &ResourcePath,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let plan = plan::namespaces(&view, r, &Incoming::of(request, r))?;
        self.authz
            .authorize(
                user,
                &Attributes::on_tenant(plan.verb, "namespaces", view.tenant().as_str()),
            )
            .await?;
        let rewrite_view = view.clone();
        let rewrite: Rewrite =
            Arc::new(move |value: &mut Value| rewrite_view.namespace_response(value));
        let accept = request.accept();
        let mut write: NamespaceWrite;
        let send = |method: Method, uri: String, body: Option<Vec<u8>>, watch: bool| Outgoing {
            method,
            uri,
            accept: &accept,
            content_type: "application/json",
            body,
            as_user: None,
            watch,
            list: None,
        };
        let outgoing = match plan.op {
            NamespaceOp::List { params, watch } => send(
                Method::GET,
                with_query("/api/v1/namespaces".into(), &params),
                None,
                watch,
            ),
            NamespaceOp::Get { name, subresource } => {
                let (storage, _) = self.own_namespace(&view, &name).await?;
                let sub = subresource.unwrap_or_default();
                send(
                    Method::GET,
                    join(&["/api/v1/namespaces", &storage, &sub]),
                    None,
                    false,
                )
            }
            NamespaceOp::Create { params } => {
                return self
                    .create_namespace(user, tenant, &view, request, &params, send)
                    .await;
            }
            op => {
                write = self.namespace_write(&view, request, op).await?;
                Outgoing {
                    content_type: &write.content_type,
                    ..send(
                        write.method.clone(),
                        write.uri.clone(),
                        write.body.take(),
                        false,
                    )
                }
            }
        };
        self.backend.send(outgoing, rewrite).await
    }

    /// A change to one of the tenant's namespaces: its labels and
    /// annotations (a patch; an update is sent as one) or its deletion
    /// (DeleteOptions as sent, in the encoding they were sent in).
    async fn namespace_write(
        &self,
        view: &View,
        request: &ApiRequest,
        op: NamespaceOp,
    ) -> Result<NamespaceWrite, Status> {
        let sent_type = request.content_type();
        let (name, params) = match &op {
            NamespaceOp::Patch { name, params }
            | NamespaceOp::Update { name, params }
            | NamespaceOp::Delete { name, params } => (name, params),
            other => unreachable!("not a write of a named namespace: {other:?}"),
        };
        let (storage, current) = self.own_namespace(view, name).await?;
        let uri = with_query(join(&["/api/v1/namespaces", &storage]), params);
        let (method, content_type, body) = match &op {
            NamespaceOp::Patch { .. } => {
                let patch =
                    namespace_patch::checked_patch(&sent_type, &request.body, name, &storage)?;
                (Method::PATCH, sent_type, Some(patch))
            }
            NamespaceOp::Update { .. } => {
                let wanted = namespace_body(request)?;
                let patch = namespace_patch::update_as_patch(name, &wanted, &current)?;
                (
                    Method::PATCH,
                    "application/merge-patch+json".into(),
                    Some(patch),
                )
            }
            _ => {
                let options = (!request.body.is_empty()).then(|| request.body.to_vec());
                (Method::DELETE, sent_type, options)
            }
        };
        Ok(NamespaceWrite {
            method,
            uri,
            content_type,
            body,
        })
    }

    /// A new namespace of the tenant: within its quota, stamped with its
    /// label and Pod Security level, its owners bound as admins.
    async fn create_namespace<'a>(
        &self,
        user: &UserInfo,
        tenant: &Tenant,
        view: &Arc<View>,
        request: &ApiRequest,
        params: &[(String, String)],
        send: impl Fn(Method, String, Option<Vec<u8>>, bool) -> Outgoing<'a>,
    ) -> Result<Response, Status> {
        // kubectl's typed `create namespace` sends protobuf: a namespace
        // is only its name and labels, so it is read into JSON and
        // created like any other.
        let mut body = namespace_body(request)?;
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(status::invalid(
                &namespace_subject(""),
                &[status::FieldError::new(
                    "metadata.name",
                    status::FieldErrorType::Required,
                    "name is required",
                )],
            ));
        }
        self.check_namespace_quota(tenant, view, &name).await?;
        view.request_body(&mut body, true)?;
        let labels = body["metadata"]["labels"]
            .as_object_mut()
            .expect("stamped by request_body");
        let level = tenant.spec.pod_security.as_str();
        for mode in ["enforce", "audit", "warn"] {
            labels.insert(format!("pod-security.kubernetes.io/{mode}"), level.into());
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| status::internal(&e.to_string()))?;
        let uri = with_query("/api/v1/namespaces".into(), params);
        let rewrite_view = view.clone();
        let rewrite: Rewrite =
            Arc::new(move |value: &mut Value| rewrite_view.namespace_response(value));
        let response = self
            .backend
            .send(send(Method::POST, uri, Some(bytes), false), rewrite)
            .await?;
        if response.status() == StatusCode::CREATED && !params.iter().any(|(k, _)| k == "dryRun") {
            let storage = view.namespace_to_storage(&name)?;
            self.bind_owners(tenant, view, &storage).await?;
            let grant =
                Attributes::resource("create", "", "configmaps", "", "").in_namespace(&storage);
            if !self
                .authz
                .wait_until_allowed(user, &grant, std::time::Duration::from_secs(5))
                .await
            {
                tracing::warn!(namespace = storage, user = %user.name, "the owners' binding was not in effect 5 s after it was written");
            }
            self.carry_out_in(user, view, &storage).await?;
            let catalog = self.catalog.view(view.tenant().as_str(), false).await?;
            if !catalog.own_groups(view.tenant().as_str()).is_empty() {
                self.bind_own_groups(tenant, view, &storage).await?;
            }
        }
        Ok(response)
    }

    /// The storage name of the tenant's namespace `name`, and the namespace
    /// as stored, if it exists and carries the tenant's label; 404
    /// otherwise.
    async fn own_namespace(&self, view: &View, name: &str) -> Result<(String, Value), Status> {
        let not_found = || status::not_found(&namespace_subject(name));
        let storage = view.namespace_to_storage(name).map_err(|_| not_found())?;
        let outgoing =
            Outgoing::get_as_us(join(&["/api/v1/namespaces", &storage]), "application/json");
        let (code, namespace) = self.backend.json(outgoing).await?;
        let labelled = namespace
            .pointer(&format!(
                "/metadata/labels/{}",
                arktos_crds::naming::TENANT_LABEL.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            == Some(view.tenant().as_str());
        if code.is_success() && labelled {
            Ok((storage, namespace))
        } else {
            Err(not_found())
        }
    }

    /// `count/namespaces` of the tenant's quota. (Concurrent creates are
    /// made atomic by the quota admission of the tenant operator.)
    async fn check_namespace_quota(
        &self,
        tenant: &Tenant,
        view: &View,
        name: &str,
    ) -> Result<(), Status> {
        let Some(limit) = tenant
            .spec
            .quota
            .as_ref()
            .and_then(|q| q.hard.get("count/namespaces"))
            .and_then(|q| q.0.parse::<usize>().ok())
        else {
            return Ok(());
        };
        // The tenant's default namespaces come with it, free.
        let used = self
            .storage_namespaces(view)
            .await?
            .iter()
            .filter(|ns| !arktos_crds::naming::is_default_storage_namespace(ns))
            .count();
        if used >= limit {
            return Err(status::quota_exceeded(
                &namespace_subject(name),
                view.tenant().as_str(),
                &[status::QuotaExcess {
                    key: "count/namespaces".into(),
                    requested: "1".into(),
                    used: used.to_string(),
                    limited: limit.to_string(),
                }],
            ));
        }
        Ok(())
    }

    /// Makes the tenant's owners admins of a new namespace (the tenant
    /// controller keeps this binding in place afterwards).
    async fn bind_owners(&self, tenant: &Tenant, view: &View, storage: &str) -> Result<(), Status> {
        let binding = owners_binding(tenant, view, storage);
        let outgoing = Outgoing {
            method: Method::POST,
            uri: join(&[
                "/apis/rbac.authorization.k8s.io/v1/namespaces",
                storage,
                "rolebindings",
            ]),
            accept: "application/json",
            content_type: "application/json",
            body: Some(serde_json::to_vec(&binding).map_err(|e| status::internal(&e.to_string()))?),
            as_user: None,
            watch: false,
            list: None,
        };
        let (code, answer) = self.backend.json(outgoing).await?;
        if code.is_success() || code == StatusCode::CONFLICT {
            Ok(())
        } else {
            tracing::warn!(%code, %answer, namespace = storage, "cannot bind the tenant's owners");
            Err(status::internal(
                "cannot grant the tenant's owners their namespace",
            ))
        }
    }
}

/// The RoleBinding making the tenant's owners `admin` of its namespace
/// `storage` (as the tenant controller writes it).
fn owners_binding(
    tenant: &Tenant,
    view: &View,
    storage: &str,
) -> k8s_openapi::api::rbac::v1::RoleBinding {
    // Owners are validated service-account namespaces already; one that no
    // longer maps lands nowhere (the controller reports it).
    let map = |ns: &str| {
        view.namespace_to_storage(ns)
            .unwrap_or_else(|_| format!("{}{ns}", view.tenant().storage_prefix()))
    };
    desired::owners_binding(tenant, storage, &map)
}

/// Answers in the tenant's terms (VM pods in the Arktos shape when
/// `vm_answers`).
fn answer_rewrite(view: Arc<View>, vm_answers: bool) -> Rewrite {
    Arc::new(move |value: &mut Value| {
        let mine = view.response(value);
        if vm_answers && mine {
            vm_pods::response(value);
        }
        mine
    })
}

/// What is sent for a change to one of a tenant's namespaces.
struct NamespaceWrite {
    method: Method,
    uri: String,
    content_type: String,
    body: Option<Vec<u8>>,
}

/// A namespace in a request body, as JSON whatever its encoding.
fn namespace_body(request: &ApiRequest) -> Result<Value, Status> {
    if request.content_type() == protobuf::CONTENT_TYPE {
        protobuf::namespace_as_json(&request.body)
    } else {
        request.json_body()
    }
}

fn map_body(view: &View, request: &ApiRequest, is_namespace: bool) -> Result<Vec<u8>, Status> {
    let content_type = request.content_type();
    if content_type == protobuf::CONTENT_TYPE {
        let labels = if view.tenant().is_system() {
            Vec::new()
        } else {
            arktos_crds::naming::tenant_labels(view.tenant().as_str()).to_vec()
        };
        return protobuf::rewrite(&request.body, view, &labels);
    }
    if content_type == "application/json-patch+json" {
        let mut operations: Vec<Value> = serde_json::from_slice(&request.body)
            .map_err(|e| status::bad_request(&format!("the JSON patch is malformed: {e}")))?;
        for operation in &mut operations {
            let path = operation["path"].as_str().unwrap_or_default().to_string();
            if arktos_crds::naming::tenant_labels(view.tenant().as_str())
                .iter()
                .any(|(key, _)| path.contains(&key.replace('/', "~1")))
            {
                return Err(status::bad_request(
                    "the tenant's labels are set by Arktos and cannot be patched",
                ));
            }
            if path.ends_with("/namespace")
                && let Some(ns) = operation["value"].as_str()
            {
                operation["value"] = view.namespace_to_storage(ns)?.into();
            } else if operation["value"].is_object() {
                view.request_body(&mut operation["value"], is_namespace)?;
            }
        }
        return serde_json::to_vec(&operations).map_err(|e| status::internal(&e.to_string()));
    }
    if !(content_type.contains("json") || content_type.contains("yaml") || content_type.is_empty())
    {
        return Ok(request.body.to_vec());
    }
    let mut value = request.json_body()?;
    view.request_body(&mut value, is_namespace)?;
    serde_json::to_vec(&value).map_err(|e| status::internal(&e.to_string()))
}

fn with_query(path: String, params: &[(String, String)]) -> String {
    if params.is_empty() {
        path
    } else {
        format!("{path}?{}", encode_query(params))
    }
}

/// Discovery as a tenant sees it: only what tenants may use.
fn discovery(
    catalog: &Catalog,
    request: &ApiRequest,
    group: Option<&str>,
    version: Option<&str>,
    legacy_root: bool,
) -> Result<Response, Status> {
    let aggregated = crate::discovery::wants_aggregated(&request.accept());
    match (group, version) {
        (None, None) if legacy_root => {
            if aggregated {
                return Ok(respond::json_with_type(
                    StatusCode::OK,
                    &catalog.core,
                    AGGREGATED_ACCEPT,
                ));
            }
            Ok(respond::json(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
            ))
        }
        (None, None) => {
            if aggregated {
                return Ok(respond::json_with_type(
                    StatusCode::OK,
                    &catalog.groups,
                    AGGREGATED_ACCEPT,
                ));
            }
            let groups: Vec<Value> = group_names(catalog)
                .iter()
                .map(|g| api_group(catalog, g))
                .collect();
            Ok(respond::json(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ))
        }
        (Some(group), None) if group_names(catalog).contains(&group.to_string()) => {
            Ok(respond::json(StatusCode::OK, &api_group(catalog, group)))
        }
        (Some(group), Some(version)) => {
            let resources = catalog
                .versions
                .get(&(group.to_string(), version.to_string()))
                .ok_or_else(|| status::path_not_found(&request.path))?;
            let list: Vec<Value> = resources
                .iter()
                .map(|(name, r)| json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs}))
                .collect();
            let group_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            Ok(respond::json(
                StatusCode::OK,
                &json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": list}),
            ))
        }
        _ => Err(status::path_not_found(&request.path)),
    }
}

fn group_names(catalog: &Catalog) -> Vec<String> {
    let mut names: Vec<String> = catalog
        .versions
        .keys()
        .map(|(g, _)| g.clone())
        .filter(|g| !g.is_empty())
        .collect();
    names.dedup();
    names
}

fn api_group(catalog: &Catalog, group: &str) -> Value {
    let versions: Vec<Value> = catalog
        .versions
        .keys()
        .filter(|(g, _)| g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions.clone(),
           "preferredVersion": versions.last().cloned().unwrap_or_default()})
}
