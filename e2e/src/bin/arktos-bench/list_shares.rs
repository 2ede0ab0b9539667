//! arktos-apiserver's list copies with 1 and 2 replicas: `tenants` tenants
//! (records placed on the root, not provisioned: the operators run their
//! webhooks only), each with a namespace and a pod, then what each replica
//! copies and its resident memory, with one replica and with two dividing
//! the ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use arktos_crds::naming::{TENANT_LABEL, TenantName};
use arktos_e2e::bench::measure;
use arktos_e2e::cluster::{LocalCluster, OPERATOR_REPLICAS, arktos, kubeconfig};
use arktos_e2e::observe;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

const SECOND: &str = "arktos-apiserver-2";

/// What one replica holds.
struct Held {
    share: f64,
    objects: f64,
    bytes: f64,
    rss_kib: u64,
}

pub async fn run(
    cluster: &mut LocalCluster,
    tenants: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    for replica in 0..OPERATOR_REPLICAS {
        cluster.stop_component(&LocalCluster::operators_name(replica));
        cluster.start_arktos_operators_with(replica, &["--controllers=false".to_string()])?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(cluster, arktos::APISERVER)?;
    let admin = cluster.admin_client().await?;
    eprintln!("[1/3] {tenants} tenants, each with a namespace and a pod ({concurrency} in flight)");
    fill(&admin, tenants, concurrency).await?;

    eprintln!("[2/3] one replica copies every tenant's pods");
    let first = replica_client(cluster, cluster.apiserver_port()).await?;
    let one = settle(cluster, &[(arktos::APISERVER, &first)], tenants).await?;

    eprintln!("[3/3] a second replica: each copies half the ring");
    let port = cluster.spec().ports.component(1);
    cluster.start_arktos_apiserver(SECOND, port, 0)?;
    let second = replica_client(cluster, port).await?;
    let two = settle(
        cluster,
        &[(arktos::APISERVER, &first), (SECOND, &second)],
        tenants,
    )
    .await?;
    cluster.stop_component(SECOND);

    println!(
        "\n{:>9} {:>8} {:>16} {:>16} {:>16} {:>20}",
        "replicas", "share", "pods copied", "copy MiB", "RSS MiB", "RSS over idle MiB"
    );
    for (replicas, held) in [(1, &one), (2, &two)] {
        for h in held {
            println!(
                "{replicas:>9} {:>8.2} {:>16.0} {:>16.1} {:>16.1} {:>20.1}",
                h.share,
                h.objects,
                h.bytes / 1048576.0,
                h.rss_kib as f64 / 1024.0,
                h.rss_kib.saturating_sub(idle) as f64 / 1024.0
            );
        }
    }
    let per_replica_two = two.iter().map(|h| h.rss_kib).sum::<u64>() as f64 / two.len() as f64;
    println!(
        "\nidle arktos-apiserver {:.1} MiB; with {tenants} tenants' pods: one replica {:.1} MiB, each of two {:.1} MiB (x{:.2}), copies per replica x{:.2}",
        idle as f64 / 1024.0,
        one[0].rss_kib as f64 / 1024.0,
        per_replica_two / 1024.0,
        per_replica_two / one[0].rss_kib as f64,
        two.iter().map(|h| h.objects).sum::<f64>() / two.len() as f64 / one[0].objects.max(1.0)
    );
    Ok(())
}

/// Tenant records, one namespace each (labelled as the gateway labels
/// them) and one pod in it, held back from scheduling.
async fn fill(admin: &kube::Client, tenants: usize, concurrency: usize) -> anyhow::Result<()> {
    let records = Api::<DynamicObject>::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("storage.tenancy.arktos.io", "v1alpha1", "TenantRecord"),
            "tenantrecords",
        ),
    );
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let admin = admin.clone();
    let done = Arc::new(AtomicUsize::new(0));
    let filled = measure(
        "CREATE",
        "tenant, namespace and pod",
        tenants,
        concurrency,
        move |i| {
            let (records, namespaces, admin, done) = (
                records.clone(),
                namespaces.clone(),
                admin.clone(),
                done.clone(),
            );
            async move {
                let tenant = format!("copies-{i}");
                let record: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "storage.tenancy.arktos.io/v1alpha1", "kind": "TenantRecord",
                    "metadata": {"name": tenant},
                    "spec": {"owners": [{"kind": "User", "name": "nobody"}]},
                }))?;
                records.create(&PostParams::default(), &record).await?;
                let storage = TenantName::new(&tenant)?.storage_namespace("web")?;
                let namespace: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": storage.as_str(), "labels": {TENANT_LABEL: tenant}},
                }))?;
                // Admission learns of the tenant a moment after its record.
                let post = PostParams::default();
                retry(&format!("the namespace of {tenant}"), || {
                    namespaces.create(&post, &namespace)
                })
                .await?;
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": "p"},
                    "spec": {"schedulingGates": [{"name": "arktos.io/bench"}],
                        "automountServiceAccountToken": false,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "securityContext": {"allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}}}]},
                }))?;
                let pods: Api<Pod> = Api::namespaced(admin, storage.as_str());
                // The namespace's default ServiceAccount comes a moment later.
                retry(&format!("the pod of {tenant}"), || pods.create(&post, &pod)).await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % (tenants / 10).max(1) == 0 {
                    eprintln!("  {n}/{tenants} tenants");
                }
                Ok(())
            }
        },
    )
    .await;
    anyhow::ensure!(filled.errors == 0, "{} tenants failed", filled.errors);
    Ok(())
}

/// `create` until it succeeds (10 s at most).
async fn retry<T, F, Fut>(what: &str, mut create: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut tries = 0;
    loop {
        match create().await {
            Ok(made) => return Ok(made),
            // What a moment cures (admission not knowing the tenant yet,
            // the ServiceAccount not made yet); a policy refusal fails fast.
            Err(err) if tries < 100 && !is_policy_refusal(&err) => {
                tries += 1;
                tracing::debug!(%what, error = %err, "retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => anyhow::bail!("creating {what}: {err}"),
        }
    }
}

fn is_policy_refusal(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.message.contains("PodSecurity"))
}

/// A client of a replica's own port, as the admin through the front proxy.
async fn replica_client(cluster: &LocalCluster, port: u16) -> anyhow::Result<kube::Client> {
    let pki = cluster.pki();
    Ok(kubeconfig::client_with(
        &format!("https://127.0.0.1:{port}"),
        &pki.ca_cert(),
        &pki.cert("front-proxy-client"),
        &pki.key("front-proxy-client"),
        &[
            ("X-Remote-User", "kubernetes-admin"),
            ("X-Remote-Group", "system:masters"),
        ],
    )
    .await?)
}

async fn metric(client: &kube::Client, name: &str) -> anyhow::Result<f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let prefix = format!("arktos_apiserver_{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {prefix} in the metrics"))
}

/// Waits until the replicas' shares cover the ring once and their copies
/// hold every pod between them (the tenants' pods and no more, give or
/// take what the cluster's own namespaces hold), then reads each.
async fn settle(
    cluster: &LocalCluster,
    replicas: &[(&str, &kube::Client)],
    tenants: usize,
) -> anyhow::Result<Vec<Held>> {
    for _ in 0..600 {
        let mut held = Vec::new();
        for (name, client) in replicas {
            held.push(Held {
                share: metric(client, "list_cache_share").await.unwrap_or(0.0),
                objects: metric(client, "list_cache_objects").await.unwrap_or(0.0),
                bytes: metric(client, "list_cache_bytes").await.unwrap_or(0.0),
                rss_kib: rss_kib(cluster, name)?,
            });
        }
        let shares: f64 = held.iter().map(|h| h.share).sum();
        let objects: f64 = held.iter().map(|h| h.objects).sum();
        // Each copy holds about its share (the buckets spread the tenants
        // evenly), not what it held before the share changed.
        let in_step = held
            .iter()
            .all(|h| (h.objects - h.share * tenants as f64).abs() < 0.1 * tenants as f64);
        let each_holds_some = held.iter().all(|h| h.share > 0.0);
        if (shares - 1.0).abs() < 1e-9 && objects >= tenants as f64 && in_step && each_holds_some {
            // The copies are in; let the allocator settle before reading.
            tokio::time::sleep(Duration::from_secs(3)).await;
            for (h, (name, _)) in held.iter_mut().zip(replicas) {
                h.rss_kib = rss_kib(cluster, name)?;
            }
            return Ok(held);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("the replicas' copies never held every tenant's pod")
}

fn rss_kib(cluster: &LocalCluster, name: &str) -> anyhow::Result<u64> {
    let pid = cluster
        .pids()
        .into_iter()
        .find(|(n, _)| n == name)
        .with_context(|| format!("{name} is not running"))?
        .1;
    observe::rss_kib(pid)
}
