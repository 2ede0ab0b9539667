//! Workloads inside a tenant (docs/tenant-routes.md, "Workloads inside a
//! tenant"): a pod of a tenant runs a typed client-go program with the
//! in-cluster config, unchanged, and it reaches its tenant's API through
//! the gateway as its service account: it knows its namespace by the
//! tenant's name, lists, creates and watches there, and reaches nothing
//! outside. The tenant's `default/kubernetes` Service names the gateway.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use arktos_e2e::harness::step;
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::support::{
    TenantOwner, eventually, kubectl_apply, kubectl_with, kubectl_words as kubectl,
    tenant_kubeconfig,
};
use crate::{Ctx, long_trial};

pub const NAMES: &[&str] = &["a_tenants_pod_reaches_its_tenants_api_with_the_in_cluster_config"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![long_trial(
        ctx,
        NAMES[0],
        Duration::from_secs(360),
        |ctx| async move { in_cluster(&ctx).await },
    )]
}

/// The pod: restricted Pod Security, on the real node (no toleration of
/// the simulated nodes' taint).
fn pod(registry: &str, outside: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "incluster"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "check", "image": format!("{registry}/arktos/incluster-check:1"),
            "env": [{"name": "OUTSIDE_NAMESPACES", "value": outside}],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
            "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 65534,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        }]}})
    .to_string()
}

async fn in_cluster(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let (registry, gateway) = {
        let local = ctx
            .cluster
            .local()
            .context("this test needs the local cluster's real node")?;
        (
            local.registry(),
            local.tenant_api_address().context("no address for pods")?,
        )
    };
    let acme = TenantOwner::create(ctx, "incl", json!({})).await?;
    acme.namespace("web").await?;
    let globex = TenantOwner::create(ctx, "inclo", json!({})).await?;
    globex.namespace("web").await?;
    let as_acme = tenant_kubeconfig(ctx, &acme, "web")?;

    step("the tenant's default/kubernetes Service has the gateway as its endpoint");
    let gateway_ip = gateway.ip().to_string();
    eventually(
        "default/kubernetes and its EndpointSlice",
        Duration::from_secs(60),
        || {
            let (ctx, as_acme, gateway_ip) = (ctx.clone(), as_acme.clone(), gateway_ip.clone());
            async move {
                let (ok, out, _) = kubectl(
                    &ctx,
                    &as_acme,
                    "get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o json",
                )
                .await?;
                let (service, ..) = kubectl(&ctx, &as_acme, "get service kubernetes -n default").await?;
                Ok(ok && service && out.contains(&format!("\"{gateway_ip}\"")))
            }
        },
    )
    .await?;

    step("the pod's service account may edit its namespace; a pod runs incluster-check");
    let (ok, out, err) = kubectl(
        ctx,
        &as_acme,
        "create rolebinding in-cluster --clusterrole=edit --serviceaccount=web:default -n web",
    )
    .await?;
    ensure!(ok, "rolebinding: {out} {err}");
    let outside = format!("kube-system,{}--web,{}--web", globex.tenant, acme.tenant);
    let manifest = pod(&registry, &outside);
    eventually(
        "the pod is created (its service account exists)",
        Duration::from_secs(60),
        || {
            let (ctx, as_acme, manifest) = (ctx.clone(), as_acme.clone(), manifest.clone());
            async move { Ok(kubectl_apply(&ctx, &as_acme, &manifest).await?.0) }
        },
    )
    .await?;
    let phase = eventually_phase(ctx, &as_acme).await?;
    let (_, logs, _) = kubectl(ctx, &as_acme, "logs incluster -n web").await?;
    println!("{}", logs.trim_end().replace('\n', "\n    "));
    ensure!(
        phase == "Succeeded" && logs.contains("in-cluster check passed"),
        "incluster-check ended {phase}:\n{logs}"
    );
    ensure!(
        logs.contains("namespace web") && logs.contains("I am system:serviceaccount:web:default"),
        "the pod saw storage names:\n{logs}"
    );

    step("what it made is the tenant's; its env points at the gateway");
    let (ok, out, err) = kubectl(
        ctx,
        &as_acme,
        "get configmap made-in-cluster -n web -o name",
    )
    .await?;
    ensure!(ok, "made-in-cluster: {out} {err}");
    let (_, pod, _) = kubectl(ctx, &as_acme, "get pod incluster -n web -o json").await?;
    let pod: Value = serde_json::from_str(&pod)?;
    let env = pod["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        env.iter()
            .any(|v| v["name"] == "KUBERNETES_SERVICE_HOST" && v["value"] == gateway_ip.as_str()),
        "the pod's env: {env:?}"
    );
    let (ok, out, _) = kubectl(
        ctx,
        &globex_config(ctx, &globex)?,
        "get configmaps -n web -o name",
    )
    .await?;
    ensure!(ok && !out.contains("made-in-cluster"), "globex sees: {out}");

    step("paths without a tenant refuse anyone but a tenant's service account");
    let server = format!("--server=https://127.0.0.1:{}", gateway.port());
    let (ok, _, err) = kubectl_with(ctx, &as_acme, &[&server, "get", "namespaces"], None).await?;
    ensure!(
        !ok && err.contains("the server could not find the requested resource"),
        "the owner on a plain path: {err}"
    );
    Ok(())
}

fn globex_config(ctx: &Arc<Ctx>, globex: &TenantOwner) -> anyhow::Result<std::path::PathBuf> {
    tenant_kubeconfig(ctx, globex, "web")
}

/// The pod's phase once it has ended (or the last seen after 3 minutes).
async fn eventually_phase(ctx: &Arc<Ctx>, config: &std::path::Path) -> anyhow::Result<String> {
    let mut phase = String::new();
    for _ in 0..180 {
        let (_, out, _) = kubectl(
            ctx,
            config,
            "get pod incluster -n web -o jsonpath={.status.phase}",
        )
        .await?;
        phase = out.trim().to_string();
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(phase)
}
