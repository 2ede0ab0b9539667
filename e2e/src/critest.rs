//! `arktos-local critest`: the CRI validation suite (critest, pinned in
//! e2e/nodetools) against the real node's runtime, on a cluster of its own
//! whose node runs no kubelet (critest must be the runtime's only client).
//! The images critest pulls are built locally (`hack/images/build`) and
//! pushed into the node's registry under critest's own paths; the node's
//! containerd mirrors registry.k8s.io, gcr.io and docker.io to it.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::cluster::{ClusterSpec, LocalCluster, Ports};
use crate::home::ArktosHome;
use crate::upstream::NodeTools;

/// Where critest looks for each locally built image (its default registry
/// paths, minus the registry host).
const IMAGE_PATHS: &[(&str, &str)] = &[
    ("busybox", "e2e-test-images/busybox"),
    // Short names ("busybox:1") are Docker Hub's library.
    ("busybox", "library/busybox"),
    ("nginx", "e2e-test-images/nginx"),
    (
        "hostnet-nginx-amd64",
        "k8s-staging-cri-tools/hostnet-nginx-amd64",
    ),
    (
        "test-image-latest",
        "k8s-staging-cri-tools/test-image-latest",
    ),
    ("test-image-tag", "k8s-staging-cri-tools/test-image-tag"),
    ("test-image-1", "k8s-staging-cri-tools/test-image-1"),
    ("test-image-2", "k8s-staging-cri-tools/test-image-2"),
    ("test-image-3", "k8s-staging-cri-tools/test-image-3"),
    ("test-image-tags", "k8s-staging-cri-tools/test-image-tags"),
    (
        "test-image-user-uid",
        "k8s-staging-cri-tools/test-image-user-uid",
    ),
    (
        "test-image-user-username",
        "k8s-staging-cri-tools/test-image-user-username",
    ),
    (
        "test-image-user-uid-group",
        "k8s-staging-cri-tools/test-image-user-uid-group",
    ),
    (
        "test-image-user-username-group",
        "k8s-staging-cri-tools/test-image-user-username-group",
    ),
    (
        "test-image-predefined-group",
        "k8s-staging-cri-tools/test-image-predefined-group",
    ),
];

/// Which runtime critest talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// arktos-node (what the kubelet uses).
    ArktosNode,
    /// containerd directly: the baseline the suite is compared with.
    Containerd,
}

pub async fn run(target: Target, handler: &str, extra: &[String]) -> anyhow::Result<i32> {
    let home = ArktosHome::from_env();
    let mut spec = ClusterSpec::new(
        format!("critest-{}", std::process::id()),
        home.clone(),
        Ports::find_free()?,
    );
    spec.ephemeral = true;
    spec.arktos = false;
    spec.nodes = 1;
    spec.kubelet = false;
    eprintln!("starting a cluster whose real node runs no kubelet");
    let mut cluster = LocalCluster::start(spec).await?;
    let result = run_on(&cluster, &home, target, handler, extra);
    cluster.stop();
    result
}

fn run_on(
    cluster: &LocalCluster,
    home: &ArktosHome,
    target: Target,
    handler: &str,
    extra: &[String],
) -> anyhow::Result<i32> {
    push_images(cluster)?;
    let paths = cluster.node_paths();
    let socket = match target {
        Target::ArktosNode => paths.runtime_socket(),
        Target::Containerd => paths.containerd_socket(),
    };
    let endpoint = format!("unix://{}", socket.display());
    let tools = NodeTools::ensure(home)?;
    // critest's images keep their public names: the node's containerd
    // mirrors those registries to the loopback one.
    let mut critest = Command::new(tools.command("critest"));
    if handler == "arktos-vm" {
        // A VM sandbox's container is a VM: the tests' default container
        // image is the test guest, named as in Arktos (critest wants a
        // name that parses as an image reference; the node translates it).
        let images = cluster.node_paths().dir.join("critest-images.yaml");
        std::fs::write(
            &images,
            format!(
                "defaultTestContainerImage: {}0.3.5/cirros-0.3.5-x86_64-disk.img\n",
                crate::cluster::node::CIRROS_PREFIX
            ),
        )?;
        critest.arg(format!("-test-images-file={}", images.display()));
    }
    critest
        .arg(format!("-runtime-endpoint={endpoint}"))
        .arg(format!("-image-endpoint={endpoint}"))
        .arg(format!("-runtime-handler={handler}"))
        .args(extra);
    eprintln!("running {critest:?}");
    let status = critest.status().context("running critest")?;
    Ok(status.code().unwrap_or(1))
}

fn push_images(cluster: &LocalCluster) -> anyhow::Result<()> {
    let dir = crate::cluster::node::build_with("hack/images/build")?
        .display()
        .to_string();
    for (layout, path) in IMAGE_PATHS {
        for tag in tags(&Path::new(&dir).join(layout))? {
            let src = format!("oci:{dir}/{layout}:{tag}");
            let dst = format!("docker://{}/{path}:{tag}", cluster.registry());
            let status = Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false", &src, &dst])
                .status()
                .context("running skopeo")?;
            anyhow::ensure!(status.success(), "skopeo copy {src} {dst} failed");
        }
    }
    eprintln!("pushed critest's images into {}", cluster.registry());
    Ok(())
}

/// The tags of an OCI layout (its index's ref names).
fn tags(layout: &Path) -> anyhow::Result<Vec<String>> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    Ok(index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_string)
        })
        .collect())
}
