//! arktos-apiserver: the aggregated API server of `tenancy.arktos.io`.
//!
//! `serve` terminates TLS and judges client certificates; `routes` runs
//! authentication (`authn`), authorization (`authz`) and dispatch; `tenants`
//! implements the Tenant resource over its `storage`, translating between
//! the two with `rename`; `discovery`, `openapi` and `metrics` answer the
//! rest.
#![forbid(unsafe_code)]
// Errors here are Kubernetes `Status` objects on their way to a client; the
// error path is cold and boxing each one would only add noise.
#![allow(clippy::result_large_err)]

pub mod authn;
pub mod authz;
mod cache;
pub mod config;
pub mod discovery;
pub mod list_share;
pub mod metrics;
pub mod openapi;
pub mod partition_probe;
pub mod partitions;
pub mod placed_tenants;
pub mod rename;
pub mod request;
pub mod respond;
pub mod routes;
pub mod serve;
pub mod storage;
pub mod tenant_routes;
pub mod tenants;
pub mod verb;

use arktos_crds::sharding::membership::Membership;
use arktos_crds::sharding::ring::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arktos_crds::naming::SYSTEM_TENANT;
use arktos_crds::tenant::{Tenant, TenantSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where kube-apiserver publishes how extension servers authenticate.
const AUTH_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

pub async fn client(config: &Config) -> Result<kube::Client> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    // Watches are passed through and may stay open for a long time.
    kube_config.read_timeout = None;
    Ok(kube::Client::try_from(kube_config)?)
}

/// Reads the front-proxy and client CAs and the identity header names.
async fn authentication_settings(
    client: &kube::Client,
) -> Result<(serve::TrustAnchors, authn::RequestHeaderNames)> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), AUTH_CONFIGMAP.0);
    let map = maps.get(AUTH_CONFIGMAP.1).await?;
    let data = map.data.unwrap_or_default();
    let list = |key: &str| -> Vec<String> {
        data.get(key)
            .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .unwrap_or_default()
    };
    let mut names = authn::RequestHeaderNames::default();
    for (key, field) in [
        ("requestheader-username-headers", &mut names.username),
        ("requestheader-uid-headers", &mut names.uid),
        ("requestheader-group-headers", &mut names.group),
        (
            "requestheader-extra-headers-prefix",
            &mut names.extra_prefix,
        ),
    ] {
        let configured = list(key);
        if !configured.is_empty() {
            *field = configured;
        }
    }
    let anchors = serve::TrustAnchors::new(
        data.get("requestheader-client-ca-file").map(String::as_str),
        data.get("client-ca-file").map(String::as_str),
        list("requestheader-allowed-names"),
    )?;
    Ok((anchors, names))
}

/// Keeps `ready` true while the storage answers, and makes sure the
/// `system` tenant exists.
async fn watch_readiness(state: Arc<routes::State>) {
    backfill_buckets(state.tenants.storage()).await;
    loop {
        let storage = state.tenants.storage();
        let ready = match storage.get(SYSTEM_TENANT).await {
            Ok(Some(system)) => {
                if system.pointer("/status/phase").is_none() {
                    mark_system_tenant_active(storage).await;
                }
                true
            }
            Ok(None) => {
                // Active at once, not at the next look 10 s later.
                let created = create_system_tenant(storage, state.tenants.root_partition()).await;
                if created {
                    mark_system_tenant_active(storage).await;
                }
                created
            }
            Err(_) => false,
        };
        if ready != state.ready.swap(ready, Ordering::Relaxed) {
            tracing::info!(ready, "readiness changed");
        }
        tokio::time::sleep(Duration::from_secs(if ready { 10 } else { 1 })).await;
    }
}

/// Labels Tenants stored without their shard bucket (or with a bucket
/// another version computed), so that label-sharded controllers see them.
async fn backfill_buckets(storage: &storage::Storage) {
    let call = storage::Call::default();
    let Ok(answer) = storage.call(http::Method::GET, call).await else {
        return;
    };
    for item in answer.body["items"].as_array().into_iter().flatten() {
        let Some(name) = item.pointer("/metadata/name").and_then(|n| n.as_str()) else {
            continue;
        };
        let bucket = arktos_crds::sharding::bucket_of(name).to_string();
        let label = item
            .pointer("/metadata/labels")
            .and_then(|l| l.get(arktos_crds::sharding::BUCKET_LABEL))
            .and_then(|b| b.as_str());
        if label == Some(bucket.as_str()) {
            continue;
        }
        let call = storage::Call {
            name: Some(name),
            content_type: "application/merge-patch+json",
            body: Some(
                serde_json::json!({"metadata": {"labels": {arktos_crds::sharding::BUCKET_LABEL: bucket}}}),
            ),
            ..Default::default()
        };
        if let Err(err) = storage.call(http::Method::PATCH, call).await {
            tracing::warn!(tenant = name, error = ?err, "cannot label the tenant with its shard bucket");
        }
    }
}

/// The system tenant is the cluster itself: always Active (the tenant
/// controller never reconciles it, so nobody else writes its status).
async fn mark_system_tenant_active(storage: &storage::Storage) {
    let call = storage::Call {
        name: Some(SYSTEM_TENANT),
        subresource: Some("status"),
        content_type: "application/merge-patch+json",
        body: Some(serde_json::json!({"status": {
            "phase": "Active",
            "conditions": [{"type": "Ready", "status": "True", "reason": "SystemTenant",
                "message": "the cluster's own namespaces",
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}],
        }})),
        ..Default::default()
    };
    match storage.call(http::Method::PATCH, call).await {
        Ok(answer) if answer.is_success() => tracing::info!("the system tenant is Active"),
        Ok(answer) => {
            tracing::warn!(code = %answer.code, body = %answer.body, "cannot mark the system tenant Active")
        }
        Err(err) => tracing::warn!(error = ?err, "cannot mark the system tenant Active"),
    }
}

async fn create_system_tenant(storage: &storage::Storage, root_partition: &str) -> bool {
    let spec = TenantSpec {
        partition: root_partition.to_string(),
        ..TenantSpec::default()
    };
    let system = Tenant::new(SYSTEM_TENANT, spec);
    let call = storage::Call {
        body: serde_json::to_value(&system).ok(),
        ..Default::default()
    };
    match storage.call(http::Method::POST, call).await {
        Ok(answer) if answer.is_success() || answer.code == http::StatusCode::CONFLICT => {
            tracing::info!("created the system tenant");
            true
        }
        Ok(answer) => {
            tracing::warn!(code = %answer.code, body = %answer.body, "cannot create the system tenant");
            false
        }
        Err(_) => false,
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = client(&config).await?;
    let (anchors, header_names) = authentication_settings(&client).await?;
    tracing::info!(?anchors, "loaded the authentication settings");
    let tls = serve::tls_config(
        &config.tls_cert_file,
        &config.tls_private_key_file,
        &anchors,
    )?;
    let authz = Arc::new(authz::Authorizer::new(client.clone()));
    let cached_lists = cached_lists(&config)?;
    let (list_membership, list_share) = list_shares(&config, &client, &cached_lists).await;
    let metrics = metrics::Metrics::new();
    let tenant_routes = Arc::new(tenant_routes::partitioned::PartitionRoutes::new(
        tenant_routes::partitioned::Setup {
            client: client.clone(),
            root_name: config.root_partition.clone(),
            namespace: config.namespace.clone(),
            authz: authz.clone(),
            cached_lists,
            metrics: metrics.list_cache(),
            list_share,
        },
    ));
    let placed = Arc::new(placed_tenants::PlacedTenants::new(&config.root_partition));
    tokio::spawn(placed.clone().follow(client.clone()));
    let placement = tenants::Placement {
        root: config.root_partition.clone(),
        root_weight: config.root_partition_weight,
        placed: placed.clone(),
    };
    let state = Arc::new(routes::State {
        authn: authn::Authenticator::new(header_names, Some(client.clone())),
        authz: authz.clone(),
        tenants: tenant_api(&config, &client, authz.clone(), placement, &metrics),
        partitions: partitions::PartitionApi::new(storage::Storage::of(
            client.clone(),
            &rename::PARTITIONS,
        )),
        tenant_routes: tenant_routes.clone(),
        openapi: openapi::OpenApi::new(client.clone()),
        metrics,
        ready: AtomicBool::new(false),
    });
    tokio::spawn(watch_readiness(state.clone()));
    spawn_partition_probe(&config, &client, tenant_routes, placed);
    let address = std::net::SocketAddr::new(config.bind_address, config.secure_port);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving tenancy.arktos.io");
    let anchors = Arc::new(anchors);
    let filter = routes::filter(state);
    let aggregated = serve::serve(
        listener,
        serve::Listener::Aggregated,
        tls.clone(),
        anchors.clone(),
        filter.clone(),
    );
    let gateway = serve_gateway(&config, tls, anchors, filter);
    let server = async { tokio::join!(aggregated, gateway) };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = server => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = terminate.recv() => tracing::info!("terminated; stopping"),
    }
    if let Some(membership) = list_membership {
        // The others take this replica's share at once, not at expiry.
        membership.leave().await;
    }
    Ok(())
}

/// This replica's Lease among those that copy lists, and its share of
/// the ring (the whole ring, and no Lease, when it copies none).
async fn list_shares(
    config: &Config,
    client: &kube::Client,
    cached_lists: &[tenant_routes::list_cache::CachedResource],
) -> (Option<Arc<Membership>>, tokio::sync::watch::Receiver<Range>) {
    if cached_lists.is_empty() {
        return (None, tokio::sync::watch::channel(Range::ALL).1);
    }
    let membership = Arc::new(Membership::new(
        client.clone(),
        &config.namespace,
        list_share::GROUP,
        &config.instance,
        std::time::Duration::from_secs(config.lease_seconds.max(3)),
    ));
    let share = list_share::follow(membership.clone()).await;
    (Some(membership), share)
}

/// The Tenant API, reading from copies of the Tenants unless
/// `--tenant-copy=false`.
fn tenant_api(
    config: &Config,
    client: &kube::Client,
    authz: Arc<authz::Authorizer>,
    placement: tenants::Placement,
    metrics: &metrics::Metrics,
) -> tenants::TenantApi {
    let api = tenants::TenantApi::new(storage::Storage::new(client.clone()), authz, placement);
    if !config.tenant_copy {
        return api;
    }
    let backend = tenant_routes::backend::Backend::new(client.clone(), &config.root_partition);
    let copies = tenant_routes::list_cache::Store::served(
        &backend,
        &rename::TENANTS,
        metrics.tenant_copies(),
    );
    api.with_copies(backend, copies)
}

/// The resources `--list-cache` names.
fn cached_lists(config: &Config) -> anyhow::Result<Vec<tenant_routes::list_cache::CachedResource>> {
    config
        .list_cache
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse()
                .map_err(|e: String| anyhow::anyhow!("--list-cache {e}"))
        })
        .collect()
}

/// Probes the Partitions for as long as the process runs, keeping the
/// tenant routes in step with them.
fn spawn_partition_probe(
    config: &Config,
    client: &kube::Client,
    routes: Arc<tenant_routes::partitioned::PartitionRoutes>,
    placed: Arc<placed_tenants::PlacedTenants>,
) {
    let prober = partition_probe::Prober {
        partitions: storage::Storage::of(client.clone(), &rename::PARTITIONS),
        placed,
        client: client.clone(),
        namespace: config.namespace.clone(),
        routes,
    };
    tokio::spawn(prober.run(Duration::from_secs(config.partition_probe_seconds)));
}

/// The tenant gateway on each of its addresses (none when its port is 0).
async fn serve_gateway(
    config: &Config,
    tls: Arc<rustls::ServerConfig>,
    anchors: Arc<serve::TrustAnchors>,
    filter: serve::ApiFilter,
) {
    if config.gateway_port == 0 {
        return std::future::pending::<()>().await;
    }
    let addresses = match config.gateway_addresses.as_slice() {
        [] => vec![config.bind_address],
        some => some.to_vec(),
    };
    let port = config.gateway_port;
    let gateways = addresses.into_iter().map(|ip| {
        let (tls, anchors, filter) = (tls.clone(), anchors.clone(), filter.clone());
        async move {
            let address = std::net::SocketAddr::new(ip, port);
            let listener = bind_when_present(address).await;
            tracing::info!(%address, "serving the tenant gateway");
            serve::serve(listener, serve::Listener::Gateway, tls, anchors, filter).await
        }
    });
    futures::future::join_all(gateways).await;
}

/// Binds `address`, waiting while it is not (yet) one of this host's: an
/// address for pods may come up after the server (a bridge, a VIP).
async fn bind_when_present(address: std::net::SocketAddr) -> tokio::net::TcpListener {
    let mut reported = false;
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(err) => {
                if !reported {
                    tracing::warn!(%address, error = %err, "cannot listen yet; trying every 2 s");
                    reported = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}
