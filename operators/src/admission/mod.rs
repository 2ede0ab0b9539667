//! Admission webhooks for tenant namespaces: stamping and protecting the
//! tenant label (`/mutate`), what tenants may not do (`/validate`) and the
//! tenant-wide quota (`/quota`). kube-apiserver calls them only for objects
//! in namespaces labelled with a tenant, so an outage never blocks the
//! system tenant.

mod in_cluster;
mod policy;
pub mod serve;
mod tenants;

use std::sync::Arc;
use std::time::Instant;

use arktos_crds::naming::{
    SYSTEM_TENANT, TENANT_LABEL, TenantName, split_storage_namespace, tenant_labels,
};
use arktos_crds::status::{self, Subject};
use arktos_crds::tenant::Tenant;
use json_patch::{AddOperation, Patch as JsonPatch, PatchOperation};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status as KubeStatus};
use serde_json::Value;
use warp::Filter;

use crate::metrics::Metrics;
use crate::quota::ledger::{self, ChargeError, Ledgers};
use crate::quota::usage;
use arktos_crds::tenant::desired;

pub use tenants::Tenants;

/// Identities the policy checks do not apply to: the control plane and
/// the operators themselves (they create what tenants may not).
#[derive(Clone, Debug)]
pub struct Trust {
    /// User names; a trailing `*` matches any suffix.
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Trust {
    fn trusts(&self, user: &str, groups: &[String]) -> bool {
        self.users
            .iter()
            .any(|trusted| match trusted.strip_suffix('*') {
                Some(prefix) => user.starts_with(prefix),
                None => user == trusted,
            })
            || groups.iter().any(|g| self.groups.contains(g))
    }
}

pub struct Admission {
    pub tenants: Tenants,
    pub ledgers: Arc<Ledgers>,
    pub trust: Trust,
    /// The gateway's address for pods: tenant pods' in-cluster config.
    pub tenant_api: Option<std::net::SocketAddr>,
    pub metrics: Arc<Metrics>,
}

type Request = AdmissionRequest<DynamicObject>;

/// The three webhook endpoints.
pub fn routes(admission: Arc<Admission>) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let endpoint = |path: &'static str| {
        let admission = admission.clone();
        warp::post()
            .and(warp::path(path))
            .and(warp::path::end())
            .and(warp::body::content_length_limit(8 << 20))
            .and(warp::body::json())
            .then(move |review: AdmissionReview<DynamicObject>| {
                let admission = admission.clone();
                async move { admission.review(path, review).await }
            })
    };
    endpoint("mutate")
        .or(endpoint("validate"))
        .unify()
        .or(endpoint("quota"))
        .unify()
        .map(|review: AdmissionReview<DynamicObject>| warp::reply::json(&review).into_response())
        .boxed()
}

use warp::Reply;

impl Admission {
    #[tracing::instrument(
        name = "admission",
        skip_all,
        fields(
            webhook = %webhook,
            resource = tracing::field::Empty,
            namespace = tracing::field::Empty,
            name = tracing::field::Empty
        )
    )]
    async fn review(
        &self,
        webhook: &'static str,
        review: AdmissionReview<DynamicObject>,
    ) -> AdmissionReview<DynamicObject> {
        let started = Instant::now();
        let request: Request = match review.try_into() {
            Ok(request) => request,
            Err(err) => return AdmissionResponse::invalid(err.to_string()).into_review(),
        };
        let span = tracing::Span::current();
        span.record("resource", request.resource.resource.as_str());
        span.record(
            "namespace",
            request.namespace.as_deref().unwrap_or_default(),
        );
        span.record("name", request.name.as_str());
        let response = match webhook {
            "mutate" => self.mutate(&request).await,
            "validate" => self.validate(&request).await,
            _ => self.quota(&request).await,
        };
        if !response.allowed {
            tracing::info!(
                webhook,
                operation = ?request.operation,
                resource = %request.resource.resource,
                namespace = request.namespace.as_deref().unwrap_or_default(),
                name = %request.name,
                user = request.user_info.username.as_deref().unwrap_or_default(),
                message = %response.result.message,
                "denied"
            );
        }
        self.metrics
            .admitted(webhook, response.allowed, started.elapsed());
        response.into_review()
    }

    /// Stamps the tenant's labels (`tenant_labels`) on every new object of
    /// a tenant namespace, and a new namespace's Pod Security labels.
    async fn mutate(&self, request: &Request) -> AdmissionResponse {
        let allowed = AdmissionResponse::from(request);
        let (Some(tenant), Some(object)) = (tenant_of(request), request.object.as_ref()) else {
            return allowed;
        };
        let mut labels: Vec<(String, String)> = tenant_labels(tenant.as_str())
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
        if is_namespace(request)
            && let Ok(Some(found)) = self.tenants.get(tenant.as_str()).await
        {
            labels = desired::namespace_labels(&found).into_iter().collect();
        }
        let current = object.metadata.labels.clone().unwrap_or_default();
        let mut operations = Vec::new();
        if object.metadata.labels.is_none() {
            operations.push(add("/metadata/labels", Value::Object(Default::default())));
        }
        for (key, value) in labels {
            if current.get(&key) != Some(&value) {
                let path = format!(
                    "/metadata/labels/{}",
                    key.replace('~', "~0").replace('/', "~1")
                );
                operations.push(add(&path, Value::String(value)));
            }
        }
        if let Some(gateway) = self.tenant_api
            && is_pod(request)
        {
            let pod = to_value(object);
            operations.extend(in_cluster::env_patch(&pod, gateway));
            if let Some((_, namespace)) = request
                .namespace
                .as_deref()
                .and_then(split_storage_namespace)
            {
                operations.extend(in_cluster::namespace_patch(&pod, namespace));
            }
        }
        if operations.is_empty() {
            return allowed;
        }
        match allowed.clone().with_patch(JsonPatch(operations)) {
            Ok(patched) => patched,
            Err(err) => deny(
                request,
                status::internal(&format!("building the label patch: {err}")),
            ),
        }
    }

    /// What tenants may not do, and no new objects in a Terminating tenant.
    async fn validate(&self, request: &Request) -> AdmissionResponse {
        let Some(tenant) = tenant_of(request) else {
            return AdmissionResponse::from(request);
        };
        if request.operation == Operation::Create
            && let Err(denied) = self.active_tenant(request, &tenant).await
        {
            return *denied;
        }
        let user = request.user_info.username.as_deref().unwrap_or_default();
        let groups = request.user_info.groups.clone().unwrap_or_default();
        if self.trust.trusts(user, &groups) {
            return AdmissionResponse::from(request);
        }
        let object = request.object.as_ref().map(to_value);
        let old = request.old_object.as_ref().map(to_value);
        let mut violations = protected_changes(request, old.as_ref(), object.as_ref());
        violations.extend(policy::bucket_change(
            &tenant,
            old.as_ref(),
            object.as_ref(),
        ));
        if let Some(object) = &object {
            violations.extend(self.node_targeting(request, &tenant, object).await);
        }
        violations.extend(self.resource_rules(request, &tenant, object.as_ref()).await);
        if violations.is_empty() {
            return AdmissionResponse::from(request);
        }
        deny(
            request,
            status::forbidden(
                &subject(request),
                &format!("tenant {}: {}", tenant.as_str(), violations.join("; ")),
            ),
        )
    }

    /// Pods (and pod templates) created naming their node, unless the
    /// Tenant allows node targeting.
    async fn node_targeting(
        &self,
        request: &Request,
        tenant: &TenantName,
        object: &Value,
    ) -> Vec<String> {
        let group = request.resource.group.as_str();
        let Some(pointer) = policy::pod_spec_pointer(group, &request.resource.resource) else {
            return Vec::new();
        };
        let Some(spec) = object.pointer(pointer) else {
            return Vec::new();
        };
        if request.operation != Operation::Create {
            return Vec::new();
        }
        let targeting = policy::node_targeting(spec, &field_path(pointer));
        if targeting.is_empty() {
            return targeting;
        }
        match self.tenants.get(tenant.as_str()).await {
            Ok(Some(t)) if t.spec.node_targeting => Vec::new(),
            _ => targeting,
        }
    }

    /// The rules of each kind tenants write: pods, Services, RoleBindings,
    /// and the objects only the platform team sets.
    async fn resource_rules(
        &self,
        request: &Request,
        tenant: &TenantName,
        object: Option<&Value>,
    ) -> Vec<String> {
        let group = request.resource.group.as_str();
        match (group, request.resource.resource.as_str(), object) {
            ("", "pods", Some(pod)) => policy::pod(pod),
            ("", "services", Some(service)) => {
                let exposure = match self.tenants.get(tenant.as_str()).await {
                    Ok(Some(t)) => t.spec.service_exposure,
                    _ => Default::default(),
                };
                policy::service(service, &exposure)
            }
            ("rbac.authorization.k8s.io", "rolebindings", Some(binding)) => {
                policy::role_binding(binding, tenant)
            }
            ("", "resourcequotas" | "limitranges", _) => vec![format!(
                "{} are set by the platform team; tenants may not create, change or delete them",
                request.resource.resource
            )],
            _ => Vec::new(),
        }
    }

    /// Charges a create against the tenant-wide quota, atomically.
    async fn quota(&self, request: &Request) -> AdmissionResponse {
        let (Some(tenant), Some(object)) = (tenant_of(request), request.object.as_ref()) else {
            return AdmissionResponse::from(request);
        };
        let Some(counted) = usage::counted(&request.resource.group, &request.resource.resource)
        else {
            return AdmissionResponse::from(request);
        };
        if request.operation != Operation::Create {
            return AdmissionResponse::from(request);
        }
        let found = match self.active_tenant(request, &tenant).await {
            Ok(found) => found,
            Err(denied) => return *denied,
        };
        let hard = found
            .spec
            .quota
            .as_ref()
            .map(|q| q.hard.clone())
            .unwrap_or_default();
        let limits = ledger::limits(&hard);
        let value = to_value(object);
        let charge = ledger::charge_of(counted, &value, &limits, true);
        if charge.usage.is_empty() {
            return AdmissionResponse::from(request);
        }
        if counted.plural == "pods" {
            let keys: Vec<&String> = limits.keys().collect();
            if let Some(missing) = usage::unspecified(&value, &keys) {
                return deny(
                    request,
                    status::forbidden(
                        &subject(request),
                        &format!(
                            "tenant {}: failed quota: must specify {} for: {}",
                            tenant.as_str(),
                            missing.keys.join(","),
                            missing.containers.join(",")
                        ),
                    ),
                );
            }
        }
        let key = ledger::key_of(counted, &value);
        match self
            .ledgers
            .charge(tenant.as_str(), &limits, &key, charge, request.dry_run)
            .await
        {
            Ok(()) => AdmissionResponse::from(request),
            Err(ChargeError::Exceeded(excess)) => deny(
                request,
                status::quota_exceeded(&subject(request), tenant.as_str(), &excess),
            ),
            Err(err) => deny(
                request,
                status::internal(&format!("tenant-wide quota: {err}")),
            ),
        }
    }

    /// The Tenant of a create, which must exist and not be Terminating.
    async fn active_tenant(
        &self,
        request: &Request,
        tenant: &TenantName,
    ) -> Result<Arc<Tenant>, Box<AdmissionResponse>> {
        let refuse = |why: String| {
            Err(Box::new(deny(
                request,
                status::forbidden(&subject(request), &why),
            )))
        };
        match self.tenants.get(tenant.as_str()).await {
            Ok(Some(found)) if found.metadata.deletion_timestamp.is_some() => refuse(format!(
                "tenant {} is being deleted: it accepts no new objects",
                tenant.as_str()
            )),
            Ok(Some(found)) => Ok(found),
            Ok(None) => refuse(format!("tenant {} does not exist", tenant.as_str())),
            Err(err) => Err(Box::new(deny(
                request,
                status::service_unavailable(&format!(
                    "cannot read tenant {}: {err}",
                    tenant.as_str()
                )),
            ))),
        }
    }
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: path.parse().unwrap_or_default(),
        value,
    })
}

fn is_pod(request: &Request) -> bool {
    request.resource.group.is_empty()
        && request.resource.resource == "pods"
        && request.sub_resource.is_none()
}

fn is_namespace(request: &Request) -> bool {
    request.resource.group.is_empty() && request.resource.resource == "namespaces"
}

/// The tenant whose namespace the request is about, by the one name mapping.
/// Changes to what Arktos keeps: the tenant label (and a namespace's Pod
/// Security labels), and objects the operators manage.
fn protected_changes(
    request: &Request,
    old: Option<&Value>,
    object: Option<&Value>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let namespace = is_namespace(request);
    if let (Some(old), Some(object)) = (old, object) {
        violations.extend(policy::changed_labels(old, object, |key| {
            key == TENANT_LABEL || (namespace && key.starts_with("pod-security.kubernetes.io/"))
        }));
    }
    let managed = old.is_some_and(|old| {
        old.pointer(&format!(
            "/metadata/labels/{}",
            desired::MANAGED_BY.0.replace('/', "~1")
        ))
        .and_then(Value::as_str)
            == Some(desired::MANAGED_BY.1)
    });
    if managed && matches!(request.operation, Operation::Update | Operation::Delete) {
        violations.push(
            "the object is kept by arktos-operators; tenants may not change or delete it".into(),
        );
    }
    violations
}

fn tenant_of(request: &Request) -> Option<TenantName> {
    let home = if is_namespace(request) {
        request.name.clone()
    } else {
        request.namespace.clone()?
    };
    let (tenant, _) = split_storage_namespace(&home)?;
    let tenant = TenantName::new(tenant).ok()?;
    (tenant.as_str() != SYSTEM_TENANT).then_some(tenant)
}

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

fn subject(request: &Request) -> Subject<'_> {
    Subject {
        group: &request.resource.group,
        resource: &request.resource.resource,
        kind: &request.kind.kind,
        name: &request.name,
    }
}

/// A denial carrying the Status from the one Status builder.
fn deny(
    request: &Request,
    status: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request);
    response.allowed = false;
    response.result = serde_json::to_value(status)
        .and_then(serde_json::from_value::<KubeStatus>)
        .unwrap_or_else(|err| KubeStatus::failure(&err.to_string(), "InternalError"));
    response
}

/// `/spec/template/spec` as a field path: `spec.template.spec`.
fn field_path(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_by_exact_name_prefix_or_group() {
        let trust = Trust {
            users: vec!["system:serviceaccount:kube-system:*".into(), "op".into()],
            groups: vec!["system:masters".into()],
        };
        assert!(trust.trusts(
            "system:serviceaccount:kube-system:namespace-controller",
            &[]
        ));
        assert!(trust.trusts("op", &[]));
        assert!(!trust.trusts("op2", &[]));
        assert!(trust.trusts("root", &["system:masters".into()]));
        assert!(!trust.trusts("alice", &["system:authenticated".into()]));
    }
}
