//! Waiting for a new tenant to be Ready: its default namespaces, its
//! owners' access and its policies in place, so that the next command
//! (`kubectl tenant use`, `kubectl get namespaces`) finds them.

use std::time::{Duration, Instant};

use anyhow::bail;
use arktos_crds::tenant::Tenant;
use kube::Api;

/// Why a tenant is not Ready yet (`None`: it is).
pub fn not_ready(tenant: &Tenant) -> Option<String> {
    let conditions = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => None,
        Some(c) if !c.message.is_empty() => Some(c.message.clone()),
        _ => Some("the tenant controller has not reported on it yet".into()),
    }
}

/// Polls tenant `name` until it is Ready or `timeout` passes, saying once
/// what it waits for.
pub async fn wait(tenants: &Api<Tenant>, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let why = match tenants.get_opt(name).await {
            Ok(Some(tenant)) => not_ready(&tenant),
            Ok(None) => Some("the tenant is gone".into()),
            Err(e) => Some(format!("cannot read the tenant: {e}")),
        };
        let Some(why) = why else {
            return Ok(());
        };
        if started.elapsed() >= timeout {
            bail!(
                "tenant/{name} was created but is not Ready after {}s: {why} (see `kubectl tenant get {name}`)",
                timeout.as_secs()
            );
        }
        if !said {
            eprintln!("waiting for tenant/{name} to be Ready (its namespaces and access)...");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tenant(conditions: serde_json::Value) -> Tenant {
        serde_json::from_value(
            json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme"}, "spec": {}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    #[test]
    fn ready_is_the_ready_condition_and_otherwise_says_why() {
        let ready = tenant(
            json!([{"type": "Ready", "status": "True", "reason": "Provisioned",
            "message": "", "lastTransitionTime": "2026-12-07T00:00:00Z"}]),
        );
        assert_eq!(not_ready(&ready), None);
        let pending = tenant(
            json!([{"type": "Ready", "status": "False", "reason": "Provisioning",
            "message": "creating namespaces", "lastTransitionTime": "2026-12-07T00:00:00Z"}]),
        );
        assert_eq!(not_ready(&pending).as_deref(), Some("creating namespaces"));
        assert!(not_ready(&tenant(json!([]))).is_some());
    }
}
