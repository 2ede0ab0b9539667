//! Command line of arktos-apiserver.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "arktos-apiserver",
    version,
    about = "Aggregated API server for tenancy.arktos.io: Tenant objects (and, next, tenant routes)",
    long_about = "Serves tenancy.arktos.io/v1alpha1 behind kube-apiserver's aggregation layer. \
Clients authenticate with the front-proxy certificate (identity headers), a client certificate \
of the cluster CA, or a bearer token (TokenReview); every request is authorized with a \
SubjectAccessReview. Tenants are stored in the internal TenantRecord resource of the cluster."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "ARKTOS_BIND_ADDRESS")]
    pub bind_address: IpAddr,
    /// HTTPS port for the aggregated API, health and metrics.
    #[arg(long, default_value_t = 6443, env = "ARKTOS_SECURE_PORT")]
    pub secure_port: u16,
    /// HTTPS port of the tenant gateway (tenant routes reached directly);
    /// 0 serves no gateway.
    #[arg(long, default_value_t = 8443, env = "ARKTOS_GATEWAY_PORT")]
    pub gateway_port: u16,
    /// Addresses the tenant gateway listens on, comma-separated; empty for
    /// `--bind-address`. Tenant pods reach the gateway at one of them (the
    /// address arktos-operators' `--tenant-api-address` names), so it must
    /// be reachable from pods and named in the serving certificate.
    #[arg(long, value_delimiter = ',', env = "ARKTOS_GATEWAY_ADDRESSES")]
    pub gateway_addresses: Vec<IpAddr>,
    /// Serving certificate (PEM); it must name the Service the APIService
    /// points at (`<service>.<namespace>.svc`).
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// Key of the serving certificate (PEM).
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// Kubeconfig for reaching kube-apiserver; in a pod, leave it unset to
    /// use the service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Resources whose lists the tenant routes answer from arktos-apiserver's
    /// own copy (VERSION/RESOURCE for the core group, else
    /// GROUP/VERSION/RESOURCE), comma-separated; empty for none.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "v1/pods",
        env = "ARKTOS_LIST_CACHE"
    )]
    pub list_cache: Vec<String>,
    /// Answer Tenant GETs and LISTs from arktos-apiserver's own copy of
    /// the Tenants (kube-apiserver still names which objects, at which
    /// versions: see docs/architecture.md); `false` reads the storage.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "ARKTOS_TENANT_COPY")]
    pub tenant_copy: bool,
    /// The namespace arktos-apiserver runs in: Partitions' kubeconfig
    /// Secrets must be there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "arktos-system")]
    pub namespace: String,
    /// Seconds between two probes of every Partition (readiness, version,
    /// tenants), written to its status.
    #[arg(long, default_value_t = 10)]
    pub partition_probe_seconds: u64,
    /// The root cluster's name as a partition: tenants placed here live in
    /// this cluster, beside the Tenant API.
    #[arg(long, default_value = arktos_crds::tenant::ROOT_PARTITION, env = "ARKTOS_ROOT_PARTITION")]
    pub root_partition: String,
    /// The root partition's share of new tenants against Partitions'
    /// weights; 0 places no new tenants here.
    #[arg(long, default_value_t = 1)]
    pub root_partition_weight: u32,
    /// This replica's name among the replicas sharing the list copies
    /// (unique per replica; a Deployment's pod names).
    #[arg(long, env = "POD_NAME", default_value_t = arktos_crds::sharding::membership::default_instance())]
    pub instance: String,
    /// Seconds a replica's Lease lives without renewal: a dead replica's
    /// share of the list copies is taken over after this.
    #[arg(long, default_value_t = 10)]
    pub lease_seconds: u64,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}
