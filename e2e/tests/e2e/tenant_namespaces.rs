//! A tenant's namespaces as kubectl uses them through the gateway
//! (docs/tenant-routes.md): labelled and annotated by their owners (never
//! the keys Arktos keeps), selected by label and by their own
//! `kubernetes.io/metadata.name`, and deleted by kubectl 1.37, whose
//! watch-list waits for the end of the initial events.

use std::sync::Arc;

use anyhow::ensure;
use arktos_e2e::harness::step;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{TenantOwner, kubectl_with, tenant_kubeconfig};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &[
    "tenant_namespaces_are_labelled_selected_and_deleted_with_kubectl",
    "a_tenant_network_policy_selects_namespaces_by_their_own_names",
    "client_go_typed_protobuf_clients_use_a_tenant_api",
    "field_validation_sees_duplicate_fields_as_on_kube_apiserver",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(
            ctx,
            NAMES[0],
            |ctx| async move { labels_and_delete(&ctx).await },
        ),
        trial(
            ctx,
            NAMES[1],
            |ctx| async move { network_policy(&ctx).await },
        ),
        trial(ctx, NAMES[2], |ctx| async move { client_go(&ctx).await }),
        trial(
            ctx,
            NAMES[3],
            |ctx| async move { duplicate_fields(&ctx).await },
        ),
    ]
}

/// client-go's typed clientset in protobuf (the upstream bundle's
/// `client-check`, built from the pinned module) through a tenant's route.
async fn client_go(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(ctx, "cgo", json!({})).await?;
    let config = tenant_kubeconfig(ctx, &owner, "default")?;
    let program = ctx
        .cluster
        .local()
        .ok_or_else(|| anyhow::anyhow!("this test needs the local cluster"))?
        .upstream()
        .command("client-check");
    step("client-check: namespaces, watch-list, deletecollection, self reviews");
    let out = tokio::process::Command::new(program)
        .arg("--kubeconfig")
        .arg(&config)
        .args(["--namespace", "typed", "--tenant", &owner.tenant])
        .output()
        .await?;
    let printed = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "client-check: {printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "  client-check: {}",
        printed.lines().collect::<Vec<_>>().join("; ")
    );
    Ok(())
}

async fn labels_and_delete(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(ctx, "nsl", json!({})).await?;
    for namespace in ["web", "db"] {
        owner.namespace(namespace).await?;
    }
    let config = tenant_kubeconfig(ctx, &owner, "default")?;
    let kubectl = |args: Vec<String>| {
        let (ctx, config) = (ctx.clone(), config.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl_with(&ctx, &config, &args, None).await
        }
    };
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    step("kubectl label and annotate a tenant namespace");
    for args in ["label ns web team=red", "annotate ns web owner=alice"] {
        let (ok, out, err) = kubectl(words(args)).await?;
        ensure!(ok, "kubectl {args}: {out} {err}");
    }
    let (ok, out, err) = kubectl(words("get ns -l team=red -o name")).await?;
    ensure!(
        ok && out.trim() == "namespace/web",
        "select by label: {out} {err}"
    );
    let (ok, out, err) = kubectl(words("get ns -l kubernetes.io/metadata.name=db -o name")).await?;
    ensure!(
        ok && out.trim() == "namespace/db",
        "select by name label: {out} {err}"
    );
    let (ok, out, err) = kubectl(words(
        "get ns web -o jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}/{.metadata.annotations.owner}",
    ))
    .await?;
    ensure!(ok && out.trim() == "web/alice", "read back: {out} {err}");

    step("the keys Arktos keeps are refused, naming the key");
    for (args, key) in [
        (
            "label ns web tenancy.arktos.io/tenant=other --overwrite",
            "tenancy.arktos.io/tenant",
        ),
        (
            "label ns web pod-security.kubernetes.io/enforce=privileged --overwrite",
            "pod-security.kubernetes.io/enforce",
        ),
        (
            "label ns web kubernetes.io/metadata.name-",
            "kubernetes.io/metadata.name",
        ),
        (
            "annotate ns web scheduler.alpha.kubernetes.io/node-selector=node=x",
            "scheduler.alpha.kubernetes.io/node-selector",
        ),
    ] {
        let (ok, out, err) = kubectl(words(args)).await?;
        ensure!(
            !ok && err.contains("Forbidden") && err.contains(key),
            "kubectl {args}: {out} {err}"
        );
    }
    let stored = Api::<k8s_openapi::api::core::v1::Namespace>::all(owner.admin.clone())
        .get(&owner.storage("web"))
        .await?;
    let labels = stored.metadata.labels.unwrap_or_default();
    ensure!(
        labels.get("tenancy.arktos.io/tenant") == Some(&owner.tenant)
            && labels.get("team").map(String::as_str) == Some("red"),
        "stored labels: {labels:?}"
    );

    step("kubectl delete ns waits on a watch-list and returns");
    let (ok, out, err) = kubectl(words("delete ns db --wait=true --timeout=90s")).await?;
    ensure!(
        ok && out.contains("deleted"),
        "kubectl delete ns: {out} {err}"
    );
    Ok(())
}

/// A NetworkPolicy selecting namespaces by `kubernetes.io/metadata.name`
/// is stored on the storage names (which the cluster enforces on), and
/// reads back as written.
async fn network_policy(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(ctx, "netpol", json!({})).await?;
    owner.namespace("web").await?;
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "from-web"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector":
            {"matchLabels": {"kubernetes.io/metadata.name": "web"}}}]}]},
    }))?;
    let mine = Api::<NetworkPolicy>::namespaced(owner.client.clone(), "web");
    mine.create(&Default::default(), &policy).await?;
    let stored = Api::<NetworkPolicy>::namespaced(owner.admin.clone(), &owner.storage("web"))
        .get("from-web")
        .await?;
    let selector = |p: &NetworkPolicy| {
        serde_json::to_value(p).unwrap_or_default()["spec"]["ingress"][0]["from"][0]
            ["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            .clone()
    };
    ensure!(
        selector(&stored) == json!(owner.storage("web")),
        "stored: {}",
        selector(&stored)
    );
    let read = mine.get("from-web").await?;
    ensure!(
        selector(&read) == json!("web"),
        "read back: {}",
        selector(&read)
    );
    Ok(())
}

/// A body with a field twice and an unknown one, sent as is (`kubectl
/// create --raw`): Strict refuses naming both, Warn warns of both and
/// creates.
async fn duplicate_fields(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(ctx, "dup", json!({})).await?;
    owner.namespace("web").await?;
    let config = tenant_kubeconfig(ctx, &owner, "web")?;
    let body = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup", "namespace": "web"},
        "data": {"a": "1"}, "data": {"a": "2"}, "unknownField": 1}"#;
    let create = |validation: &'static str| {
        let (ctx, config) = (ctx.clone(), config.clone());
        async move {
            let path = format!("/api/v1/namespaces/web/configmaps?fieldValidation={validation}");
            kubectl_with(
                &ctx,
                &config,
                &["create", "--raw", &path, "-f", "-"],
                Some(body),
            )
            .await
        }
    };
    step("Strict: refused, naming the duplicate and the unknown field");
    let (ok, out, err) = create("Strict").await?;
    ensure!(
        !ok && err.contains("duplicate field \"data\"")
            && err.contains("unknown field \"unknownField\""),
        "Strict: {out} {err}"
    );
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(owner.client.clone(), "web");
    ensure!(
        configmaps.get_opt("dup").await?.is_none(),
        "Strict created it"
    );
    step("Warn: created, warning of both");
    let (ok, out, err) = create("Warn").await?;
    ensure!(
        ok && err.contains("duplicate field \"data\"")
            && err.contains("unknown field \"unknownField\""),
        "Warn: {out} {err}"
    );
    let created = configmaps.get("dup").await?;
    ensure!(
        created
            .data
            .unwrap_or_default()
            .get("a")
            .map(String::as_str)
            == Some("2"),
        "the last of the duplicates is kept, as kube-apiserver does"
    );
    Ok(())
}
