//! A local Kubernetes cluster made of the real upstream components, run as
//! plain processes: etcd, kube-apiserver (aggregation layer configured),
//! kube-controller-manager, kube-scheduler, and KWOK simulating nodes.

pub mod arktos;
mod files;
pub mod kubeconfig;
pub mod leftovers;
pub mod node;
mod nodes;
pub mod partitions;
pub mod pki;
mod ports;
mod process;
mod readiness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use ports::{Ports, RESERVED as RESERVED_PORTS};
use process::{Component, Launch};

use crate::home::ArktosHome;
use crate::upstream::Upstream;
use crate::{IoContext, Result};
use pki::Pki;

/// The service range of the local cluster. Its addresses exist only inside
/// the API server's allocator: nothing routes to them.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Pod addresses KWOK hands to simulated pods; likewise never routed.
pub const KWOK_POD_CIDR: &str = "10.0.0.0/16";

/// What cluster to run.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Names the state folder `<home>/clusters/<name>`.
    pub name: String,
    pub home: ArktosHome,
    pub ports: Ports,
    /// Simulated (KWOK) nodes.
    pub nodes: u32,
    /// Delete the state folder when the cluster stops (test clusters).
    pub ephemeral: bool,
    /// How long to wait for each component to become ready.
    pub ready_timeout: Duration,
    /// Start the Arktos components too (the bare control plane otherwise).
    pub arktos: bool,
    /// Run one real node (kubelet + arktos-node + containerd) beside the
    /// simulated ones.
    pub real_node: bool,
    /// Start the real node's kubelet (not when critest drives the runtime).
    pub kubelet: bool,
}

impl ClusterSpec {
    pub fn new(name: impl Into<String>, home: ArktosHome, ports: Ports) -> Self {
        Self {
            name: name.into(),
            home,
            ports,
            nodes: 3,
            ephemeral: false,
            ready_timeout: Duration::from_secs(120),
            arktos: true,
            real_node: true,
            kubelet: true,
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.home.cluster_dir(&self.name)
    }

    /// The admin kubeconfig, at a fixed path per cluster name.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }
}

/// A running local cluster. Dropping it stops every process it started.
#[derive(Debug)]
pub struct LocalCluster {
    spec: ClusterSpec,
    pki: Pki,
    upstream: Upstream,
    components: Vec<Component>,
    file_servers: Vec<files::FileServer>,
    /// Held while the real node runs (see `leftovers`).
    node_lock: Option<leftovers::NodeLock>,
    /// Tenant partitions started beside this cluster (see `partitions`).
    partitions: Vec<(String, LocalCluster)>,
}

/// arktos-operators replicas the local cluster runs (the webhooks must
/// hold across replicas).
pub const OPERATOR_REPLICAS: u16 = 2;

/// The start's numbered steps, each printed with the time since it began.
struct Progress {
    started: Instant,
    total: u32,
}

impl Progress {
    fn step(&self, n: u32, what: &str) {
        eprintln!(
            "[{n}/{}] {what} ({:.1}s)",
            self.total,
            self.started.elapsed().as_secs_f32()
        )
    }
}

impl LocalCluster {
    /// Starts every component in order and returns once the cluster serves,
    /// its nodes are Ready and the `default` namespace can take pods.
    pub async fn start(spec: ClusterSpec) -> Result<Self> {
        let started = Instant::now();
        spec.ports.check_free()?;
        let upstream = Upstream::ensure(&spec.home)?;
        let dir = spec.dir();
        for sub in ["logs", "etcd", "kubeconfigs"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).context(|| format!("creating {}", path.display()))?;
        }
        let pki = Pki::new(dir.join("pki"));
        pki.ensure_control_plane(&[])?;
        let mut cluster = Self {
            spec,
            pki,
            upstream,
            components: Vec::new(),
            file_servers: Vec::new(),
            node_lock: None,
            partitions: Vec::new(),
        };
        cluster.write_kubeconfigs()?;
        let total = 6 + if cluster.spec.arktos { 3 } else { 0 } + u32::from(cluster.spec.real_node);
        let progress = Progress { started, total };
        cluster.start_kubernetes(&progress).await?;
        if cluster.spec.arktos {
            let client = cluster.admin_client().await?;
            arktos::apply_manifests(&client, arktos::LOCAL_MANIFESTS).await?;
            arktos::wait_for_crd(
                &client,
                "tenantrecords.storage.tenancy.arktos.io",
                cluster.spec.ready_timeout,
            )
            .await?;
            progress.step(7, "Arktos manifests applied");
            let ca = cluster
                .start_and_register_arktos_apiserver(&client, &progress)
                .await?;
            cluster
                .start_operators_and_webhooks(&client, &ca, &progress)
                .await?;
        }
        if cluster.spec.real_node {
            cluster.start_real_node().await?;
            progress.step(
                total,
                &format!(
                    "real node {} Ready (kubelet -> arktos-node -> containerd and libvirt/QEMU); registry {}",
                    node::NODE_NAME,
                    cluster.registry()
                ),
            );
        }
        Ok(cluster)
    }

    /// etcd, the control plane, KWOK's nodes, up to a `default` namespace
    /// that takes pods (steps 1 to 6).
    async fn start_kubernetes(&mut self, progress: &Progress) -> Result<()> {
        self.start_etcd()?;
        readiness::etcd(self).await?;
        progress.step(1, "etcd ready");

        self.start_apiserver()?;
        readiness::apiserver(self).await?;
        progress.step(2, "kube-apiserver ready");

        self.start_controller_manager()?;
        self.start_scheduler()?;
        readiness::controller_manager_and_scheduler(self).await?;
        progress.step(3, "kube-controller-manager and kube-scheduler healthy");

        self.start_kwok()?;
        nodes::register(&self.admin_client().await?, self.spec.nodes).await?;
        progress.step(
            4,
            &format!("{} simulated nodes registered", self.spec.nodes),
        );

        readiness::nodes(self).await?;
        progress.step(5, "nodes Ready");

        readiness::default_service_account(self).await?;
        progress.step(6, "default namespace ready for pods");
        Ok(())
    }

    /// Serves arktos-apiserver, then registers its APIService and publishes
    /// the gateway (step 8); returns the cluster CA, PEM.
    async fn start_and_register_arktos_apiserver(
        &mut self,
        client: &kube::Client,
        progress: &Progress,
    ) -> Result<String> {
        // Serve first, register second: the aggregator's first look at
        // a new APIService (discovery, OpenAPI) should find it serving.
        let port = self.apiserver_port();
        let gateway = self.gateway_port();
        self.start_arktos_apiserver(arktos::APISERVER, port, gateway)?;
        arktos::wait_for_ready(&self.pki, port, self.spec.ready_timeout).await?;
        arktos::expose_on_loopback(client, arktos::NAMESPACE, arktos::APISERVER, port).await?;
        arktos::apply_manifests(client, arktos::REGISTRATION).await?;
        let ca = std::fs::read(self.pki.ca_cert()).context(|| "reading the cluster CA".into())?;
        arktos::point_apiservice(client, arktos::APISERVICE, port, &ca).await?;
        arktos::wait_for_apiservice(client, arktos::APISERVICE, self.spec.ready_timeout).await?;
        arktos::wait_for_openapi(
            client,
            "apis/tenancy.arktos.io/v1alpha1",
            self.spec.ready_timeout,
        )
        .await?;
        let ca = String::from_utf8_lossy(&ca).into_owned();
        arktos::publish_gateway(client, &format!("https://127.0.0.1:{gateway}"), &ca).await?;
        progress.step(
            8,
            &format!(
                "arktos-apiserver serving tenancy.arktos.io on port {port}, the tenant gateway on port {gateway}"
            ),
        );
        Ok(ca)
    }

    /// The operators' replicas, and their admission webhooks pointed at
    /// them (step 9).
    async fn start_operators_and_webhooks(
        &mut self,
        client: &kube::Client,
        ca: &str,
        progress: &Progress,
    ) -> Result<()> {
        for replica in 0..OPERATOR_REPLICAS {
            self.start_arktos_operators(replica)?;
        }
        let webhooks = self.webhook_port();
        arktos::wait_for_tls(webhooks, self.spec.ready_timeout).await?;
        arktos::expose_on_loopback(client, arktos::NAMESPACE, arktos::OPERATORS, webhooks).await?;
        arktos::webhooks_on_loopback(client, webhooks, ca.as_bytes()).await?;
        progress.step(
            9,
            &format!(
                "arktos-operators: {OPERATOR_REPLICAS} replicas, admission webhooks on port {webhooks}"
            ),
        );
        Ok(())
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.spec.kubeconfig_path()
    }

    /// The port arktos-apiserver (the one the APIService names) listens on.
    pub fn apiserver_port(&self) -> u16 {
        self.spec.ports.component(0)
    }

    /// The port of the tenant gateway.
    pub fn gateway_port(&self) -> u16 {
        self.spec.ports.component(2)
    }

    /// The gateway URL of tenant `tenant`, a server URL for a kubeconfig.
    pub fn gateway_url(&self, tenant: &str) -> String {
        format!("https://127.0.0.1:{}/tenants/{tenant}", self.gateway_port())
    }

    /// Starts an arktos-apiserver process called `name` on `port` (and the
    /// tenant gateway on `gateway_port`, 0 for none), with the identity of
    /// its ServiceAccount and a serving certificate for its Service name.
    /// More than one may run (several replicas).
    pub fn start_arktos_apiserver(
        &mut self,
        name: &str,
        port: u16,
        gateway_port: u16,
    ) -> Result<()> {
        self.start_arktos_apiserver_with(name, port, gateway_port, &[])
    }

    /// [`Self::start_arktos_apiserver`] with `extra` arguments.
    pub fn start_arktos_apiserver_with(
        &mut self,
        name: &str,
        port: u16,
        gateway_port: u16,
        extra: &[String],
    ) -> Result<()> {
        let service_dns = format!("{}.{}.svc", arktos::APISERVER, arktos::NAMESPACE);
        let serving = "arktos-apiserver-serving";
        // Issued at every start: the address for pods depends on the node.
        let for_pods: Vec<std::net::IpAddr> = self
            .tenant_api_address()
            .map(|a| a.ip())
            .into_iter()
            .collect();
        self.pki.issue_from_cluster_ca(&pki::Leaf {
            name: serving,
            common_name: arktos::APISERVER,
            organizations: &[],
            dns_names: &[&service_dns, "localhost"],
            ip_addresses: &for_pods,
            usage: pki::Usage::Server,
        })?;
        let gateway_addresses = std::iter::once("127.0.0.1".to_string())
            .chain(for_pods.iter().map(|ip| ip.to_string()))
            .collect::<Vec<_>>()
            .join(",");
        let kubeconfig = self.service_account_kubeconfig(arktos::APISERVER)?;
        let launch = Launch {
            program: arktos::binary("arktos-apiserver")?,
            args: vec![
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--gateway-port={gateway_port}"),
                format!("--gateway-addresses={gateway_addresses}"),
                format!("--tls-cert-file={}", path(&self.pki.cert(serving))),
                format!("--tls-private-key-file={}", path(&self.pki.key(serving))),
                format!("--kubeconfig={}", path(&kubeconfig)),
                // Partitions added while the cluster runs take tenants
                // within seconds.
                "--partition-probe-seconds=2".into(),
                format!("--instance={name}"),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect(),
            dir: self.spec.dir(),
        };
        let component = Component::start(name, launch, &self.log(name))?;
        self.components.push(component);
        Ok(())
    }

    /// A kubeconfig for the service account `name` of arktos-system: a client
    /// certificate with its user name and groups, so the manifests' RBAC for
    /// the service account applies to the host process as it would to a pod.
    fn service_account_kubeconfig(&self, name: &str) -> Result<PathBuf> {
        let identity = format!("{name}-client");
        if !self.pki.cert(&identity).exists() {
            let user = format!("system:serviceaccount:{}:{name}", arktos::NAMESPACE);
            let group = format!("system:serviceaccounts:{}", arktos::NAMESPACE);
            self.pki.issue_from_cluster_ca(&pki::Leaf {
                name: &identity,
                common_name: &user,
                organizations: &["system:serviceaccounts", &group],
                dns_names: &[],
                ip_addresses: &[],
                usage: pki::Usage::Client,
            })?;
        }
        let kubeconfig = self.component_kubeconfig(&identity);
        kubeconfig::write(
            &kubeconfig,
            "local",
            &self.apiserver_url(),
            &self.pki,
            &identity,
        )?;
        Ok(kubeconfig)
    }

    /// The health and metrics port of arktos-operators replica `replica`.
    pub fn operators_port(&self, replica: u16) -> u16 {
        self.spec
            .ports
            .component(if replica == 0 { 3 } else { 4 + replica })
    }

    /// The port every arktos-operators replica serves the webhooks on.
    pub fn webhook_port(&self) -> u16 {
        self.spec.ports.component(4)
    }

    /// The component name of arktos-operators replica `replica`.
    pub fn operators_name(replica: u16) -> String {
        if replica == 0 {
            arktos::OPERATORS.to_string()
        } else {
            format!("{}-{replica}", arktos::OPERATORS)
        }
    }

    /// Starts arktos-operators replica `replica` with its service account's
    /// identity; replicas share the webhook port, as pods share a Service.
    pub fn start_arktos_operators(&mut self, replica: u16) -> Result<()> {
        self.start_arktos_operators_with(replica, &[])
    }

    /// [`Self::start_arktos_operators`] with extra arguments.
    pub fn start_arktos_operators_with(&mut self, replica: u16, extra: &[String]) -> Result<()> {
        let kubeconfig = self.service_account_kubeconfig(arktos::OPERATORS)?;
        let serving = "arktos-operators-serving";
        if !self.pki.cert(serving).exists() {
            let service_dns = format!("{}.{}.svc", arktos::OPERATORS, arktos::NAMESPACE);
            self.pki.issue_from_cluster_ca(&pki::Leaf {
                name: serving,
                common_name: arktos::OPERATORS,
                organizations: &[],
                dns_names: &[&service_dns, "localhost"],
                ip_addresses: &[],
                usage: pki::Usage::Server,
            })?;
        }
        let launch = Launch {
            program: arktos::binary("arktos-operators")?,
            args: vec![
                format!("--kubeconfig={}", path(&kubeconfig)),
                format!(
                    "--health-address=127.0.0.1:{}",
                    self.operators_port(replica)
                ),
                format!("--webhook-address=127.0.0.1:{}", self.webhook_port()),
                format!("--tls-cert-file={}", path(&self.pki.cert(serving))),
                format!("--tls-private-key-file={}", path(&self.pki.key(serving))),
                format!("--instance={}", Self::operators_name(replica)),
                // Finished VM Actions go after a minute here (an hour by
                // default), so tests see the garbage collection.
                "--action-retention-seconds=60".into(),
            ]
            .into_iter()
            .chain(
                self.tenant_api_address()
                    .map(|address| format!("--tenant-api-address={address}")),
            )
            .chain(extra.iter().cloned())
            .collect(),
            dir: self.spec.dir(),
        };
        let name = Self::operators_name(replica);
        let component = Component::start(&name, launch, &self.log(&name))?;
        self.components.push(component);
        Ok(())
    }

    /// Stops the component `name` and starts it again.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        self.component(name)?.restart()
    }

    /// Kills the component `name` (SIGKILL) without starting it again.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        self.component(name)?.kill();
        Ok(())
    }

    /// Starts the killed component `name` again.
    pub fn start_again(&mut self, name: &str) -> Result<()> {
        self.component(name)?.start_again()
    }

    fn component(&mut self, name: &str) -> Result<&mut Component> {
        self.components
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| crate::Error::Other(format!("no component called {name}")))
    }

    /// Stops the component `name` for good.
    pub fn stop_component(&mut self, name: &str) {
        if let Some(index) = self.components.iter().position(|c| c.name == name) {
            let mut component = self.components.remove(index);
            component.stop(Duration::from_secs(15));
        }
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.spec.ports.apiserver())
    }

    /// A client with cluster-admin rights.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.apiserver_url(), &self.pki, "admin").await
    }

    /// Process ids of the running components, by name (a partition's as
    /// `<partition>/<component>`).
    pub fn pids(&self) -> Vec<(String, u32)> {
        let own = self.components.iter().map(|c| (c.name.clone(), c.pid()));
        let partitions = self.partitions.iter().flat_map(|(name, p)| {
            p.pids()
                .into_iter()
                .map(move |(c, pid)| (format!("{name}/{c}"), pid))
        });
        own.chain(partitions).collect()
    }

    /// Fails if any component has exited.
    pub fn check_running(&mut self) -> Result<()> {
        for (_, partition) in &mut self.partitions {
            partition.check_running()?;
        }
        for component in &mut self.components {
            if let Some(status) = component.exited() {
                return Err(crate::Error::ComponentExited {
                    component: component.name.clone(),
                    status: status.to_string(),
                    log: component.log.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Stops every component, the last started first.
    pub fn stop(&mut self) {
        for (_, mut partition) in self.partitions.drain(..) {
            partition.stop();
        }
        self.drain_real_node();
        while let Some(mut component) = self.components.pop() {
            component.stop(Duration::from_secs(15));
        }
        self.file_servers.clear();
        if self.node_lock.is_some() {
            self.forget_real_node();
        }
        if self.spec.ephemeral {
            let _ = std::fs::remove_dir_all(self.spec.dir());
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.spec.dir().join("logs").join(format!("{name}.log"))
    }

    fn component_kubeconfig(&self, identity: &str) -> PathBuf {
        self.spec
            .dir()
            .join("kubeconfigs")
            .join(format!("{identity}.kubeconfig"))
    }

    fn write_kubeconfigs(&self) -> Result<()> {
        let server = self.apiserver_url();
        kubeconfig::write(
            &self.kubeconfig_path(),
            &format!("arktos-{}", self.spec.name),
            &server,
            &self.pki,
            "admin",
        )?;
        for identity in ["kube-controller-manager", "kube-scheduler", "kwok"] {
            kubeconfig::write(
                &self.component_kubeconfig(identity),
                "local",
                &server,
                &self.pki,
                identity,
            )?;
        }
        Ok(())
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<()> {
        let launch = Launch {
            program: self.upstream.command(name),
            args,
            dir: self.spec.dir(),
        };
        let component = Component::start(name, launch, &self.log(name))?;
        self.components.push(component);
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<()> {
        let ports = self.spec.ports;
        let client = format!("http://127.0.0.1:{}", ports.etcd_client());
        let peer = format!("http://127.0.0.1:{}", ports.etcd_peer());
        let args = vec![
            "--name=local".into(),
            format!("--data-dir={}", path(&self.spec.dir().join("etcd"))),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=local={peer}"),
            // A throw-away local cluster: durability across host crashes is
            // not worth the fsync latency on small disks.
            "--unsafe-no-fsync=true".into(),
            "--quota-backend-bytes=8589934592".into(),
            "--log-level=warn".into(),
        ];
        self.spawn("etcd", args)
    }

    fn start_apiserver(&mut self) -> Result<()> {
        let pki = &self.pki;
        let ports = self.spec.ports;
        let sa_key = path(&pki.service_account_key());
        let sa_pub = path(&pki.service_account_public_key());
        let args = vec![
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // Endpoints may not point at loopback, and this API server
            // listens only there: the `kubernetes` Service gets no
            // endpoints (nothing in this cluster routes to it).
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={}", ports.apiserver()),
            format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client()),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--tls-cert-file={}", path(&pki.cert("kube-apiserver"))),
            format!(
                "--tls-private-key-file={}",
                path(&pki.key("kube-apiserver"))
            ),
            format!("--client-ca-file={}", path(&pki.ca_cert())),
            format!("--service-account-key-file={sa_pub}"),
            format!("--service-account-signing-key-file={sa_key}"),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--allow-privileged=true".into(),
            // The aggregation layer: the front-proxy CA vouches for the
            // identity headers the aggregator sends to extension servers.
            format!(
                "--requestheader-client-ca-file={}",
                path(&pki.front_proxy_ca_cert())
            ),
            format!(
                "--requestheader-allowed-names={}",
                pki::FRONT_PROXY_CLIENT_CN
            ),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!(
                "--proxy-client-cert-file={}",
                path(&pki.cert(pki::FRONT_PROXY_CLIENT_CN))
            ),
            format!(
                "--proxy-client-key-file={}",
                path(&pki.key(pki::FRONT_PROXY_CLIENT_CN))
            ),
            // Extension servers run on the host's loopback and are reached
            // through ExternalName Services, not endpoints.
            "--enable-aggregator-routing=false".into(),
            format!(
                "--kubelet-client-certificate={}",
                path(&pki.cert("kube-apiserver-kubelet-client"))
            ),
            format!(
                "--kubelet-client-key={}",
                path(&pki.key("kube-apiserver-kubelet-client"))
            ),
            "--feature-gates=ShardedListAndWatch=true".into(),
            // The real node's name resolves nowhere; its address does.
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        self.spawn("kube-apiserver", args)
    }

    fn start_controller_manager(&mut self) -> Result<()> {
        let name = "kube-controller-manager";
        let kubeconfig = path(&self.component_kubeconfig(name));
        let pki = &self.pki;
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.spec.ports.controller_manager()),
            format!("--tls-cert-file={}", path(&pki.cert(name))),
            format!("--tls-private-key-file={}", path(&pki.key(name))),
            format!("--client-ca-file={}", path(&pki.ca_cert())),
            format!("--root-ca-file={}", path(&pki.ca_cert())),
            format!(
                "--service-account-private-key-file={}",
                path(&pki.service_account_key())
            ),
            format!("--cluster-signing-cert-file={}", path(&pki.ca_cert())),
            format!("--cluster-signing-key-file={}", path(&pki.ca_key())),
            "--use-service-account-credentials=true".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--leader-elect=false".into(),
            "--kube-api-qps=100".into(),
            "--kube-api-burst=200".into(),
            "--profiling=false".into(),
        ];
        self.spawn(name, args)
    }

    fn start_scheduler(&mut self) -> Result<()> {
        let name = "kube-scheduler";
        let kubeconfig = path(&self.component_kubeconfig(name));
        let pki = &self.pki;
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.spec.ports.scheduler()),
            format!("--tls-cert-file={}", path(&pki.cert(name))),
            format!("--tls-private-key-file={}", path(&pki.key(name))),
            format!("--client-ca-file={}", path(&pki.ca_cert())),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ];
        self.spawn(name, args)
    }

    fn start_kwok(&mut self) -> Result<()> {
        let stages = self.spec.dir().join("kwok-stages.yaml");
        let out = Command::new(self.upstream.command("kwok-stages"))
            .output()
            .context(|| "printing KWOK's default stages".into())?;
        std::fs::write(&stages, out.stdout).context(|| format!("writing {}", stages.display()))?;
        let pki = &self.pki;
        let args = vec![
            format!("--kubeconfig={}", path(&self.component_kubeconfig("kwok"))),
            format!("--config={}", path(&stages)),
            "--manage-all-nodes=false".into(),
            format!(
                "--manage-nodes-with-annotation-selector={}",
                nodes::KWOK_SELECTOR
            ),
            "--node-ip=127.0.0.1".into(),
            "--node-name=kwok-controller".into(),
            format!("--cidr={KWOK_POD_CIDR}"),
            format!("--server-address=127.0.0.1:{}", self.spec.ports.kwok()),
            format!("--tls-cert-file={}", path(&pki.cert("kwok"))),
            format!("--tls-private-key-file={}", path(&pki.key("kwok"))),
        ];
        self.spawn("kwok", args)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
