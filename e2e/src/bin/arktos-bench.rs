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
use arktos_crds::tenant::{Tenant, TenantSpec};
use arktos_e2e::bench::{Sample, measure, report};
use arktos_e2e::cluster::{ClusterSpec, LocalCluster, Ports};
use arktos_e2e::home::ArktosHome;
use clap::{Parser, Subcommand};

#[path = "arktos-bench/tenant_pods.rs"]
mod tenant_pods;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

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
        let mut spec = ClusterSpec::new(
            format!("bench-{}", std::process::id()),
            ArktosHome::from_env(),
            Ports::find_free()?,
        );
        spec.ephemeral = true;
        eprintln!("starting a local cluster for the benchmark");
        let mut cluster = LocalCluster::start(spec).await?;
        let result =
            tenant_pods::run(&cluster, pods, namespaces, per_path, lists, cli.concurrency).await;
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
            let mut spec = ClusterSpec::new(
                format!("bench-{}", std::process::id()),
                ArktosHome::from_env(),
                Ports::find_free()?,
            );
            spec.ephemeral = true;
            eprintln!("starting a local cluster for the benchmark");
            let cluster = LocalCluster::start(spec).await?;
            let client = cluster.admin_client().await?;
            local = Some(cluster);
            client
        }
    };
    let result = match cli.bench {
        Bench::Tenants { count, gets, lists } => {
            tenants(client, count, gets, lists, cli.concurrency).await
        }
        Bench::TenantPods { .. } => unreachable!("handled above"),
    };
    if let Some(mut cluster) = local {
        cluster.stop();
    }
    result
}

async fn tenants(
    client: kube::Client,
    count: usize,
    gets: usize,
    lists: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let records: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("storage.tenancy.arktos.io", "v1alpha1", "TenantRecord"),
            "tenantrecords",
        ),
    );
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let run = std::process::id() % 10_000;
    let mut samples: Vec<Sample> = Vec::new();
    let targets = [
        "tenants (via aggregator)",
        "tenantrecords (storage CRD, direct)",
        "priorityclasses (built-in)",
    ];

    eprintln!("[1/3] CREATE {count} of each, {concurrency} in flight");
    {
        let api = tenants.clone();
        samples.push(
            measure("CREATE", targets[0], count, concurrency, move |i| {
                let api = api.clone();
                async move {
                    api.create(
                        &PostParams::default(),
                        &Tenant::new(&format!("b{run}t{i}"), TenantSpec::default()),
                    )
                    .await?;
                    Ok(())
                }
            })
            .await,
        );
        let api = records.clone();
        samples.push(
            measure("CREATE", targets[1], count, concurrency, move |i| {
                let api = api.clone();
                async move {
                    let object: DynamicObject = serde_json::from_value(serde_json::json!({
                        "apiVersion": "storage.tenancy.arktos.io/v1alpha1", "kind": "TenantRecord",
                        "metadata": {"name": format!("b{run}r{i}")}, "spec": {},
                    }))?;
                    api.create(&PostParams::default(), &object).await?;
                    Ok(())
                }
            })
            .await,
        );
        let api = classes.clone();
        samples.push(
            measure("CREATE", targets[2], count, concurrency, move |i| {
                let api = api.clone();
                async move {
                    let class: PriorityClass = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("b{run}p{i}")}, "value": i,
                    }))?;
                    api.create(&PostParams::default(), &class).await?;
                    Ok(())
                }
            })
            .await,
        );
    }

    eprintln!("[2/3] GET {gets} of each");
    {
        let api = tenants.clone();
        samples.push(
            measure("GET", targets[0], gets, concurrency, move |i| {
                let api = api.clone();
                async move {
                    api.get(&format!("b{run}t{}", i % count))
                        .await
                        .map(|_| ())
                        .context("get")
                }
            })
            .await,
        );
        let api = records.clone();
        samples.push(
            measure("GET", targets[1], gets, concurrency, move |i| {
                let api = api.clone();
                async move {
                    api.get(&format!("b{run}r{}", i % count))
                        .await
                        .map(|_| ())
                        .context("get")
                }
            })
            .await,
        );
        let api = classes.clone();
        samples.push(
            measure("GET", targets[2], gets, concurrency, move |i| {
                let api = api.clone();
                async move {
                    api.get(&format!("b{run}p{}", i % count))
                        .await
                        .map(|_| ())
                        .context("get")
                }
            })
            .await,
        );
    }

    eprintln!("[3/3] LIST all ({count}+ objects) {lists} times each");
    {
        let api = tenants.clone();
        samples.push(
            measure("LIST", targets[0], lists, 1, move |_| {
                let api = api.clone();
                async move {
                    anyhow::ensure!(api.list(&ListParams::default()).await?.items.len() >= count);
                    Ok(())
                }
            })
            .await,
        );
        let api = records.clone();
        samples.push(
            measure("LIST", targets[1], lists, 1, move |_| {
                let api = api.clone();
                async move {
                    anyhow::ensure!(api.list(&ListParams::default()).await?.items.len() >= count);
                    Ok(())
                }
            })
            .await,
        );
        let api = classes.clone();
        samples.push(
            measure("LIST", targets[2], lists, 1, move |_| {
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
    report(&samples, targets[2]);
    Ok(())
}
