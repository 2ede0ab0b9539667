//! The local cluster's one real node: a kubelet (from the pinned Kubernetes
//! release) whose container runtime is arktos-node, with containerd behind
//! it, libvirt/QEMU for VM pods, CNI's bridge for pod networking, a
//! distribution registry on loopback for container images and a file
//! server on loopback for VM images. KWOK keeps simulating the other nodes.
//!
//! Nothing here leaves the machine: the node's address lives on `lo`, the
//! pods' bridge has no address at all, and both servers listen on loopback.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use super::leftovers::{self, Leftovers, NodeLock, Owner, unmount_below};
use super::process::{Component, Launch};
use super::{LocalCluster, arktos, files, kubeconfig, pki};
use crate::home::source_root;
use crate::upstream::NodeTools;
use crate::{Error, IoContext, Result};

/// The real node's name.
pub const NODE_NAME: &str = "arktos-node-0";
/// The processes the real node adds to a cluster.
pub const COMPONENTS: &[&str] = &[
    "registry",
    "registry-private",
    "containerd",
    "arktos-node",
    "kubelet",
];
/// Taint the real node had before simulated nodes were tainted instead;
/// removed from a node registered with it by an earlier version.
const OLD_REAL_NODE_TAINT: &str = "node.arktos.io/real";
/// Label of nodes that run VM pods (the RuntimeClass selects it).
pub const VM_CAPABLE_LABEL: &str = "vm.arktos.io/capable";
/// The VM image server's path prefix that `download.cirros-cloud.net/` is
/// translated to, so the Arktos examples run unchanged.
pub const CIRROS_PREFIX: &str = "download.cirros-cloud.net/";

/// Port offsets (see `Ports::component`) of the node's servers.
const REGISTRY: u16 = 8;
const VM_IMAGES: u16 = 9;
const KUBELET: u16 = 10;
const KUBELET_HEALTHZ: u16 = 11;
const ARKTOS_NODE_HEALTH: u16 = 12;
const PRIVATE_REGISTRY: u16 = 13;

/// The user the node's private image servers (the registry on
/// `private_registry()` and `private/` of the VM image server) admit.
pub const PRIVATE_USER: &str = "private-puller";
/// VM images under this prefix come from the VM image server's `private/`,
/// which asks for credentials.
pub const PRIVATE_VM_PREFIX: &str = "vm.private.test/";

/// Where the node keeps things: state QEMU must reach lives outside the
/// cluster folder (which may be under a home directory others cannot
/// enter), sockets under /run (socket paths are short).
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub run: PathBuf,
}

impl NodePaths {
    pub fn runtime_socket(&self) -> PathBuf {
        self.run.join("arktos-node.sock")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.run.join("containerd.sock")
    }
}

/// The node's addresses, derived from the cluster's ports so that clusters
/// with different bases never share them.
#[derive(Clone, Debug)]
pub struct NodeNet {
    pub node_ip: Ipv4Addr,
    pub pod_subnet: String,
    /// The bridge's own address (`.1` of the pod subnet): where pods reach
    /// the tenant gateway.
    pub pod_gateway: Ipv4Addr,
    pub bridge: String,
}

impl NodeNet {
    pub fn for_base(base: u16) -> Self {
        let [hi, lo] = base.to_be_bytes();
        Self {
            node_ip: Ipv4Addr::new(10, 255, hi, lo),
            pod_subnet: format!("10.{}.{lo}.0/24", 128 | (hi & 127)),
            pod_gateway: Ipv4Addr::new(10, 128 | (hi & 127), lo, 1),
            bridge: format!("akbr{base}"),
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .context(|| format!("running {program}"))?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// libvirtd and virtlogd are host services shared by every cluster: started
/// here when not running, and left running.
fn ensure_libvirt() -> Result<()> {
    let answers = || {
        Command::new("virsh")
            .args(["-c", "qemu:///system", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if answers() {
        return Ok(());
    }
    eprintln!("  starting virtlogd and libvirtd (host services, left running)");
    let _ = Command::new("virtlogd").arg("-d").status();
    let _ = Command::new("libvirtd").arg("-d").status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(Error::Node(
        "libvirtd does not answer at qemu:///system".into(),
    ))
}

/// Runs a project build script that prints its output folder last.
pub(crate) fn build_with(script: &str) -> Result<PathBuf> {
    let path = source_root().join(script);
    let out = Command::new(&path)
        .arg("--print-dir")
        .output()
        .context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(PathBuf::from(dir))
}

impl LocalCluster {
    pub fn node_paths(&self) -> NodePaths {
        NodePaths {
            dir: self.spec.dir().join("node"),
            state: PathBuf::from(leftovers::STATE_ROOT).join(&self.spec.name),
            run: PathBuf::from(leftovers::RUN_ROOT).join(&self.spec.name),
        }
    }

    pub fn node_net(&self) -> NodeNet {
        NodeNet::for_base(self.spec.ports.base)
    }

    /// Where the real node's pods reach the tenant gateway (the pods'
    /// bridge); none without a real node.
    pub fn tenant_api_address(&self) -> Option<std::net::SocketAddr> {
        self.spec.real_node.then(|| {
            std::net::SocketAddr::new(self.node_net().pod_gateway.into(), self.gateway_port())
        })
    }

    pub fn registry(&self) -> String {
        format!("127.0.0.1:{}", self.spec.ports.component(REGISTRY))
    }

    /// URL of a file of the VM image server (the test guest and the bad
    /// images the tests use: `guest.qcow2`, `guest.raw`, `text.img`,
    /// `corrupt.qcow2`).
    pub fn vm_image_url(&self, file: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{file}",
            self.spec.ports.component(VM_IMAGES)
        )
    }

    /// A registry that asks for credentials (`PRIVATE_USER` and
    /// `private_password()`); it holds `private/bash:5`.
    pub fn private_registry(&self) -> String {
        format!("127.0.0.1:{}", self.spec.ports.component(PRIVATE_REGISTRY))
    }

    /// The password of the private image servers, made at the node's first
    /// start.
    pub fn private_password(&self) -> Result<String> {
        let file = self.node_paths().dir.join("private-password");
        if let Ok(password) = std::fs::read_to_string(&file) {
            return Ok(password.trim().to_string());
        }
        use sha2::Digest;
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        let password =
            arktos_node::ids::hex(&sha2::Sha256::digest(seed.as_bytes()))[..24].to_string();
        std::fs::write(&file, &password).context(|| "writing the private password".into())?;
        Ok(password)
    }

    pub fn arktos_node_health(&self) -> u16 {
        self.spec.ports.component(ARKTOS_NODE_HEALTH)
    }

    /// crictl (pinned in e2e/nodetools) talking to the node's arktos-node.
    pub fn crictl(&self) -> Result<Command> {
        let tools = NodeTools::ensure(&self.spec.home)?;
        let socket = format!("unix://{}", self.node_paths().runtime_socket().display());
        let mut cmd = Command::new(tools.command("crictl"));
        cmd.args([
            "--runtime-endpoint",
            &socket,
            "--image-endpoint",
            &socket,
            "--timeout",
            "120s",
        ]);
        Ok(cmd)
    }

    /// Starts the registry, containerd, arktos-node and the kubelet, and
    /// returns once the node is Ready.
    pub(super) async fn start_real_node(&mut self) -> Result<()> {
        ensure_libvirt()?;
        self.node_lock = Some(NodeLock::take(
            &self.spec.name,
            self.spec.ports.base,
            self.spec.ephemeral,
        )?);
        let stopped = Leftovers::find(&Owner::Stopped);
        if !stopped.is_empty() {
            eprintln!("  removing what stopped clusters left behind: {stopped}");
            stopped.remove();
        }
        let guest = build_with("hack/guest/build")?;
        let images = build_with("hack/images/build")?;
        let tools = NodeTools::ensure(&self.spec.home)?;
        let paths = self.node_paths();
        let net = self.node_net();
        for d in [&paths.dir, &paths.state, &paths.run] {
            std::fs::create_dir_all(d).context(|| format!("creating {}", d.display()))?;
        }
        // QEMU (an unprivileged user) must reach the VM files under it.
        use std::os::unix::fs::PermissionsExt;
        for d in [Path::new("/var/lib/arktos"), paths.state.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .context(|| format!("opening {} to QEMU", d.display()))?;
        }

        self.serve_vm_images(&guest)?;
        self.start_registry(&tools)?;
        self.push_images(&images).await?;

        // The node's address lives on lo: reachable from this host only.
        let cidr = format!("{}/32", net.node_ip);
        if !run("ip", &["-4", "addr", "show", "dev", "lo"])?.contains(&format!("{} ", cidr)) {
            run("ip", &["addr", "add", &cidr, "dev", "lo"])?;
        }
        // The bridge carries the gateway's address for pods; nothing routes
        // through it (pods get no default route).
        if run("ip", &["link", "show", "dev", &net.bridge]).is_err() {
            run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        }
        let gateway_cidr = format!("{}/24", net.pod_gateway);
        if !run("ip", &["-4", "addr", "show", "dev", &net.bridge])?
            .contains(&format!("{} ", gateway_cidr))
        {
            run("ip", &["addr", "add", &gateway_cidr, "dev", &net.bridge])?;
        }
        run("ip", &["link", "set", &net.bridge, "up"])?;
        let cni_dir = paths.dir.join("cni");
        std::fs::create_dir_all(&cni_dir).context(|| "creating the CNI folder".into())?;
        std::fs::write(
            cni_dir.join("10-arktos.conflist"),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "arktos-pods",
                "plugins": [{
                    "type": "bridge",
                    "bridge": net.bridge,
                    // The host side's address is the tenant gateway's
                    // only; no default route through it.
                    "isGateway": false,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.pod_subnet, "gateway": net.pod_gateway.to_string()}]],
                        "dataDir": paths.state.join("cni-ipam"),
                    }
                }]
            })
            .to_string(),
        )
        .context(|| "writing the CNI configuration".into())?;

        self.start_containerd(&paths, &cni_dir)?;
        wait_for_socket(&paths.containerd_socket(), self.spec.ready_timeout)?;
        self.start_arktos_node(&paths, &cni_dir)?;
        wait_for_socket(&paths.runtime_socket(), self.spec.ready_timeout)?;
        if !self.spec.kubelet {
            return Ok(());
        }
        self.start_kubelet(&paths, &net)?;
        self.wait_for_real_node().await
    }

    fn serve_vm_images(&mut self, guest: &Path) -> Result<()> {
        let root = self.node_paths().dir.join("vm-images");
        let cirros = root.join("0.3.5");
        std::fs::create_dir_all(&cirros).context(|| "creating the VM image folder".into())?;
        let link = |from: &Path, to: PathBuf| -> Result<()> {
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(from, &to).context(|| format!("linking {}", to.display()))
        };
        link(&guest.join("guest.qcow2"), root.join("guest.qcow2"))?;
        link(&guest.join("guest.raw"), root.join("guest.raw"))?;
        // The Arktos examples' image, translated to the test guest.
        link(
            &guest.join("guest.qcow2"),
            cirros.join("cirros-0.3.5-x86_64-disk.img"),
        )?;
        // Bad images for the refusal tests.
        std::fs::write(
            root.join("text.img"),
            "<html>this is not a disk image</html>\n",
        )
        .context(|| "writing text.img".into())?;
        let qcow =
            std::fs::read(guest.join("guest.qcow2")).context(|| "reading the guest".into())?;
        std::fs::write(root.join("corrupt.qcow2"), &qcow[..qcow.len().min(1 << 20)])
            .context(|| "writing corrupt.qcow2".into())?;
        // A private image: the same guest, behind credentials.
        let private = root.join("private");
        std::fs::create_dir_all(&private).context(|| "creating the private image folder".into())?;
        link(&guest.join("guest.qcow2"), private.join("guest.qcow2"))?;
        let port = self.spec.ports.component(VM_IMAGES);
        let guarded = files::Guarded {
            prefix: "/private/".into(),
            user: PRIVATE_USER.into(),
            password: self.private_password()?,
        };
        self.file_servers
            .push(files::serve(root, port, Some(guarded))?);
        Ok(())
    }

    /// The node's two registries: an open one for the test images, and one
    /// that asks for credentials, for private images.
    fn start_registry(&mut self, tools: &NodeTools) -> Result<()> {
        let dir = self.node_paths().dir;
        let htpasswd = dir.join("htpasswd");
        let hash = bcrypt::hash(self.private_password()?, 4)
            .map_err(|e| Error::Node(format!("hashing the private password: {e}")))?;
        std::fs::write(&htpasswd, format!("{PRIVATE_USER}:{hash}\n"))
            .context(|| "writing the private registry's users".into())?;
        for (name, address, auth) in [
            ("registry", self.registry(), String::new()),
            (
                "registry-private",
                self.private_registry(),
                format!(
                    "auth:\n  htpasswd:\n    realm: arktos-private\n    path: {}\n",
                    htpasswd.display()
                ),
            ),
        ] {
            let config = dir.join(format!("{name}.yml"));
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{auth}",
                    dir.join(name).display(),
                ),
            )
            .context(|| "writing the registry configuration".into())?;
            self.spawn_program(
                name,
                tools.command("registry"),
                vec!["serve".into(), config.display().to_string()],
            )?;
        }
        Ok(())
    }

    /// Pushes the locally built images into the registry, as a CI would.
    async fn push_images(&self, images: &Path) -> Result<()> {
        let deadline = Instant::now() + self.spec.ready_timeout;
        let catalog = format!("http://{}/v2/", self.registry());
        while Instant::now() < deadline {
            if Command::new("curl")
                .args(["-sf", &catalog])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (name, tag) in [("pause", "3.10"), ("bash", "5"), ("incluster-check", "1")] {
            let src = format!("oci:{}:{tag}", images.join(name).display());
            let dst = format!("docker://{}/arktos/{name}:{tag}", self.registry());
            run(
                "skopeo",
                &["copy", "--quiet", "--dest-tls-verify=false", &src, &dst],
            )?;
        }
        let private = self.private_registry();
        while std::net::TcpStream::connect(&private).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Node(format!(
                    "the private registry does not listen on {private}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let src = format!("oci:{}:5", images.join("bash").display());
        let dst = format!("docker://{private}/private/bash:5");
        let creds = format!("{PRIVATE_USER}:{}", self.private_password()?);
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
                &src,
                &dst,
            ],
        )?;
        Ok(())
    }

    fn start_containerd(&mut self, paths: &NodePaths, cni_dir: &Path) -> Result<()> {
        let registry = self.registry();
        let config = paths.dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/arktos/pause:3.10"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Processes here may not lower their OOM score below ours.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{private}"]
    endpoint = ["http://{private}"]
  # No outside registry is reachable here: the public names critest and
  # examples use are served by the loopback registry under the same paths.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."gcr.io"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."k8s.gcr.io"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://{registry}"]
"#,
                root = paths.dir.join("containerd").display(),
                state = paths.run.join("containerd").display(),
                socket = paths.containerd_socket().display(),
                cni = cni_dir.display(),
                private = self.private_registry(),
            ),
        )
        .context(|| "writing the containerd configuration".into())?;
        self.spawn_program(
            "containerd",
            PathBuf::from("/usr/bin/containerd"),
            vec!["--config".into(), config.display().to_string()],
        )
    }

    fn start_arktos_node(&mut self, paths: &NodePaths, cni_dir: &Path) -> Result<()> {
        let translations = paths.dir.join("image-translations.yaml");
        std::fs::write(
            &translations,
            format!(
                "translations:\n  - prefix: {CIRROS_PREFIX}\n    url: {}\n  - prefix: {PRIVATE_VM_PREFIX}\n    url: {}\n",
                self.vm_image_url(""),
                self.vm_image_url("private/"),
            ),
        )
        .context(|| "writing the image translations".into())?;
        let args = vec![
            format!("--listen={}", paths.runtime_socket().display()),
            format!(
                "--containerd-socket={}",
                paths.containerd_socket().display()
            ),
            format!("--state-dir={}", paths.state.join("arktos-node").display()),
            format!(
                "--netns-prefix={}",
                leftovers::netns_prefix(&self.spec.name)
            ),
            format!("--cni-conf-dir={}", cni_dir.display()),
            "--cni-bin-dir=/usr/lib/cni".into(),
            format!("--image-translations={}", translations.display()),
            format!("--health-address=127.0.0.1:{}", self.arktos_node_health()),
            // Test VMs are small; the examples ask for up to 1Gi.
            "--vm-max-memory-mib=1024".into(),
            format!("--node-name={NODE_NAME}"),
            format!(
                "--kubeconfig={}",
                self.service_account_kubeconfig("arktos-node")?.display()
            ),
        ];
        self.spawn_program("arktos-node", arktos::binary("arktos-node")?, args)
    }

    fn start_kubelet(&mut self, paths: &NodePaths, net: &NodeNet) -> Result<()> {
        let identity = "kubelet-node";
        let pki = self.pki.clone();
        if !pki.cert(identity).exists() {
            pki.issue_from_cluster_ca(&pki::Leaf {
                name: identity,
                common_name: &format!("system:node:{NODE_NAME}"),
                organizations: &["system:nodes"],
                dns_names: &[],
                ip_addresses: &[],
                usage: pki::Usage::Client,
            })?;
        }
        let kubeconfig_path = paths.dir.join("kubelet.kubeconfig");
        kubeconfig::write(
            &kubeconfig_path,
            "local",
            &self.apiserver_url(),
            &pki,
            identity,
        )?;
        let socket = format!("unix://{}", paths.runtime_socket().display());
        let config = paths.dir.join("kubelet.yaml");
        std::fs::write(
            &config,
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host boots cgroup v1 (hybrid); 1.35+ needs this to run there.
failCgroupV1: false
# Pod and container stats from the runtime, not cAdvisor: a VM's memory
# use is only known to arktos-node, and the kubelet needs it to shrink a VM
# in place.
featureGates: {{PodAndContainerStatsFromCRI: true}}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: {socket}
imageServiceEndpoint: {socket}
address: {ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
failSwapOn: false
# Disks of test machines run full; pods are tiny.
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
maxPods: 40
serializeImagePulls: false
"#,
                ip = net.node_ip,
                port = self.spec.ports.component(KUBELET),
                healthz = self.spec.ports.component(KUBELET_HEALTHZ),
                ca = pki.ca_cert().display(),
            ),
        )
        .context(|| "writing the kubelet configuration".into())?;
        let args = vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig_path.display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={}", net.node_ip),
            format!("--root-dir={}", paths.state.join("kubelet").display()),
            format!("--node-labels={VM_CAPABLE_LABEL}=true"),
            "--v=1".into(),
        ];
        let program = self.upstream.command("kubelet");
        self.spawn_program("kubelet", program, args)
    }

    async fn wait_for_real_node(&mut self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.admin_client().await?);
        let deadline = Instant::now() + self.spec.ready_timeout;
        loop {
            self.check_running()?;
            if let Ok(node) = nodes.get(NODE_NAME).await {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
                    if taints.iter().any(|t| t.key == OLD_REAL_NODE_TAINT) {
                        let kept: Vec<_> = taints
                            .into_iter()
                            .filter(|t| t.key != OLD_REAL_NODE_TAINT)
                            .collect();
                        let patch = serde_json::json!({"spec": {"taints": kept}});
                        nodes
                            .patch(
                                NODE_NAME,
                                &kube::api::PatchParams::default(),
                                &kube::api::Patch::Merge(&patch),
                            )
                            .await?;
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Node(format!(
                    "node {NODE_NAME} not Ready after {:?}; see the kubelet's log",
                    self.spec.ready_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn spawn_program(&mut self, name: &str, program: PathBuf, args: Vec<String>) -> Result<()> {
        let launch = Launch {
            program,
            args,
            dir: self.spec.dir(),
        };
        let component = Component::start(name, launch, &self.log(name))?;
        self.components.push(component);
        Ok(())
    }

    /// Empties the real node before its processes stop: the kubelet tears
    /// pods down (volumes included), then whatever is left goes through the
    /// runtime, so no VM, container, network namespace or mount outlives
    /// the cluster.
    pub(super) fn drain_real_node(&mut self) {
        if !self.components.iter().any(|c| c.name == "arktos-node") {
            return;
        }
        if self.components.iter().any(|c| c.name == "kubelet") {
            self.delete_real_node_pods();
        }
        if let Ok(mut crictl) = self.crictl() {
            let _ = crictl.args(["rmp", "--all", "--force"]).output();
        }
    }

    fn delete_real_node_pods(&self) {
        let kubeconfig = self.kubeconfig_path();
        let drained = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let config = kube::Config::from_custom_kubeconfig(
                        kube::config::Kubeconfig::read_from(&kubeconfig).ok()?,
                        &Default::default(),
                    )
                    .await
                    .ok()?;
                    let client = kube::Client::try_from(config).ok()?;
                    let pods: Api<Pod> = Api::all(client);
                    let on_node =
                        ListParams::default().fields(&format!("spec.nodeName={NODE_NAME}"));
                    for pod in pods.list(&on_node).await.ok()? {
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let _ = Api::<Pod>::namespaced(pods.clone().into_client(), &ns)
                            .delete(&name, &DeleteParams::default().grace_period(0))
                            .await;
                    }
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        if pods.list(&on_node).await.ok()?.items.is_empty() {
                            return Some(());
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    None
                })
            })
            .join()
            .ok()
            .flatten()
        });
        if drained.is_none() {
            eprintln!(
                "  the real node did not drain through the API; removing its pods through the runtime"
            );
        }
        if let Ok(mut crictl) = self.crictl() {
            let _ = crictl.args(["rmp", "--all", "--force"]).output();
        }
    }

    /// After the processes stopped: everything of the node still on the
    /// host (VMs libvirt kept or started late, network namespaces, taps,
    /// mounts, its bridge and address), then its lock.
    pub(super) fn forget_real_node(&mut self) {
        let paths = self.node_paths();
        unmount_below(&paths.state);
        let own = Owner::Cluster {
            name: self.spec.name.clone(),
            base: self.spec.ports.base,
        };
        let left = Leftovers::find(&own);
        if !left.domains.is_empty() || !left.netns.is_empty() {
            eprintln!("  removing what the node left behind: {left}");
        }
        left.remove();
        self.node_lock = None;
    }
}

fn wait_for_socket(socket: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Node(format!(
        "nothing listens on {}",
        socket.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_differ_per_base_and_stay_private() {
        let a = NodeNet::for_base(6443);
        let b = NodeNet::for_base(6463);
        assert_ne!(a.node_ip, b.node_ip);
        assert_ne!(a.pod_subnet, b.pod_subnet);
        assert!(a.node_ip.is_private());
        assert!(a.bridge.len() <= 15);
        assert_eq!(a.pod_subnet, "10.153.43.0/24");
    }
}
