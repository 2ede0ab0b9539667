//! Discovery documents for `tenancy.arktos.io`: the legacy ones
//! (`APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated discovery
//! (`APIGroupDiscoveryList`, v2), which kube-apiserver's aggregator and
//! kubectl ask for first.

use arktos_crds::tenant::{GROUP, KIND, PLURAL, VERSION};
use serde_json::{Value, json};

/// The media type of aggregated discovery, as clients ask for it and as
/// the answer must say it is.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// A kind of the group, as discovery describes it.
struct Served {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
}

/// What arktos-apiserver serves, each with a `status` subresource.
const SERVED: &[Served] = &[
    Served {
        plural: PLURAL,
        singular: "tenant",
        kind: KIND,
        short_names: &["tn"],
    },
    Served {
        plural: arktos_crds::partition::PLURAL,
        singular: "partition",
        kind: arktos_crds::partition::KIND,
        short_names: &["ptn"],
    },
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
    let resources: Vec<Value> = SERVED
        .iter()
        .flat_map(|served| {
            [
                json!({"name": served.plural, "singularName": served.singular, "namespaced": false,
                    "kind": served.kind, "verbs": VERBS, "shortNames": served.short_names,
                    "categories": ["arktos"]}),
                json!({"name": format!("{}/status", served.plural), "singularName": "",
                    "namespaced": false, "kind": served.kind, "verbs": ["get", "patch", "update"]}),
            ]
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(),
        "resources": resources,
    })
}

pub fn aggregated_group_list() -> Value {
    let resources: Vec<Value> = SERVED
        .iter()
        .map(|served| {
            let kind = json!({"group": GROUP, "version": VERSION, "kind": served.kind});
            json!({
                "resource": served.plural,
                "responseKind": kind,
                "scope": "Cluster",
                "singularResource": served.singular,
                "shortNames": served.short_names,
                "categories": ["arktos"],
                "verbs": VERBS,
                "subresources": [{
                    "subresource": "status",
                    "responseKind": kind,
                    "verbs": ["get", "patch", "update"],
                }],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP},
            "versions": [{"version": VERSION, "freshness": "Current", "resources": resources}],
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
        let names: Vec<&str> = list.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tenants",
                "tenants/status",
                "partitions",
                "partitions/status"
            ]
        );
        let _: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList =
            serde_json::from_value(api_group_list()).unwrap();
    }
}
