//! Tenant partitions beside the local cluster (the root): each one an
//! ordinary control plane of its own (etcd, kube-apiserver, kcm, scheduler,
//! KWOK nodes) on its own port range, with what Arktos needs there (the
//! partition manifests, its own arktos-operators and their webhooks), then
//! registered at the root as a Partition whose kubeconfig Secret reaches
//! it as arktos-apiserver's identity there.

use std::time::Duration;

use arktos_crds::partition::{Partition, PartitionSpec, SecretKeyRef};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::{ClusterSpec, LocalCluster, Ports, arktos};
use crate::{Error, IoContext, Result};

/// What a partition gets of Arktos' manifests: no Tenant API (that is the
/// root's), the rest as in any cluster.
pub const PARTITION_MANIFESTS: &[&str] = &[
    "namespace.yaml",
    "crds/quotaledgers.storage.tenancy.arktos.io.yaml",
    "crds/actions.vm.arktos.io.yaml",
    "arktos-apiserver/rbac.yaml",
    "arktos-operators/rbac.yaml",
    "arktos-operators/flowschema.yaml",
    "arktos-node/runtimeclass.yaml",
];

/// The Secret (in arktos-system at the root) holding partition `name`'s
/// kubeconfig.
pub fn kubeconfig_secret(name: &str) -> String {
    format!("partition-{name}-kubeconfig")
}

/// What starting a partition takes of the root cluster, so that a caller
/// holding the root behind a lock need not hold it while one starts.
#[derive(Clone, Debug)]
pub struct Root {
    spec: ClusterSpec,
    /// The root's arktos-operators identity (the partition's operators read
    /// the Tenants with it).
    operators_kubeconfig: std::path::PathBuf,
    url: String,
    pki: super::pki::Pki,
}

impl LocalCluster {
    pub fn as_root(&self) -> Result<Root> {
        Ok(Root {
            spec: self.spec.clone(),
            operators_kubeconfig: self.service_account_kubeconfig(arktos::OPERATORS)?,
            url: self.apiserver_url(),
            pki: self.pki.clone(),
        })
    }

    /// Starts partition `name` (see [`start_partition`]) and keeps it with
    /// this cluster: it stops with it and `pids` lists it.
    pub async fn add_partition(&mut self, name: &str, ports: Ports, nodes: u32) -> Result<()> {
        let partition = start_partition(&self.as_root()?, name, ports, nodes).await?;
        self.partitions.push((name.to_string(), partition));
        Ok(())
    }

    /// Partition `name` started beside this cluster.
    pub fn partition_mut(&mut self, name: &str) -> Option<&mut LocalCluster> {
        let found = self.partitions.iter_mut().find(|(n, _)| n == name);
        found.map(|(_, partition)| partition)
    }

    /// The partitions started beside this cluster, by name.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, &LocalCluster)> {
        self.partitions.iter().map(|(name, p)| (name.as_str(), p))
    }
}

/// Starts partition `name` of `root` on the ports from `ports.base`, with
/// `nodes` KWOK nodes, and registers it; returns once the root's probe has
/// seen it ready, so it can take tenants. Dropping the cluster returned
/// stops it (its Partition stays registered, and not ready).
pub async fn start_partition(
    root: &Root,
    name: &str,
    ports: Ports,
    nodes: u32,
) -> Result<LocalCluster> {
    let started = std::time::Instant::now();
    let mut spec = ClusterSpec::new(
        format!("{}-{name}", root.spec.name),
        root.spec.home.clone(),
        ports,
    );
    spec.nodes = nodes;
    spec.ephemeral = root.spec.ephemeral;
    spec.ready_timeout = root.spec.ready_timeout;
    spec.arktos = false;
    spec.real_node = false;
    spec.kubelet = false;
    eprintln!(
        "partition {name}: starting its control plane on ports from {}",
        ports.base
    );
    let mut partition = LocalCluster::start(spec).await?;
    let client = partition.admin_client().await?;
    arktos::apply_manifests(&client, PARTITION_MANIFESTS).await?;
    start_partition_operators(root, &mut partition, name).await?;
    let kubeconfig = partition.service_account_kubeconfig(arktos::APISERVER)?;
    let text = std::fs::read_to_string(&kubeconfig)
        .context(|| format!("reading {}", kubeconfig.display()))?;
    let admin = super::kubeconfig::client(&root.url, &root.pki, "admin").await?;
    register(&admin, name, &text).await?;
    wait_until_ready(&admin, name, root.spec.ready_timeout).await?;
    eprintln!(
        "partition {name}: ready, {nodes} simulated nodes, registered ({:.1}s)",
        started.elapsed().as_secs_f32()
    );
    Ok(partition)
}

/// The partition's own arktos-operators (its tenants, its webhooks),
/// reading the Tenants at the root; its webhooks registered in it.
async fn start_partition_operators(
    root: &Root,
    partition: &mut LocalCluster,
    name: &str,
) -> Result<()> {
    let extra = [
        format!("--root-kubeconfig={}", root.operators_kubeconfig.display()),
        format!("--partition={name}"),
    ];
    partition.start_arktos_operators_with(0, &extra)?;
    let client = partition.admin_client().await?;
    let webhooks = partition.webhook_port();
    arktos::wait_for_tls(webhooks, root.spec.ready_timeout).await?;
    arktos::expose_on_loopback(&client, arktos::NAMESPACE, arktos::OPERATORS, webhooks).await?;
    let ca =
        std::fs::read(partition.pki.ca_cert()).context(|| "reading the partition's CA".into())?;
    arktos::webhooks_on_loopback(&client, webhooks, &ca).await
}

/// The kubeconfig Secret and the Partition at the root.
async fn register(root: &kube::Client, name: &str, kubeconfig: &str) -> Result<()> {
    let params = PatchParams::apply("arktos-local").force();
    let secret_name = kubeconfig_secret(name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(arktos::NAMESPACE.into()),
            ..Default::default()
        },
        string_data: Some([("kubeconfig".to_string(), kubeconfig.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(root.clone(), arktos::NAMESPACE)
        .patch(&secret_name, &params, &Patch::Apply(&secret))
        .await?;
    let partition = Partition::new(
        name,
        PartitionSpec {
            kubeconfig_secret: SecretKeyRef {
                namespace: arktos::NAMESPACE.into(),
                name: secret_name,
                key: String::new(),
            },
            weight: 1,
            unschedulable: false,
        },
    );
    Api::<Partition>::all(root.clone())
        .patch(name, &params, &Patch::Apply(&partition))
        .await?;
    Ok(())
}

async fn wait_until_ready(root: &kube::Client, name: &str, within: Duration) -> Result<()> {
    let partitions: Api<Partition> = Api::all(root.clone());
    let deadline = std::time::Instant::now() + within;
    loop {
        let found = partitions.get_opt(name).await?;
        let status = found.and_then(|p| p.status);
        if status.as_ref().is_some_and(|s| s.ready) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let why = status.map(|s| s.last_error).unwrap_or_default();
            return Err(Error::Other(format!(
                "partition {name} was not seen ready within {} s: {why}",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
