//! arktos-bench: latency and throughput of Arktos APIs next to the upstream
//! baseline, measured in the same run on the same cluster.
//!
//! `arktos-bench tenants` starts a local cluster through the launcher (or
//! uses `--kubeconfig`), then times CREATE, GET and LIST of Tenants through
//! the aggregation layer, of their storage CRD directly, and of
//! PriorityClasses (a built-in cluster-scoped resource), and prints p50,
//! p99, throughput and the ratios to the built-in.
use std::path::PathBuf;

use anyhow::Context;
use arktos_e2e::bench::{Sample, measure, report};
use arktos_e2e::cluster::{ClusterSpec, LocalCluster, Ports};
use arktos_e2e::home::ArktosHome;
use clap::{Parser, Subcommand};

#[path = "arktos-bench/list_shares.rs"]
mod list_shares;
#[path = "arktos-bench/partitions.rs"]
mod partitions;
#[path = "arktos-bench/provisioning.rs"]
mod provisioning;
#[path = "arktos-bench/shards.rs"]
mod shards;
#[path = "arktos-bench/tenant_pods.rs"]
mod tenant_pods;
#[path = "arktos-bench/vm_actions.rs"]
mod vm_actions;
#[path = "arktos-bench/vm_pods.rs"]
mod vm_pods;
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "arktos-bench",
    version,
    about = "Benchmarks of Arktos APIs against the upstream baseline"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Use this cluster instead of starting one.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, global = true, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum Bench {
    /// Tenant CREATE/GET/LIST through the aggregator vs the storage CRD vs PriorityClass.
    Tenants {
        /// Objects of each kind to create (and then list).
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// GETs per kind.
        #[arg(long, default_value_t = 2000)]
        gets: usize,
        /// LISTs of everything, per kind.
        #[arg(long, default_value_t = 20)]
        lists: usize,
    },
    /// Pod CREATE/GET/LIST through the tenant gateway, the aggregated path and directly.
    TenantPods {
        /// Pods in the tenant, spread over its namespaces (listed tenant-wide).
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// The tenant's namespaces.
        #[arg(long, default_value_t = 5)]
        namespaces: usize,
        /// Pods created (and GETs made) through each path.
        #[arg(long, default_value_t = 300)]
        per_path: usize,
        /// Tenant-wide LISTs per path.
        #[arg(long, default_value_t = 20)]
        lists: usize,
    },
    /// arktos-apiserver's list copies and memory with 1 and 2 replicas.
    ListShares {
        /// Tenants, each with a namespace and a pod.
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
    },
    /// The sharded tenant controller with 1, 2 and 4 instances.
    Shards {
        /// Tenants to reconcile.
        #[arg(long, default_value_t = 1000)]
        tenants: usize,
    },
    /// VM pod start through arktos-node vs `virsh create`, one by one and in
    /// parallel; container pod start through arktos-node vs containerd;
    /// memory of arktos-node and per VM.
    VmPods {
        /// VM pods (and container pods) started one after another, per target.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// VM pods started at once.
        #[arg(long, default_value_t = 10)]
        parallel: usize,
    },
    /// VM Actions (reboot, snapshot, restore, stop, start), live resize and
    /// NIC/disk hot-plug through the tenant gateway, vs virsh on the same VM.
    VmActions {
        /// Runs of each operation.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// The same tenant workload through the gateway on 1 partition and on 2;
    /// the gateway's memory per tenant with many synthetic tenants placed.
    Partitions {
        /// CREATEs and GETs per tenant and phase.
        #[arg(long, default_value_t = 500)]
        requests: usize,
        /// LISTs per tenant and phase.
        #[arg(long, default_value_t = 20)]
        lists: usize,
        /// Synthetic tenants placed to weigh the gateway's partition map.
        #[arg(long, default_value_t = 100_000)]
        synthetic: usize,
    },
    /// Tenants provisioned per second until Ready, and the operators' memory per tenant.
    Provisioning {
        /// Tenants to create.
        #[arg(long, default_value_t = 1000)]
        tenants: usize,
        /// Namespaces per tenant (created through the gateway).
        #[arg(long, default_value_t = 2)]
        namespaces: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Bench::TenantPods {
        pods,
        namespaces,
        per_path,
        lists,
    } = cli.bench
    {
        // Needs the local cluster's CA to issue a tenant owner's certificate.
        let mut cluster = start_cluster().await?;
        let result =
            tenant_pods::run(&cluster, pods, namespaces, per_path, lists, cli.concurrency).await;
        cluster.stop();
        return result;
    }
    if let Bench::Provisioning {
        tenants,
        namespaces,
    } = cli.bench
    {
        // Needs the local cluster's processes to read their memory.
        let mut cluster = start_cluster().await?;
        let result = provisioning::run(&cluster, tenants, namespaces, cli.concurrency).await;
        cluster.stop();
        return result;
    }
    if let Bench::VmPods { runs, parallel } = cli.bench {
        // Needs the local cluster's real node.
        let mut cluster = start_cluster().await?;
        let result = vm_pods::run(&mut cluster, runs, parallel).await;
        cluster.stop();
        return result;
    }
    if let Bench::VmActions { runs } = cli.bench {
        // Needs the local cluster's real node.
        let mut cluster = start_cluster().await?;
        let result = vm_actions::run(&cluster, runs).await;
        cluster.stop();
        return result;
    }
    if let Bench::Partitions {
        requests,
        lists,
        synthetic,
    } = cli.bench
    {
        // Adds a partition to the local cluster and reads its processes.
        let mut cluster = start_cluster().await?;
        let work = partitions::Workload {
            requests,
            lists,
            synthetic,
            concurrency: cli.concurrency,
        };
        let result = partitions::run(&mut cluster, &work).await;
        cluster.stop();
        return result;
    }
    if let Bench::ListShares { tenants } = cli.bench {
        let mut cluster = start_cluster().await?;
        let result = list_shares::run(&mut cluster, tenants, cli.concurrency.max(16)).await;
        cluster.stop();
        return result;
    }
    if let Bench::Shards { tenants } = cli.bench {
        let mut cluster = start_cluster().await?;
        let result = shards::run(&mut cluster, tenants, cli.concurrency).await;
        cluster.stop();
        return result;
    }
    let mut local = None;
    let client = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Client::try_from(
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
            )?
        }
        None => {
            let mut cluster = start_cluster().await?;
            // The API's cost alone: nothing provisions the tenants meanwhile
            // (the operators serve their webhooks only).
            for replica in 0..arktos_e2e::cluster::OPERATOR_REPLICAS {
                cluster.stop_component(&LocalCluster::operators_name(replica));
                cluster
                    .start_arktos_operators_with(replica, &["--controllers=false".to_string()])?;
            }
            let client = cluster.admin_client().await?;
            local = Some(cluster);
            client
        }
    };
    let result = match cli.bench {
        Bench::Tenants { count, gets, lists } => {
            tenants(client, count, gets, lists, cli.concurrency).await
        }
        Bench::TenantPods { .. }
        | Bench::Provisioning { .. }
        | Bench::Shards { .. }
        | Bench::ListShares { .. }
        | Bench::Partitions { .. }
        | Bench::VmPods { .. }
        | Bench::VmActions { .. } => {
            unreachable!("handled above")
        }
    };
    if let Some(mut cluster) = local {
        cluster.stop();
    }
    result
}

/// A fresh ephemeral local cluster on free ports, for one benchmark run.
async fn start_cluster() -> anyhow::Result<LocalCluster> {
    let mut spec = ClusterSpec::new(
        format!("bench-{}", std::process::id()),
        ArktosHome::from_env(),
        Ports::find_free()?,
    );
    spec.ephemeral = true;
    eprintln!("starting a local cluster for the benchmark");
    Ok(LocalCluster::start(spec).await?)
}

/// One kind the Tenant benchmark measures, and how to make an object of it.
struct Kind {
    label: &'static str,
    api: Api<DynamicObject>,
    object: fn(&str, usize) -> serde_json::Value,
    prefix: &'static str,
}

/// The three kinds the tenants bench compares: Tenants through the
/// aggregator, their storage CRD, and a built-in cluster-scoped kind.
fn bench_kinds(client: &kube::Client) -> [Kind; 3] {
    let resource = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    [
        Kind {
            label: "tenants (via aggregator)",
            api: Api::all_with(
                client.clone(),
                &resource("tenancy.arktos.io", "v1alpha1", "Tenant", "tenants"),
            ),
            object: |name, _| json!({"apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": {}}),
            prefix: "t",
        },
        Kind {
            label: "tenantrecords (storage CRD, direct)",
            api: Api::all_with(
                client.clone(),
                &resource(
                    "storage.tenancy.arktos.io",
                    "v1alpha1",
                    "TenantRecord",
                    "tenantrecords",
                ),
            ),
            object: |name, _| json!({"apiVersion": "storage.tenancy.arktos.io/v1alpha1", "kind": "TenantRecord", "metadata": {"name": name}, "spec": {}}),
            prefix: "r",
        },
        Kind {
            label: "priorityclasses (built-in)",
            api: Api::all_with(
                client.clone(),
                &resource(
                    "scheduling.k8s.io",
                    "v1",
                    "PriorityClass",
                    "priorityclasses",
                ),
            ),
            object: |name, i| json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": i}),
            prefix: "p",
        },
    ]
}

async fn tenants(
    client: kube::Client,
    count: usize,
    gets: usize,
    lists: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let kinds = bench_kinds(&client);
    let run = std::process::id() % 10_000;
    let name = move |prefix: &str, i: usize| format!("b{run}{prefix}{i}");
    let mut samples: Vec<Sample> = Vec::new();

    eprintln!("[1/3] CREATE {count} of each, {concurrency} in flight");
    for kind in &kinds {
        let (api, object, prefix) = (kind.api.clone(), kind.object, kind.prefix);
        samples.push(
            measure("CREATE", kind.label, count, concurrency, move |i| {
                let api = api.clone();
                async move {
                    let body: DynamicObject = serde_json::from_value(object(&name(prefix, i), i))?;
                    api.create(&PostParams::default(), &body).await?;
                    Ok(())
                }
            })
            .await,
        );
    }
    eprintln!("[2/3] GET {gets} of each");
    for kind in &kinds {
        let (api, prefix) = (kind.api.clone(), kind.prefix);
        samples.push(
            measure("GET", kind.label, gets, concurrency, move |i| {
                let api = api.clone();
                async move {
                    api.get(&name(prefix, i % count))
                        .await
                        .map(|_| ())
                        .context("get")
                }
            })
            .await,
        );
    }
    eprintln!("[3/3] LIST all ({count}+ objects) {lists} times each");
    for kind in &kinds {
        let api = kind.api.clone();
        samples.push(
            measure("LIST", kind.label, lists, 1, move |_| {
                let api = api.clone();
                async move {
                    anyhow::ensure!(api.list(&ListParams::default()).await?.items.len() >= count);
                    Ok(())
                }
            })
            .await,
        );
    }
    println!();
    report(&samples, kinds[2].label);
    Ok(())
}
