//! arktos-node's command line and its servers: CRI on a unix socket, and
//! health and metrics over plain HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use warp::Filter;

use crate::cri_client::CriClient;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::vm::domain::Accel;
use crate::vm::images::ImageCache;
use crate::vm::network::Cni;
use crate::vm::shape::SizePolicy;
use crate::vm::translate::Translations;
use crate::vm::{VmConfig, VmRuntime};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccelChoice {
    /// KVM once a guest has run under it here, TCG otherwise (remembered
    /// in the state directory).
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Parser)]
#[command(
    name = "arktos-node",
    version,
    about = "CRI runtime for the kubelet: pods of RuntimeClass arktos-vm run as libvirt/QEMU VMs, all others pass through to containerd."
)]
pub struct Cli {
    /// Unix socket the kubelet uses as its runtime and image endpoint.
    #[arg(
        long,
        env = "ARKTOS_NODE_LISTEN",
        default_value = "/run/arktos-node/arktos-node.sock"
    )]
    pub listen: PathBuf,
    /// containerd's CRI socket, where every non-VM call goes.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd_socket: PathBuf,
    /// VM records, disks, seeds and the image cache live here.
    #[arg(long, default_value = "/var/lib/arktos-node")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "qemu:///system")]
    pub libvirt_uri: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// CNI configuration for VM pods (the first file by name, as runtimes do).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked for, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/opt/cni/bin,/usr/lib/cni"
    )]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Prefix of the network namespaces of VM pods (`<prefix><sandbox>`);
    /// nodes sharing a host (local clusters) each need their own.
    #[arg(long, default_value = "arktos-")]
    pub netns_prefix: String,
    /// YAML file of VM image translations (`translations: [{prefix|name, url}]`).
    #[arg(long)]
    pub image_translations: Option<PathBuf>,
    /// Plain-HTTP address of /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1:10360")]
    pub health_address: SocketAddr,
    /// Memory of a VM whose container sets no memory limit.
    #[arg(long, default_value_t = 256)]
    pub vm_default_memory_mib: u64,
    /// Smallest memory a VM may have.
    #[arg(long, default_value_t = 128)]
    pub vm_min_memory_mib: u64,
    /// Default ceiling for live vCPU growth (pod annotation vm.arktos.io/max-vcpus).
    #[arg(long, default_value_t = 4)]
    pub vm_max_vcpus: u32,
    /// Default ceiling for live memory growth (vm.arktos.io/max-memory-mib).
    #[arg(long, default_value_t = 1024)]
    pub vm_max_memory_mib: u64,
    /// Longest wait for a guest to power off on stop before it is destroyed.
    #[arg(long, default_value_t = 30)]
    pub stop_grace_cap_seconds: u64,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// This node's name: turns on the node agent (VM Actions, power state,
    /// NIC and disk hot-plug of this node's VM pods).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig of the node agent; in a pod, its service account.
    #[arg(long, env = "ARKTOS_NODE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// The node agent's API client: the kubeconfig given, else the usual
/// inference (in-cluster service account, KUBECONFIG, ~/.kube/config).
async fn agent_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let vm = open_vm_runtime(&cli).await?;
    vm.spawn_monitor();
    if let Some(node) = &cli.node_name {
        let client = agent_client(cli.kubeconfig.as_ref()).await?;
        let agent = Arc::new(crate::agent::Agent::new(
            client,
            node,
            vm.clone(),
            &cli.state_dir,
        ));
        tokio::spawn(agent.run());
    } else {
        tracing::info!("no --node-name: the node agent is off (CRI only)");
    }
    let metrics = Arc::new(Metrics::new());
    let router = Router {
        vm: vm.clone(),
        containerd: CriClient::connect(cli.containerd_socket.clone())?,
        metrics: metrics.clone(),
    };

    serve_health(cli.health_address, vm.clone(), metrics.clone());
    let health_address = cli.health_address;

    if let Some(parent) = cli.listen.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // A socket left by an earlier run would make bind fail.
    let _ = std::fs::remove_file(&cli.listen);
    let listener = tokio::net::UnixListener::bind(&cli.listen)
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", cli.listen.display()))?;
    tracing::info!(socket = %cli.listen.display(), containerd = %cli.containerd_socket.display(),
        health = %health_address, "serving CRI");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down; VMs keep running and are picked up at the next start");
    };
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(router.clone())
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
        )
        .add_service(
            ImageServiceServer::new(router)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    let _ = std::fs::remove_file(&cli.listen);
    Ok(())
}

/// The VM back end: image cache, accelerator, sizes, CNI, libvirt.
async fn open_vm_runtime(cli: &Cli) -> anyhow::Result<Arc<VmRuntime>> {
    let translations = match &cli.image_translations {
        Some(path) => Translations::parse(
            &std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("image translations {}: {e}", path.display()))?,
        )?,
        None => Translations::default(),
    };
    let accel = match cli.accel {
        AccelChoice::Auto => crate::vm::kvm::kvm_candidate(),
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
    };
    let images = ImageCache::open(&cli.state_dir.join("images"), translations)?;
    VmRuntime::open(
        VmConfig {
            state_dir: cli.state_dir.clone(),
            libvirt_uri: cli.libvirt_uri.clone(),
            accel,
            accel_forced: !matches!(cli.accel, AccelChoice::Auto),
            sizes: SizePolicy {
                default_memory_mib: cli.vm_default_memory_mib,
                min_memory_mib: cli.vm_min_memory_mib,
                max_vcpus: cli.vm_max_vcpus,
                max_memory_mib: cli.vm_max_memory_mib,
            },
            cni: Cni {
                conf_dir: cli.cni_conf_dir.clone(),
                bin_dirs: cli.cni_bin_dir.clone(),
                netns_prefix: cli.netns_prefix.clone(),
            },
            stop_grace_cap: Duration::from_secs(cli.stop_grace_cap_seconds),
        },
        images,
    )
    .await
}

/// /healthz and /readyz (libvirt answers), /livez, /metrics.
fn serve_health(address: std::net::SocketAddr, vm: Arc<VmRuntime>, metrics: Arc<Metrics>) {
    let healthz = warp::path!("healthz")
        .or(warp::path!("readyz"))
        .unify()
        .map(move || match vm.libvirt_health().answer {
            Ok(_) => warp::http::Response::builder()
                .status(200)
                .body("ok".to_string()),
            Err(e) => warp::http::Response::builder().status(503).body(e),
        });
    let livez = warp::path!("livez").map(|| "ok".to_string());
    let metrics = warp::path!("metrics").map(move || metrics.render());
    let health = healthz
        .map(|r: Result<_, _>| r.expect("static response"))
        .or(livez)
        .or(metrics);
    tokio::spawn(async move { warp::serve(health).run(address).await });
}
