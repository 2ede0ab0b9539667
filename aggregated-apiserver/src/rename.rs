//! Translation between what clients see (`tenancy.arktos.io/v1alpha1`
//! kinds, e.g. `Tenant`) and how they are stored (record kinds of
//! `storage.tenancy.arktos.io/v1alpha1`, e.g. `TenantRecord`). Objects are
//! translated field by field, so user data (labels, annotations, spec
//! values) is never touched; only texts the server writes itself (error
//! messages, OpenAPI) are translated as text.

use arktos_crds::tenant::{
    API_VERSION, GROUP, KIND, PLURAL, STORAGE_GROUP, STORAGE_KIND, STORAGE_PLURAL, STORAGE_VERSION,
};
use serde_json::Value;

/// A kind arktos-apiserver serves, and the record kind that stores it.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored {
    pub kind: &'static str,
    pub plural: &'static str,
    pub record_kind: &'static str,
    pub record_plural: &'static str,
}

/// Tenants, stored as TenantRecords.
pub const TENANTS: Stored = Stored {
    kind: KIND,
    plural: PLURAL,
    record_kind: STORAGE_KIND,
    record_plural: STORAGE_PLURAL,
};

/// Partitions, stored as PartitionRecords.
pub const PARTITIONS: Stored = Stored {
    kind: arktos_crds::partition::KIND,
    plural: arktos_crds::partition::PLURAL,
    record_kind: arktos_crds::partition::STORAGE_KIND,
    record_plural: arktos_crds::partition::STORAGE_PLURAL,
};

/// Every kind arktos-apiserver serves from the storage group.
pub const SERVED: [&Stored; 2] = [&TENANTS, &PARTITIONS];

/// Translates a text about any of the served kinds (the OpenAPI document
/// of the storage group).
pub fn text_to_view(text: &str) -> String {
    SERVED
        .iter()
        .fold(text.to_string(), |text, kind| kind.text_to_view(&text))
}

/// A Tenant's `status.partition` says where it lives: its `spec.partition`,
/// written once at creation (so the two can never disagree).
fn mirror_partition(tenant: &mut Value) {
    let Some(partition) = tenant["spec"]["partition"].as_str().map(str::to_string) else {
        return;
    };
    if !tenant["status"].is_object() {
        tenant["status"] = Value::Object(Default::default());
    }
    tenant["status"]["partition"] = partition.into();
}

fn storage_api_version() -> String {
    format!("{STORAGE_GROUP}/{STORAGE_VERSION}")
}

impl Stored {
    /// Object `name` of this kind, as Status errors name it.
    pub fn subject<'a>(&self, name: &'a str) -> arktos_crds::status::Subject<'a> {
        arktos_crds::status::Subject {
            group: GROUP,
            resource: self.plural,
            kind: self.kind,
            name,
        }
    }

    /// Rewrites an answer of the storage (object, list, watch event, Table,
    /// Status) into the served view, in place.
    pub fn to_view(&self, value: &mut Value) {
        let Some(object) = value.as_object_mut() else {
            return;
        };
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "Status" => return self.status_to_view(value),
            "Table" => {
                for row in value["rows"].as_array_mut().into_iter().flatten() {
                    self.to_view(&mut row["object"]);
                }
                return;
            }
            _ => {}
        }
        if object.contains_key("type")
            && object.contains_key("object")
            && !object.contains_key("kind")
        {
            // A watch event.
            return self.to_view(&mut value["object"]);
        }
        rename_type(
            object,
            (&storage_api_version(), API_VERSION),
            (self.record_kind, self.kind),
        );
        rename_managed_fields(value, &storage_api_version(), API_VERSION);
        if self.kind == KIND {
            mirror_partition(value);
        }
        for item in value
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            self.to_view(item);
        }
    }

    /// Rewrites a request body in the served view into the storage's terms.
    pub fn to_storage(&self, value: &mut Value) {
        let Some(object) = value.as_object_mut() else {
            return;
        };
        rename_type(
            object,
            (API_VERSION, &storage_api_version()),
            (self.kind, self.record_kind),
        );
        rename_managed_fields(value, API_VERSION, &storage_api_version());
    }

    fn status_to_view(&self, value: &mut Value) {
        if let Some(text) = value.get("message").and_then(Value::as_str) {
            value["message"] = self.text_to_view(text).into();
        }
        if let Some(details) = value.get_mut("details").and_then(Value::as_object_mut) {
            if details.get("group").and_then(Value::as_str) == Some(STORAGE_GROUP) {
                details.insert("group".into(), GROUP.into());
            }
            if let Some(kind) = details.get("kind").and_then(Value::as_str) {
                let kind = self.text_to_view(kind);
                details.insert("kind".into(), kind.into());
            }
            for cause in details
                .get_mut("causes")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(text) = cause.get("message").and_then(Value::as_str) {
                    cause["message"] = self.text_to_view(text).into();
                }
            }
        }
    }

    /// Translates a text the storage wrote (error message, OpenAPI document).
    pub fn text_to_view(&self, text: &str) -> String {
        let reversed_storage = reverse_domain(STORAGE_GROUP);
        let reversed_view = reverse_domain(GROUP);
        text.replace(
            &format!("{reversed_storage}."),
            &format!("{reversed_view}."),
        )
        .replace(STORAGE_GROUP, GROUP)
        .replace(self.record_plural, self.plural)
        .replace(self.record_kind, self.kind)
        .replace(&self.record_kind.to_lowercase(), &self.kind.to_lowercase())
    }
}

fn rename_type(
    object: &mut serde_json::Map<String, Value>,
    (from_version, to_version): (&str, &str),
    (from_kind, to_kind): (&str, &str),
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

fn rename_managed_fields(value: &mut Value, from_version: &str, to_version: &str) {
    if let Some(fields) = value
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in fields {
            if entry["apiVersion"] == from_version {
                entry["apiVersion"] = to_version.into();
            }
        }
    }
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
        TENANTS.to_view(&mut list);
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
        TENANTS.to_view(&mut event);
        assert_eq!(event["object"]["kind"], "Tenant");
    }

    #[test]
    fn errors_of_the_storage_read_as_errors_about_tenants() {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound",
            "message": "tenantrecords.storage.tenancy.arktos.io \"acme\" not found",
            "details": {"name": "acme", "group": "storage.tenancy.arktos.io", "kind": "tenantrecords"},
        });
        TENANTS.to_view(&mut status);
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
        TENANTS.to_storage(&mut value);
        assert_eq!(value["apiVersion"], "storage.tenancy.arktos.io/v1alpha1");
        assert_eq!(value["kind"], "TenantRecord");
        TENANTS.to_view(&mut value);
        assert_eq!(value, original);
    }

    #[test]
    fn openapi_names_of_every_kind_are_translated() {
        assert_eq!(
            text_to_view(
                "/apis/storage.tenancy.arktos.io/v1alpha1/partitionrecords/{name} TenantRecord"
            ),
            "/apis/tenancy.arktos.io/v1alpha1/partitions/{name} Tenant"
        );
    }

    #[test]
    fn openapi_names_are_translated() {
        assert_eq!(
            TENANTS.text_to_view(
                "#/components/schemas/io.arktos.tenancy.storage.v1alpha1.TenantRecordList"
            ),
            "#/components/schemas/io.arktos.tenancy.v1alpha1.TenantList"
        );
        assert_eq!(
            TENANTS.text_to_view("/apis/storage.tenancy.arktos.io/v1alpha1/tenantrecords/{name}"),
            "/apis/tenancy.arktos.io/v1alpha1/tenants/{name}"
        );
    }
}
