//! Tenant routes: `kubectl tenant` and plain kubectl against a tenant context,
//! and the same objects on the aggregated path and the Arktos path form.

use std::path::Path;
use std::sync::Arc;

use anyhow::ensure;
use arktos_e2e::cluster::kubeconfig;
use k8s_openapi::api::core::v1::ConfigMap;
use libtest_mimic::Trial;

use crate::support::{grant_use, unique};
use crate::{Ctx, trial};

pub const NAMES: &[&str] = &[
    "kubectl_tenant_use_gives_plain_kubectl_a_tenant_api",
    "plain_kubectl_manages_and_lists_objects_in_a_tenant_context",
    "a_tenant_object_is_the_same_on_the_aggregated_and_arktos_paths",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(ctx, NAMES[0], |ctx| async move {
            PluginTenant::new(&ctx).await?.done()
        }),
        trial(ctx, NAMES[1], plain_kubectl_in_a_tenant_context),
        trial(ctx, NAMES[2], same_object_on_every_path),
    ]
}

/// Runs kubectl with `kubeconfig` and the plugin on PATH.
async fn kubectl_as(
    ctx: &Ctx,
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let plugin_dir = arktos_e2e::cluster::arktos::binary("kubectl-tenant")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = tokio::process::Command::new(crate::support::kubectl_path(ctx));
    command.env("KUBECONFIG", kubeconfig).env("PATH", path);
    // kubectl takes no flags before a plugin's name.
    if args.first() != Some(&"tenant") {
        command.arg("--cache-dir").arg(cache);
    }
    let out = command.args(args).output().await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A tenant created with `kubectl tenant create`, and its owner's
/// kubeconfig switched to it with `kubectl tenant use` (each step checked).
struct PluginTenant {
    ctx: Arc<Ctx>,
    dir: std::path::PathBuf,
    pki: arktos_e2e::cluster::pki::Pki,
    admin_url: String,
    gateway: String,
    tenant: String,
    user: String,
    user_config: std::path::PathBuf,
    user_cache: std::path::PathBuf,
}

impl PluginTenant {
    async fn new(ctx: &Arc<Ctx>) -> anyhow::Result<Self> {
        let (pki, admin_url, gateway) = crate::support::local_parts(ctx)?;
        let dir = std::env::temp_dir().join(format!("arktos-e2e-plugin-{}", unique("k")));
        std::fs::create_dir_all(&dir)?;
        let tenant = unique("plug");
        let user = format!("{tenant}-owner");
        crate::support::issue_user(&pki, &user)?;
        let admin_config = dir.join("admin.kubeconfig");
        std::fs::copy(ctx.cluster.kubeconfig(), &admin_config)?;
        let user_config = dir.join("user.kubeconfig");
        kubeconfig::write(&user_config, "local", &admin_url, &pki, &user)?;
        let (admin_cache, user_cache) = (dir.join("admin-cache"), dir.join("user-cache"));

        let owner = format!("user:{user}");
        let (ok, out, err) = kubectl_as(
            ctx,
            &admin_config,
            &admin_cache,
            &[
                "tenant",
                "create",
                &tenant,
                "--owner",
                &owner,
                "--quota",
                "count/namespaces=3",
            ],
        )
        .await?;
        ensure!(ok && out.contains("created"), "create: {out} {err}");
        let (ok, out, _) =
            kubectl_as(ctx, &admin_config, &admin_cache, &["tenant", "list"]).await?;
        ensure!(ok && out.contains(&tenant), "list: {out}");
        let (ok, _, err) = kubectl_as(
            ctx,
            &admin_config,
            &admin_cache,
            &["tenant", "create", "bad--name"],
        )
        .await?;
        ensure!(
            !ok && err.trim().lines().count() == 1 && err.starts_with("error: "),
            "a bad name gives one clear line: {err:?}"
        );
        let admin = kubeconfig::client(&admin_url, &pki, "admin").await?;
        arktos_e2e::harness::created_tenant(&tenant);
        crate::support::wait_ready(&admin, &tenant).await?;
        grant_use(&admin, &tenant, &user).await?;

        let (ok, out, err) =
            kubectl_as(ctx, &user_config, &user_cache, &["tenant", "use", &tenant]).await?;
        ensure!(ok, "use: {out} {err}");
        let (ok, out, _) =
            kubectl_as(ctx, &user_config, &user_cache, &["tenant", "current"]).await?;
        ensure!(ok && out.trim() == tenant, "current: {out}");
        // The context starts in the tenant's `default` namespace, which exists.
        let (ok, out, err) = kubectl_as(
            ctx,
            &user_config,
            &user_cache,
            &[
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath={.contexts[0].context.namespace}",
            ],
        )
        .await?;
        ensure!(
            ok && out.trim() == "default",
            "context namespace: {out} {err}"
        );
        let (ok, out, err) = kubectl_as(
            ctx,
            &user_config,
            &user_cache,
            &["get", "namespace", "default"],
        )
        .await?;
        ensure!(ok, "the tenant's default namespace: {out} {err}");
        Ok(Self {
            ctx: ctx.clone(),
            dir,
            pki,
            admin_url,
            gateway,
            tenant,
            user,
            user_config,
            user_cache,
        })
    }

    /// kubectl as the owner, in the tenant's context.
    async fn kubectl(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        kubectl_as(&self.ctx, &self.user_config, &self.user_cache, args).await
    }

    fn done(self) -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

async fn plain_kubectl_in_a_tenant_context(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let t = PluginTenant::new(&ctx).await?;
    let tenant = &t.tenant;
    for args in [
        vec!["create", "namespace", "web"],
        vec![
            "-n",
            "web",
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
        ],
        vec![
            "-n",
            "web",
            "create",
            "service",
            "clusterip",
            "api",
            "--tcp=80:8080",
        ],
        vec![
            "-n",
            "web",
            "create",
            "role",
            "reader",
            "--verb=get",
            "--resource=configmaps",
        ],
        vec![
            "-n",
            "web",
            "create",
            "rolebinding",
            "rb",
            "--role=reader",
            "--serviceaccount=web:default",
        ],
    ] {
        let (ok, out, err) = t.kubectl(&args).await?;
        ensure!(ok, "kubectl {}: {out} {err}", args.join(" "));
    }
    let (ok, out, err) = t.kubectl(&["get", "namespaces", "-o", "name"]).await?;
    // Its own, and the three every tenant has.
    ensure!(
        ok && out.split_whitespace().collect::<Vec<_>>()
            == [
                "namespace/default",
                "namespace/kube-public",
                "namespace/kube-system",
                "namespace/web"
            ],
        "namespaces: {out} {err}"
    );
    let (ok, out, err) = t
        .kubectl(&["get", "configmaps,services,roles,rolebindings", "-A"])
        .await?;
    ensure!(
        ok && out.contains("cfg")
            && out.contains("api")
            && out.contains("reader")
            && out.contains("rb"),
        "{out} {err}"
    );
    ensure!(
        !out.contains(&format!("{tenant}--")),
        "a storage name leaked: {out}"
    );
    // A Deployment, and a pod (held back from scheduling): `get pods -A`
    // shows this tenant's pod alone, in the tenant's namespace name.
    let pod = serde_json::json!({"apiVersion": "v1", "spec": {
        "schedulingGates": [{"name": "arktos.io/e2e"}],
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "p", "image": "x",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}})
    .to_string();
    for args in [
        vec![
            "-n",
            "web",
            "create",
            "deployment",
            "app",
            "--image=x",
            "--replicas=0",
        ],
        vec![
            "-n",
            "web",
            "run",
            "p",
            "--image=x",
            "--overrides",
            pod.as_str(),
        ],
    ] {
        let (ok, out, err) = t.kubectl(&args).await?;
        ensure!(ok, "kubectl {}: {out} {err}", args.join(" "));
    }
    let (ok, out, err) = t
        .kubectl(&["-n", "web", "get", "deployments", "-o", "name"])
        .await?;
    ensure!(
        ok && out.trim() == "deployment.apps/app",
        "deployments: {out} {err}"
    );
    let (ok, out, err) = t
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "--no-headers",
            "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name",
        ])
        .await?;
    ensure!(
        ok && out.split_whitespace().collect::<Vec<_>>() == ["web", "p"],
        "get pods -A: {out} {err}"
    );
    // kubectl --raw on the aggregated path, through kube-apiserver (the
    // kubeconfig's first context).
    let (ok, out, err) = t
        .kubectl(&[
            "--context",
            "local",
            "get",
            "--raw",
            &format!(
                "/apis/tenancy.arktos.io/v1alpha1/tenants/{tenant}/api/v1/namespaces/web/configmaps"
            ),
        ])
        .await?;
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    ensure!(
        ok && listed["items"].as_array().is_some_and(|items| items
            .iter()
            .any(|m| m["metadata"]["name"] == "cfg" && m["metadata"]["namespace"] == "web")),
        "kubectl get --raw on the aggregated path: {out} {err}"
    );
    let (ok, out, err) = t.kubectl(&["get", "nodes"]).await?;
    ensure!(
        !ok && !out.contains("kwok"),
        "nodes are visible: {out} {err}"
    );

    t.done()
}

async fn same_object_on_every_path(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let t = PluginTenant::new(&ctx).await?;
    let (ok, out, err) = t.kubectl(&["create", "namespace", "web"]).await?;
    ensure!(ok, "create namespace: {out} {err}");
    let (ok, out, err) = t
        .kubectl(&[
            "-n",
            "web",
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
        ])
        .await?;
    ensure!(ok, "create configmap: {out} {err}");
    let (pki, admin_url, tenant, user) = (&t.pki, &t.admin_url, &t.tenant, &t.user);
    // The same object on the aggregated path and on the Arktos path form.
    let user_client = kubeconfig::client(admin_url, pki, user).await?;
    let aggregated = format!(
        "/apis/tenancy.arktos.io/v1alpha1/tenants/{tenant}/api/v1/namespaces/web/configmaps/cfg"
    );
    let map: ConfigMap = user_client
        .request(http::Request::get(&aggregated).body(Vec::new())?)
        .await?;
    ensure!(
        map.metadata.namespace.as_deref() == Some("web"),
        "aggregated path: {:?}",
        map.metadata.namespace
    );
    let gateway = t
        .gateway
        .trim_end_matches('/')
        .trim_end_matches("/tenants")
        .to_string();
    let direct = kubeconfig::client_with(
        &gateway,
        &pki.ca_cert(),
        &pki.cert(user),
        &pki.key(user),
        &[],
    )
    .await?;
    let arktos_path = format!("/api/v1/tenants/{tenant}/namespaces/web/configmaps/cfg");
    let map: ConfigMap = direct
        .request(http::Request::get(&arktos_path).body(Vec::new())?)
        .await?;
    ensure!(
        map.data.unwrap_or_default().get("a").map(String::as_str) == Some("b"),
        "Arktos path"
    );
    t.done()
}
