//! Tenant routes (docs/tenant-routes.md) through the tenant gateway, with
//! kube-rs clients whose server URL is `https://<gateway>/tenants/<t>`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use arktos_e2e::cluster::kubeconfig;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;

use crate::{Ctx, disruptive_trial, trial};
use arktos_e2e::harness::step;

pub const NAMES: &[&str] = &[
    "helm_installs_upgrades_and_uninstalls_a_chart_in_a_tenant",
    "tenant_pod_lists_from_the_copy_are_current_and_page",
    "replicas_share_the_list_copies_and_take_over_a_killed_ones",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(
            ctx,
            NAMES[0],
            |ctx| async move { helm_in_a_tenant(&ctx).await },
        ),
        trial(ctx, NAMES[1], |ctx| async move {
            lists_from_the_copy(&ctx).await
        }),
        // Alone: it changes which tenants the gateway's replica copies.
        disruptive_trial(ctx, NAMES[2], |ctx| async move {
            replicas_share_the_copies(&ctx).await
        }),
    ]
}

/// `arktos_apiserver_list_cache_<name>_total` read from the gateway's
/// `/metrics` (as the cluster admin).
async fn list_cache_counter(ctx: &Ctx, name: &str) -> anyhow::Result<u64> {
    let (pki, _, gateway) = crate::support::local_parts(ctx)?;
    let root = gateway.trim_end_matches('/').trim_end_matches("/tenants");
    let admin = kubeconfig::client(root, &pki, "admin").await?;
    let text = admin
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let metric = format!("arktos_apiserver_list_cache_{name}_total ");
    text.lines()
        .find_map(|line| line.strip_prefix(&metric))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {metric} in the gateway's metrics"))
}

/// One replica of arktos-apiserver, reached on its own port with the
/// front-proxy's identity (as the aggregator reaches it).
struct Replica {
    name: &'static str,
    port: u16,
    /// As the cluster admin.
    client: kube::Client,
}

impl Replica {
    async fn connect(ctx: &Ctx, name: &'static str, port: u16) -> anyhow::Result<Self> {
        let (pki, _, _) = crate::support::local_parts(ctx)?;
        let proxy = (
            pki.cert("front-proxy-client"),
            pki.key("front-proxy-client"),
        );
        let headers = [
            ("X-Remote-User", "kubernetes-admin"),
            ("X-Remote-Group", "system:masters"),
        ];
        let client = crate::support::direct(ctx, port, (&proxy.0, &proxy.1), &headers).await?;
        Ok(Self { name, port, client })
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .client
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await?;
        let metric = format!("arktos_apiserver_{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&metric))
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("no {metric} in {}'s metrics", self.name))
    }

    /// The names of `owner`'s pods, listed through this replica's
    /// aggregated path as the owner.
    async fn pod_names(
        &self,
        ctx: &Ctx,
        owner: &crate::support::TenantOwner,
    ) -> anyhow::Result<std::collections::BTreeSet<String>> {
        let (pki, _, _) = crate::support::local_parts(ctx)?;
        let proxy = (
            pki.cert("front-proxy-client"),
            pki.key("front-proxy-client"),
        );
        let headers = [
            ("X-Remote-User", owner.user.as_str()),
            ("X-Remote-Group", "system:authenticated"),
        ];
        let client = crate::support::direct(ctx, self.port, (&proxy.0, &proxy.1), &headers).await?;
        let path = format!(
            "/apis/tenancy.arktos.io/v1alpha1/tenants/{}/api/v1/pods",
            owner.tenant
        );
        let list: serde_json::Value = client
            .request(http::Request::get(path).body(Vec::new())?)
            .await
            .with_context(|| format!("listing {}'s pods through {}", owner.tenant, self.name))?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_string))
            .collect())
    }
}

/// Two replicas divide the tenants' list copies by the sharding ring: a
/// tenant's pods are listed correctly through either replica, from the
/// copy where the replica holds the tenant; when one replica is killed, the
/// other takes its whole share and lists the killed one's tenants from its
/// copy, with what changed meanwhile.
async fn replicas_share_the_copies(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let (first_port, second_port) = {
        let mut local = ctx.cluster.local().context("needs the local cluster")?;
        let second = local.spec().ports.component(1);
        local.start_arktos_apiserver("arktos-apiserver-2", second, 0)?;
        (local.apiserver_port(), second)
    };
    let replicas = [
        Replica::connect(ctx, "arktos-apiserver", first_port).await?,
        Replica::connect(ctx, "arktos-apiserver-2", second_port).await?,
    ];
    step("both replicas copy half the ring");
    crate::support::eventually(
        "two shares of one half",
        Duration::from_secs(60),
        || async {
            let mut halves = 0;
            for replica in &replicas {
                if replica.metric("list_cache_share").await.unwrap_or(0.0) == 0.5 {
                    halves += 1;
                }
            }
            Ok(halves == 2)
        },
    )
    .await?;
    // Tenants until one falls in each half of the ring.
    let mut owners: Vec<crate::support::TenantOwner> = Vec::new();
    let mut halves = [false, false];
    while halves != [true, true] {
        ensure!(owners.len() < 12, "12 tenants, all in one half of the ring");
        let owner = crate::support::TenantOwner::create(ctx, "copies", json!({})).await?;
        let half = usize::from(arktos_crds::sharding::bucket_of(&owner.tenant) >= 128);
        if halves[half] {
            continue;
        }
        halves[half] = true;
        owner.namespace("web").await?;
        owners.push(owner);
    }
    let mut expected = Vec::new();
    for owner in &owners {
        let pods: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
        let mut names = std::collections::BTreeSet::new();
        for i in 0..6 {
            pods.create(&PostParams::default(), &gated_pod(&format!("p{i}"))?)
                .await?;
            names.insert(format!("p{i}"));
        }
        expected.push(names);
    }
    step("every tenant listed through both replicas");
    let mut hits = [0.0; 2];
    for (replica, hits) in replicas.iter().zip(hits.iter_mut()) {
        let before = replica.metric("list_cache_hits_total").await?;
        for (owner, want) in owners.iter().zip(&expected) {
            // The copy may be a moment behind the creates: the list is
            // then answered the ordinary way, and still exact.
            for _ in 0..3 {
                let listed = replica.pod_names(ctx, owner).await?;
                ensure!(
                    &listed == want,
                    "{} lists {listed:?} for {}, kube-apiserver holds {want:?}",
                    replica.name,
                    owner.tenant
                );
            }
        }
        *hits = replica.metric("list_cache_hits_total").await? - before;
    }
    eprintln!("  lists answered from the copy, by replica: {hits:?} (of 6 each)");
    ensure!(
        hits.iter().all(|h| *h >= 1.0) && hits.iter().all(|h| *h <= 3.0),
        "each replica must answer from its copy for its own tenant only: {hits:?}"
    );

    step("the second replica is killed; the first takes the whole ring");
    ctx.cluster
        .local()
        .context("local")?
        .kill("arktos-apiserver-2")?;
    // Changed while nobody copies the second replica's tenants.
    for (owner, want) in owners.iter().zip(expected.iter_mut()) {
        let pods: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
        pods.create(&PostParams::default(), &gated_pod("late")?)
            .await?;
        pods.delete("p0", &Default::default()).await?;
        want.insert("late".into());
        want.remove("p0");
    }
    let first = &replicas[0];
    crate::support::eventually("the whole ring copied", Duration::from_secs(60), || async {
        Ok(first.metric("list_cache_share").await.unwrap_or(0.0) == 1.0)
    })
    .await?;
    let before = first.metric("list_cache_hits_total").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for (owner, want) in owners.iter().zip(&expected) {
            let listed = first.pod_names(ctx, owner).await?;
            ensure!(
                &listed == want,
                "after the kill {} lists {listed:?} for {}, kube-apiserver holds {want:?}",
                first.name,
                owner.tenant
            );
        }
        let hits = first.metric("list_cache_hits_total").await? - before;
        if hits >= 2.0 {
            eprintln!("  after the kill: both tenants listed from the first replica's copy");
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "after the kill, the first replica answers only {hits} lists from its copy"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ctx.cluster
        .local()
        .context("local")?
        .stop_component("arktos-apiserver-2");
    Ok(())
}

/// A pod held back from scheduling: only the API matters here.
fn gated_pod(name: &str) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    let mut pod = crate::support::restricted_pod(name);
    pod.spec.as_mut().context("spec")?.scheduling_gates =
        Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "arktos.io/e2e".into(),
        }]);
    Ok(pod)
}

/// Pod lists through the gateway come from arktos-apiserver's copy
/// (`list_cache`), and are still exactly what kube-apiserver holds: a write
/// is in the very next list, a deleted pod is gone from it, pages cover
/// every pod once, selectors narrow as before.
async fn lists_from_the_copy(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let owner = crate::support::TenantOwner::create(ctx, "lists", json!({})).await?;
    for namespace in ["web", "db"] {
        owner.namespace(namespace).await?;
    }
    let mut expected = std::collections::BTreeSet::new();
    for i in 0..24 {
        let namespace = if i % 2 == 0 { "web" } else { "db" };
        let name = format!("p{i}");
        Api::<Pod>::namespaced(owner.client.clone(), namespace)
            .create(&PostParams::default(), &gated_pod(&name)?)
            .await?;
        expected.insert((namespace.to_string(), name));
    }
    let hits_before = list_cache_counter(ctx, "hits").await?;
    let web: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
    let all: Api<Pod> = Api::all(owner.client.clone());
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<(String, String)> {
        list.items
            .into_iter()
            .map(|p| {
                (
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default(),
                )
            })
            .collect()
    };
    // Read your writes: each label change is in the next list, in one
    // namespace and across the tenant.
    for round in 0..10 {
        let name = format!("p{}", 2 * round);
        web.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"round": round.to_string()}}})),
        )
        .await?;
        let selector = format!("round={round}");
        let here = names(web.list(&ListParams::default().labels(&selector)).await?);
        let everywhere = names(all.list(&ListParams::default().labels(&selector)).await?);
        let want = vec![("web".to_string(), name.clone())];
        ensure!(
            here == want && everywhere == want,
            "round {round}: web lists {here:?}, the tenant lists {everywhere:?}"
        );
    }
    // A deleted pod is gone from the next list.
    Api::<Pod>::namespaced(owner.client.clone(), "db")
        .delete("p1", &Default::default())
        .await?;
    expected.remove(&("db".to_string(), "p1".to_string()));
    let db = names(
        Api::<Pod>::namespaced(owner.client.clone(), "db")
            .list(&ListParams::default())
            .await?,
    );
    ensure!(
        !db.iter().any(|(_, name)| name == "p1") && db.len() == 11,
        "db after deleting p1: {db:?}"
    );
    // Pages of 5 across the tenant: every pod once, tenant names only.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(5);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = all.list(&params).await?;
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        paged.extend(names(page));
        if token.is_none() {
            break;
        }
        ensure!(
            paged.len() <= expected.len(),
            "pages go on past every pod (a continue token that does not advance): {paged:?}"
        );
    }
    let unique: std::collections::BTreeSet<_> = paged.iter().cloned().collect();
    ensure!(
        unique == expected && paged.len() == expected.len(),
        "paged list: {paged:?}"
    );
    let hits = list_cache_counter(ctx, "hits").await? - hits_before;
    let misses = list_cache_counter(ctx, "misses").await?;
    eprintln!(
        "  pod lists answered from the copy: {hits} (misses so far in the cluster: {misses})"
    );
    // Most, not all: a list the watch is more than a moment behind on
    // goes the ordinary way, by design.
    ensure!(
        hits >= 13,
        "only {hits} of the test's 26 lists came from the copy"
    );
    Ok(())
}

/// Helm, unmodified, with a tenant kubeconfig: install (waiting for the
/// Deployment), upgrade with a new value, list, uninstall. Helm keeps its
/// release records as Secrets in the tenant's namespace.
async fn helm_in_a_tenant(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use crate::support::{TenantOwner, tenant_kubeconfig};
    let helm = {
        let local = ctx
            .cluster
            .local()
            .ok_or_else(|| anyhow::anyhow!("this test needs the local cluster (for helm)"))?;
        arktos_e2e::upstream::NodeTools::ensure(&local.spec().home)?.command("helm")
    };
    let owner = TenantOwner::create(ctx, "helm", json!({})).await?;
    owner.namespace("apps").await?;
    let kubeconfig = tenant_kubeconfig(ctx, &owner, "apps")?;
    let chart = std::env::temp_dir().join(format!("{}-chart", owner.tenant));
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )?;
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n")?;
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )?;
    std::fs::write(
        chart.join("templates/deployment.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      # Simulated nodes report the pod ready; `--wait` needs that.
      nodeSelector: {type: kwok}
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
      containers:
        - name: app
          image: registry.invalid/app:1
          securityContext:
            allowPrivilegeEscalation: false
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
"#,
    )?;
    let run = |args: Vec<String>| {
        let helm = helm.clone();
        let kubeconfig = kubeconfig.clone();
        async move {
            step(&format!("helm {}", args.join(" ")));
            let out = tokio::process::Command::new(helm)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--namespace", "apps"])
                .args(&args)
                .env(
                    "HELM_CACHE_HOME",
                    std::env::temp_dir().join("arktos-e2e-helm/cache"),
                )
                .env(
                    "HELM_CONFIG_HOME",
                    std::env::temp_dir().join("arktos-e2e-helm/config"),
                )
                .env(
                    "HELM_DATA_HOME",
                    std::env::temp_dir().join("arktos-e2e-helm/data"),
                )
                .output()
                .await?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            ensure!(
                out.status.success(),
                "helm {}: {stdout}{stderr}",
                args.join(" ")
            );
            anyhow::Ok(stdout)
        }
    };
    let chart_dir = chart.display().to_string();
    run(vec![
        "install".into(),
        "demo".into(),
        chart_dir.clone(),
        "--wait".into(),
        "--timeout".into(),
        "90s".into(),
    ])
    .await?;
    let configs: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(owner.client.clone(), "apps");
    let greeting = || async {
        anyhow::Ok(
            configs
                .get("demo-greeting")
                .await?
                .data
                .unwrap_or_default()
                .remove("greeting"),
        )
    };
    ensure!(greeting().await?.as_deref() == Some("hello"));
    run(vec![
        "upgrade".into(),
        "demo".into(),
        chart_dir,
        "--set".into(),
        "greeting=bonjour".into(),
        "--wait".into(),
    ])
    .await?;
    ensure!(greeting().await?.as_deref() == Some("bonjour"));
    let list = run(vec!["list".into(), "-o".into(), "json".into()]).await?;
    let releases: serde_json::Value = serde_json::from_str(&list)?;
    ensure!(
        releases[0]["name"] == "demo"
            && releases[0]["revision"] == "2"
            && releases[0]["status"] == "deployed",
        "helm list: {list}"
    );
    run(vec!["uninstall".into(), "demo".into(), "--wait".into()]).await?;
    ensure!(
        configs.get_opt("demo-greeting").await?.is_none(),
        "uninstall left the ConfigMap"
    );
    let _ = std::fs::remove_dir_all(&chart);
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}
