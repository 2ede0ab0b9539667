//! What the gateway does with a tenant's request, decided from the request,
//! the tenant's view and the catalog entry alone: a plain value that the
//! routes then carry out (`TenantRoutes::execute`). Every rule of the
//! gateway lives here, so it is tested as a table of request -> plan.

use arktos_crds::naming::DEFAULT_NAMESPACES;
use arktos_crds::status::{self, Subject};
use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

use super::catalog::{Catalog, Resource};
use super::cluster_rbac::mapping::Kind;
use super::mapping::{View, namespace_subject};
use super::path::ResourcePath;
use super::selectors::Toward;
use super::self_review::SelfReview;
use super::{protobuf, vm_pods};
use crate::request::ApiRequest;

pub type Params = Vec<(String, String)>;

/// What the rules read of a request.
#[derive(Clone, Debug, Default)]
pub struct Incoming<'a> {
    pub method: Method,
    /// The request's path, for the messages of refusals.
    pub path: &'a str,
    pub params: Params,
    /// `?watch=true` or the legacy `/watch/` prefix.
    pub watch: bool,
    /// The client asked to upgrade the connection (exec, attach, ...).
    pub upgrade: bool,
    /// The media type of the body, lower case, without parameters.
    pub content_type: String,
    pub accept: String,
    pub body: &'a [u8],
}

impl<'a> Incoming<'a> {
    pub fn of(request: &'a ApiRequest, r: &ResourcePath) -> Self {
        Self {
            method: request.method.clone(),
            path: &request.path,
            params: request.params(),
            watch: r.watch || request.is_watch(),
            upgrade: request.upgrade.is_some(),
            content_type: request.content_type(),
            accept: request.accept(),
            body: &request.body,
        }
    }
}

/// Where a request to a resource goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// `POST pods/{name}/action`: an Arktos Action on the VM pod `pod` of
    /// storage namespace `namespace`.
    Action {
        namespace: String,
        pod: String,
        params: Params,
    },
    /// A PATCH of a VM pod's Arktos shape: read, changed in that shape and
    /// written back.
    PatchVmPod {
        namespace: String,
        pod: String,
        params: Params,
    },
    /// One of the tenant's own ClusterRoles or ClusterRoleBindings.
    ClusterRbac(Kind),
    /// A question the user asks about themselves, answered in the
    /// tenant's terms.
    SelfReview(SelfReview),
    /// On to kube-apiserver.
    Forward(Forward),
}

/// A request sent on to kube-apiserver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub method: Method,
    /// The storage path, without the query.
    pub path: String,
    pub params: Params,
    pub identity: Identity,
    /// Before sending: the user must hold this verb in each of the
    /// tenant's namespaces (a list across them is done as us).
    pub check_each_namespace: Option<&'static str>,
    pub body: Body,
    /// Answers show VM pods (and their templates) in the Arktos shape.
    pub vm_answers: bool,
    /// A list whose answer is rewritten item by item as it streams (and
    /// may be answered from the list cache).
    pub streamed_list: Option<StreamedList>,
    pub watch: bool,
    /// exec, attach, port-forward: the upgraded connection is bridged.
    pub bridge: bool,
}

impl Forward {
    /// The request as it came, as the user, to a path still to be set.
    fn as_user(incoming: &Incoming) -> Self {
        Self {
            method: incoming.method.clone(),
            path: String::new(),
            params: incoming.params.clone(),
            identity: Identity::User,
            check_each_namespace: None,
            body: Body::None,
            vm_answers: false,
            streamed_list: None,
            watch: incoming.watch,
            bridge: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Impersonating the user: RBAC in the storage namespaces applies.
    User,
    /// As arktos-apiserver, after our own checks.
    Gateway,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    /// The client's bytes in the client's encoding: a delete's
    /// DeleteOptions name no namespace, and kube-apiserver reads them in
    /// every encoding it serves (protobuf from client-go's typed clients).
    AsSent,
    /// Namespaces and labels mapped to storage terms, in its own encoding.
    Mapped,
    /// An object in the Arktos VM shape (of `kind`) turned into storage
    /// form, then mapped.
    VmPod {
        namespace: String,
        kind: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamedList {
    /// The kind whose items may be VM pods.
    pub vm_kind: Option<String>,
}

/// The plan for a resource other than namespaces; `entry` is what the
/// catalog says of it (`None`: not served to tenants).
pub fn resource(
    view: &View,
    r: &ResourcePath,
    entry: Option<&Resource>,
    incoming: &Incoming,
) -> Result<Plan, Status> {
    if is_action(r) {
        return action(view, r, incoming);
    }
    let entry = entry.ok_or_else(|| status::path_not_found(incoming.path))?;
    if let Some(kind) = Kind::of(&r.group, &r.resource).filter(|_| r.namespace.is_none()) {
        return Ok(cluster_rbac(view, r, incoming, kind));
    }
    if let Some(review) = SelfReview::of(r) {
        if incoming.method != Method::POST || incoming.watch {
            return Err(status::method_not_allowed(
                incoming.method.as_str(),
                &format!("{} (reviews are only created)", r.resource),
            ));
        }
        return Ok(Plan::SelfReview(review));
    }
    let bridge = matches!(
        r.subresource.as_deref(),
        Some("exec" | "attach" | "portforward")
    );
    if bridge && (!incoming.upgrade || r.namespace.is_none()) {
        return Err(status::method_not_allowed(
            incoming.method.as_str(),
            &format!(
                "{} needs a connection upgrade (websocket or SPDY) on the tenant gateway",
                r.subresource.as_deref().unwrap_or_default()
            ),
        ));
    }
    let mut forward = Forward {
        vm_answers: vm_pods::holds_pods(&r.group, &r.resource),
        bridge,
        ..Forward::as_user(incoming)
    };
    if Catalog::shared_read_only(&r.group, &r.resource) {
        shared(r, entry, incoming, &mut forward)?;
    } else if let Some(namespace) = &r.namespace {
        let storage = storage_or_not_found(view, namespace)?;
        map_params(view, &mut forward.params, false, false)?;
        if let Some(patch) = vm_pod_patch(r, incoming, &storage, &forward.params) {
            return Ok(patch);
        }
        in_namespace(r, entry, incoming, storage, &mut forward);
    } else if entry.namespaced && r.name.is_none() && incoming.method == Method::GET {
        across(view, r, entry, incoming, &mut forward)?;
    } else if !entry.namespaced && owns_storage_group(view, &r.group) {
        own_cluster_scoped(view, r, &mut forward)?;
    } else {
        return Err(status::path_not_found(incoming.path));
    }
    if incoming.watch && !forward.params.iter().any(|(k, _)| k == "watch") {
        forward.params.push(("watch".into(), "true".into()));
    }
    if forward.body == Body::None && !incoming.body.is_empty() {
        forward.body = if incoming.method == Method::DELETE {
            Body::AsSent
        } else {
            Body::Mapped
        };
    }
    Ok(Plan::Forward(forward))
}

/// A tenant's own ClusterRoles and ClusterRoleBindings; the system
/// tenant's are the cluster's own, as the user.
fn cluster_rbac(view: &View, r: &ResourcePath, incoming: &Incoming, kind: Kind) -> Plan {
    if !view.tenant().is_system() {
        return Plan::ClusterRbac(kind);
    }
    let body = if incoming.body.is_empty() {
        Body::None
    } else {
        Body::AsSent
    };
    Plan::Forward(Forward {
        path: join(&[
            &r.prefix(),
            &r.resource,
            r.name.as_deref().unwrap_or_default(),
        ]),
        body,
        ..Forward::as_user(incoming)
    })
}

/// A cluster object every tenant may read: read as us, never written.
fn shared(
    r: &ResourcePath,
    entry: &Resource,
    incoming: &Incoming,
    forward: &mut Forward,
) -> Result<(), Status> {
    if incoming.method != Method::GET {
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
    forward.identity = Identity::Gateway;
    forward.path = join(&[
        &r.prefix(),
        &r.resource,
        r.name.as_deref().unwrap_or_default(),
    ]);
    Ok(())
}

/// A PATCH of a VM pod's Arktos shape, which kube-apiserver cannot apply.
fn vm_pod_patch(
    r: &ResourcePath,
    incoming: &Incoming,
    storage: &str,
    params: &Params,
) -> Option<Plan> {
    let name = r.name.as_ref()?;
    (r.group.is_empty()
        && r.resource == "pods"
        && r.subresource.is_none()
        && incoming.method == Method::PATCH
        && vm_pods::patches_vm_shape(incoming.body))
    .then(|| Plan::PatchVmPod {
        namespace: storage.to_string(),
        pod: name.clone(),
        params: params.clone(),
    })
}

/// In the tenant's namespace `storage`, as the user.
fn in_namespace(
    r: &ResourcePath,
    entry: &Resource,
    incoming: &Incoming,
    storage: String,
    forward: &mut Forward,
) {
    let vm_kind = forward.vm_answers.then(|| entry.kind.clone());
    if incoming.method == Method::GET {
        // A list streams; one object is rewritten the same way, whole.
        forward.streamed_list = streamed_list(r, incoming, vm_kind.clone());
    }
    if let Some(kind) = vm_kind.filter(|_| vm_shape_body(r, incoming)) {
        forward.body = Body::VmPod {
            namespace: storage.clone(),
            kind,
        };
    }
    forward.path = join(&[
        &r.prefix(),
        "namespaces",
        &storage,
        &r.resource,
        r.name.as_deref().unwrap_or_default(),
        r.subresource.as_deref().unwrap_or_default(),
    ]);
}

/// A list across all the tenant's namespaces: allowed when the user may
/// list in each of them; done as us, narrowed by the tenant label.
fn across(
    view: &View,
    r: &ResourcePath,
    entry: &Resource,
    incoming: &Incoming,
    forward: &mut Forward,
) -> Result<(), Status> {
    forward.check_each_namespace = Some(if incoming.watch { "watch" } else { "list" });
    forward.identity = Identity::Gateway;
    map_params(view, &mut forward.params, true, false)?;
    let vm_kind = forward.vm_answers.then(|| entry.kind.clone());
    forward.streamed_list = streamed_list(r, incoming, vm_kind);
    forward.path = join(&[&r.prefix(), &r.resource]);
    Ok(())
}

/// Whether `group`, as stored, is one of the tenant's own.
fn owns_storage_group(view: &View, group: &str) -> bool {
    arktos_crds::naming::split_tenant_group(group)
        .is_some_and(|(tenant, _)| tenant == view.tenant().as_str())
}

/// A cluster-scoped resource of one of the tenant's own CRDs: its group is
/// the tenant's alone, so its objects keep their names; as the user.
fn own_cluster_scoped(view: &View, r: &ResourcePath, forward: &mut Forward) -> Result<(), Status> {
    // Never a streamed list: items of a tenant's own group carry an
    // apiVersion to map (see `streamed_list`).
    map_params(view, &mut forward.params, false, false)?;
    forward.path = join(&[
        &r.prefix(),
        &r.resource,
        r.name.as_deref().unwrap_or_default(),
        r.subresource.as_deref().unwrap_or_default(),
    ]);
    Ok(())
}

pub fn is_action(r: &ResourcePath) -> bool {
    r.group.is_empty() && r.resource == "pods" && r.subresource.as_deref() == Some("action")
}

/// `POST pods/{name}/action` (Arktos' VM actions).
fn action(view: &View, r: &ResourcePath, incoming: &Incoming) -> Result<Plan, Status> {
    let (Some(namespace), Some(name)) = (&r.namespace, &r.name) else {
        return Err(status::path_not_found(incoming.path));
    };
    if incoming.method != Method::POST {
        return Err(status::method_not_allowed(
            incoming.method.as_str(),
            "a pod's action (actions are created with POST)",
        ));
    }
    let storage = storage_or_not_found(view, namespace)?;
    let mut params = incoming.params.clone();
    map_params(view, &mut params, false, false)?;
    Ok(Plan::Action {
        namespace: storage,
        pod: name.clone(),
        params,
    })
}

/// A create or update of an object holding pods, in JSON or YAML: it may
/// be in the Arktos VM shape.
fn vm_shape_body(r: &ResourcePath, incoming: &Incoming) -> bool {
    !incoming.body.is_empty()
        && r.subresource.is_none()
        && matches!(incoming.method, Method::POST | Method::PUT)
        && incoming.content_type != protobuf::CONTENT_TYPE
}

/// A list answer is rewritten as it streams when it can be: not watches
/// or tables, nor kinds whose items name other namespaces beyond their own
/// (those are parsed and rewritten whole).
fn streamed_list(
    r: &ResourcePath,
    incoming: &Incoming,
    vm_kind: Option<String>,
) -> Option<StreamedList> {
    let references = matches!(r.resource.as_str(), "rolebindings" | "events");
    // Items of a tenant's own group carry an apiVersion to map.
    let own_group = arktos_crds::naming::is_tenant_group(&r.group);
    (!incoming.watch
        && !references
        && !own_group
        && r.subresource.is_none()
        && !incoming.accept.contains("as=Table"))
    .then_some(StreamedList { vm_kind })
}

/// What a tenant may do with its own namespaces (Arktos manages them; the
/// owners' rights are judged on `tenants/namespaces`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePlan {
    /// The verb the user must hold on `tenants/namespaces` of the tenant.
    pub verb: &'static str,
    pub op: NamespaceOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceOp {
    /// The tenant's namespaces (narrowed by its label), or a watch of them.
    List {
        params: Params,
        watch: bool,
    },
    /// One of them (or its subresource), once it is known to be the
    /// tenant's.
    Get {
        name: String,
        subresource: Option<String>,
    },
    /// A new namespace: quota, name, labels and the owners' binding.
    Create {
        params: Params,
    },
    /// A change of its labels and annotations (`namespace_patch.rs`).
    Patch {
        name: String,
        params: Params,
    },
    /// An update, sent as a patch of its labels and annotations.
    Update {
        name: String,
        params: Params,
    },
    Delete {
        name: String,
        params: Params,
    },
}

pub fn namespaces(
    view: &View,
    r: &ResourcePath,
    incoming: &Incoming,
) -> Result<NamespacePlan, Status> {
    let verb = crate::verb::of(&incoming.method, r.name.is_some(), incoming.watch);
    let mut params = incoming.params.clone();
    let op = match (&incoming.method, &r.name, &r.subresource) {
        (&Method::GET, None, None) => {
            map_params(view, &mut params, true, true)?;
            if incoming.watch && !params.iter().any(|(k, _)| k == "watch") {
                params.push(("watch".into(), "true".into()));
            }
            NamespaceOp::List {
                params,
                watch: incoming.watch,
            }
        }
        (&Method::GET, Some(name), sub) => NamespaceOp::Get {
            name: name.clone(),
            subresource: sub.clone(),
        },
        (&Method::POST, None, None) => NamespaceOp::Create { params },
        (&Method::DELETE, Some(name), None) => {
            if DEFAULT_NAMESPACES.contains(&name.as_str()) {
                return Err(status::forbidden(
                    &namespace_subject(name),
                    &format!(
                        "this namespace may not be deleted: every tenant keeps {} (tenant {:?})",
                        DEFAULT_NAMESPACES.join(", "),
                        view.tenant().as_str()
                    ),
                ));
            }
            NamespaceOp::Delete {
                name: name.clone(),
                params,
            }
        }
        (&Method::PATCH, Some(name), None) => NamespaceOp::Patch {
            name: name.clone(),
            params,
        },
        (&Method::PUT, Some(name), None) => NamespaceOp::Update {
            name: name.clone(),
            params,
        },
        (method, _, _) => {
            return Err(status::method_not_allowed(
                method.as_str(),
                "a tenant's namespace or its subresources (namespaces are created, deleted, and have their labels and annotations changed; their status and finalizers are Arktos')",
            ));
        }
    };
    Ok(NamespacePlan { verb, op })
}

/// Maps the query of a tenant request into storage terms. `across`: the
/// list spans namespaces (position keys start with a namespace, and the
/// tenant label narrows it); `namespace_names`: the objects are namespaces.
pub fn map_params(
    view: &View,
    params: &mut Params,
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
                if namespace_names {
                    *value = view.namespace_label_selector(value, Toward::Storage);
                }
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

/// The storage name of the tenant's namespace `namespace`; a name that
/// cannot be the tenant's is a namespace that does not exist.
pub fn storage_or_not_found(view: &View, namespace: &str) -> Result<String, Status> {
    view.namespace_to_storage(namespace)
        .map_err(|_| status::not_found(&namespace_subject(namespace)))
}

/// Joins path segments, skipping empty ones.
pub fn join(parts: &[&str]) -> String {
    let mut path = String::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if !part.starts_with('/') {
            path.push('/');
        }
        path.push_str(part.trim_end_matches('/'));
    }
    path
}

#[cfg(test)]
mod tests;
