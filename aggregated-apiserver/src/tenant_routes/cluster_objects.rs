//! What a tenant's own cluster-scoped objects (ClusterRoles,
//! ClusterRoleBindings, CustomResourceDefinitions) share: stored under the
//! tenant's names and label, listed by that label, and answered object by
//! object in the tenant's terms.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;

use super::mapping::View;

/// Rewrites an answer (object, list, Table, watch event, Status) with
/// `object` for each object; false when a single object is not the
/// tenant's.
pub fn answer(view: &View, value: &mut Value, object: &dyn Fn(&View, &mut Value) -> bool) -> bool {
    match value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "Status" => return view.response(value),
        "Table" => {
            if let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut) {
                rows.retain_mut(|row| {
                    if !object(view, &mut row["object"]) {
                        return false;
                    }
                    let name = row["object"]["metadata"]["name"].clone();
                    if let Some(first) = row.get_mut("cells").and_then(|c| c.get_mut(0)) {
                        *first = name;
                    }
                    true
                });
            }
            return true;
        }
        _ => {}
    }
    if value.get("type").is_some() && value.get("object").is_some() {
        return value["type"] == "BOOKMARK" || object(view, &mut value["object"]);
    }
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        items.retain_mut(|item| object(view, item));
        return true;
    }
    object(view, value)
}

/// Adds the tenant's label term to a list's label selector, and maps a
/// `metadata.name` field selector with `storage_name`.
pub fn list_params(
    view: &View,
    params: &mut Vec<(String, String)>,
    storage_name: &dyn Fn(&str) -> Result<String, Status>,
) -> Result<(), Status> {
    let term = view.label_term();
    match params.iter_mut().find(|(k, _)| k == "labelSelector") {
        Some((_, selector)) if !selector.is_empty() => *selector = format!("{selector},{term}"),
        Some((_, selector)) => *selector = term,
        None => params.push(("labelSelector".into(), term)),
    }
    if let Some((_, fields)) = params.iter_mut().find(|(k, _)| k == "fieldSelector") {
        let mut mapped = Vec::new();
        for field in fields.split(',') {
            let split = ["!=", "==", "="]
                .iter()
                .find_map(|op| field.split_once(op).map(|(k, v)| (k, *op, v)));
            match split {
                Some(("metadata.name", op, name)) => {
                    mapped.push(format!("metadata.name{op}{}", storage_name(name)?))
                }
                _ => mapped.push(field.to_string()),
            }
        }
        *fields = mapped.join(",");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arktos_crds::naming::TenantName;

    use super::*;

    #[test]
    fn lists_are_narrowed_to_the_tenant_and_names_mapped() {
        let view = View::new(TenantName::new("acme").unwrap());
        let prefixed = |name: &str| Ok(format!("acme--{name}"));
        let mut params = vec![
            ("labelSelector".to_string(), "team=a".to_string()),
            (
                "fieldSelector".to_string(),
                "metadata.name=reader".to_string(),
            ),
        ];
        list_params(&view, &mut params, &prefixed).unwrap();
        assert_eq!(params[0].1, "team=a,tenancy.arktos.io/tenant=acme");
        assert_eq!(params[1].1, "metadata.name=acme--reader");
        let mut none = Vec::new();
        list_params(&view, &mut none, &prefixed).unwrap();
        assert_eq!(
            none,
            [(
                "labelSelector".to_string(),
                "tenancy.arktos.io/tenant=acme".to_string()
            )]
        );
    }
}
