//! The Partition API (issue 17's first part; docs/architecture.md): served
//! by arktos-apiserver beside Tenants, stored as PartitionRecords, managed
//! with plain kubectl as the cluster admin.

use std::sync::Arc;

use anyhow::ensure;
use arktos_e2e::harness::step;
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{kubectl, kubectl_status, unique};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &[
    "kubectl_manages_partitions_with_their_columns_and_schema",
    "partition_status_shows_what_the_probe_of_its_control_plane_saw",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(ctx, NAMES[0], |ctx| async move { partitions(&ctx).await }),
        trial(ctx, NAMES[1], |ctx| async move { probes(&ctx).await }),
    ]
}

fn partition(name: &str, weight: u32) -> String {
    partition_in(name, weight, "arktos-system")
}

/// Unschedulable: these partitions are no control planes of Arktos (no
/// operators, no webhooks), so other tests' tenants must not land there.
fn partition_in(name: &str, weight: u32, secret_namespace: &str) -> String {
    json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Partition",
        "metadata": {"name": name},
        "spec": {"kubeconfigSecret": {"namespace": secret_namespace, "name": format!("{name}-kubeconfig")},
            "weight": weight, "unschedulable": true}})
    .to_string()
}

async fn partitions(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let name = unique("p");

    step("create, get with the printer columns, patch, watch-free reads");
    kubectl(ctx, &["apply", "-f", "-"], Some(&partition(&name, 2))).await?;
    let table = kubectl(ctx, &["get", "partitions"], None).await?;
    ensure!(
        table.contains("WEIGHT") && table.contains("UNSCHEDULABLE") && table.contains(&name),
        "kubectl get partitions:\n{table}"
    );
    kubectl(
        ctx,
        &[
            "patch",
            "ptn",
            &name,
            "-p",
            r#"{"spec":{"unschedulable":true}}"#,
        ],
        None,
    )
    .await?;
    let got = kubectl(ctx, &["get", "partition", &name, "-o", "json"], None).await?;
    let got: serde_json::Value = serde_json::from_str(&got)?;
    ensure!(
        got["kind"] == "Partition"
            && got["apiVersion"] == "tenancy.arktos.io/v1alpha1"
            && got["spec"]["unschedulable"] == true
            && got["spec"]["weight"] == 2,
        "the partition as read: {got}"
    );

    step("what the schema refuses, it refuses with a Status naming the field");
    let (ok, _, err) = kubectl_status(
        ctx,
        &["apply", "-f", "-"],
        Some(&partition(&unique("p"), 5000)),
    )
    .await?;
    ensure!(
        !ok && err.contains("spec.weight") && !err.contains("partitionrecord"),
        "weight 5000: {err}"
    );
    let no_secret = json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Partition",
        "metadata": {"name": unique("p")}, "spec": {"weight": 1}})
    .to_string();
    let (ok, _, err) = kubectl_status(ctx, &["apply", "-f", "-"], Some(&no_secret)).await?;
    ensure!(
        !ok && err.contains("kubeconfigSecret"),
        "no kubeconfig Secret: {err}"
    );

    step("a tenant is created only on a partition that exists");
    let tenant = |tenant: &str, partition: &str| {
        json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
            "metadata": {"name": tenant}, "spec": {"partition": partition}})
        .to_string()
    };
    let lost = unique("lost");
    let (ok, _, err) =
        kubectl_status(ctx, &["create", "-f", "-"], Some(&tenant(&lost, "nowhere"))).await?;
    ensure!(
        !ok && err.contains("spec.partition") && err.contains("no partition \"nowhere\""),
        "a tenant on no partition: {err}"
    );
    let placed = unique("placed");
    kubectl(ctx, &["create", "-f", "-"], Some(&tenant(&placed, &name))).await?;
    let table = kubectl(ctx, &["get", "tenant", &placed], None).await?;
    ensure!(
        table.contains("PARTITION") && table.contains(&name),
        "the tenant's partition column: {table}"
    );
    kubectl(ctx, &["delete", "tenant", &placed, "--wait=false"], None).await?;

    step("delete");
    kubectl(ctx, &["delete", "partition", &name], None).await?;
    let (ok, _, err) = kubectl_status(ctx, &["get", "partition", &name], None).await?;
    ensure!(
        !ok && err.contains(&format!(
            "partitions.tenancy.arktos.io \"{name}\" not found"
        )),
        "after delete: {err}"
    );
    Ok(())
}

/// The Partition's status once `done` holds for it (up to 40 s: probes
/// run every 10 s).
async fn status_when(
    ctx: &Arc<Ctx>,
    name: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..40 {
        let got = kubectl(ctx, &["get", "partition", name, "-o", "json"], None).await?;
        last = serde_json::from_str::<serde_json::Value>(&got)?["status"].clone();
        if done(&last) {
            return Ok(last);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    anyhow::bail!("partition {name}: status {last}")
}

async fn probes(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let admin = std::fs::read_to_string(ctx.cluster.kubeconfig())?;
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_default()
        .to_string();
    let (up, down, elsewhere) = (unique("up"), unique("down"), unique("else"));
    let dir = std::env::temp_dir();
    for (name, kubeconfig, namespace) in [
        (&up, admin.clone(), "arktos-system"),
        (
            &down,
            admin.replace(&server, "https://127.0.0.1:1"),
            "arktos-system",
        ),
        (&elsewhere, admin.clone(), "default"),
    ] {
        let file = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&file, kubeconfig)?;
        let from = format!("--from-file=kubeconfig={}", file.display());
        let secret = format!("{name}-kubeconfig");
        kubectl(
            ctx,
            &[
                "create", "secret", "generic", &secret, "-n", namespace, &from,
            ],
            None,
        )
        .await?;
        std::fs::remove_file(&file)?;
        kubectl(
            ctx,
            &["apply", "-f", "-"],
            Some(&partition_in(name, 1, namespace)),
        )
        .await?;
    }

    step("a partition whose control plane answers is ready, with its version");
    let status = status_when(ctx, &up, |s| s["ready"] == true).await?;
    ensure!(
        status["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1."))
            && status["lastError"].is_null()
            && status["lastProbeTime"].is_string(),
        "up: {status}"
    );
    step("one that does not answer is not ready, and says why");
    let status = status_when(ctx, &down, |s| s["lastError"].is_string()).await?;
    ensure!(status["ready"] == false, "down: {status}");
    step("a kubeconfig Secret outside arktos-system is never read");
    let status = status_when(ctx, &elsewhere, |s| s["lastError"].is_string()).await?;
    ensure!(
        status["ready"] == false
            && status["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("must be in arktos-system")),
        "elsewhere: {status}"
    );
    let table = kubectl(ctx, &["get", "partition", &up], None).await?;
    ensure!(
        table.contains("true") && table.contains("v1."),
        "the table: {table}"
    );
    for name in [&up, &down, &elsewhere] {
        kubectl(ctx, &["delete", "partition", name], None).await?;
    }
    for (name, namespace) in [
        (&up, "arktos-system"),
        (&down, "arktos-system"),
        (&elsewhere, "default"),
    ] {
        let secret = format!("{name}-kubeconfig");
        kubectl(ctx, &["delete", "secret", &secret, "-n", namespace], None).await?;
    }
    Ok(())
}
