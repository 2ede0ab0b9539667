//! arktos-operators: the controllers and admission webhooks that keep
//! tenants what they claim to be.
#![forbid(unsafe_code)]

pub mod admission;
pub mod metrics;
pub mod quota;
pub mod sharding;
pub mod tenant;
pub mod vm_actions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use futures::FutureExt;
use warp::{Filter, Reply};

#[derive(Clone, Debug, Parser)]
#[command(
    name = "arktos-operators",
    version,
    about = "Arktos controllers and admission webhooks: the tenant controller (access, namespaces, policies, status, deletion) and the tenant label, policy and tenant-wide quota webhooks"
)]
pub struct Config {
    /// Kubeconfig for reaching the cluster; in a pod, leave it unset to use
    /// the service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_address: SocketAddr,
    /// HTTPS address of the admission webhooks (/mutate, /validate,
    /// /quota); replicas on one host may share it. Unset: no webhooks.
    #[arg(long)]
    pub webhook_address: Option<SocketAddr>,
    /// Serving certificate of the webhooks (PEM), naming the Service.
    #[arg(long, requires = "webhook_address")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "webhook_address")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Users the webhooks' tenant policy does not apply to (the control
    /// plane and the operators); a trailing `*` matches any suffix.
    #[arg(
        long = "trusted-user",
        value_delimiter = ',',
        default_values_t = [
            "system:kube-controller-manager".to_string(),
            "system:kube-scheduler".to_string(),
            "system:serviceaccount:kube-system:*".to_string(),
            "system:serviceaccount:arktos-system:arktos-operators".to_string(),
        ]
    )]
    pub trusted_users: Vec<String>,
    /// Groups the webhooks' tenant policy does not apply to.
    #[arg(long = "trusted-group", value_delimiter = ',', default_values_t = ["system:masters".to_string()])]
    pub trusted_groups: Vec<String>,
    /// How instances share the controllers' work. To run N replicas, start
    /// N with distinct `--instance` names (a Deployment's pod names): each
    /// holds a Lease in `--shard-namespace` and works on 1/N of the tenants,
    /// handing over as instances come and go. `labels` asks the API server
    /// for an instance's tenants, and for their namespaces and what the
    /// controller wrote for them, by the tenant's bucket label; `server`
    /// asks for the Tenants with kube-apiserver's sharded list and watch
    /// (`shardSelector`, by UID) and watches the rest whole; `off` makes
    /// every instance work on everything.
    #[arg(long, visible_alias = "shards", value_enum, default_value_t = Sharding::Labels)]
    pub sharding: Sharding,
    /// This instance's name among the shards (unique per instance).
    #[arg(long, env = "POD_NAME", default_value_t = sharding::membership::default_instance())]
    pub instance: String,
    /// Namespace of the shard Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "arktos-system")]
    pub shard_namespace: String,
    /// Seconds a shard Lease lives without renewal: a dead instance's
    /// share is taken over after this (plus about a second).
    #[arg(long, default_value_t = 10)]
    pub lease_seconds: u64,
    /// Run the controllers (`--controllers=false` for a webhook-only replica).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub controllers: bool,
    /// Seconds a finished VM Action is kept before it is deleted.
    #[arg(long, default_value_t = 3600)]
    pub action_retention_seconds: u64,
    /// Where tenant pods reach the tenant gateway (IP:port, an address its
    /// serving certificate names): the in-cluster config of every new pod
    /// of a tenant points there, and each tenant's `default/kubernetes`
    /// Service has it as its endpoint. Unset: tenant pods keep the
    /// cluster's `kubernetes` Service (and see storage names).
    #[arg(long, env = "ARKTOS_TENANT_API_ADDRESS")]
    pub tenant_api_address: Option<SocketAddr>,
    /// The partition whose tenants this instance provisions and whose
    /// webhooks it serves. Each partition runs its own instances, as each
    /// Arktos tenant partition runs its own controllers; see
    /// docs/architecture.md.
    #[arg(long, env = "ARKTOS_PARTITION", default_value = arktos_crds::tenant::ROOT_PARTITION)]
    pub partition: String,
    /// Kubeconfig for the root cluster (where the Tenants are) when
    /// `--kubeconfig` reaches another partition; unset, the two are one.
    #[arg(long, env = "ARKTOS_ROOT_KUBECONFIG")]
    pub root_kubeconfig: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sharding {
    Off,
    Server,
    Labels,
}

async fn kube_config(path: &Option<PathBuf>) -> anyhow::Result<kube::Config> {
    Ok(match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    })
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Listen for SIGTERM from the start: a stop that arrives while the
    // controllers are still starting must still stop us.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let partition_config = kube_config(&config.kubeconfig).await?;
    let client = kube::Client::try_from(partition_config.clone())?;
    let root_config = match &config.root_kubeconfig {
        Some(_) => kube_config(&config.root_kubeconfig).await?,
        None => partition_config,
    };
    let root = kube::Client::try_from(root_config.clone())?;
    let metrics = metrics::Metrics::new();
    let log = Arc::new(sharding::log::ReconcileLog::default());
    serve_health(&config, metrics.clone(), log.clone());
    let ledgers = Arc::new(quota::ledger::Ledgers::new(client.clone()));
    if let Some(address) = config.webhook_address {
        let clients = [&client, &root];
        serve_webhooks(&config, address, clients, ledgers.clone(), metrics.clone())?;
    }
    let partition = tenant::Partition {
        name: config.partition.clone(),
        is_root: config.root_kubeconfig.is_none(),
    };
    tracing::info!(partition = %partition.name, root = partition.is_root, "provisioning the partition's tenants");
    let setup = Arc::new(tenant::Setup {
        client: client.clone(),
        root: root.clone(),
        partition,
        config: root_config,
        metrics: metrics.clone(),
        ledgers,
        log,
        tenant_api: config.tenant_api_address,
    });
    // Each partition's instances share its tenants among themselves.
    let ring = if config.root_kubeconfig.is_none() {
        "tenants".to_string()
    } else {
        format!("tenants-{}", config.partition)
    };
    let membership = Arc::new(sharding::membership::Membership::new(
        root.clone(),
        &config.shard_namespace,
        &ring,
        &config.instance,
        std::time::Duration::from_secs(config.lease_seconds.max(3)),
    ));
    let controllers = run_controllers(&config, setup, membership.clone(), metrics);
    tokio::select! {
        _ = controllers => {}
        _ = terminate.recv() => tracing::info!("terminated; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    if config.controllers && config.sharding != Sharding::Off {
        // Leave at once, so the others need not wait for the Lease to expire.
        membership.leave().await;
    }
    Ok(())
}

/// The tenant and Action controllers, sharded as configured (or nothing
/// with `--controllers=false`); runs until the process stops.
async fn run_controllers(
    config: &Config,
    setup: Arc<tenant::Setup>,
    membership: Arc<sharding::membership::Membership>,
    metrics: Arc<metrics::Metrics>,
) {
    let retention = std::time::Duration::from_secs(config.action_retention_seconds);
    if !config.controllers {
        std::future::pending::<()>().await;
    }
    let mode = match config.sharding {
        Sharding::Off => {
            // Never stop: the senders live as long as this future.
            let (_keep, stop) = tokio::sync::oneshot::channel();
            let (_keep_too, stop_actions) = tokio::sync::oneshot::channel();
            tokio::join!(
                tenant::run(&setup, None, stop),
                vm_actions::run(setup.client.clone(), None, retention, stop_actions)
            );
            return;
        }
        Sharding::Server => sharding::Mode::Server,
        Sharding::Labels => sharding::Mode::Labels,
    };
    tracing::info!(?mode, instance = %config.instance, "running the tenant controller sharded");
    let setup = setup.clone();
    sharding::run(
        membership.clone(),
        mode,
        metrics.clone(),
        move |shard, stop| {
            let setup = setup.clone();
            async move {
                // One stop for both controllers of the piece.
                let (stop_tenants, tenants_stopped) = tokio::sync::oneshot::channel();
                let (stop_actions, actions_stopped) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = stop.await;
                    let _ = stop_tenants.send(());
                    let _ = stop_actions.send(());
                });
                let range = shard.range;
                tokio::join!(
                    tenant::run(&setup, Some(shard), tenants_stopped),
                    vm_actions::run(
                        setup.client.clone(),
                        Some(range),
                        retention,
                        actions_stopped
                    )
                );
            }
            .boxed()
        },
    )
    .await;
}

/// Health, metrics and the reconcile log on `--health-address`.
fn serve_health(
    config: &Config,
    metrics: Arc<metrics::Metrics>,
    reconciles: Arc<sharding::log::ReconcileLog>,
) {
    let instance = config.instance.clone();
    let health = warp::path!("healthz")
        .or(warp::path!("readyz"))
        .unify()
        .or(warp::path!("livez"))
        .unify()
        .map(|| String::from("ok"))
        .or(warp::path!("metrics").map(move || metrics.render()))
        .unify()
        .map(|body: String| {
            warp::reply::with_status(body, warp::http::StatusCode::OK).into_response()
        })
        .or(warp::path!("debug" / "reconciles").map(move || {
            warp::reply::json(&serde_json::json!({
                "instance": instance,
                "reconciles": reconciles.snapshot(),
            }))
            .into_response()
        }))
        .unify();
    let health_address = config.health_address;
    tokio::spawn(async move {
        warp::serve(health).run(health_address).await;
    });
    tracing::info!(%health_address, "serving health and metrics");
}

/// The admission webhooks (policy, defaults, the tenant-wide quota) of the
/// partition `clients[0]` reaches; the Tenants are read at `clients[1]`.
fn serve_webhooks(
    config: &Config,
    address: std::net::SocketAddr,
    [_partition, root]: [&kube::Client; 2],
    ledgers: Arc<quota::ledger::Ledgers>,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<()> {
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_private_key_file) else {
        anyhow::bail!("--webhook-address needs --tls-cert-file and --tls-private-key-file");
    };
    let tls = admission::serve::tls_config(cert, key)?;
    let listener = admission::serve::listen(address)?;
    let admission = Arc::new(admission::Admission {
        tenants: admission::Tenants::watch(root.clone()),
        ledgers,
        trust: admission::Trust {
            users: config.trusted_users.clone(),
            groups: config.trusted_groups.clone(),
        },
        tenant_api: config.tenant_api_address,
        metrics,
    });
    tokio::spawn(admission::serve::serve(
        listener,
        tls,
        admission::routes(admission),
    ));
    tracing::info!(%address, "serving admission webhooks");
    Ok(())
}
