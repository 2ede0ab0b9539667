//! Discovery documents for `tenancy.arktos.io`: the legacy ones
//! (`APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated discovery
//! (`APIGroupDiscoveryList`, v2), which kube-apiserver's aggregator and
//! kubectl ask for first.

use arktos_crds::tenant::{GROUP, KIND, PLURAL, VERSION};
use serde_json::{Value, json};

/// The media type of aggregated discovery, as clients ask for it and as
/// the answer must say it is.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const TENANT_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Whether the Accept header prefers aggregated discovery in the version
/// served (v2) to the plain documents. Media types are taken in the
/// client's order; an aggregated version we do not serve (v2beta1) is
/// skipped for the next media type.
pub fn wants_aggregated(accept: &str) -> bool {
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let _type = parts.next();
        let params: Vec<&str> = parts.collect();
        let has = |term: &str| params.iter().any(|p| p.eq_ignore_ascii_case(term));
        if has("as=APIGroupDiscoveryList") {
            if has("v=v2") && has("g=apidiscovery.k8s.io") {
                return true;
            }
            continue;
        }
        return false;
    }
    false
}

fn group_version() -> String {
    format!("{GROUP}/{VERSION}")
}

pub fn api_group() -> Value {
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [{"groupVersion": group_version(), "version": VERSION}],
        "preferredVersion": {"groupVersion": group_version(), "version": VERSION},
    })
}

pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]})
}

pub fn api_resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(),
        "resources": [
            {"name": PLURAL, "singularName": "tenant", "namespaced": false, "kind": KIND,
             "verbs": TENANT_VERBS, "shortNames": ["tn"], "categories": ["arktos"]},
            {"name": format!("{PLURAL}/status"), "singularName": "", "namespaced": false, "kind": KIND,
             "verbs": ["get", "patch", "update"]},
        ],
    })
}

pub fn aggregated_group_list() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP},
            "versions": [{
                "version": VERSION,
                "freshness": "Current",
                "resources": [{
                    "resource": PLURAL,
                    "responseKind": {"group": GROUP, "version": VERSION, "kind": KIND},
                    "scope": "Cluster",
                    "singularResource": "tenant",
                    "shortNames": ["tn"],
                    "categories": ["arktos"],
                    "verbs": TENANT_VERBS,
                    "subresources": [{
                        "subresource": "status",
                        "responseKind": {"group": GROUP, "version": VERSION, "kind": KIND},
                        "verbs": ["get", "patch", "update"],
                    }],
                }],
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_accept_headers_are_recognised() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert!(!wants_aggregated(&format!("{beta},application/json")));
        assert!(wants_aggregated(&format!(
            "{beta},application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
    }

    #[test]
    fn documents_are_typed_as_kubernetes_reads_them() {
        let list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList =
            serde_json::from_value(api_resource_list()).unwrap();
        assert_eq!(list.resources[0].name, "tenants");
        let _: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList =
            serde_json::from_value(api_group_list()).unwrap();
    }
}
