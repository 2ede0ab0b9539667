//! May this user do this? Every request is decided by kube-apiserver's own
//! authorizers through a SubjectAccessReview (delegated authorization), so
//! RBAC stays the one source of truth. A failed review denies (fails closed).

use std::sync::Arc;
use std::time::Duration;

use arktos_crds::status::{self, Subject};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::PostParams;

use crate::authn::UserInfo;
use crate::cache::TtlCache;

/// What is asked, in SubjectAccessReview terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Attributes {
    /// The rule that decides `verb` on the part `sub` of tenant `tenant`
    /// (`tenants/namespaces`, `tenants/clusterroles`, ...): one rule for the
    /// routes and for the reviews that ask about them.
    pub fn on_tenant(verb: &str, sub: &str, tenant: &str) -> Self {
        Self::resource(
            verb,
            arktos_crds::tenant::GROUP,
            arktos_crds::tenant::PLURAL,
            sub,
            tenant,
        )
    }

    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> Self {
        Self::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: String::new(),
            name: name.into(),
        }
    }

    /// The same, asked in namespace `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        if let Self::Resource { namespace: ns, .. } = &mut self {
            *ns = namespace.into();
        }
        self
    }

    /// Anything at all: what a cluster administrator may do.
    pub fn everything() -> Self {
        Self::resource("*", "*", "*", "", "")
    }

    /// The 403 Kubernetes would give.
    pub fn denial(&self, user: &str, reason: &str) -> Status {
        let because = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        match self {
            Self::Resource {
                verb,
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                let what = if subresource.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}/{subresource}")
                };
                let subject = Subject {
                    group,
                    resource,
                    kind: resource,
                    name,
                };
                status::forbidden(
                    &subject,
                    &format!(
                        "User {user:?} cannot {verb} resource {what:?} in API group {group:?} at the cluster scope{because}"
                    ),
                )
            }
            Self::NonResource { verb, path } => status::forbidden_path(user, verb, path),
        }
    }
}

/// Who decides a question about a tenant: the root cluster's authorizers
/// for Arktos' own rules (`tenants` of tenancy.arktos.io and their parts:
/// `use`, `tenants/namespaces`, ...), which live where the Tenants are; the
/// partition's for everything in the tenant's namespaces, whose RBAC is the
/// partition's. For the root partition both are one.
#[derive(Clone)]
pub struct Authorizers {
    pub root: Arc<Authorizer>,
    pub partition: Arc<Authorizer>,
}

impl Authorizers {
    pub fn deciding(&self, attributes: &Attributes) -> &Authorizer {
        match attributes {
            Attributes::Resource {
                group, resource, ..
            } if group == arktos_crds::tenant::GROUP && resource == arktos_crds::tenant::PLURAL => {
                &self.root
            }
            _ => &self.partition,
        }
    }

    pub async fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Result<(), Status> {
        self.deciding(attributes).authorize(user, attributes).await
    }

    pub async fn ask(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Result<(bool, String), Status> {
        self.deciding(attributes).ask(user, attributes).await
    }

    pub async fn wait_until_allowed(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
        within: Duration,
    ) -> bool {
        self.deciding(attributes)
            .wait_until_allowed(user, attributes, within)
            .await
    }
}

pub struct Authorizer {
    client: kube::Client,
    allowed: TtlCache<(UserInfo, Attributes), (bool, String)>,
    /// Denials are kept briefly: a grant made a moment ago must take
    /// effect at once (an owner's first request right after the tenant
    /// controller granted `use`).
    denied: TtlCache<(UserInfo, Attributes), (bool, String)>,
}

impl Authorizer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            allowed: TtlCache::new(Duration::from_secs(10), 20_000),
            denied: TtlCache::new(Duration::from_secs(1), 20_000),
        }
    }

    /// `Ok` when allowed; the 403 (or 503 when no decision could be had)
    /// otherwise.
    pub async fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Result<(), Status> {
        let (allowed, reason) = self.decide(user, attributes).await?;
        if allowed {
            Ok(())
        } else {
            Err(attributes.denial(&user.name, &reason))
        }
    }

    pub async fn allowed(&self, user: &UserInfo, attributes: &Attributes) -> Result<bool, Status> {
        Ok(self.decide(user, attributes).await?.0)
    }

    /// Waits, up to `within`, until kube-apiserver's authorizers allow
    /// `attributes` to `user`; false if they never did. A RoleBinding
    /// written a moment ago takes effect only once kube-apiserver's RBAC
    /// informer has seen it, and a client that was just told "created"
    /// should not then be told "forbidden".
    pub async fn wait_until_allowed(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
        within: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok((true, _)) = self.ask(user, attributes).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn decide(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Result<(bool, String), Status> {
        let key = (user.clone(), attributes.clone());
        if let Some(decision) = self.allowed.get(&key).or_else(|| self.denied.get(&key)) {
            return Ok(decision);
        }
        let decision = self.ask(user, attributes).await?;
        if decision.0 {
            self.allowed.insert(key, decision.clone());
        } else {
            self.denied.insert(key, decision.clone());
        }
        Ok(decision)
    }

    /// One SubjectAccessReview, uncached: the decision and its reason.
    pub async fn ask(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Result<(bool, String), Status> {
        let mut spec = SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            ..Default::default()
        };
        match attributes {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                let some = |s: &String| (!s.is_empty()).then(|| s.clone());
                spec.resource_attributes = Some(ResourceAttributes {
                    verb: Some(verb.clone()),
                    group: Some(group.clone()),
                    resource: Some(resource.clone()),
                    subresource: some(subresource),
                    namespace: some(namespace),
                    name: some(name),
                    ..Default::default()
                })
            }
            Attributes::NonResource { verb, path } => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    verb: Some(verb.clone()),
                    path: Some(path.clone()),
                })
            }
        }
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "SubjectAccessReview failed; denying");
                status::service_unavailable("cannot authorize the request right now")
            })?;
        let status = answer.status.unwrap_or_default();
        Ok((
            status.allowed && status.denied != Some(true),
            status.reason.unwrap_or_default(),
        ))
    }
}
