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

pub const NAMES: &[&str] = &["kubectl_manages_partitions_with_their_columns_and_schema"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![trial(
        ctx,
        NAMES[0],
        |ctx| async move { partitions(&ctx).await },
    )]
}

fn partition(name: &str, weight: u32) -> String {
    json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Partition",
        "metadata": {"name": name},
        "spec": {"kubeconfigSecret": {"namespace": "arktos-system", "name": format!("{name}-kubeconfig")},
            "weight": weight}})
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
