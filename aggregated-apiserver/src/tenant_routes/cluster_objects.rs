//! What a tenant's own cluster-scoped objects (ClusterRoles,
//! ClusterRoleBindings, CustomResourceDefinitions) share: stored under the
//! tenant's names and label, listed by that label, and answered object by
//! object in the tenant's terms.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;
use warp::reply::Response;

use super::backend::{Outgoing, Rewrite};
use super::mapping::View;
use super::plan::join;
use super::{TenantRoutes, with_query};
use crate::request::ApiRequest;

/// A read of the tenant's own objects of `collection` (a path): the one
/// stored as `one` (with its subresource path, if any), or the collection
/// narrowed to the tenant, names mapped by `storage_name`; answered
/// through `rewrite`.
pub struct Read<'a> {
    pub collection: &'a str,
    pub one: Option<String>,
    pub storage_name: &'a (dyn Fn(&str) -> Result<String, Status> + Sync),
    pub watch: bool,
}

impl TenantRoutes {
    /// The objects at `collection` (a path) that carry the tenant's label,
    /// read as arktos-apiserver; `what` names them in the 503 otherwise.
    pub(super) async fn labelled(
        &self,
        view: &View,
        collection: &str,
        what: &str,
    ) -> Result<Vec<Value>, Status> {
        let uri = with_query(
            collection.to_string(),
            &[("labelSelector".into(), view.label_term())],
        );
        let (code, mut list) = self
            .backend
            .json(Outgoing::get_as_us(uri, "application/json"))
            .await?;
        if !code.is_success() {
            return Err(arktos_crds::status::service_unavailable(&format!(
                "cannot read the tenant's {what}"
            )));
        }
        Ok(match list["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        })
    }

    pub(super) async fn read_own(
        &self,
        view: &View,
        read: Read<'_>,
        request: &ApiRequest,
        rewrite: Rewrite,
    ) -> Result<Response, Status> {
        let mut params = request.params();
        let path = match read.one {
            Some(stored) => join(&[read.collection, &stored]),
            None => {
                list_params(view, &mut params, read.storage_name)?;
                read.collection.to_string()
            }
        };
        if read.watch && !params.iter().any(|(k, _)| k == "watch") {
            params.push(("watch".into(), "true".into()));
        }
        let accept = request.accept();
        let mut outgoing = Outgoing::get_as_us(with_query(path, &params), &accept);
        outgoing.watch = read.watch;
        self.backend.send(outgoing, rewrite).await
    }
}

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
