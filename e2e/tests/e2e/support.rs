//! Helpers the e2e tests share.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, ensure};

use crate::Ctx;

/// Polls `check` until it holds, for at most `within`; returns how long
/// it took.
pub async fn eventually<F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut check: F,
) -> anyhow::Result<std::time::Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    arktos_e2e::harness::step(&format!("waiting: {what}"));
    let started = std::time::Instant::now();
    loop {
        if check().await.unwrap_or(false) {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < within,
            "{what}: not within {}s",
            within.as_secs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A user of a tenant: a client certificate of the cluster CA, owner of
/// a new Tenant with `spec`, and a client for the tenant's gateway route
/// once the tenant controller has granted the owner `use`.
pub struct TenantOwner {
    pub tenant: String,
    pub user: String,
    pub client: kube::Client,
    pub admin: kube::Client,
}

impl TenantOwner {
    /// A new tenant, provisioned (Ready: its default namespaces there), as
    /// users expect of a tenant they were just given.
    pub async fn create(ctx: &Ctx, prefix: &str, spec: serde_json::Value) -> anyhow::Result<Self> {
        let owner = Self::create_unprovisioned(ctx, prefix, spec).await?;
        wait_ready(&owner.admin, &owner.tenant).await?;
        Ok(owner)
    }

    /// A new tenant, without waiting for the tenant controller.
    pub async fn create_unprovisioned(
        ctx: &Ctx,
        prefix: &str,
        spec: serde_json::Value,
    ) -> anyhow::Result<Self> {
        use kube::Api;
        let (pki, admin_url, gateway) = local_parts(ctx)?;
        let admin = arktos_e2e::cluster::kubeconfig::client(&admin_url, &pki, "admin").await?;
        let tenant = unique(prefix);
        let user = format!("{tenant}-owner");
        issue_user(&pki, &user)?;
        let mut spec = spec;
        spec["owners"] = serde_json::json!([{"kind": "User", "name": user}]);
        let object: arktos_crds::Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
            "metadata": {"name": tenant}, "spec": spec,
        }))?;
        Api::<arktos_crds::Tenant>::all(admin.clone())
            .create(&Default::default(), &object)
            .await?;
        arktos_e2e::harness::created_tenant(&tenant);
        let client = arktos_e2e::cluster::kubeconfig::client_with(
            &format!("{gateway}{tenant}"),
            &pki.ca_cert(),
            &pki.cert(&user),
            &pki.key(&user),
            &[],
        )
        .await?;
        Ok(Self {
            tenant,
            user,
            client,
            admin,
        })
    }

    /// Creates namespace `name` through the tenant route, waiting for the
    /// owner's grant if need be.
    pub async fn namespace(&self, name: &str) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::Api;
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut last = String::new();
        for _ in 0..50 {
            match api.create(&Default::default(), &ns).await {
                Ok(_) => return Ok(()),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        anyhow::bail!(
            "creating namespace {name} in tenant {}: {last}",
            self.tenant
        )
    }

    pub fn storage(&self, namespace: &str) -> String {
        format!("{}--{namespace}", self.tenant)
    }

    /// The Tenant as the cluster admin sees it.
    pub async fn get(&self) -> anyhow::Result<Option<arktos_crds::Tenant>> {
        Ok(kube::Api::<arktos_crds::Tenant>::all(self.admin.clone())
            .get_opt(&self.tenant)
            .await?)
    }

    /// `status.used[key]` of the Tenant.
    pub async fn used(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .get()
            .await?
            .and_then(|t| t.status)
            .and_then(|s| s.used.get(key).map(|q| q.0.clone())))
    }
}

/// Waits until the tenant controller reports the Tenant Ready.
pub async fn wait_ready(admin: &kube::Client, tenant: &str) -> anyhow::Result<()> {
    let tenants = kube::Api::<arktos_crds::Tenant>::all(admin.clone());
    eventually(
        &format!("tenant {tenant} Ready"),
        std::time::Duration::from_secs(60),
        || async {
            Ok(tenants.get(tenant).await?.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            }))
        },
    )
    .await?;
    Ok(())
}

/// A pod that passes the `restricted` Pod Security Standard.
pub fn restricted_pod(name: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:1",
            "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]},
    }))
    .expect("a valid pod")
}

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
    kubectl_with(ctx, ctx.cluster.kubeconfig(), args, stdin).await
}

/// Runs kubectl with `kubeconfig` and returns (success, stdout, stderr).
pub async fn kubectl_with(
    ctx: &Arc<Ctx>,
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<(bool, String, String)> {
    use tokio::io::AsyncWriteExt;
    let cache =
        std::env::temp_dir().join(format!("arktos-e2e-kubectl-cache-{}", std::process::id()));
    let mut child = tokio::process::Command::new(kubectl_path(ctx))
        .arg("--kubeconfig")
        .arg(kubeconfig)
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
    let resources = [
        "tenants",
        "tenants/api",
        "tenants/apis",
        "tenants/namespaces",
    ];
    let verbs = [
        "use", "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    grant(admin, tenant, user, &resources, &verbs).await
}

/// Grants `user` `verbs` on `resources` of tenancy.arktos.io named
/// `tenant`, as a platform admin would (ClusterRole and binding
/// `e2e:tenant:<tenant>:<user>`).
pub async fn grant(
    admin: &kube::Client,
    tenant: &str,
    user: &str,
    resources: &[&str],
    verbs: &[&str],
) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::Api;
    use kube::api::{Patch, PatchParams};
    let name = format!("e2e:tenant:{tenant}:{user}");
    let apply = PatchParams::apply("e2e").force();
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": ["tenancy.arktos.io"], "resources": resources,
                   "resourceNames": [tenant], "verbs": verbs}],
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
        ip_addresses: &[],
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

/// A kubeconfig file for a tenant owner, as `kubectl tenant kubeconfig`
/// would write it: the gateway's `/tenants/<tenant>` URL, the owner's client
/// certificate, `namespace` as the context's default.
pub fn tenant_kubeconfig(
    ctx: &Ctx,
    owner: &TenantOwner,
    namespace: &str,
) -> anyhow::Result<PathBuf> {
    tenant_kubeconfig_for(ctx, &owner.tenant, &owner.user, namespace)
}

/// A kubeconfig for `user` (a certificate of the cluster's CA) on
/// `tenant`'s route, in `namespace`.
pub fn tenant_kubeconfig_for(
    ctx: &Ctx,
    tenant: &str,
    user: &str,
    namespace: &str,
) -> anyhow::Result<PathBuf> {
    let (pki, _, gateway) = local_parts(ctx)?;
    let path = std::env::temp_dir().join(format!("{tenant}-{user}.kubeconfig"));
    std::fs::write(
        &path,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": format!("{gateway}{tenant}"), "certificate-authority": pki.ca_cert()}}],
            "users": [{"name": "t", "user": {"client-certificate": pki.cert(user), "client-key": pki.key(user)}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": namespace}}],
        })
        .to_string(),
    )?;
    Ok(path)
}

/// Runs `kubectl` with `args` split at spaces, as whoever `config`
/// names; (exit ok, stdout, stderr).
pub async fn kubectl_words(
    ctx: &Arc<Ctx>,
    config: &std::path::Path,
    args: &str,
) -> anyhow::Result<(bool, String, String)> {
    let args: Vec<&str> = args.split_whitespace().collect();
    kubectl_with(ctx, config, &args, None).await
}

/// `kubectl auth can-i` answers `want` ("yes" or "no", with its exit code).
pub async fn can_i(
    ctx: &Arc<Ctx>,
    config: &std::path::Path,
    question: &str,
    want: &str,
) -> anyhow::Result<()> {
    let (ok, out, err) = kubectl_words(ctx, config, &format!("auth can-i {question}")).await?;
    ensure!(
        // "no - <reason>" when the answer gives one.
        out.split_whitespace().next() == Some(want) && ok == (want == "yes"),
        "auth can-i {question}: want {want}, got {out:?} (exit ok {ok}) {err}"
    );
    Ok(())
}

/// `kubectl apply -f -` of `manifest`.
pub async fn kubectl_apply(
    ctx: &Arc<Ctx>,
    config: &std::path::Path,
    manifest: &str,
) -> anyhow::Result<(bool, String, String)> {
    kubectl_with(ctx, config, &["apply", "-f", "-"], Some(manifest)).await
}

/// A client of one arktos-apiserver replica's own port (not through
/// kube-apiserver), presenting `identity` and sending `headers` (the
/// front-proxy's identity headers, for instance).
pub async fn direct(
    ctx: &Ctx,
    port: u16,
    identity: (&std::path::Path, &std::path::Path),
    headers: &[(&str, &str)],
) -> anyhow::Result<kube::Client> {
    let ca = ctx
        .cluster
        .local()
        .context("this test needs the local cluster")?
        .pki()
        .ca_cert();
    Ok(arktos_e2e::cluster::kubeconfig::client_with(
        &format!("https://127.0.0.1:{port}"),
        &ca,
        identity.0,
        identity.1,
        headers,
    )
    .await?)
}
