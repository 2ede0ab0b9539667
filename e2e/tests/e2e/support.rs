//! Helpers the e2e tests share.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, ensure};

use crate::Ctx;

/// A name unique to this test run, for cluster-scoped objects.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}{:x}", nanos % 0xfffff)
}

/// The pinned kubectl (or the one on PATH against an external cluster).
pub fn kubectl_path(ctx: &Ctx) -> PathBuf {
    match ctx.cluster.local() {
        Some(local) => local.upstream().command("kubectl"),
        None => "kubectl".into(),
    }
}

/// Runs kubectl against the test cluster (with a discovery cache of this
/// run's own) and returns stdout; fails with stderr when kubectl fails.
pub async fn kubectl(ctx: &Arc<Ctx>, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let (ok, out, err) = kubectl_status(ctx, args, stdin).await?;
    ensure!(ok, "kubectl {} failed: {err}", args.join(" "));
    Ok(out)
}

/// Runs kubectl and returns (success, stdout, stderr).
pub async fn kubectl_status(
    ctx: &Arc<Ctx>,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<(bool, String, String)> {
    use tokio::io::AsyncWriteExt;
    let cache =
        std::env::temp_dir().join(format!("arktos-e2e-kubectl-cache-{}", std::process::id()));
    let mut child = tokio::process::Command::new(kubectl_path(ctx))
        .arg("--kubeconfig")
        .arg(ctx.cluster.kubeconfig())
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    let mut input = child.stdin.take().context("kubectl stdin")?;
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await?;
    }
    drop(input);
    let out = child.wait_with_output().await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The `use` grant the tenant operator will give a tenant's owners (until
/// it exists, tests grant it themselves): `use` and the tenant routes'
/// subresources of `tenants/<tenant>` for `user`.
pub async fn grant_use(admin: &kube::Client, tenant: &str, user: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::Api;
    use kube::api::{Patch, PatchParams};
    let name = format!("e2e:tenant:{tenant}:owner");
    let apply = PatchParams::apply("e2e").force();
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": ["tenancy.arktos.io"],
                   "resources": ["tenants", "tenants/api", "tenants/apis", "tenants/namespaces"],
                   "resourceNames": [tenant], "verbs": ["use", "get", "list", "watch", "create", "delete"]}],
    }))?;
    Api::<ClusterRole>::all(admin.clone())
        .patch(&name, &apply, &Patch::Apply(&role))
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&name, &apply, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// A client certificate of the cluster CA for user `name` (files
/// `<name>.crt` and `<name>.key` in the cluster's PKI folder).
pub fn issue_user(pki: &arktos_e2e::cluster::pki::Pki, name: &str) -> anyhow::Result<()> {
    pki.issue_from_cluster_ca(&arktos_e2e::cluster::pki::Leaf {
        name,
        common_name: name,
        organizations: &[],
        dns_names: &[],
        usage: arktos_e2e::cluster::pki::Usage::Client,
    })?;
    Ok(())
}

/// What tests take from the local cluster: its PKI, the kube-apiserver URL
/// and the tenant gateway's base URL (`.../tenants/`).
pub fn local_parts(ctx: &Ctx) -> anyhow::Result<(arktos_e2e::cluster::pki::Pki, String, String)> {
    let local = ctx
        .cluster
        .local()
        .context("this test needs the local cluster")?;
    Ok((
        local.pki().clone(),
        local.apiserver_url(),
        local.gateway_url(""),
    ))
}
