//! arktos-operators: the controllers (and, next, admission webhooks) that
//! keep tenants what they claim to be.
#![forbid(unsafe_code)]

pub mod metrics;
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
    about = "Arktos controllers: the tenant controller (access, namespaces, policies, status, deletion)"
)]
pub struct Config {
    /// Kubeconfig for reaching the cluster; in a pod, leave it unset to use
    /// the service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_address: SocketAddr,
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
    tokio::select! {
        _ = tenant::run(client, Arc::clone(&metrics)) => {}
        _ = terminate.recv() => tracing::info!("terminated; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}
