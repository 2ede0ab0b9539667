//! The tenant's view of names, applied both ways: a tenant's namespace
//! `web` is the cluster's `acme--web`. Paths, request bodies, answers,
//! watch events, errors, field selectors and continue tokens all pass
//! through here, so a tenant never sees a storage name and cannot name
//! another tenant's namespace: every namespace a tenant writes is mapped
//! into its own prefix.

use arktos_crds::naming::{
    NAMESPACE_NAME_LABEL, SHARED_CLUSTER_ROLES, TENANT_LABEL, TenantName, tenant_labels,
};
use arktos_crds::status;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;

use super::selectors::Toward;

/// Keys whose value is a namespace name, inside objects that reference
/// other objects (RBAC subjects, events).
const REFERENCE_KEYS: &[&str] = &["subjects", "involvedObject", "regarding", "related"];

pub struct View {
    tenant: TenantName,
    prefix: String,
    /// The API groups of the tenant's own CustomResourceDefinitions, as
    /// it names them.
    groups: Vec<String>,
    /// What those groups end with as stored (`.acme.tenants.arktos.io`).
    group_suffix: String,
}

impl View {
    pub fn new(tenant: TenantName) -> Self {
        let prefix = tenant.storage_prefix();
        let group_suffix = tenant
            .storage_group("x.y")
            .map(|g| g["x.y".len()..].to_string())
            .unwrap_or_default();
        Self {
            tenant,
            prefix,
            groups: Vec::new(),
            group_suffix,
        }
    }

    /// The same view, knowing the tenant's own API groups.
    pub fn with_groups(&self, groups: Vec<String>) -> Self {
        Self {
            tenant: self.tenant.clone(),
            prefix: self.prefix.clone(),
            groups,
            group_suffix: self.group_suffix.clone(),
        }
    }

    /// Whether `group` (as the tenant names it) is one of its own.
    pub fn owns_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// An `apiVersion` the tenant wrote, in storage terms.
    fn api_version_to_storage(&self, api_version: &str) -> Option<String> {
        let (group, version) = api_version.split_once('/')?;
        self.owns_group(group)
            .then(|| format!("{group}{}/{version}", self.group_suffix))
    }

    /// A stored `apiVersion`, in the tenant's terms.
    fn api_version_to_tenant(&self, api_version: &str) -> Option<String> {
        let (group, version) = api_version.split_once('/')?;
        let group = group.strip_suffix(self.group_suffix.as_str())?;
        Some(format!("{group}/{version}"))
    }

    /// Maps the API groups named by an RBAC role's rules with `map`.
    fn map_rule_groups(value: &mut Value, map: &dyn Fn(&str) -> Option<String>) {
        let rules = value.get_mut("rules").and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten() {
            let groups = rule.get_mut("apiGroups").and_then(Value::as_array_mut);
            for group in groups.into_iter().flatten() {
                if let Some(mapped) = group.as_str().and_then(map) {
                    *group = mapped.into();
                }
            }
        }
    }

    /// Maps every `apiVersion` of an object (its own, its owners', its
    /// managed fields') with `map`.
    fn map_api_versions(value: &mut Value, map: &dyn Fn(&str) -> Option<String>) {
        let mut one = |item: &mut Value| {
            if let Some(mapped) = item.get("apiVersion").and_then(Value::as_str).and_then(map) {
                item["apiVersion"] = mapped.into();
            }
        };
        if !value.is_object() {
            return;
        }
        one(value);
        for key in ["ownerReferences", "managedFields"] {
            if let Some(items) = value
                .get_mut("metadata")
                .and_then(|m| m.get_mut(key))
                .and_then(Value::as_array_mut)
            {
                items.iter_mut().for_each(&mut one);
            }
        }
    }

    pub fn tenant(&self) -> &TenantName {
        &self.tenant
    }

    /// The storage name of the tenant's namespace; a name that cannot be a
    /// tenant namespace is a 422 naming the limit.
    pub fn namespace_to_storage(&self, namespace: &str) -> Result<String, Status> {
        self.tenant
            .storage_namespace(namespace)
            .map(|ns| ns.as_str().to_string())
            .map_err(|err| {
                status::invalid(
                    &namespace_subject(namespace),
                    &[status::FieldError::new(
                        "metadata.name",
                        status::FieldErrorType::Invalid,
                        err.to_string(),
                    )
                    .with_value(namespace)],
                )
            })
    }

    /// The tenant's name for a storage namespace, if it is the tenant's.
    pub fn namespace_to_tenant<'a>(&self, storage: &'a str) -> Option<&'a str> {
        self.tenant.tenant_namespace(storage)
    }

    /// The label selector term that narrows a cluster-wide list to the tenant.
    pub fn label_term(&self) -> String {
        format!("{TENANT_LABEL}={}", self.tenant)
    }

    /// Rewrites a request body into storage terms, and stamps the tenant
    /// label on the object.
    pub fn request_body(&self, value: &mut Value, is_namespace: bool) -> Result<(), Status> {
        if !self.groups.is_empty() {
            Self::map_api_versions(value, &|v| self.api_version_to_storage(v));
            Self::map_rule_groups(value, &|g| {
                self.owns_group(g)
                    .then(|| format!("{g}{}", self.group_suffix))
            });
        }
        let Some(object) = value.as_object_mut() else {
            return Ok(());
        };
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(ns) = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
            {
                let mapped = self.namespace_to_storage(ns)?;
                metadata.insert("namespace".into(), mapped.into());
            }
            if is_namespace && let Some(name) = metadata.get("name").and_then(Value::as_str) {
                let mapped = self.namespace_to_storage(name)?;
                metadata.insert("name".into(), mapped.into());
            }
            if !self.tenant.is_system() {
                let labels = metadata
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(labels) = labels.as_object_mut() {
                    for (key, value) in tenant_labels(self.tenant.as_str()) {
                        labels.insert(key.into(), value.into());
                    }
                }
            }
        }
        for key in REFERENCE_KEYS {
            self.map_references(object.get_mut(*key), &mut |ns| {
                self.namespace_to_storage(ns)
            })?;
        }
        self.namespace_selectors_outside_items(object, Toward::Storage);
        if let Some(role) = bound_cluster_role(object).map(str::to_string) {
            object["roleRef"]["name"] = self.cluster_role_to_storage(&role)?.into();
        }
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                self.request_body(item, is_namespace)?;
            }
        }
        Ok(())
    }

    fn map_references(
        &self,
        value: Option<&mut Value>,
        map: &mut dyn FnMut(&str) -> Result<String, Status>,
    ) -> Result<(), Status> {
        let Some(value) = value else { return Ok(()) };
        let targets: Vec<&mut Value> = match value {
            Value::Array(items) => items.iter_mut().collect(),
            other => vec![other],
        };
        for target in targets {
            if let Some(ns) = target
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
            {
                let mapped = map(ns)?;
                target["namespace"] = mapped.into();
            }
        }
        Ok(())
    }

    /// Rewrites an answer (object, list, Table, watch event, Status) into
    /// the tenant's terms. Items of other namespaces are dropped (they
    /// cannot be the tenant's); returns false when a single object is not
    /// the tenant's at all.
    pub fn response(&self, value: &mut Value) -> bool {
        self.answer(value, false)
    }

    /// As `response`, for answers about namespaces themselves: Table rows
    /// and partial metadata name namespaces too.
    pub fn namespace_response(&self, value: &mut Value) -> bool {
        self.answer(value, true)
    }

    fn answer(&self, value: &mut Value, namespaces: bool) -> bool {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind == "Status" {
            self.status(value);
            return true;
        }
        if kind == "Table" {
            if let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut) {
                rows.retain_mut(|row| self.table_row(row, namespaces));
            }
            return true;
        }
        if value.get("type").is_some()
            && value.get("object").is_some()
            && value.get("kind").is_none()
        {
            // A bookmark names no object, only a resourceVersion (and the
            // end of a watch-list's initial events): it passes as it is.
            if value["type"] == "BOOKMARK" {
                return true;
            }
            return self.answer(&mut value["object"], namespaces);
        }
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            items.retain_mut(|item| self.answer(item, namespaces));
            if !self.group_suffix.is_empty() {
                Self::map_api_versions(value, &|v| self.api_version_to_tenant(v));
            }
            if let Some(token) = value.pointer("/metadata/continue").and_then(Value::as_str) {
                let token = self.continue_to_tenant(token);
                value["metadata"]["continue"] = token.into();
            }
            return true;
        }
        // List items carry no kind; in an answer about namespaces they are namespaces.
        let is_namespace = kind == "Namespace"
            || (namespaces && (kind.is_empty() || kind == "PartialObjectMetadata"));
        self.object(value, is_namespace)
    }

    /// One row of a Table; `false` drops it (not the tenant's).
    fn table_row(&self, row: &mut Value, namespaces: bool) -> bool {
        // Cells are text the cluster wrote (an event's message names the
        // pod as `acme--web/vm1`).
        for cell in row
            .get_mut("cells")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .skip(usize::from(namespaces))
        {
            if let Value::String(text) = cell {
                *text = self.text(text);
            }
        }
        if namespaces
            && let Some(Value::String(name)) = row.get_mut("cells").and_then(|c| c.get_mut(0))
        {
            match self.namespace_to_tenant(name) {
                Some(mine) => *name = mine.to_string(),
                None => return false,
            }
        }
        row.get_mut("object")
            .is_none_or(|object| self.answer(object, namespaces))
    }

    /// One object; `false` drops it (not the tenant's).
    fn object(&self, value: &mut Value, is_namespace: bool) -> bool {
        if !self.group_suffix.is_empty() {
            Self::map_api_versions(value, &|v| self.api_version_to_tenant(v));
            Self::map_rule_groups(value, &|g| {
                g.strip_suffix(self.group_suffix.as_str())
                    .map(str::to_string)
            });
        }
        let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
            return true;
        };
        if is_namespace {
            let Some(name) = metadata.get("name").and_then(Value::as_str) else {
                return false;
            };
            let Some(mine) = self.namespace_to_tenant(name) else {
                return false;
            };
            let mine = mine.to_string();
            // kube-apiserver labels each namespace with its own name.
            if let Some(label) = metadata
                .get_mut("labels")
                .and_then(|l| l.get_mut(NAMESPACE_NAME_LABEL))
            {
                *label = mine.clone().into();
            }
            metadata.insert("name".into(), mine.into());
        }
        if let Some(ns) = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
        {
            let Some(mine) = self.namespace_to_tenant(ns) else {
                return false;
            };
            let mine = mine.to_string();
            metadata.insert("namespace".into(), mine.into());
        }
        if let Some(object) = value.as_object_mut() {
            // Events: the kubelet and the scheduler name pods by their
            // storage namespace in the text (`Successfully assigned
            // acme--demo/vm1`, `pod "vm1_acme--demo(..)"`).
            if object.contains_key("involvedObject") || object.contains_key("regarding") {
                for key in ["message", "note"] {
                    if let Some(Value::String(text)) = object.get_mut(key) {
                        *text = self.text(text);
                    }
                }
            }
            for key in REFERENCE_KEYS {
                let _ = self.map_references(object.get_mut(*key), &mut |ns| {
                    Ok(self
                        .namespace_to_tenant(ns)
                        .map(str::to_string)
                        .unwrap_or_else(|| "<other>".into()))
                });
            }
            self.namespace_selectors_outside_items(object, Toward::Tenant);
            if let Some(role) = bound_cluster_role(object)
                && let Some(mine) = self.tenant.tenant_cluster_object(role)
                && !self.tenant.is_system()
            {
                let mine = mine.to_string();
                object["roleRef"]["name"] = mine.into();
            }
        }
        true
    }

    fn status(&self, value: &mut Value) {
        if let Some(message) = value.get("message").and_then(Value::as_str) {
            value["message"] = self.text(message).into();
        }
        if let Some(name) = value.pointer("/details/name").and_then(Value::as_str) {
            value["details"]["name"] = self.text(name).into();
        }
        for cause in value
            .pointer_mut("/details/causes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(message) = cause.get("message").and_then(Value::as_str) {
                cause["message"] = self.text(message).into();
            }
        }
    }

    /// The stored name of a ClusterRole the tenant names: its own under
    /// its prefix, the cluster's shared ones as they are.
    pub fn cluster_role_to_storage(&self, name: &str) -> Result<String, Status> {
        if SHARED_CLUSTER_ROLES.contains(&name) {
            return Ok(name.to_string());
        }
        self.tenant.storage_cluster_object(name).map_err(|err| {
            status::invalid(
                &status::Subject {
                    group: "rbac.authorization.k8s.io",
                    resource: "clusterroles",
                    kind: "ClusterRole",
                    name,
                },
                &[status::FieldError::new(
                    "roleRef.name",
                    status::FieldErrorType::Invalid,
                    err.to_string(),
                )
                .with_value(name)],
            )
        })
    }

    /// The prefix of the tenant's storage namespaces (`acme--`; empty for
    /// the system tenant).
    pub fn storage_prefix(&self) -> &str {
        &self.prefix
    }

    /// Removes the storage prefix from a text the cluster wrote.
    pub fn text(&self, text: &str) -> String {
        if self.prefix.is_empty() {
            text.to_string()
        } else {
            // Namespaces (`acme--web`) and the tenant's own API groups
            // (`widgets.example.com.acme.tenants.arktos.io`).
            text.replace(&self.prefix, "")
                .replace(&self.group_suffix, "")
        }
    }

    /// A field selector in storage terms: namespace values are mapped.
    pub fn field_selector_to_storage(
        &self,
        selector: &str,
        namespace_names: bool,
    ) -> Result<String, Status> {
        let mut terms = Vec::new();
        for term in selector.split(',').filter(|t| !t.is_empty()) {
            let (key, op, value) = split_requirement(term).ok_or_else(|| {
                status::bad_request(&format!("invalid field selector term {term:?}"))
            })?;
            let maps_namespace = key == "metadata.namespace"
                || key.ends_with(".namespace")
                || (namespace_names && key == "metadata.name");
            if maps_namespace && !value.is_empty() {
                terms.push(format!("{key}{op}{}", self.namespace_to_storage(value)?));
            } else {
                terms.push(term.to_string());
            }
        }
        Ok(terms.join(","))
    }

    /// A continue token as the tenant sees it: the storage namespace in its
    /// position key is replaced by the tenant's name.
    pub fn continue_to_tenant(&self, token: &str) -> String {
        self.rewrite_continue(token, |start| {
            let (slash, key) = leading_slash(start);
            key.strip_prefix(&self.prefix)
                .map(|rest| format!("{slash}{rest}"))
        })
        .unwrap_or_else(|| token.to_string())
    }

    /// A tenant's continue token in storage terms. `namespaced_key`: the
    /// position key starts with a namespace (lists of namespaces and lists
    /// across namespaces).
    pub fn continue_to_storage(&self, token: &str, namespaced_key: bool) -> String {
        if !namespaced_key || self.prefix.is_empty() {
            return token.to_string();
        }
        self.rewrite_continue(token, |start| {
            let (slash, key) = leading_slash(start);
            Some(format!("{slash}{}{key}", self.prefix))
        })
        .unwrap_or_else(|| token.to_string())
    }

    fn rewrite_continue(
        &self,
        token: &str,
        rewrite: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        let mut decoded: Value = serde_json::from_slice(&bytes).ok()?;
        let start = decoded.get("start")?.as_str()?;
        decoded["start"] = rewrite(start)?.into();
        Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&decoded).ok()?))
    }
}

/// kube-apiserver starts the position key of a list across namespaces
/// with `/` (`/acme--web/pod-7`), of a list of namespaces without.
fn leading_slash(start: &str) -> (&str, &str) {
    match start.strip_prefix('/') {
        Some(key) => ("/", key),
        None => ("", start),
    }
}

/// Splits `key=value`, `key==value` or `key!=value`.
fn split_requirement(term: &str) -> Option<(&str, &str, &str)> {
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = term.split_once(op) {
            return Some((key.trim(), op, value.trim()));
        }
    }
    None
}

/// The subject of a refusal about one of the tenant's namespaces.
pub fn namespace_subject(name: &str) -> status::Subject<'_> {
    status::Subject {
        resource: "namespaces",
        kind: "Namespace",
        name,
        ..Default::default()
    }
}

impl super::protobuf::ToStorage for View {
    fn namespace(&self, name: &str) -> Result<String, Status> {
        self.namespace_to_storage(name)
    }

    fn cluster_role(&self, name: &str) -> Result<String, Status> {
        self.cluster_role_to_storage(name)
    }
}

/// The ClusterRole a binding's `roleRef` names, if it names one.
fn bound_cluster_role(object: &serde_json::Map<String, Value>) -> Option<&str> {
    let role = object.get("roleRef")?;
    (role.get("kind")?.as_str()? == "ClusterRole")
        .then(|| role.get("name")?.as_str())
        .flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn acme() -> View {
        View::new(TenantName::new("acme").unwrap())
    }

    #[test]
    fn request_bodies_land_in_the_tenants_namespaces_and_are_labelled() {
        let mut binding = json!({
            "kind": "RoleBinding",
            "metadata": {"name": "b", "namespace": "web"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "globex--web"},
                         {"kind": "ServiceAccount", "name": "sys", "namespace": "kube-system"},
                         {"kind": "User", "name": "alice"}],
        });
        acme().request_body(&mut binding, false).unwrap();
        assert_eq!(binding["metadata"]["namespace"], "acme--web");
        assert_eq!(binding["metadata"]["labels"][TENANT_LABEL], "acme");
        // Naming another tenant's or the system's namespace lands in one's own.
        assert_eq!(binding["subjects"][0]["namespace"], "acme--globex--web");
        assert_eq!(binding["subjects"][1]["namespace"], "acme--kube-system");
        assert!(binding["subjects"][2].get("namespace").is_none());
        // A ClusterRole named by a binding: the tenant's own, or a shared one.
        for (named, stored) in [("reader", "acme--reader"), ("view", "view")] {
            let mut bound = json!({"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "web"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": named}});
            acme().request_body(&mut bound, false).unwrap();
            assert_eq!(bound["roleRef"]["name"], stored);
            assert!(acme().response(&mut bound));
            assert_eq!(bound["roleRef"]["name"], named);
        }

        let mut namespace = json!({"kind": "Namespace", "metadata": {"name": "web"}});
        acme().request_body(&mut namespace, true).unwrap();
        assert_eq!(namespace["metadata"]["name"], "acme--web");
        let too_long = "n".repeat(60);
        let mut namespace = json!({"kind": "Namespace", "metadata": {"name": too_long}});
        assert_eq!(
            acme().request_body(&mut namespace, true).unwrap_err().code,
            Some(422)
        );
    }

    #[test]
    fn answers_are_mapped_back_and_foreign_items_dropped() {
        let mut list = json!({"kind": "PodList", "metadata": {}, "items": [
            {"kind": "Pod", "metadata": {"name": "a", "namespace": "acme--web"}},
            {"kind": "Pod", "metadata": {"name": "b", "namespace": "globex--web"}},
            {"kind": "Pod", "metadata": {"name": "c", "namespace": "kube-system"}},
        ]});
        assert!(acme().response(&mut list));
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["namespace"], "web");

        let mut namespace = json!({"kind": "Namespace", "metadata": {"name": "globex--web"}});
        assert!(!acme().response(&mut namespace));
        let mut event = json!({"type": "ADDED", "object": {"kind": "Namespace", "metadata": {"name": "acme--web"}}});
        assert!(acme().response(&mut event));
        assert_eq!(event["object"]["metadata"]["name"], "web");

        let mut status = json!({"kind": "Status", "message": "pods \"x\" is forbidden: in namespace acme--web", "details": {"name": "acme--web"}});
        acme().response(&mut status);
        assert_eq!(
            status["message"],
            "pods \"x\" is forbidden: in namespace web"
        );
        assert_eq!(status["details"]["name"], "web");
    }

    /// A namespace watch's bookmarks carry no name; dropping them left
    /// kubectl waiting for the end of a watch-list's initial events.
    #[test]
    fn bookmarks_pass_every_watch_and_namespaces_show_their_own_name_label() {
        let mut bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Namespace",
            "metadata": {"resourceVersion": "7", "annotations": {"k8s.io/initial-events-end": "true"}}}});
        let before = bookmark.clone();
        assert!(acme().namespace_response(&mut bookmark));
        assert_eq!(bookmark, before);

        let mut namespace = json!({"kind": "Namespace", "metadata": {"name": "acme--web",
            "labels": {NAMESPACE_NAME_LABEL: "acme--web", TENANT_LABEL: "acme"}}});
        assert!(acme().namespace_response(&mut namespace));
        assert_eq!(namespace["metadata"]["labels"][NAMESPACE_NAME_LABEL], "web");
    }

    #[test]
    fn event_messages_name_the_tenants_namespaces() {
        let view = acme();
        let mut event = json!({"metadata": {"name": "vm1.1", "namespace": "acme--demo"},
            "involvedObject": {"kind": "Pod", "namespace": "acme--demo", "name": "vm1"},
            "message": "Successfully assigned acme--demo/vm1 to arktos-node-0"});
        assert!(view.response(&mut event));
        assert_eq!(
            event["message"],
            "Successfully assigned demo/vm1 to arktos-node-0"
        );
        assert_eq!(event["involvedObject"]["namespace"], "demo");
        let mut new_style = json!({"metadata": {"name": "e", "namespace": "acme--demo"},
            "regarding": {"namespace": "acme--demo"}, "note": "pod: \"vm1_acme--demo(1234)\""});
        assert!(view.response(&mut new_style));
        assert_eq!(new_style["note"], "pod: \"vm1_demo(1234)\"");
        let mut table = json!({"kind": "Table", "rows": [{"cells": ["5s", "Normal", "Scheduled", "pod/vm1",
            "Successfully assigned acme--demo/vm1 to arktos-node-0"],
            "object": {"kind": "PartialObjectMetadata", "metadata": {"namespace": "acme--demo"}}}]});
        assert!(view.response(&mut table));
        assert_eq!(
            table["rows"][0]["cells"][4],
            "Successfully assigned demo/vm1 to arktos-node-0"
        );
    }

    #[test]
    fn namespace_tables_show_tenant_names_only() {
        let mut table = json!({"kind": "Table", "rows": [
            {"cells": ["acme--web", "Active"], "object": {"kind": "PartialObjectMetadata", "metadata": {"name": "acme--web"}}},
            {"cells": ["globex--web", "Active"], "object": {"kind": "PartialObjectMetadata", "metadata": {"name": "globex--web"}}},
        ]});
        assert!(acme().namespace_response(&mut table));
        let rows = table["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["cells"][0], "web");
        assert_eq!(rows[0]["object"]["metadata"]["name"], "web");
    }

    #[test]
    fn field_selectors_cannot_escape_the_tenant() {
        assert_eq!(
            acme()
                .field_selector_to_storage(
                    "metadata.namespace=globex--web,status.phase!=Running",
                    false
                )
                .unwrap(),
            "metadata.namespace=acme--globex--web,status.phase!=Running"
        );
        assert_eq!(
            acme()
                .field_selector_to_storage("metadata.name=web", true)
                .unwrap(),
            "metadata.name=acme--web"
        );
        assert_eq!(
            acme()
                .field_selector_to_storage("metadata.name=web", false)
                .unwrap(),
            "metadata.name=web"
        );
    }

    #[test]
    fn continue_tokens_hide_storage_names_and_round_trip() {
        let storage = URL_SAFE_NO_PAD
            .encode(br#"{"v":"meta.k8s.io/v1","rv":42,"start":"acme--web/pod-7\u0000"}"#);
        let tenant = acme().continue_to_tenant(&storage);
        let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(&tenant).unwrap()).unwrap();
        assert!(
            decoded.contains("\"start\":\"web/pod-7\\u0000\"") && !decoded.contains("acme--"),
            "{decoded}"
        );
        let back = acme().continue_to_storage(&tenant, true);
        let decoded: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(back).unwrap()).unwrap();
        assert_eq!(decoded["start"], "acme--web/pod-7\u{0}");
        assert_eq!(decoded["rv"], 42);
        // Across namespaces the key starts with a slash.
        let storage = URL_SAFE_NO_PAD
            .encode(br#"{"v":"meta.k8s.io/v1","rv":42,"start":"/acme--web/pod-7\u0000"}"#);
        let tenant = acme().continue_to_tenant(&storage);
        let decoded: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&tenant).unwrap()).unwrap();
        assert_eq!(decoded["start"], "/web/pod-7\u{0}");
        let back = acme().continue_to_storage(&tenant, true);
        let decoded: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(back).unwrap()).unwrap();
        assert_eq!(decoded["start"], "/acme--web/pod-7\u{0}");
    }

    #[test]
    fn a_tenants_own_group_is_mapped_in_api_versions_and_rules() {
        let view = acme().with_groups(vec!["example.com".into()]);
        let mut widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "web",
                "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "p"}]}});
        view.request_body(&mut widget, false).unwrap();
        assert_eq!(
            widget["apiVersion"],
            "example.com.acme.tenants.arktos.io/v1"
        );
        assert_eq!(
            widget["metadata"]["ownerReferences"][0]["apiVersion"],
            "example.com.acme.tenants.arktos.io/v1"
        );
        assert!(view.response(&mut widget));
        assert_eq!(widget["apiVersion"], "example.com/v1");
        let mut role = json!({"kind": "Role", "metadata": {"name": "r", "namespace": "web"},
            "rules": [{"apiGroups": ["example.com", "apps"], "resources": ["widgets"], "verbs": ["get"]}]});
        view.request_body(&mut role, false).unwrap();
        assert_eq!(
            role["rules"][0]["apiGroups"],
            json!(["example.com.acme.tenants.arktos.io", "apps"])
        );
        assert!(view.response(&mut role));
        assert_eq!(
            role["rules"][0]["apiGroups"],
            json!(["example.com", "apps"])
        );
        assert_eq!(
            view.text("widgets.example.com.acme.tenants.arktos.io \"w\" not found"),
            "widgets.example.com \"w\" not found"
        );
    }
}
