//! The sharded tenant controller with 1, 2 and 4 instances: how fast they
//! reconcile every tenant from a cold start, CPU per 1,000 reconciles,
//! memory per instance, the watch events each instance receives (its
//! Tenants' namespaces and what the controller wrote for them included),
//! and how long a hand-over takes when one leaves.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use arktos_crds::Tenant;
use arktos_crds::naming::{TENANT_LABEL, TenantName};
use arktos_e2e::cluster::{LocalCluster, OPERATOR_REPLICAS};
use arktos_e2e::observe;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

fn pid_of(cluster: &LocalCluster, name: &str) -> anyhow::Result<u32> {
    cluster
        .pids()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, pid)| pid)
        .with_context(|| format!("{name} is not running"))
}

fn replace_instances(cluster: &mut LocalCluster, running: u16, wanted: u16) -> anyhow::Result<()> {
    for replica in 0..running {
        cluster.stop_component(&LocalCluster::operators_name(replica));
    }
    for replica in 0..wanted {
        cluster.start_arktos_operators(replica)?;
    }
    Ok(())
}

/// Waits until the instances' owned shares add up to the whole space.
async fn covered(
    cluster: &LocalCluster,
    instances: u16,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let mut total = 0.0;
        for replica in 0..instances {
            total += observe::metric(
                cluster.operators_port(replica),
                "arktos_operators_shard_owned_share",
                "",
            )
            .await
            .unwrap_or(0.0);
        }
        if (total - 1.0).abs() < 1e-6 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the shares never covered the space"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(
    cluster: &mut LocalCluster,
    tenants: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let names = create_tenants(cluster, tenants, concurrency).await?;
    let wanted: HashSet<&String> = names.iter().collect();
    let tenants = names.len();

    println!(
        "{:>9} {:>12} {:>14} {:>18} {:>16} {:>16} {:>16}",
        "instances",
        "reconcile s",
        "reconciles/s",
        "CPU s / 1,000 rec",
        "RSS MiB / inst",
        "events / inst",
        "hand-over ms"
    );
    let mut running = OPERATOR_REPLICAS;
    let mut baseline_cpu = None;
    let mut baseline_events = None;
    for instances in [1u16, 2, 4] {
        replace_instances(cluster, running, instances)?;
        running = instances;
        let started = observe::micros_now();
        let clock = Instant::now();
        // Every tenant reconciled once from the cold start.
        let (elapsed, reconciles) =
            all_reconciled(cluster, instances, &wanted, started, clock).await?;
        let mut cpu = 0.0;
        let mut rss = 0u64;
        let mut events = Vec::new();
        for replica in 0..instances {
            let pid = pid_of(cluster, &LocalCluster::operators_name(replica))?;
            cpu += observe::cpu_seconds(pid)?;
            rss += observe::rss_kib(pid)?;
            events.push(
                observe::metric(
                    cluster.operators_port(replica),
                    "arktos_operators_watch_events_total",
                    "",
                )
                .await?,
            );
        }
        let events_each = events.iter().sum::<f64>() / f64::from(instances);
        // One instance leaves (SIGTERM: it drains and deletes its Lease);
        // the hand-over ends when the others own the whole space again.
        let handover = if instances > 1 {
            let leaving = LocalCluster::operators_name(instances - 1);
            cluster.stop_component(&leaving);
            running = instances - 1;
            let took = covered(cluster, instances - 1, Duration::from_secs(60)).await?;
            format!("{:.0}", took.as_secs_f64() * 1000.0)
        } else {
            "-".to_string()
        };
        let per_thousand = cpu * 1000.0 / reconciles.max(1) as f64;
        baseline_cpu.get_or_insert(per_thousand);
        let base_events = *baseline_events.get_or_insert(events_each);
        println!(
            "{instances:>9} {:>12.2} {:>14.1} {:>18.2} {:>16.1} {:>16.0} {:>16}",
            elapsed.as_secs_f64(),
            reconciles as f64 / elapsed.as_secs_f64(),
            per_thousand,
            rss as f64 / 1024.0 / f64::from(instances),
            events_each,
            handover
        );
        if let Some(base) = baseline_cpu {
            eprintln!(
                "  {instances} instances: {:.0} tenants each; CPU per reconcile x{:.2} of one instance's; watch events per instance x{:.3} of one instance's (1/N = {:.3}), by instance {events:?}",
                tenants as f64 / f64::from(instances),
                per_thousand / base,
                events_each / base_events.max(1.0),
                1.0 / f64::from(instances)
            );
        }
    }
    // Leave the cluster with its usual replicas.
    replace_instances(cluster, running, OPERATOR_REPLICAS)?;
    Ok(())
}

/// Tenants `shard0`.. `shard<tenants-1>`, each with one namespace (made
/// by the admin in storage terms, as the gateway would), created
/// `concurrency` at a time.
async fn create_tenants(
    cluster: &LocalCluster,
    tenants: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let admin = cluster.admin_client().await?;
    let api: Api<Tenant> = Api::all(admin.clone());
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    eprintln!("creating {tenants} tenants, one namespace each");
    let names: Vec<String> = (0..tenants).map(|i| format!("shard{i}")).collect();
    let outcomes: Vec<anyhow::Result<()>> = futures::stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            let namespaces = namespaces.clone();
            async move {
                let tenant: Tenant = serde_json::from_value(json!({
                    "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
                    "metadata": {"name": name},
                    "spec": {"owners": [{"kind": "User", "name": "nobody"}]},
                }))?;
                api.create(&PostParams::default(), &tenant).await?;
                let namespace: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": TenantName::new(&name)?.storage_namespace("web")?.as_str(),
                        "labels": {TENANT_LABEL: name}},
                }))?;
                // Admission learns of the tenant a moment after it is made.
                let mut tries = 0;
                while let Err(err) = namespaces.create(&PostParams::default(), &namespace).await {
                    tries += 1;
                    anyhow::ensure!(tries < 20, "the namespace of {name}: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    outcomes.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(names)
}

/// Waits until `instances` operators have reconciled every wanted tenant
/// since `started` (µs since the epoch); how long it took (on `clock`) and how many reconciles.
async fn all_reconciled(
    cluster: &LocalCluster,
    instances: u16,
    wanted: &HashSet<&String>,
    started: u128,
    clock: Instant,
) -> anyhow::Result<(Duration, usize)> {
    loop {
        let mut done: HashSet<String> = HashSet::new();
        let mut count = 0usize;
        for replica in 0..instances {
            if let Ok(log) = observe::reconciles(cluster.operators_port(replica)).await {
                for record in log.reconciles.into_iter().filter(|r| r.start >= started) {
                    count += 1;
                    done.insert(record.object);
                }
            }
        }
        if wanted.iter().all(|n| done.contains(*n)) {
            return Ok((clock.elapsed(), count));
        }
        anyhow::ensure!(
            clock.elapsed() < Duration::from_secs(600),
            "{} of {} tenants reconciled after 10 minutes",
            done.len(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
