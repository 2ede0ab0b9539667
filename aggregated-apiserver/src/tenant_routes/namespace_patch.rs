//! What a tenant may change on its own namespaces: their labels and
//! annotations (network policies, quotas and tools select on them), never
//! the ones Arktos keeps. A patch in any of Kubernetes' patch types, or an
//! update, is checked here and turned into what is sent to kube-apiserver;
//! the admission webhook guards the same keys there for everyone else.

use arktos_crds::naming::{NAMESPACE_NAME_LABEL, TENANT_LABEL};
use arktos_crds::status::{self, FieldError, FieldErrorType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Map, Value, json};

use super::mapping::namespace_subject;

/// Key prefixes a tenant may not set or remove on its namespaces: Arktos'
/// own, Pod Security's (the tenant's level is Arktos' to keep), and the
/// namespace node selector (tenants do not pick nodes).
const PROTECTED_PREFIXES: &[&str] = &[
    "tenancy.arktos.io/",
    "arktos.io/",
    "vm.arktos.io/",
    "pod-security.kubernetes.io/",
    "scheduler.alpha.kubernetes.io/node-selector",
];

/// Whether a label or annotation key is Arktos' or the cluster's to keep.
pub fn is_protected(key: &str) -> bool {
    key == TENANT_LABEL
        || key == arktos_crds::sharding::BUCKET_LABEL
        || key == NAMESPACE_NAME_LABEL
        || PROTECTED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The body to send for a patch of tenant namespace `name` (tenant
/// terms) stored as `storage`, or why it is refused.
pub fn checked_patch(
    content_type: &str,
    body: &[u8],
    name: &str,
    storage: &str,
) -> Result<Vec<u8>, Status> {
    match content_type {
        "application/json-patch+json" => {
            let operations: Vec<Value> = serde_json::from_slice(body)
                .map_err(|e| status::bad_request(&format!("the JSON patch is malformed: {e}")))?;
            for operation in &operations {
                check_json_patch_operation(name, operation)?;
            }
            Ok(body.to_vec())
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let mut patch: Value = serde_json::from_slice(body)
                .map_err(|e| status::bad_request(&format!("the patch is malformed: {e}")))?;
            check_metadata_only(name, &mut patch, None)?;
            to_bytes(&patch)
        }
        "application/apply-patch+yaml" => {
            let mut object: Value = serde_yaml::from_slice(body).map_err(|e| {
                status::bad_request(&format!("the applied object is malformed: {e}"))
            })?;
            check_metadata_only(name, &mut object, Some(storage))?;
            to_bytes(&object)
        }
        other => Err(status::unsupported_media_type(other)),
    }
}

/// An update (PUT) of tenant namespace `name` as a merge patch of its
/// labels and annotations against `current` (storage form): only they
/// may differ, and the protected ones must not.
pub fn update_as_patch(name: &str, wanted: &Value, current: &Value) -> Result<Vec<u8>, Status> {
    let mut patch = json!({"metadata": {}});
    for field in ["labels", "annotations"] {
        let was = current["metadata"][field]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let now = match &wanted["metadata"][field] {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            _ => return Err(invalid(name, field, "must be a map of strings")),
        };
        let mut changes = Map::new();
        for (key, value) in &now {
            if was.get(key) != Some(value) && !is_protected(key) {
                changes.insert(key.clone(), value.clone());
            }
        }
        for key in was
            .keys()
            .filter(|k| !now.contains_key(*k) && !is_protected(k))
        {
            changes.insert(key.clone(), Value::Null);
        }
        let touched: Vec<&String> = now
            .keys()
            .filter(|k| is_protected(k) && was.get(*k) != now.get(*k))
            .collect();
        if let Some(key) = touched.first() {
            return Err(protected(name, field, key));
        }
        patch["metadata"][field] = changes.into();
    }
    if let Some(version) = wanted.pointer("/metadata/resourceVersion") {
        patch["metadata"]["resourceVersion"] = version.clone();
    }
    to_bytes(&patch)
}

/// A merge or applied patch: `metadata.labels` and `metadata.annotations`
/// of this namespace only. `storage`: the name the applied object must
/// carry (an apply names the object; a merge patch need not).
fn check_metadata_only(name: &str, patch: &mut Value, storage: Option<&str>) -> Result<(), Status> {
    let Some(top) = patch.as_object_mut() else {
        return Err(status::bad_request("the patch must be a JSON object"));
    };
    for key in top.keys() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            return Err(not_metadata(name, key));
        }
    }
    let Some(metadata) = top.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (key, value) in metadata.iter() {
        match key.as_str() {
            "labels" | "annotations" => check_keys(name, key, value)?,
            "name" if value.as_str() == Some(name) => {}
            "resourceVersion" => {}
            other => return Err(not_metadata(name, &format!("metadata.{other}"))),
        }
    }
    match storage {
        Some(storage) => {
            metadata.insert("name".into(), storage.into());
        }
        None => {
            metadata.remove("name");
        }
    }
    Ok(())
}

fn check_keys(name: &str, field: &str, value: &Value) -> Result<(), Status> {
    let Some(map) = value.as_object() else {
        return Err(invalid(
            name,
            field,
            "must be a map of strings (set a key to null to remove it)",
        ));
    };
    match map.keys().find(|k| is_protected(k)) {
        Some(key) => Err(protected(name, field, key)),
        None => Ok(()),
    }
}

/// One JSON patch operation: on one label or annotation, not a protected one.
fn check_json_patch_operation(name: &str, operation: &Value) -> Result<(), Status> {
    let path = operation["path"].as_str().unwrap_or_default();
    for field in ["labels", "annotations"] {
        if let Some(key) = path.strip_prefix(&format!("/metadata/{field}/")) {
            let key = key.replace("~1", "/").replace("~0", "~");
            if is_protected(&key) {
                return Err(protected(name, field, &key));
            }
            return Ok(());
        }
    }
    Err(not_metadata(
        name,
        &format!(
            "{path} (a JSON patch of a tenant's namespace changes one label or annotation per operation)"
        ),
    ))
}

fn protected(name: &str, field: &str, key: &str) -> Status {
    status::forbidden(
        &namespace_subject(name),
        &format!(
            "metadata.{field}[{key}] is kept by Arktos and may not be set, changed or removed by a tenant"
        ),
    )
}

fn not_metadata(name: &str, what: &str) -> Status {
    status::forbidden(
        &namespace_subject(name),
        &format!(
            "a tenant may change only the labels and annotations of its namespaces, not {what}"
        ),
    )
}

fn invalid(name: &str, field: &str, why: &str) -> Status {
    status::invalid(
        &namespace_subject(name),
        &[FieldError::new(
            format!("metadata.{field}"),
            FieldErrorType::Invalid,
            why,
        )],
    )
}

fn to_bytes(value: &Value) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| status::internal(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(content_type: &str, body: &str) -> Result<Value, Status> {
        checked_patch(content_type, body.as_bytes(), "web", "acme--web")
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    fn refusal(result: Result<Value, Status>) -> String {
        let status = result.expect_err("refused");
        assert_eq!(status.code, Some(403), "{status:?}");
        status.message.unwrap_or_default()
    }

    #[test]
    fn labels_and_annotations_of_a_tenants_own_keys_may_change() {
        let merge = r#"{"metadata":{"name":"web","labels":{"team":"a","old":null},"annotations":{"note":"x"}}}"#;
        let sent = patch("application/merge-patch+json", merge).unwrap();
        assert_eq!(
            sent,
            json!({"metadata": {"labels": {"team": "a", "old": null}, "annotations": {"note": "x"}}})
        );
        let strategic = r#"{"metadata":{"labels":{"team":"b"}}}"#;
        assert!(patch("application/strategic-merge-patch+json", strategic).is_ok());
        let json_patch = r#"[{"op":"add","path":"/metadata/labels/team","value":"c"},{"op":"remove","path":"/metadata/annotations/note"}]"#;
        assert!(patch("application/json-patch+json", json_patch).is_ok());
        let applied =
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n  labels:\n    team: d\n";
        let sent = patch("application/apply-patch+yaml", applied).unwrap();
        assert_eq!(sent["metadata"]["name"], "acme--web");
    }

    #[test]
    fn arktos_keys_and_other_fields_are_refused_with_the_key_named() {
        let cases = [
            (
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"tenancy.arktos.io/tenant":"globex"}}}"#,
                "tenancy.arktos.io/tenant",
            ),
            (
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}"#,
                "pod-security.kubernetes.io/enforce",
            ),
            (
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"kubernetes.io/metadata.name":null}}}"#,
                "kubernetes.io/metadata.name",
            ),
            (
                "application/merge-patch+json",
                r#"{"metadata":{"annotations":{"scheduler.alpha.kubernetes.io/node-selector":"x=y"}}}"#,
                "node-selector",
            ),
            (
                "application/json-patch+json",
                r#"[{"op":"remove","path":"/metadata/labels/tenancy.arktos.io~1tenant"}]"#,
                "tenancy.arktos.io/tenant",
            ),
            (
                "application/json-patch+json",
                r#"[{"op":"replace","path":"/metadata/labels","value":{}}]"#,
                "/metadata/labels",
            ),
            (
                "application/merge-patch+json",
                r#"{"spec":{"finalizers":[]}}"#,
                "spec",
            ),
            (
                "application/merge-patch+json",
                r#"{"metadata":{"finalizers":[]}}"#,
                "metadata.finalizers",
            ),
            (
                "application/merge-patch+json",
                r#"{"metadata":{"name":"db","labels":{}}}"#,
                "metadata.name",
            ),
        ];
        for (content_type, body, named) in cases {
            let message = refusal(patch(content_type, body));
            assert!(message.contains(named), "{body}: {message}");
        }
        let all = patch(
            "application/merge-patch+json",
            r#"{"metadata":{"labels":null}}"#,
        );
        assert_eq!(all.unwrap_err().code, Some(422));
        assert_eq!(
            patch("application/xml", "<x/>").unwrap_err().code,
            Some(415)
        );
    }

    #[test]
    fn an_update_changes_only_the_tenants_own_keys() {
        let current = json!({"metadata": {"name": "acme--web", "resourceVersion": "5",
            "labels": {TENANT_LABEL: "acme", "team": "a", "gone": "x"}}});
        // A client that read the namespace back sends the protected labels
        // unchanged (or without them): neither is a change of ours.
        let wanted = json!({"metadata": {"name": "web", "resourceVersion": "5",
            "labels": {TENANT_LABEL: "acme", "team": "b"}, "annotations": {"note": "n"}}});
        let sent: Value =
            serde_json::from_slice(&update_as_patch("web", &wanted, &current).unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"metadata": {"resourceVersion": "5",
            "labels": {"team": "b", "gone": null}, "annotations": {"note": "n"}}})
        );
        let relabelled = json!({"metadata": {"labels": {TENANT_LABEL: "globex"}}});
        assert_eq!(
            update_as_patch("web", &relabelled, &current)
                .unwrap_err()
                .code,
            Some(403)
        );
    }
}
