//! Translation between what clients see (`tenancy.arktos.io/v1alpha1`
//! `Tenant`) and how it is stored (`storage.tenancy.arktos.io/v1alpha1`
//! `TenantRecord`). Objects are translated field by field, so user data
//! (labels, annotations, spec values) is never touched; only texts the
//! server writes itself (error messages, OpenAPI) are translated as text.

use arktos_crds::tenant::{
    API_VERSION, GROUP, KIND, PLURAL, STORAGE_GROUP, STORAGE_KIND, STORAGE_PLURAL, STORAGE_VERSION,
};
use serde_json::Value;

fn storage_api_version() -> String {
    format!("{STORAGE_GROUP}/{STORAGE_VERSION}")
}

/// Rewrites an answer of the storage (object, list, watch event, Table,
/// Status) into the Tenant view, in place.
pub fn to_view(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "Status" => return status_to_view(value),
        "Table" => {
            for row in value["rows"].as_array_mut().into_iter().flatten() {
                to_view(&mut row["object"]);
            }
            return;
        }
        _ => {}
    }
    if object.contains_key("type") && object.contains_key("object") && !object.contains_key("kind")
    {
        // A watch event.
        return to_view(&mut value["object"]);
    }
    rename_type(
        object,
        &storage_api_version(),
        API_VERSION,
        STORAGE_KIND,
        KIND,
    );
    if let Some(fields) = value
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in fields {
            if entry["apiVersion"] == storage_api_version() {
                entry["apiVersion"] = API_VERSION.into();
            }
        }
    }
    for item in value
        .get_mut("items")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        to_view(item);
    }
}

/// Rewrites a request body in the Tenant view into the storage's terms.
pub fn to_storage(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    rename_type(
        object,
        API_VERSION,
        &storage_api_version(),
        KIND,
        STORAGE_KIND,
    );
    if let Some(fields) = value
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in fields {
            if entry["apiVersion"] == API_VERSION {
                entry["apiVersion"] = storage_api_version().into();
            }
        }
    }
}

fn rename_type(
    object: &mut serde_json::Map<String, Value>,
    from_version: &str,
    to_version: &str,
    from_kind: &str,
    to_kind: &str,
) {
    if object.get("apiVersion").and_then(Value::as_str) == Some(from_version) {
        object.insert("apiVersion".into(), to_version.into());
    }
    let renamed = match object.get("kind").and_then(Value::as_str) {
        Some(kind) if kind == from_kind => Some(to_kind.to_string()),
        Some(kind) if kind == format!("{from_kind}List") => Some(format!("{to_kind}List")),
        _ => None,
    };
    if let Some(kind) = renamed {
        object.insert("kind".into(), kind.into());
    }
}

fn status_to_view(value: &mut Value) {
    for key in ["message"] {
        if let Some(text) = value.get(key).and_then(Value::as_str) {
            value[key] = text_to_view(text).into();
        }
    }
    if let Some(details) = value.get_mut("details").and_then(Value::as_object_mut) {
        if details.get("group").and_then(Value::as_str) == Some(STORAGE_GROUP) {
            details.insert("group".into(), GROUP.into());
        }
        if let Some(kind) = details.get("kind").and_then(Value::as_str) {
            let kind = text_to_view(kind);
            details.insert("kind".into(), kind.into());
        }
        for cause in details
            .get_mut("causes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(text) = cause.get("message").and_then(Value::as_str) {
                cause["message"] = text_to_view(text).into();
            }
        }
    }
}

/// Translates a text the storage wrote (error message, OpenAPI document).
pub fn text_to_view(text: &str) -> String {
    let reversed_storage = reverse_domain(STORAGE_GROUP);
    let reversed_view = reverse_domain(GROUP);
    text.replace(
        &format!("{reversed_storage}."),
        &format!("{reversed_view}."),
    )
    .replace(STORAGE_GROUP, GROUP)
    .replace(STORAGE_PLURAL, PLURAL)
    .replace(STORAGE_KIND, KIND)
    .replace("tenantrecord", "tenant")
}

/// `storage.tenancy.arktos.io` → `io.arktos.tenancy.storage`, as OpenAPI
/// names definitions.
fn reverse_domain(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_lists_and_events_are_translated_but_user_data_is_not() {
        let mut list = json!({
            "apiVersion": "storage.tenancy.arktos.io/v1alpha1",
            "kind": "TenantRecordList",
            "items": [{
                "apiVersion": "storage.tenancy.arktos.io/v1alpha1",
                "kind": "TenantRecord",
                "metadata": {"name": "acme",
                    "annotations": {"note": "storage.tenancy.arktos.io TenantRecord"},
                    "managedFields": [{"apiVersion": "storage.tenancy.arktos.io/v1alpha1", "manager": "kubectl"}]},
            }],
        });
        to_view(&mut list);
        assert_eq!(list["kind"], "TenantList");
        assert_eq!(list["apiVersion"], "tenancy.arktos.io/v1alpha1");
        assert_eq!(list["items"][0]["kind"], "Tenant");
        assert_eq!(
            list["items"][0]["metadata"]["managedFields"][0]["apiVersion"],
            "tenancy.arktos.io/v1alpha1"
        );
        assert_eq!(
            list["items"][0]["metadata"]["annotations"]["note"],
            "storage.tenancy.arktos.io TenantRecord"
        );

        let mut event = json!({"type": "ADDED", "object": {"apiVersion": "storage.tenancy.arktos.io/v1alpha1", "kind": "TenantRecord"}});
        to_view(&mut event);
        assert_eq!(event["object"]["kind"], "Tenant");
    }

    #[test]
    fn errors_of_the_storage_read_as_errors_about_tenants() {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound",
            "message": "tenantrecords.storage.tenancy.arktos.io \"acme\" not found",
            "details": {"name": "acme", "group": "storage.tenancy.arktos.io", "kind": "tenantrecords"},
        });
        to_view(&mut status);
        assert_eq!(
            status["message"],
            "tenants.tenancy.arktos.io \"acme\" not found"
        );
        assert_eq!(status["details"]["group"], "tenancy.arktos.io");
        assert_eq!(status["details"]["kind"], "tenants");
    }

    #[test]
    fn requests_are_translated_into_storage_terms_and_back() {
        let original = json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "a"}});
        let mut value = original.clone();
        to_storage(&mut value);
        assert_eq!(value["apiVersion"], "storage.tenancy.arktos.io/v1alpha1");
        assert_eq!(value["kind"], "TenantRecord");
        to_view(&mut value);
        assert_eq!(value, original);
    }

    #[test]
    fn openapi_names_are_translated() {
        assert_eq!(
            text_to_view(
                "#/components/schemas/io.arktos.tenancy.storage.v1alpha1.TenantRecordList"
            ),
            "#/components/schemas/io.arktos.tenancy.v1alpha1.TenantList"
        );
        assert_eq!(
            text_to_view("/apis/storage.tenancy.arktos.io/v1alpha1/tenantrecords/{name}"),
            "/apis/tenancy.arktos.io/v1alpha1/tenants/{name}"
        );
    }
}
