//! OpenAPI v2 and v3 for `tenancy.arktos.io`, so `kubectl explain tenant`
//! and client generators work. The documents are kube-apiserver's own for
//! the storage resource (generated from the Rust types through the CRD
//! schema), with names translated: one schema, no second copy to drift.

use std::sync::Arc;

use arktos_crds::status;
use arktos_crds::tenant::{GROUP, STORAGE_GROUP, STORAGE_VERSION, VERSION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::rename;

#[derive(Clone, Debug)]
pub struct Documents {
    pub v2: Arc<Value>,
    pub v3: Arc<Value>,
    pub v3_hash: String,
}

/// How long a fetch of kube-apiserver's OpenAPI may take.
const FETCH_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Fetches and translates the documents once, then serves them from memory.
pub struct OpenApi {
    client: kube::Client,
    cached: RwLock<Option<Documents>>,
}

impl OpenApi {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cached: RwLock::new(None),
        }
    }

    pub async fn documents(&self) -> Result<Documents, Status> {
        if let Some(documents) = self.cached.read().await.clone() {
            return Ok(documents);
        }
        let documents = self.fetch().await?;
        *self.cached.write().await = Some(documents.clone());
        Ok(documents)
    }

    async fn fetch(&self) -> Result<Documents, Status> {
        let v3_path = format!("/openapi/v3/apis/{STORAGE_GROUP}/{STORAGE_VERSION}");
        let v3 = translate(&self.get(&v3_path).await?)?;
        let v2 = v2_subset(&self.get("/openapi/v2").await?)?;
        let v3_hash = Sha256::digest(serde_json::to_vec(&v3).unwrap_or_default())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Ok(Documents {
            v2: Arc::new(v2),
            v3: Arc::new(v3),
            v3_hash,
        })
    }

    async fn get(&self, path: &str) -> Result<String, Status> {
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| status::internal(&e.to_string()))?;
        // kube-apiserver's aggregated /openapi/v2 includes this server's
        // document, and building it may wait on the very request that asked
        // for ours: bounded, that wait ends (kube-apiserver retries later)
        // instead of holding both sides and every OpenAPI client forever.
        match tokio::time::timeout(FETCH_WITHIN, self.client.request_text(request)).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, path, "fetching OpenAPI from kube-apiserver failed");
                Err(status::service_unavailable(
                    "the OpenAPI documents are not available yet",
                ))
            }
            Err(_) => {
                tracing::warn!(path, "kube-apiserver did not send its OpenAPI in time");
                Err(status::service_unavailable(
                    "the OpenAPI documents are not available yet",
                ))
            }
        }
    }
}

/// The `/openapi/v3` index naming our one group-version.
pub fn v3_index(hash: &str) -> Value {
    let path = format!("apis/{GROUP}/{VERSION}");
    json!({"paths": {path.clone(): {"serverRelativeURL": format!("/{}/{path}?hash={hash}", "openapi/v3")}}})
}

fn translate(text: &str) -> Result<Value, Status> {
    serde_json::from_str(&rename::text_to_view(text))
        .map_err(|e| status::internal(&format!("reading the OpenAPI document: {e}")))
}

/// Only our paths and definitions: the aggregator merges v2 documents of
/// all API services, where the shared definitions (ObjectMeta, ...) are.
fn v2_subset(full: &str) -> Result<Value, Status> {
    let full: Value = serde_json::from_str(full)
        .map_err(|e| status::internal(&format!("reading OpenAPI v2: {e}")))?;
    let storage_path = format!("/apis/{STORAGE_GROUP}/");
    let storage_definition = format!(
        "{}.",
        STORAGE_GROUP.split('.').rev().collect::<Vec<_>>().join(".")
    );
    let keep = |map: Option<&Map<String, Value>>, prefix: &str| -> Map<String, Value> {
        map.into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let subset = json!({
        "swagger": "2.0",
        "info": {"title": "Arktos tenancy", "version": VERSION},
        "paths": keep(full["paths"].as_object(), &storage_path),
        "definitions": keep(full["definitions"].as_object(), &storage_definition),
    });
    translate(&subset.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_keeps_only_the_storage_group_under_our_names() {
        let full = json!({
            "paths": {"/apis/storage.tenancy.arktos.io/v1alpha1/tenantrecords": {"get": {}}, "/api/v1/pods": {}},
            "definitions": {
                "io.arktos.tenancy.storage.v1alpha1.TenantRecord": {"x-kubernetes-group-version-kind": [{"group": "storage.tenancy.arktos.io", "kind": "TenantRecord", "version": "v1alpha1"}]},
                "io.k8s.api.core.v1.Pod": {},
            },
        });
        let v2 = v2_subset(&full.to_string()).unwrap();
        assert!(v2["paths"]["/apis/tenancy.arktos.io/v1alpha1/tenants"].is_object());
        assert!(v2["paths"]["/api/v1/pods"].is_null());
        let gvk = &v2["definitions"]["io.arktos.tenancy.v1alpha1.Tenant"]["x-kubernetes-group-version-kind"]
            [0];
        assert_eq!(gvk["group"], "tenancy.arktos.io");
        assert_eq!(gvk["kind"], "Tenant");
    }
}
