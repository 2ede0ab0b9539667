//! The same tenant workload through one gateway with one partition and with
//! two, in one run: what routing to a partition costs per request, what a
//! second partition adds to aggregate throughput, and what the gateway
//! keeps per tenant with 100,000 synthetic tenants placed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arktos_e2e::bench::{Sample, measure, report};
use arktos_e2e::cluster::{LocalCluster, Ports, kubeconfig};
use arktos_e2e::observe;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const PARTITION: &str = "p2";
const DIRECT_ROOT: &str = "kube-apiserver direct (root)";

/// What one run does, per tenant and phase.
pub struct Workload {
    pub requests: usize,
    pub lists: usize,
    pub synthetic: usize,
    pub concurrency: usize,
}

/// A tenant the workload runs in: its name and its owner's gateway client.
struct WorkTenant {
    name: &'static str,
    client: kube::Client,
}

pub async fn run(cluster: &mut LocalCluster, work: &Workload) -> anyhow::Result<()> {
    eprintln!("[1/6] one partition: tenants on the root, the workload through the gateway");
    let a = work_tenant(cluster, "bench-a", "").await?;
    let a2 = work_tenant(cluster, "bench-a2", "").await?;
    let root_admin = cluster.admin_client().await?;
    let mut samples = workload(&a, "root tenant, 1 partition", "one", work).await?;
    samples.extend(direct(&root_admin, &a, DIRECT_ROOT, "direct", work).await?);

    eprintln!("[2/6] a second partition starts and is registered");
    let started = Instant::now();
    cluster
        .add_partition(PARTITION, Ports::find_free()?, 1)
        .await?;
    let start_time = started.elapsed();
    let partition_kib = partition_rss_kib(cluster)?;
    let b = work_tenant(cluster, "bench-b", PARTITION).await?;

    eprintln!("[3/6] two partitions: the same workload on the root and on {PARTITION}");
    samples.extend(workload(&a, "root tenant, 2 partitions", "two", work).await?);
    samples.extend(workload(&b, "p2 tenant, 2 partitions", "far", work).await?);
    let (_, p2) = cluster
        .partitions()
        .next()
        .context("the partition just added")?;
    let p2_admin = p2.admin_client().await?;
    let direct_p2 = "kube-apiserver direct (p2)";
    samples.extend(direct(&p2_admin, &b, direct_p2, "direct", work).await?);

    eprintln!("[4/6] aggregate CREATE: two tenants at once on one partition, then on two");
    let one = together(&a, &a2, "together-one", work).await?;
    let two = together(&a, &b, "together-two", work).await?;

    println!();
    report(&samples, DIRECT_ROOT);
    println!();
    print_routing(&samples);
    print_aggregate(one, two);
    println!(
        "\nan extra partition: ready in {:.1} s, its processes {} MiB resident",
        start_time.as_secs_f64(),
        partition_kib / 1024
    );

    eprintln!(
        "[5/6] {} synthetic tenants placed on {PARTITION}",
        work.synthetic
    );
    synthetic_tenants(cluster, &root_admin, work).await
}

/// Tenant `name` on `partition` ("" = placed), set up by its partition's
/// operators.
async fn work_tenant(
    cluster: &LocalCluster,
    name: &'static str,
    partition: &str,
) -> anyhow::Result<WorkTenant> {
    let client = crate::tenant_pods::tenant_owner(cluster, name, name, partition).await?;
    let tenant = WorkTenant { name, client };
    tenant.namespace("setup").await?;
    Ok(tenant)
}

impl WorkTenant {
    /// Namespace `name` of the tenant, created through the gateway (tried
    /// again while the tenant is being set up).
    async fn namespace(&self, name: &str) -> anyhow::Result<()> {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let mut tries = 0;
        while let Err(err) = namespaces.create(&PostParams::default(), &namespace).await {
            tries += 1;
            anyhow::ensure!(
                tries < 60,
                "creating {}'s namespace {name}: {err}",
                self.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Ok(())
    }
}

fn config_map(name: String) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "data": {"k": "v"}}),
    )?)
}

/// `requests` CREATEs of ConfigMaps `cm-<i>` in `api`.
fn creates(
    api: Api<ConfigMap>,
    target: &str,
    work: &Workload,
) -> impl std::future::Future<Output = Sample> {
    measure(
        "CREATE",
        target,
        work.requests,
        work.concurrency,
        move |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &config_map(format!("cm-{i}"))?)
                    .await?;
                Ok(())
            }
        },
    )
}

/// CREATE, GET and LIST of ConfigMaps in `api` (a namespace of their own,
/// so every target lists as many).
async fn crud(api: Api<ConfigMap>, target: &str, work: &Workload) -> anyhow::Result<Vec<Sample>> {
    let requests = work.requests;
    let created = creates(api.clone(), target, work).await;
    anyhow::ensure!(
        created.errors == 0,
        "{target}: {} creates failed",
        created.errors
    );
    let getting = api.clone();
    let got = measure("GET", target, requests, work.concurrency, move |i| {
        let api = getting.clone();
        async move {
            api.get(&format!("cm-{i}")).await?;
            Ok(())
        }
    })
    .await;
    let listed = measure("LIST", target, work.lists, 1, move |_| {
        let api = api.clone();
        async move {
            let all = api.list(&ListParams::default()).await?;
            anyhow::ensure!(all.items.len() >= requests, "listed {}", all.items.len());
            Ok(())
        }
    })
    .await;
    Ok(vec![created, got, listed])
}

/// The workload through the gateway in the tenant's namespace `namespace`.
async fn workload(
    tenant: &WorkTenant,
    target: &str,
    namespace: &str,
    work: &Workload,
) -> anyhow::Result<Vec<Sample>> {
    tenant.namespace(namespace).await?;
    let api = Api::namespaced(tenant.client.clone(), namespace);
    crud(api, target, work).await
}

/// The same workload as the admin on a kube-apiserver directly, in the
/// storage namespace there of the tenant's namespace `namespace`.
async fn direct(
    admin: &kube::Client,
    tenant: &WorkTenant,
    target: &str,
    namespace: &str,
    work: &Workload,
) -> anyhow::Result<Vec<Sample>> {
    tenant.namespace(namespace).await?;
    let storage =
        arktos_crds::naming::TenantName::new(tenant.name)?.storage_namespace(namespace)?;
    let api = Api::namespaced(admin.clone(), storage.as_str());
    crud(api, target, work).await
}

/// `requests` CREATEs in each of two tenants at once (in their namespace
/// `namespace`); the throughput of both.
async fn together(
    first: &WorkTenant,
    second: &WorkTenant,
    namespace: &str,
    work: &Workload,
) -> anyhow::Result<f64> {
    first.namespace(namespace).await?;
    second.namespace(namespace).await?;
    let run = |tenant: &WorkTenant| {
        let api: Api<ConfigMap> = Api::namespaced(tenant.client.clone(), namespace);
        creates(api, tenant.name, work)
    };
    let started = Instant::now();
    let (x, y) = tokio::join!(run(first), run(second));
    Ok((x.latencies.len() + y.latencies.len()) as f64 / started.elapsed().as_secs_f64())
}

fn p50_ms(samples: &[Sample], operation: &str, target: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.operation == operation && s.target == target)
        .map(|s| s.percentile(50.0).as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

fn print_routing(samples: &[Sample]) {
    println!("routing to a partition, p50 (ms): root tenant with 1 partition | with 2 | p2 tenant");
    for operation in ["CREATE", "GET", "LIST"] {
        let one = p50_ms(samples, operation, "root tenant, 1 partition");
        let two = p50_ms(samples, operation, "root tenant, 2 partitions");
        let far = p50_ms(samples, operation, "p2 tenant, 2 partitions");
        println!(
            "{operation:<8} {one:>8.2} | {two:>8.2} (x{:.2}) | {far:>8.2} (x{:.2})",
            two / one,
            far / one
        );
    }
}

fn print_aggregate(one: f64, two: f64) {
    println!(
        "\naggregate CREATE throughput, two tenants at once: on 1 partition {one:.1}/s, on 2 partitions {two:.1}/s (x{:.2})",
        two / one
    );
    println!(
        "(all partitions share this machine's cores, so the ratio is bounded by CPU here, not by one kube-apiserver or etcd)"
    );
}

/// The resident memory of the partition's processes, together.
fn partition_rss_kib(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let prefix = format!("{PARTITION}/");
    cluster
        .pids()
        .into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(_, pid)| observe::rss_kib(pid))
        .sum()
}

fn apiserver_rss_kib(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let pids = cluster.pids();
    let pid = pids
        .iter()
        .find(|(name, _)| name == arktos_e2e::cluster::arktos::APISERVER)
        .context("arktos-apiserver is not running")?;
    observe::rss_kib(pid.1)
}

/// Tenant records placed on the partition whose operators are stopped (so
/// nothing is provisioned for them), a request of each through the
/// gateway, and arktos-apiserver's memory before and after.
async fn synthetic_tenants(
    cluster: &mut LocalCluster,
    admin: &kube::Client,
    work: &Workload,
) -> anyhow::Result<()> {
    cluster
        .partition_mut(PARTITION)
        .context("the partition")?
        .stop_component(arktos_e2e::cluster::arktos::OPERATORS);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let before = apiserver_rss_kib(cluster)?;
    let records = Api::<DynamicObject>::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("storage.tenancy.arktos.io", "v1alpha1", "TenantRecord"),
            "tenantrecords",
        ),
    );
    let total = work.synthetic;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let created = measure("CREATE", "synthetic tenant records", total, 32, move |i| {
        let (records, done) = (records.clone(), done.clone());
        async move {
            let record: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "storage.tenancy.arktos.io/v1alpha1", "kind": "TenantRecord",
                "metadata": {"name": format!("synthetic-{i}")},
                "spec": {"partition": PARTITION, "owners": [{"kind": "User", "name": "nobody"}]},
            }))?;
            records.create(&PostParams::default(), &record).await?;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n % (total / 10).max(1) == 0 {
                eprintln!("  {n}/{total} synthetic tenants");
            }
            Ok(())
        }
    })
    .await;
    anyhow::ensure!(created.errors == 0, "{} records failed", created.errors);
    placed_everywhere(admin, total).await?;
    let placed = apiserver_rss_kib(cluster)?;
    eprintln!("[6/6] a request through the gateway for each synthetic tenant");
    let asked = ask_each(cluster, total.min(50_000), work.concurrency).await?;
    let served = apiserver_rss_kib(cluster)?;
    let per = |kib: u64| (kib.saturating_sub(before) * 1024) as f64 / total as f64;
    println!(
        "\nthe gateway with {total} synthetic tenants ({:.0} records/s created): arktos-apiserver {} MiB before, {} MiB once placed ({:.0} B per tenant), {} MiB after a request for {asked} of them ({:.0} B per tenant)",
        created.throughput(),
        before / 1024,
        placed / 1024,
        per(placed),
        served / 1024,
        per(served)
    );
    Ok(())
}

/// Waits until the probe counts `total` or more tenants on the partition:
/// the gateway's map has them all.
async fn placed_everywhere(admin: &kube::Client, total: usize) -> anyhow::Result<()> {
    let partitions = Api::<arktos_crds::partition::Partition>::all(admin.clone());
    for _ in 0..300 {
        let partition = partitions.get(PARTITION).await?;
        let counted = partition.status.map(|s| s.tenants).unwrap_or_default();
        if counted as usize >= total {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    anyhow::bail!("the partition's status never counted {total} tenants")
}

/// A GET through the gateway as the admin for `count` synthetic tenants
/// (answered by the partition, a 404 there: nothing of theirs exists).
async fn ask_each(
    cluster: &LocalCluster,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<usize> {
    let ca = cluster.pki().ca_cert();
    let (cert, key) = (cluster.pki().cert("admin"), cluster.pki().key("admin"));
    let base = format!("https://127.0.0.1:{}", cluster.gateway_port());
    let client = kubeconfig::client_with(&base, &ca, &cert, &key, &[]).await?;
    let sample = measure("GET", "synthetic", count, concurrency, move |i| {
        let client = client.clone();
        async move {
            let uri = format!("/tenants/synthetic-{i}/api/v1/namespaces/default/configmaps/none");
            let request = http::Request::get(uri).body(Vec::new())?;
            let _ = client.request_text(request).await;
            Ok(())
        }
    })
    .await;
    Ok(sample.latencies.len())
}
