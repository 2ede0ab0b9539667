//! Keeps each Partition's status current: every few seconds arktos-apiserver
//! reaches the partition's kube-apiserver with the kubeconfig its Secret
//! holds, asks `/readyz` and `/version`, counts the tenants placed there
//! (`placed_tenants`),
//! and writes what it saw (or why it could not) to the Partition's status.
//! The Secret must be in arktos-apiserver's own namespace: it reads no
//! Secrets anywhere else. The tenant routes follow what it finds: new
//! kubeconfigs remake a partition's routes, a Partition gone drops them,
//! one that does not answer has its tenants' requests refused at once
//! (see `tenant_routes::health`).

use std::sync::Arc;
use std::time::Duration;

use arktos_crds::partition::{PartitionSpec, PartitionStatus, connect};
use http::Method;
use serde_json::{Value, json};

use crate::placed_tenants::PlacedTenants;
use crate::storage::{Call, Storage};
use crate::tenant_routes::partitioned::PartitionRoutes;

/// How long one probe of one partition may take.
const PROBE_WITHIN: Duration = Duration::from_secs(3);

pub struct Prober {
    /// Partitions' storage.
    pub partitions: Storage,
    /// Where the tenants are (to count the tenants of each partition).
    pub placed: Arc<PlacedTenants>,
    /// The root cluster: the Secrets.
    pub client: kube::Client,
    /// Where the kubeconfig Secrets must be.
    pub namespace: String,
    /// The tenant routes, kept in step with the Partitions.
    pub routes: Arc<PartitionRoutes>,
}

impl Prober {
    /// Probes every partition every `every`, for as long as the process runs.
    pub async fn run(self, every: Duration) {
        loop {
            if let Err(err) = self.probe_all().await {
                tracing::warn!(error = %err.message.unwrap_or_default(), "cannot probe partitions");
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn probe_all(
        &self,
    ) -> Result<(), k8s_openapi::apimachinery::pkg::apis::meta::v1::Status> {
        let listed = self.partitions.call(Method::GET, Call::default()).await?;
        let items = listed.body["items"].as_array().cloned().unwrap_or_default();
        let names: Vec<String> = items
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        self.routes.retain(&names);
        if items.is_empty() {
            return Ok(());
        }
        // All at once: one partition that hangs delays no other's verdict.
        let probes = items.iter().map(|item| self.probe_one(item));
        futures::future::join_all(probes).await;
        Ok(())
    }

    async fn probe_one(&self, item: &Value) {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let Ok(spec) = serde_json::from_value::<PartitionSpec>(item["spec"].clone()) else {
            return;
        };
        let mut status = match tokio::time::timeout(PROBE_WITHIN, self.probe(name, &spec)).await {
            Ok(status) => status,
            Err(_) => PartitionStatus {
                last_error: format!("no answer within {} s", PROBE_WITHIN.as_secs()),
                ..Default::default()
            },
        };
        let down = (!status.ready).then(|| status.last_error.clone());
        self.routes.found(name, down);
        status.tenants = self.placed.count(name);
        status.last_probe_time = Some(k8s_openapi::jiff::Timestamp::now().to_string());
        self.write_status(name, &status).await;
    }

    /// What the partition's kube-apiserver says of itself.
    async fn probe(&self, name: &str, spec: &PartitionSpec) -> PartitionStatus {
        match self.reach(name, spec).await {
            Ok(version) => PartitionStatus {
                ready: true,
                version,
                ..Default::default()
            },
            Err(why) => PartitionStatus {
                last_error: why,
                ..Default::default()
            },
        }
    }

    /// The partition's version when it is ready; else why not. Hands the
    /// kubeconfig to the routes, which remake theirs if it changed, and
    /// asks through their connections: the health the gateway sees.
    async fn reach(&self, name: &str, spec: &PartitionSpec) -> Result<String, String> {
        let kubeconfig =
            connect::kubeconfig_text(&self.client, &self.namespace, &spec.kubeconfig_secret)
                .await?;
        let routes = self.routes.offer(name, kubeconfig).await?;
        let client = routes.client();
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let ready = client
            .request_text(request)
            .await
            .map_err(|e| format!("/readyz: {e}"))?;
        if ready.trim() != "ok" {
            return Err(format!("/readyz: {}", ready.trim()));
        }
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| format!("/version: {e}"))?;
        Ok(version.git_version)
    }

    async fn write_status(&self, name: &str, status: &PartitionStatus) {
        let call = Call {
            name: Some(name),
            subresource: Some("status"),
            content_type: "application/merge-patch+json",
            body: Some(json!({"status": status_patch(status)})),
            ..Default::default()
        };
        match self.partitions.call(Method::PATCH, call).await {
            Ok(answer) if answer.is_success() => {}
            Ok(answer) => {
                tracing::warn!(partition = name, code = %answer.code, "cannot write the partition's status")
            }
            Err(err) => {
                tracing::warn!(partition = name, error = ?err, "cannot write the partition's status")
            }
        }
    }
}

/// The status as a merge patch: every field present, so one that is gone
/// now (an error fixed) is cleared.
fn status_patch(status: &PartitionStatus) -> Value {
    let text = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    json!({
        "ready": status.ready,
        "version": text(&status.version),
        "tenants": status.tenants,
        "lastError": text(&status.last_error),
        "lastProbeTime": status.last_probe_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_fixed_is_cleared() {
        let patch = status_patch(&PartitionStatus {
            ready: true,
            version: "v1.37.2".into(),
            ..Default::default()
        });
        assert_eq!(
            patch["lastError"],
            Value::Null,
            "cleared by the merge patch"
        );
        assert_eq!(patch["version"], "v1.37.2");
    }
}
