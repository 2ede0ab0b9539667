//! The questions users ask about themselves on a tenant's route: `kubectl
//! auth can-i` (SelfSubjectAccessReview), `auth can-i --list`
//! (SelfSubjectRulesReview) and `auth whoami` (SelfSubjectReview). Each is
//! answered as the tenant's API treats the user, not as the cluster does
//! (docs/tenant-routes.md, "What a tenant can ask about itself").

use arktos_crds::status;
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Value, json};
use warp::reply::Response;

use super::backend::Outgoing;
use super::catalog::{Catalog, TENANT_SCOPED};
use super::mapping::View;
use super::path::ResourcePath;
use super::{TenantRoutes, protobuf};
use crate::authn::UserInfo;
use crate::authz::Attributes;
use crate::request::ApiRequest;
use crate::respond;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfReview {
    /// SelfSubjectAccessReview: may I do this?
    Access,
    /// SelfSubjectRulesReview: what may I do in this namespace?
    Rules,
    /// SelfSubjectReview: who am I?
    Whoami,
}

impl SelfReview {
    /// The review `r` names, if it names one (always cluster-wide).
    pub fn of(r: &ResourcePath) -> Option<Self> {
        if r.namespace.is_some() || r.name.is_some() || r.subresource.is_some() {
            return None;
        }
        match (r.group.as_str(), r.resource.as_str()) {
            ("authorization.k8s.io", "selfsubjectaccessreviews") => Some(Self::Access),
            ("authorization.k8s.io", "selfsubjectrulesreviews") => Some(Self::Rules),
            ("authentication.k8s.io", "selfsubjectreviews") => Some(Self::Whoami),
            _ => None,
        }
    }
}

/// What a SelfSubjectAccessReview asks, in the tenant's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    /// The tenant's API answers no whoever asks; the reason says why.
    No(String),
    /// The tenant's API answers yes to every user of the tenant.
    Yes(String),
    /// As kube-apiserver's authorizers answer this.
    Ask(Attributes),
    /// Yes when kube-apiserver's authorizers allow it in each of the
    /// tenant's namespaces: "in all namespaces", inside a tenant.
    InEachNamespace(Attributes),
}

/// The question a SelfSubjectAccessReview's `spec` asks of tenant `view`,
/// given what the tenant's API serves (`catalog`).
pub fn access_question(view: &View, catalog: &Catalog, spec: &Value) -> Question {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    if let Some(asked) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Question::Ask(Attributes::NonResource {
            verb: text(asked, "verb"),
            path: text(asked, "path"),
        });
    }
    let asked = &spec["resourceAttributes"];
    let (verb, group, resource) = (
        text(asked, "verb"),
        text(asked, "group"),
        text(asked, "resource"),
    );
    let (subresource, name, namespace) = (
        text(asked, "subresource"),
        text(asked, "name"),
        text(asked, "namespace"),
    );
    let tenant = view.tenant().as_str();
    if group.is_empty() && resource == "namespaces" {
        // Every change to a tenant's namespaces is decided by this one
        // rule (see `TenantRoutes::namespaces`).
        return Question::Ask(Attributes::on_tenant(&verb, "namespaces", tenant));
    }
    let full = if subresource.is_empty() {
        resource.clone()
    } else {
        format!("{resource}/{subresource}")
    };
    let Some(entry) = catalog.find(&group, &full) else {
        return Question::No(format!(
            "{full} of group {group:?} is not served in tenant {tenant}"
        ));
    };
    if Catalog::self_review(&group, &resource) {
        return if verb == "create" {
            Question::Yes("every user may ask about themselves".into())
        } else {
            Question::No("reviews are only created".into())
        };
    }
    if Catalog::shared_read_only(&group, &resource) {
        return if matches!(verb.as_str(), "get" | "list" | "watch") {
            Question::Yes(format!("{resource} are shared read-only with every tenant"))
        } else {
            Question::No(format!("{resource} are read-only in a tenant"))
        };
    }
    if TENANT_SCOPED.contains(&(group.as_str(), resource.as_str())) {
        // A tenant's own ClusterRoles, bindings and CRDs: decided as the
        // routes decide them.
        return Question::Ask(Attributes::on_tenant(&verb, &resource, tenant));
    }
    let own = view.owns_group(&group);
    if !entry.namespaced && !own {
        return Question::No(format!("{full} is cluster-scoped and not a tenant's"));
    }
    let group = if own {
        view.tenant().storage_group(&group).unwrap_or(group)
    } else {
        group
    };
    let attributes = Attributes::resource(&verb, &group, &resource, &subresource, &name);
    if !entry.namespaced {
        // Of the tenant's own CRDs: its group is the tenant's alone.
        return Question::Ask(attributes);
    }
    if namespace.is_empty() {
        return Question::InEachNamespace(attributes);
    }
    match view.namespace_to_storage(&namespace) {
        Ok(storage) => Question::Ask(attributes.in_namespace(&storage)),
        Err(_) => Question::No(format!("{namespace:?} cannot be a namespace of the tenant")),
    }
}

/// The review's body as JSON, from JSON or protobuf.
fn read_review(request: &ApiRequest) -> Result<Value, Status> {
    let content_type = request.content_type();
    let review = if content_type == protobuf::CONTENT_TYPE {
        protobuf::self_review_as_json(&request.body)?
    } else if content_type.is_empty() || content_type == "application/json" {
        serde_json::from_slice(&request.body)
            .map_err(|e| status::bad_request(&format!("the review is not valid JSON: {e}")))?
    } else {
        return Err(status::unsupported_media_type(&content_type));
    };
    if review.is_object() {
        Ok(review)
    } else {
        Err(status::bad_request("the review must be an object"))
    }
}

impl TenantRoutes {
    /// Answers a self review of `kind` for `user` on tenant `view`.
    pub(super) async fn self_review(
        &self,
        user: &UserInfo,
        view: &View,
        kind: SelfReview,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let mut review = read_review(request)?;
        review["metadata"] = json!({"creationTimestamp": null});
        match kind {
            SelfReview::Whoami => {
                review["apiVersion"] = "authentication.k8s.io/v1".into();
                review["kind"] = "SelfSubjectReview".into();
                // A tenant's service accounts by their names in the tenant.
                let groups: Vec<String> = user.groups.iter().map(|g| view.text(g)).collect();
                review["status"] = json!({"userInfo": {
                    "username": view.text(&user.name), "uid": user.uid,
                    "groups": groups, "extra": user.extra,
                }});
            }
            SelfReview::Access => {
                review["apiVersion"] = "authorization.k8s.io/v1".into();
                review["kind"] = "SelfSubjectAccessReview".into();
                let catalog = self.catalog.view(view.tenant().as_str(), false).await?;
                let view = view.with_groups(catalog.own_groups(view.tenant().as_str()));
                let question = access_question(&view, &catalog, &review["spec"]);
                let (allowed, reason) = self.answer(user, &view, question).await?;
                review["status"] = json!({"allowed": allowed, "reason": reason});
            }
            SelfReview::Rules => return self.rules_review(user, view, review).await,
        }
        Ok(respond::json(StatusCode::CREATED, &review))
    }

    async fn answer(
        &self,
        user: &UserInfo,
        view: &View,
        question: Question,
    ) -> Result<(bool, String), Status> {
        match question {
            Question::No(reason) => Ok((false, reason)),
            Question::Yes(reason) => Ok((true, reason)),
            Question::Ask(attributes) => {
                let (allowed, reason) = self.authz.ask(user, &attributes).await?;
                Ok((allowed, view.text(&reason)))
            }
            Question::InEachNamespace(attributes) => {
                for namespace in self.storage_namespaces(view).await? {
                    let (allowed, reason) = self
                        .authz
                        .ask(user, &attributes.clone().in_namespace(&namespace))
                        .await?;
                    if !allowed {
                        let tenant_name = view.namespace_to_tenant(&namespace).unwrap_or_default();
                        return Ok((
                            false,
                            format!("not in namespace {tenant_name}; {}", view.text(&reason)),
                        ));
                    }
                }
                Ok((true, "in each of the tenant's namespaces".into()))
            }
        }
    }

    /// What the user may do in one of the tenant's namespaces, as
    /// kube-apiserver's authorizers list it for that namespace as stored.
    async fn rules_review(
        &self,
        user: &UserInfo,
        view: &View,
        mut review: Value,
    ) -> Result<Response, Status> {
        let namespace = review["spec"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if namespace.is_empty() {
            return Err(status::bad_request("spec.namespace is required"));
        }
        review["apiVersion"] = "authorization.k8s.io/v1".into();
        review["kind"] = "SelfSubjectRulesReview".into();
        review["spec"]["namespace"] = view.namespace_to_storage(&namespace)?.into();
        let body = serde_json::to_vec(&review).map_err(|e| status::internal(&e.to_string()))?;
        let outgoing = Outgoing::write(
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews".into(),
            "application/json",
            body,
            Some(user),
        );
        let (code, mut answer) = self.backend.json(outgoing).await?;
        if let Some(error) = answer
            .pointer("/status/evaluationError")
            .and_then(Value::as_str)
        {
            answer["status"]["evaluationError"] = view.text(error).into();
        }
        if answer["spec"].is_object() {
            answer["spec"]["namespace"] = namespace.into();
        } else {
            view.response(&mut answer);
        }
        Ok(respond::json(code, &answer))
    }
}

#[cfg(test)]
mod tests {
    use arktos_crds::naming::TenantName;

    use super::*;

    fn acme() -> View {
        View::new(TenantName::new("acme").unwrap())
    }

    fn catalog() -> Catalog {
        let resource = |name: &str, scope: &str| json!({"resource": name, "scope": scope, "verbs": ["get", "list", "create"]});
        let core = json!({"items": [{"metadata": {"name": ""}, "versions": [{"version": "v1", "resources": [
            resource("pods", "Namespaced"), resource("nodes", "Cluster"), resource("namespaces", "Cluster")]}]}]});
        let groups = json!({"items": [
            {"metadata": {"name": "storage.k8s.io"}, "versions": [{"version": "v1", "resources": [resource("storageclasses", "Cluster")]}]},
            {"metadata": {"name": "authorization.k8s.io"}, "versions": [{"version": "v1", "resources": [
                resource("selfsubjectaccessreviews", "Cluster"), resource("localsubjectaccessreviews", "Namespaced")]}]},
        ]});
        Catalog::from_discovery(&core, &groups)
    }

    fn ask(attributes: Value) -> Question {
        access_question(
            &acme(),
            &catalog(),
            &json!({"resourceAttributes": attributes}),
        )
    }

    #[test]
    fn a_namespaced_question_is_asked_in_the_namespace_as_stored() {
        assert_eq!(
            ask(json!({"verb": "create", "resource": "pods", "namespace": "web"})),
            Question::Ask(
                Attributes::resource("create", "", "pods", "", "").in_namespace("acme--web")
            )
        );
    }

    #[test]
    fn all_namespaces_means_each_of_the_tenants() {
        assert_eq!(
            ask(json!({"verb": "list", "resource": "pods"})),
            Question::InEachNamespace(Attributes::resource("list", "", "pods", "", ""))
        );
    }

    #[test]
    fn namespaces_are_decided_by_the_tenants_namespaces_rule() {
        assert_eq!(
            ask(json!({"verb": "delete", "resource": "namespaces", "name": "web"})),
            Question::Ask(Attributes::on_tenant("delete", "namespaces", "acme"))
        );
    }

    #[test]
    fn what_a_tenant_does_not_serve_is_no_whoever_asks() {
        for (attributes, why) in [
            (json!({"verb": "get", "resource": "nodes"}), "not served"),
            (
                json!({"verb": "create", "group": "authorization.k8s.io", "resource": "localsubjectaccessreviews", "namespace": "web"}),
                "not served",
            ),
            (
                json!({"verb": "delete", "group": "storage.k8s.io", "resource": "storageclasses"}),
                "read-only",
            ),
            (
                json!({"verb": "get", "resource": "pods", "namespace": "Not_A_Name"}),
                "cannot be a namespace",
            ),
        ] {
            match ask(attributes.clone()) {
                Question::No(reason) => assert!(reason.contains(why), "{attributes}: {reason}"),
                other => panic!("{attributes}: {other:?}"),
            }
        }
    }

    #[test]
    fn shared_objects_and_self_reviews_are_open_to_every_tenant_user() {
        assert!(matches!(
            ask(json!({"verb": "list", "group": "storage.k8s.io", "resource": "storageclasses"})),
            Question::Yes(_)
        ));
        assert!(matches!(
            ask(
                json!({"verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectaccessreviews"})
            ),
            Question::Yes(_)
        ));
    }

    #[test]
    fn a_tenants_own_kinds_and_groups_are_asked_as_stored() {
        let mut catalog = catalog();
        let rbac = ("rbac.authorization.k8s.io".to_string(), "v1".to_string());
        let widgets = ("example.com".to_string(), "v1".to_string());
        let entry = |namespaced| crate::tenant_routes::catalog::Resource {
            namespaced,
            kind: String::new(),
            verbs: vec![],
        };
        catalog
            .versions
            .entry(rbac)
            .or_default()
            .insert("clusterroles".into(), entry(false));
        catalog
            .versions
            .entry(widgets)
            .or_default()
            .insert("widgets".into(), entry(true));
        let view = acme().with_groups(vec!["example.com".into()]);
        let ask = |attributes: Value| {
            access_question(&view, &catalog, &json!({"resourceAttributes": attributes}))
        };
        assert_eq!(
            ask(
                json!({"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterroles"})
            ),
            Question::Ask(Attributes::on_tenant("create", "clusterroles", "acme"))
        );
        assert_eq!(
            ask(
                json!({"verb": "list", "group": "example.com", "resource": "widgets", "namespace": "web"})
            ),
            Question::Ask(
                Attributes::resource(
                    "list",
                    "example.com.acme.tenants.arktos.io",
                    "widgets",
                    "",
                    ""
                )
                .in_namespace("acme--web")
            )
        );
    }

    #[test]
    fn non_resource_questions_go_to_the_authorizers() {
        let spec = json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
        assert_eq!(
            access_question(&acme(), &catalog(), &spec),
            Question::Ask(Attributes::NonResource {
                verb: "get".into(),
                path: "/healthz".into()
            })
        );
    }
}
