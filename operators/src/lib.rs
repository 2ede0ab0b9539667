//! arktos-operators: the controllers and admission webhooks that keep
//! tenants what they claim to be.
#![forbid(unsafe_code)]

pub mod admission;
pub mod metrics;
pub mod quota;
pub mod tenant;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use warp::Filter;

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
    /// Run the controllers (`--controllers=false` for a webhook-only replica).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub controllers: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

async fn client(config: &Config) -> anyhow::Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(kube_config)?)
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Listen for SIGTERM from the start: a stop that arrives while the
    // controllers are still starting must still stop us.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let client = client(&config).await?;
    let metrics = metrics::Metrics::new();
    let served = metrics.clone();
    let health = warp::path!("healthz")
        .or(warp::path!("readyz"))
        .unify()
        .or(warp::path!("livez"))
        .unify()
        .map(|| String::from("ok"))
        .or(warp::path!("metrics").map(move || served.render()))
        .unify();
    let health_address = config.health_address;
    tokio::spawn(async move {
        warp::serve(health).run(health_address).await;
    });
    tracing::info!(%health_address, "serving health and metrics");
    let ledgers = Arc::new(quota::ledger::Ledgers::new(client.clone()));
    if let Some(address) = config.webhook_address {
        let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_private_key_file) else {
            anyhow::bail!("--webhook-address needs --tls-cert-file and --tls-private-key-file");
        };
        let tls = admission::serve::tls_config(cert, key)?;
        let listener = admission::serve::listen(address)?;
        let admission = Arc::new(admission::Admission {
            tenants: admission::Tenants::watch(client.clone()),
            ledgers: ledgers.clone(),
            trust: admission::Trust {
                users: config.trusted_users.clone(),
                groups: config.trusted_groups.clone(),
            },
            metrics: metrics.clone(),
        });
        tokio::spawn(admission::serve::serve(
            listener,
            tls,
            admission::routes(admission),
        ));
        tracing::info!(%address, "serving admission webhooks");
    }
    let controllers = async {
        if config.controllers {
            tenant::run(client.clone(), Arc::clone(&metrics), ledgers).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = controllers => {}
        _ = terminate.recv() => tracing::info!("terminated; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}
