//! Keeps each Partition's status current: every few seconds arktos-apiserver
//! reaches the partition's kube-apiserver with the kubeconfig its Secret
//! holds, asks `/readyz` and `/version`, counts the tenants placed there,
//! and writes what it saw (or why it could not) to the Partition's status.
//! The Secret must be in arktos-apiserver's own namespace: it reads no
//! Secrets anywhere else.

use std::time::Duration;

use arktos_crds::partition::{PartitionSpec, PartitionStatus};
use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::storage::{Call, Storage};

/// How long one probe of one partition may take.
const PROBE_WITHIN: Duration = Duration::from_secs(3);

pub struct Prober {
    /// Partitions' storage.
    pub partitions: Storage,
    /// Tenants' storage (to count the tenants of each partition).
    pub tenants: Storage,
    /// The root cluster: the Secrets.
    pub client: kube::Client,
    /// Where the kubeconfig Secrets must be.
    pub namespace: String,
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
        if items.is_empty() {
            return Ok(());
        }
        let tenants = self.tenants.call(Method::GET, Call::default()).await?;
        for item in &items {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let Ok(spec) = serde_json::from_value::<PartitionSpec>(item["spec"].clone()) else {
                continue;
            };
            let mut status = match tokio::time::timeout(PROBE_WITHIN, self.probe(&spec)).await {
                Ok(status) => status,
                Err(_) => PartitionStatus {
                    last_error: format!("no answer within {} s", PROBE_WITHIN.as_secs()),
                    ..Default::default()
                },
            };
            status.tenants = count_placed(&tenants.body, name);
            status.last_probe_time = Some(k8s_openapi::jiff::Timestamp::now().to_string());
            self.write_status(name, &status).await;
        }
        Ok(())
    }

    /// What the partition's kube-apiserver says of itself.
    async fn probe(&self, spec: &PartitionSpec) -> PartitionStatus {
        match self.reach(spec).await {
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

    /// The partition's version when it is ready; else why not.
    async fn reach(&self, spec: &PartitionSpec) -> Result<String, String> {
        let secret = &spec.kubeconfig_secret;
        if secret.namespace != self.namespace {
            return Err(format!(
                "the kubeconfig Secret must be in {} (arktos-apiserver reads Secrets there only)",
                self.namespace
            ));
        }
        let secrets: kube::Api<Secret> =
            kube::Api::namespaced(self.client.clone(), &self.namespace);
        let found = secrets
            .get_opt(&secret.name)
            .await
            .map_err(|e| format!("reading Secret {}/{}: {e}", secret.namespace, secret.name))?
            .ok_or_else(|| format!("Secret {}/{} does not exist", secret.namespace, secret.name))?;
        let bytes = found
            .data
            .unwrap_or_default()
            .remove(secret.key())
            .ok_or_else(|| {
                format!(
                    "Secret {}/{} has no key {:?}",
                    secret.namespace,
                    secret.name,
                    secret.key()
                )
            })?;
        let text =
            String::from_utf8(bytes.0).map_err(|_| "the kubeconfig is not text".to_string())?;
        let kubeconfig =
            Kubeconfig::from_yaml(&text).map_err(|e| format!("the kubeconfig: {e}"))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("the kubeconfig: {e}"))?;
        config.connect_timeout = Some(PROBE_WITHIN);
        config.read_timeout = Some(PROBE_WITHIN);
        let client = kube::Client::try_from(config).map_err(|e| format!("a client: {e}"))?;
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

/// How many of `tenants` (a TenantList) are placed on `partition`.
fn count_placed(tenants: &Value, partition: &str) -> u64 {
    tenants["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["spec"]["partition"] == partition)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_fixed_is_cleared_and_tenants_are_counted_by_their_partition() {
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
        let tenants = json!({"items": [
            {"spec": {"partition": "p2"}}, {"spec": {"partition": "default"}}, {"spec": {"partition": "p2"}},
        ]});
        assert_eq!(count_placed(&tenants, "p2"), 2);
        assert_eq!(count_placed(&tenants, "p9"), 0);
    }
}
