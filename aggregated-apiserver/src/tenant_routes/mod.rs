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
pub mod list_cache;
mod list_stream;
pub mod mapping;
pub mod path;
mod protobuf;
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
use self::mapping::View;
use self::path::{ResourcePath, TenantPath};
use crate::authn::UserInfo;
use crate::authz::{Attributes, Authorizer};
use crate::request::{ApiRequest, encode_query};
use crate::respond;
use crate::storage::Storage;

pub struct TenantRoutes {
    backend: Backend,
    catalog: CatalogCache,
    authz: Arc<Authorizer>,
    tenants: Storage,
    /// Tenant objects, briefly: every request of a tenant needs its
    /// Tenant, and a read of the storage per request doubles the cost.
    known: crate::cache::TtlCache<String, Arc<Tenant>>,
    list_cache: list_cache::ListCache,
}

fn tenant_subject(name: &str) -> Subject<'_> {
    Subject {
        group: GROUP,
        resource: PLURAL,
        kind: "Tenant",
        name,
    }
}

fn verb_of(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

impl TenantRoutes {
    pub fn new(client: kube::Client, authz: Arc<Authorizer>, tenants: Storage) -> Self {
        Self {
            backend: Backend::new(client.clone()),
            catalog: CatalogCache::new(client),
            authz,
            tenants,
            known: crate::cache::TtlCache::new(std::time::Duration::from_secs(2), 10_000),
            list_cache: list_cache::ListCache::default(),
        }
    }

    /// Answers lists of `resources` from copies kept by watches (see
    /// `list_cache`); starts the watches.
    pub fn with_list_cache(
        mut self,
        resources: &[list_cache::CachedResource],
        metrics: crate::metrics::ListCacheMetrics,
    ) -> Self {
        self.list_cache = list_cache::ListCache::start(&self.backend, resources, metrics);
        self
    }

    async fn tenant(&self, name: &str) -> Result<Arc<Tenant>, Status> {
        if let Some(tenant) = self.known.get(&name.to_string()) {
            return Ok(tenant);
        }
        let record = self
            .tenants
            .get(name)
            .await?
            .ok_or_else(|| status::not_found(&tenant_subject(name)))?;
        let tenant: Tenant = serde_json::from_value(record)
            .map_err(|e| status::internal(&format!("reading tenant {name}: {e}")))?;
        let tenant = Arc::new(tenant);
        self.known.insert(name.to_string(), tenant.clone());
        Ok(tenant)
    }

    /// Serves `path` (as the tenant writes it) of tenant `tenant`.
    pub async fn handle(
        &self,
        user: &UserInfo,
        tenant: &str,
        path: &str,
        request: &ApiRequest,
    ) -> Response {
        self.serve(user, tenant, path, request)
            .await
            .unwrap_or_else(respond::status)
    }

    async fn serve(
        &self,
        user: &UserInfo,
        tenant: &str,
        path: &str,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let name =
            TenantName::new(tenant).map_err(|_| status::not_found(&tenant_subject(tenant)))?;
        self.authz
            .authorize(
                user,
                &Attributes::resource("use", GROUP, PLURAL, "", tenant),
            )
            .await?;
        let tenant_object = self.tenant(tenant).await?;
        if tenant_object.metadata.deletion_timestamp.is_some() && request.method != Method::GET {
            return Err(status::forbidden(
                &tenant_subject(tenant),
                "the tenant is being deleted and accepts no new objects or changes",
            ));
        }
        let view = Arc::new(View::new(name));
        match path::parse(path).ok_or_else(|| status::path_not_found(path))? {
            TenantPath::Discovery {
                group,
                version,
                legacy_root,
            } => {
                let catalog = self.catalog.get(false).await?;
                discovery(
                    &catalog,
                    request,
                    group.as_deref(),
                    version.as_deref(),
                    legacy_root,
                )
            }
            TenantPath::Version => self.pass_as_us("/version".into(), path, request).await,
            TenantPath::OpenApi(document) => self.openapi(&document, path, request).await,
            TenantPath::Resource(resource) if resource.is_namespaces() => {
                self.namespaces(user, &tenant_object, view, &resource, request)
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
        path: &str,
        tenant_path: &str,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let catalog = self.catalog.get(false).await?;
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
                paths.retain(|key, _| visible(key));
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

    /// A namespaced resource (or a list of one across the tenant), or a
    /// shared read-only cluster resource.
    async fn resource(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        r: &ResourcePath,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        if r.group.is_empty() && r.resource == "pods" && r.subresource.as_deref() == Some("action")
        {
            return self.action(user, view, r, request).await;
        }
        let mut catalog = self.catalog.get(false).await?;
        if catalog
            .resource(&r.group, &r.version, &r.full_resource())
            .is_none()
        {
            catalog = self.catalog.get(true).await?;
        }
        let entry = catalog
            .resource(&r.group, &r.version, &r.full_resource())
            .cloned()
            .ok_or_else(|| status::path_not_found(&request.path))?;
        let watch = r.watch || request.is_watch();
        let stream = r
            .subresource
            .as_deref()
            .filter(|sub| matches!(*sub, "exec" | "attach" | "portforward"));
        if let Some(sub) = stream
            && (request.upgrade.is_none() || r.namespace.is_none())
        {
            return Err(status::method_not_allowed(
                request.method.as_str(),
                &format!(
                    "{sub} needs a connection upgrade (websocket or SPDY) on the tenant gateway"
                ),
            ));
        }
        let mut params = request.params();
        let mut as_user = Some(user);
        let holds_pods = vm_pods::holds_pods(&r.group, &r.resource);
        let mut vm_namespace: Option<String> = None;
        let mut list: Option<list_stream::ListRewrite> = None;
        let uri_path = if Catalog::shared_read_only(&r.group, &r.resource) {
            if request.method != Method::GET {
                return Err(status::forbidden(
                    &Subject {
                        group: &r.group,
                        resource: &r.resource,
                        kind: &entry.kind,
                        name: r.name.as_deref().unwrap_or_default(),
                    },
                    "shared cluster objects are read-only for tenants",
                ));
            }
            as_user = None;
            join(&[
                &r.prefix(),
                &r.resource,
                r.name.as_deref().unwrap_or_default(),
            ])
        } else if let Some(namespace) = &r.namespace {
            let storage = storage_or_not_found(&view, namespace)?;
            map_params(&view, &mut params, false, false)?;
            if holds_pods
                && r.resource == "pods"
                && r.subresource.is_none()
                && request.method == Method::PATCH
                && let Some(name) = &r.name
                && vm_pods::patches_vm_shape(request)
            {
                return self
                    .patch_vm_pod(user, view, &storage, name, request, &params)
                    .await;
            }
            vm_namespace = Some(storage.clone());
            if r.name.is_none() && request.method == Method::GET {
                list = streamed_list(&view, r, request, watch, holds_pods.then_some(&entry.kind));
            }
            join(&[
                &r.prefix(),
                "namespaces",
                &storage,
                &r.resource,
                r.name.as_deref().unwrap_or_default(),
                r.subresource.as_deref().unwrap_or_default(),
            ])
        } else if entry.namespaced && r.name.is_none() && request.method == Method::GET {
            // Across all the tenant's namespaces: allowed when the user may
            // list in each of them; done as us, narrowed by the tenant label.
            let verb = if watch { "watch" } else { "list" };
            for namespace in self.storage_namespaces(&view).await? {
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
            as_user = None;
            map_params(&view, &mut params, true, false)?;
            list = streamed_list(&view, r, request, watch, holds_pods.then_some(&entry.kind));
            join(&[&r.prefix(), &r.resource])
        } else {
            return Err(status::path_not_found(&request.path));
        };
        if watch && !params.iter().any(|(k, _)| k == "watch") {
            params.push(("watch".into(), "true".into()));
        }
        let vm_body = holds_pods
            && r.subresource.is_none()
            && matches!(request.method, Method::POST | Method::PUT)
            && !request.body.is_empty()
            && request.content_type() != protobuf::CONTENT_TYPE;
        let body = if request.body.is_empty() {
            None
        } else if let (true, Some(namespace)) = (vm_body, &vm_namespace) {
            let mut value = request.json_body()?;
            self.vm_body(user, namespace, &entry.kind, &mut value)
                .await?;
            view.request_body(&mut value, false)?;
            Some(serde_json::to_vec(&value).map_err(|e| status::internal(&e.to_string()))?)
        } else {
            Some(map_body(&view, request, false)?)
        };
        let rewrite_view = view.clone();
        let rewrite: Rewrite = Arc::new(move |value: &mut Value| {
            let mine = rewrite_view.response(value);
            if holds_pods && mine {
                vm_pods::response(value);
            }
            mine
        });
        if let (Some(_), Some(slot)) = (stream, &request.upgrade) {
            // exec, attach, port-forward: the upgraded connection is
            // bridged byte for byte to kube-apiserver, as the user.
            let outgoing = Outgoing {
                method: request.method.clone(),
                uri: with_query(uri_path, &params),
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
        if let Some(list) = &list
            && let Some(store) = self.list_cache.store(&r.group, &r.version, &r.resource)
            && let Some(reply) = store
                .answer(
                    &self.backend,
                    with_query(uri_path.clone(), &params),
                    as_user,
                    &list.view,
                )
                .await
        {
            return Ok(reply);
        }
        let outgoing = Outgoing {
            method: request.method.clone(),
            uri: with_query(uri_path, &params),
            accept: &request.accept(),
            content_type: request
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
            body,
            as_user,
            watch,
            list,
        };
        self.backend.send(outgoing, rewrite).await
    }

    /// `POST pods/{name}/action` (Arktos' VM actions).
    async fn action(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        r: &ResourcePath,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let (Some(namespace), Some(name)) = (&r.namespace, &r.name) else {
            return Err(status::path_not_found(&request.path));
        };
        if request.method != Method::POST {
            return Err(status::method_not_allowed(
                request.method.as_str(),
                "a pod's action (actions are created with POST)",
            ));
        }
        let storage = storage_or_not_found(&view, namespace)?;
        let mut params = request.params();
        map_params(&view, &mut params, false, false)?;
        self.create_action(user, view, &storage, name, request, &params)
            .await
    }

    /// The storage names of the tenant's namespaces.
    async fn storage_namespaces(&self, view: &View) -> Result<Vec<String>, Status> {
        let outgoing = Outgoing::get_as_us(
            with_query(
                "/api/v1/namespaces".into(),
                &[("labelSelector".into(), view.label_term())],
            ),
            "application/json",
        );
        let (code, list) = self.backend.json(outgoing).await?;
        if !code.is_success() {
            return Err(status::service_unavailable(
                "cannot list the tenant's namespaces",
            ));
        }
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ns| ns["metadata"]["name"].as_str())
            .filter(|name| view.namespace_to_tenant(name).is_some())
            .map(str::to_string)
            .collect())
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
        let tenant_name = view.tenant().as_str().to_string();
        let watch = r.watch || request.is_watch();
        let verb = verb_of(&request.method, r.name.is_some(), watch);
        self.authz
            .authorize(
                user,
                &Attributes::resource(verb, GROUP, PLURAL, "namespaces", &tenant_name),
            )
            .await?;
        let rewrite_view = view.clone();
        let rewrite: Rewrite =
            Arc::new(move |value: &mut Value| rewrite_view.namespace_response(value));
        let accept = request.accept();
        let mut params = request.params();
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
        match (&request.method, &r.name, &r.subresource) {
            (&Method::GET, None, None) => {
                map_params(&view, &mut params, true, true)?;
                if watch && !params.iter().any(|(k, _)| k == "watch") {
                    params.push(("watch".into(), "true".into()));
                }
                let uri = with_query("/api/v1/namespaces".into(), &params);
                self.backend
                    .send(send(Method::GET, uri, None, watch), rewrite)
                    .await
            }
            (&Method::GET, Some(name), sub) => {
                let storage = self.own_namespace(&view, name).await?;
                let uri = join(&[
                    "/api/v1/namespaces",
                    &storage,
                    sub.as_deref().unwrap_or_default(),
                ]);
                self.backend
                    .send(send(Method::GET, uri, None, false), rewrite)
                    .await
            }
            (&Method::POST, None, None) => {
                // kubectl's typed `create namespace` sends protobuf: a
                // namespace is only its name and labels, so it is read
                // into JSON and created like any other.
                let mut body = if request.content_type() == protobuf::CONTENT_TYPE {
                    let (name, labels) = protobuf::name_and_labels(&request.body)?;
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
                } else {
                    request.json_body()?
                };
                let name = body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if name.is_empty() {
                    return Err(status::invalid(
                        &Subject {
                            resource: "namespaces",
                            kind: "Namespace",
                            ..Default::default()
                        },
                        &[status::FieldError::new(
                            "metadata.name",
                            status::FieldErrorType::Required,
                            "name is required",
                        )],
                    ));
                }
                self.check_namespace_quota(tenant, &view, &name).await?;
                view.request_body(&mut body, true)?;
                let labels = body["metadata"]["labels"]
                    .as_object_mut()
                    .expect("stamped by request_body");
                let level = tenant.spec.pod_security.as_str();
                for mode in ["enforce", "audit", "warn"] {
                    labels.insert(format!("pod-security.kubernetes.io/{mode}"), level.into());
                }
                let bytes =
                    serde_json::to_vec(&body).map_err(|e| status::internal(&e.to_string()))?;
                let uri = with_query("/api/v1/namespaces".into(), &params);
                let response = self
                    .backend
                    .send(send(Method::POST, uri, Some(bytes), false), rewrite)
                    .await?;
                if response.status() == StatusCode::CREATED
                    && !params.iter().any(|(k, _)| k == "dryRun")
                {
                    let storage = view.namespace_to_storage(&name)?;
                    self.bind_owners(tenant, &view, &storage).await?;
                }
                Ok(response)
            }
            (&Method::DELETE, Some(name), None) => {
                let storage = self.own_namespace(&view, name).await?;
                if arktos_crds::naming::DEFAULT_NAMESPACES.contains(&name.as_str()) {
                    return Err(status::forbidden(
                        &Subject {
                            resource: "namespaces",
                            kind: "Namespace",
                            name,
                            ..Default::default()
                        },
                        &format!(
                            "this namespace may not be deleted: every tenant keeps {} (tenant {:?})",
                            arktos_crds::naming::DEFAULT_NAMESPACES.join(", "),
                            view.tenant().as_str()
                        ),
                    ));
                }
                let uri = with_query(join(&["/api/v1/namespaces", &storage]), &params);
                let body = (!request.body.is_empty()).then(|| request.body.to_vec());
                self.backend
                    .send(send(Method::DELETE, uri, body, false), rewrite)
                    .await
            }
            (method, _, _) => Err(status::method_not_allowed(
                method.as_str(),
                "a tenant's namespace (they are created and deleted only; their labels belong to Arktos)",
            )),
        }
    }

    /// The storage name of the tenant's namespace `name`, if it exists and
    /// carries the tenant's label; 404 otherwise.
    async fn own_namespace(&self, view: &View, name: &str) -> Result<String, Status> {
        let not_found = || {
            status::not_found(&Subject {
                resource: "namespaces",
                kind: "Namespace",
                name,
                ..Default::default()
            })
        };
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
            Ok(storage)
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
                &Subject {
                    resource: "namespaces",
                    kind: "Namespace",
                    name,
                    ..Default::default()
                },
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
        // Owners are validated service-account namespaces already; one
        // that no longer maps lands nowhere (the controller reports it).
        let map = |ns: &str| {
            view.namespace_to_storage(ns)
                .unwrap_or_else(|_| format!("{}{ns}", view.tenant().storage_prefix()))
        };
        let binding = desired::owners_binding(tenant, storage, &map);
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

/// Maps the query of a tenant request into storage terms. `across`: the
/// list spans namespaces (position keys start with a namespace, and the
/// tenant label narrows it); `namespace_names`: the objects are namespaces.
fn map_params(
    view: &View,
    params: &mut Vec<(String, String)>,
    across: bool,
    namespace_names: bool,
) -> Result<(), Status> {
    let mut has_label = false;
    for (key, value) in params.iter_mut() {
        match key.as_str() {
            "fieldSelector" => *value = view.field_selector_to_storage(value, namespace_names)?,
            "continue" => *value = view.continue_to_storage(value, across),
            "labelSelector" if across => {
                has_label = true;
                *value = if value.is_empty() {
                    view.label_term()
                } else {
                    format!("{value},{}", view.label_term())
                };
            }
            _ => {}
        }
    }
    if across && !has_label {
        params.push(("labelSelector".into(), view.label_term()));
    }
    Ok(())
}

fn map_body(view: &View, request: &ApiRequest, is_namespace: bool) -> Result<Vec<u8>, Status> {
    let content_type = request.content_type();
    if content_type == protobuf::CONTENT_TYPE {
        let label = (!view.tenant().is_system())
            .then(|| (arktos_crds::naming::TENANT_LABEL, view.tenant().as_str()));
        return protobuf::rewrite(&request.body, &|ns| view.namespace_to_storage(ns), label);
    }
    if content_type == "application/json-patch+json" {
        let mut operations: Vec<Value> = serde_json::from_slice(&request.body)
            .map_err(|e| status::bad_request(&format!("the JSON patch is malformed: {e}")))?;
        for operation in &mut operations {
            let path = operation["path"].as_str().unwrap_or_default().to_string();
            if path.contains(&arktos_crds::naming::TENANT_LABEL.replace('/', "~1")) {
                return Err(status::bad_request(
                    "the tenant label is set by Arktos and cannot be patched",
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

/// The storage name of the tenant's namespace `namespace`; a name that
/// cannot be the tenant's is a namespace that does not exist.
fn storage_or_not_found(view: &View, namespace: &str) -> Result<String, Status> {
    view.namespace_to_storage(namespace).map_err(|_| {
        status::not_found(&Subject {
            resource: "namespaces",
            kind: "Namespace",
            name: namespace,
            ..Default::default()
        })
    })
}

/// How a list answer is rewritten as it streams, when it can be: not
/// watches or tables, nor kinds whose items name other namespaces beyond
/// their own (those are parsed and rewritten whole).
fn streamed_list(
    view: &Arc<View>,
    r: &ResourcePath,
    request: &ApiRequest,
    watch: bool,
    vm_kind: Option<&String>,
) -> Option<list_stream::ListRewrite> {
    let references = matches!(r.resource.as_str(), "rolebindings" | "events");
    (!watch && !references && r.subresource.is_none() && !request.accept().contains("as=Table"))
        .then(|| list_stream::ListRewrite {
            view: view.clone(),
            vm_kind: vm_kind.cloned(),
        })
}

fn join(parts: &[&str]) -> String {
    let mut path = String::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if !part.starts_with('/') {
            path.push('/');
        }
        path.push_str(part.trim_end_matches('/'));
    }
    path
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
