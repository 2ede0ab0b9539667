//! The real node's runtime, arktos-node: VM pods through crictl (the CRI as
//! the kubelet speaks it), through the real kubelet, and its refusals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};
use libtest_mimic::Trial;

use crate::support::unique;
use crate::{Ctx, disruptive_long_trial, long_trial};

/// The kubelet kills sandboxes it did not make (orphans, to it), so tests
/// that drive the runtime with crictl pause it, and start it again however
/// the test ends. Running pods are not affected by a kubelet pause.
struct KubeletPaused<'a>(&'a Ctx);

impl<'a> KubeletPaused<'a> {
    fn new(ctx: &'a Ctx) -> anyhow::Result<Self> {
        ctx.cluster
            .local()
            .context("this test needs the local cluster's real node")?
            .kill("kubelet")?;
        Ok(Self(ctx))
    }
}

impl Drop for KubeletPaused<'_> {
    fn drop(&mut self) {
        if let Some(mut local) = self.0.cluster.local() {
            let _ = local.start_again("kubelet");
        }
    }
}

pub const NAMES: &[&str] = &[
    "node_vm_pod_lifecycle_through_crictl_survives_a_runtime_restart",
    "node_vm_pod_bad_inputs_fail_clearly_and_leave_nothing",
    "node_tenant_gateway_exec_attach_port_forward_reach_a_real_pod",
    "node_kubelet_runs_a_vm_pod_and_a_container_pod",
    "node_private_images_need_each_tenants_own_credentials",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        disruptive_long_trial(ctx, NAMES[0], Duration::from_secs(300), |ctx| async move {
            vm_pod_lifecycle(&ctx).await
        }),
        disruptive_long_trial(ctx, NAMES[1], Duration::from_secs(240), |ctx| async move {
            vm_refusals(&ctx).await
        }),
        long_trial(ctx, NAMES[2], Duration::from_secs(240), |ctx| async move {
            gateway_streams(&ctx).await
        }),
        long_trial(ctx, NAMES[3], Duration::from_secs(300), |ctx| async move {
            kubelet_runs_both(&ctx).await
        }),
        long_trial(ctx, NAMES[4], Duration::from_secs(300), |ctx| async move {
            private_images(&ctx).await
        }),
    ]
}

/// The node's facts a test needs, copied out of the cluster lock.
struct Node {
    crictl: PathBuf,
    endpoint: String,
    vm_images: String,
    registry: String,
    state: PathBuf,
    scratch: PathBuf,
}

fn node(ctx: &Ctx, test: &str) -> anyhow::Result<Node> {
    let local = ctx
        .cluster
        .local()
        .context("this test needs the local cluster's real node")?;
    let crictl = local.crictl()?;
    let paths = local.node_paths();
    let scratch = paths.dir.join("tests").join(unique(test));
    std::fs::create_dir_all(&scratch)?;
    Ok(Node {
        crictl: PathBuf::from(crictl.get_program()),
        endpoint: format!("unix://{}", paths.runtime_socket().display()),
        vm_images: local.vm_image_url(""),
        registry: local.registry(),
        state: paths.state.join("arktos-node"),
        scratch,
    })
}

impl Node {
    /// crictl's stdout, or an error with its stderr.
    async fn crictl(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, out, err) = self.crictl_status(args).await?;
        ensure!(ok, "crictl {} failed: {err}", args.join(" "));
        Ok(out.trim().to_string())
    }

    /// crictl's stderr when it fails, as a refusal should.
    async fn crictl_refused(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, out, err) = self.crictl_status(args).await?;
        ensure!(
            !ok,
            "crictl {} should have failed, printed {out}",
            args.join(" ")
        );
        Ok(err)
    }

    async fn crictl_status(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = tokio::process::Command::new(&self.crictl)
            .args([
                "--runtime-endpoint",
                &self.endpoint,
                "--image-endpoint",
                &self.endpoint,
            ])
            .args(["--timeout", "120s"])
            .args(args)
            .output()
            .await?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn write(&self, name: &str, value: serde_json::Value) -> anyhow::Result<String> {
        let path = self.scratch.join(name);
        std::fs::write(&path, value.to_string())?;
        Ok(path.display().to_string())
    }

    fn pod_config(&self, name: &str, user_data: &str) -> anyhow::Result<String> {
        self.write(
            &format!("{name}-pod.json"),
            serde_json::json!({
                "metadata": {"name": name, "namespace": "e2e", "uid": unique(name), "attempt": 0},
                "hostname": name,
                "log_directory": self.scratch.join(name).display().to_string(),
                "annotations": {
                    "vm.arktos.io/user-data": base64::engine::general_purpose::STANDARD.encode(user_data),
                    "vm.arktos.io/public-key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e test@arktos",
                },
                "linux": {}
            }),
        )
    }

    fn vm_config(&self, name: &str, image: &str, memory_mib: i64) -> anyhow::Result<String> {
        self.write(
            &format!("{name}-ctr.json"),
            serde_json::json!({
                "metadata": {"name": name, "attempt": 0},
                "image": {"image": image},
                "log_path": format!("{name}.log"),
                "linux": {"resources": {
                    "cpu_period": 100000, "cpu_quota": 100000,
                    "memory_limit_in_bytes": memory_mib * 1024 * 1024,
                }}
            }),
        )
    }

    /// `crictl update` to `vcpus` (as a CFS quota) and `memory_mib`.
    async fn resize(&self, container: &str, vcpus: u32, memory_mib: u64) -> anyhow::Result<()> {
        let quota = (u64::from(vcpus) * 100_000).to_string();
        let memory = (memory_mib * 1024 * 1024).to_string();
        self.crictl(&[
            "update",
            "--cpu-period",
            "100000",
            "--cpu-quota",
            &quota,
            "--memory",
            &memory,
            container,
        ])
        .await
        .map(|_| ())
    }

    /// Waits until the container's log (the VM console) has a line with
    /// `needle`; returns the whole log.
    async fn wait_for_console(
        &self,
        container: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.crictl(&["logs", container]).await.unwrap_or_default();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                bail!("the console never showed {needle:?}; it showed:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What is left of a VM container on the host.
    async fn leftovers(&self, container: &str, sandbox: &str) -> anyhow::Result<Vec<String>> {
        let mut left = Vec::new();
        let domains = virsh(&["list", "--all", "--name"]).await?;
        if domains
            .lines()
            .any(|d| d.trim() == format!("arktos-{container}"))
        {
            left.push(format!("domain arktos-{container}"));
        }
        for p in [
            self.state.join("vms").join(container),
            self.state
                .join("containers")
                .join(format!("{container}.json")),
            self.state.join("sandboxes").join(format!("{sandbox}.json")),
            Path::new("/var/run/netns").join(format!("arktos-{}", &sandbox[..16])),
        ] {
            if p.exists() {
                left.push(p.display().to_string());
            }
        }
        Ok(left)
    }
}

async fn virsh(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "virsh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dominfo_field(info: &str, field: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_default()
}

async fn vm_pod_lifecycle(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let node = node(ctx, "crictl")?;
    let _paused = KubeletPaused::new(ctx)?;
    let image = format!("{}guest.qcow2", node.vm_images);
    node.crictl(&["pull", &image]).await?;
    let images = node.crictl(&["images", "-o", "json"]).await?;
    ensure!(
        images.contains("guest.qcow2"),
        "ListImages lacks the VM image: {images}"
    );

    let user_data = "#!/bin/sh\necho USERDATA-APPLIED-$(hostname)\n";
    let pod = node.pod_config("vmcri", user_data)?;
    let ctr = node.vm_config("vmcri", &image, 256)?;
    let sandbox = node
        .crictl(&["runp", "--runtime", "arktos-vm", &pod])
        .await?;
    let inspect: serde_json::Value =
        serde_json::from_str(&node.crictl(&["inspectp", &sandbox]).await?)?;
    let pod_ip = inspect["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!pod_ip.is_empty(), "PodSandboxStatus has no IP: {inspect}");
    let container = node.crictl(&["create", &sandbox, &ctr, &pod]).await?;
    node.crictl(&["start", &container]).await?;

    let log = node
        .wait_for_console(&container, "ARKTOS-GUEST-STATE", Duration::from_secs(90))
        .await?;
    for marker in [
        "ARKTOS-GUEST-BOOTED".to_string(),
        "USERDATA-APPLIED-vmcri".to_string(),
        format!("ARKTOS-GUEST-IP eth0 {pod_ip}/"),
        "ARKTOS-GUEST-KEYS 1".to_string(),
    ] {
        ensure!(log.contains(&marker), "console lacks {marker:?}:\n{log}");
    }

    // Live resize: 1 -> 2 vCPUs, 256 -> 512 MiB, seen by libvirt and the guest.
    node.resize(&container, 2, 512).await?;
    // The balloon reaches its new size in a moment, not at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = virsh(&["dominfo", &format!("arktos-{container}")]).await?;
        if dominfo_field(&info, "CPU(s)") == "2"
            && dominfo_field(&info, "Used memory") == "524288 KiB"
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "domain not at 2 vCPUs and 512 MiB:\n{info}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    node.wait_for_console(
        &container,
        "ARKTOS-GUEST-STATE cpus=2",
        Duration::from_secs(30),
    )
    .await?;
    let refused = node
        .crictl_refused(&[
            "update",
            "--cpu-period",
            "100000",
            "--cpu-quota",
            "900000",
            &container,
        ])
        .await?;
    ensure!(
        refused.contains("above the VM's maximum"),
        "resize above the maximum: {refused}"
    );

    // A restart of arktos-node loses nothing: the VM runs on, is listed,
    // and its console keeps reaching the log.
    {
        let mut local = ctx.cluster.local().context("local cluster")?;
        local.kill("arktos-node")?;
        local.start_again("arktos-node")?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        match node.crictl(&["ps", "-q", "--state", "running"]).await {
            Ok(out) if out.contains(&container) => break out,
            _ if Instant::now() > deadline => {
                bail!("the VM is not listed running after arktos-node restarted")
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    ensure!(listed.contains(&container));
    let states = |log: &str| log.matches("ARKTOS-GUEST-STATE").count();
    let before = states(&node.crictl(&["logs", &container]).await?);
    node.resize(&container, 2, 384).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = node.crictl(&["logs", &container]).await?;
        if states(&log) > before {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the console after the restart shows no change:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    node.crictl(&["stop", "--timeout", "10", &container])
        .await?;
    let status: serde_json::Value =
        serde_json::from_str(&node.crictl(&["inspect", &container]).await?)?;
    ensure!(
        status["status"]["state"] == "CONTAINER_EXITED",
        "after stop: {}",
        status["status"]
    );
    node.crictl(&["rm", &container]).await?;
    node.crictl(&["stopp", &sandbox]).await?;
    node.crictl(&["rmp", &sandbox]).await?;
    let left = node.leftovers(&container, &sandbox).await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

async fn vm_refusals(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let node = node(ctx, "refusals")?;
    let _paused = KubeletPaused::new(ctx)?;
    let pod = node.pod_config("vmbad", "#!/bin/sh\ntrue\n")?;
    let err = node
        .crictl_refused(&["runp", "--runtime", "no-such-handler", &pod])
        .await?;
    ensure!(
        err.contains("no runtime for \\\"no-such-handler\\\"") || err.contains("no-such-handler"),
        "unknown handler: {err}"
    );

    for (file, expected) in [
        ("0.3.5/missing.img", "HTTP 404"),
        ("text.img", "is not a disk image"),
        ("corrupt.qcow2", "is a corrupt qcow2"),
    ] {
        let url = format!("{}{file}", node.vm_images);
        let err = node.crictl_refused(&["pull", &url]).await?;
        ensure!(
            err.contains(expected),
            "pull {url}: expected {expected:?}, got {err}"
        );
    }
    // Failed pulls leave nothing behind: no image of theirs, no partial
    // download. Other tests pull into the same cache meanwhile; what they
    // add is in the index once their pulls end.
    let images = node.state.join("images");
    crate::support::eventually(
        "the image cache holds only indexed images",
        Duration::from_secs(60),
        || {
            let images = images.clone();
            async move { Ok(unindexed_images(&images)?.is_empty()) }
        },
    )
    .await
    .with_context(|| {
        format!(
            "failed pulls left files in the image cache: {:?}",
            unindexed_images(&images).unwrap_or_default()
        )
    })?;

    let image = format!("{}guest.qcow2", node.vm_images);
    node.crictl(&["pull", &image]).await?;
    let sandbox = node
        .crictl(&["runp", "--runtime", "arktos-vm", &pod])
        .await?;
    let small = node.vm_config("small", &image, 64)?;
    let err = node
        .crictl_refused(&["create", &sandbox, &small, &pod])
        .await?;
    ensure!(
        err.contains("below the guest's minimum of 128Mi"),
        "small memory: {err}"
    );
    let first = node.vm_config("first", &image, 192)?;
    let container = node.crictl(&["create", &sandbox, &first, &pod]).await?;
    let second = node.vm_config("second", &image, 192)?;
    let err = node
        .crictl_refused(&["create", &sandbox, &second, &pod])
        .await?;
    ensure!(
        err.contains("a VM pod holds exactly one container"),
        "second container: {err}"
    );
    let listed = node.crictl(&["ps", "-a", "-q", "--pod", &sandbox]).await?;
    ensure!(
        listed.lines().count() == 1,
        "refusals created containers: {listed}"
    );
    node.crictl(&["rmp", "--force", &sandbox]).await?;
    let left = node.leftovers(&container, &sandbox).await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

async fn kubelet_runs_both(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let node = node(ctx, "kubelet")?;
    let ns = ctx.cluster.namespace("kubelet-vm").await?;
    let client = ctx.cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let vm: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vm1"},
        "spec": {
            "runtimeClassName": "arktos-vm",
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "vm",
                // The Arktos example's image, translated to the test guest.
                "image": "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img",
                "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}
            }]
        }
    }))?;
    let container: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "container1"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"vm.arktos.io/capable": "true"},
            "containers": [{
                "name": "shell",
                "image": format!("{}/arktos/bash:5", node.registry),
                "command": ["/bin/bash", "-c", "echo hello from container1; exec sleep 3600"]
            }]
        }
    }))?;
    pods.create(&PostParams::default(), &vm).await?;
    pods.create(&PostParams::default(), &container).await?;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let running =
            |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let (a, b) = (pods.get("vm1").await?, pods.get("container1").await?);
        if running(&a) && running(&b) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "pods not Running: vm1 {:?}, container1 {:?}",
                a.status.and_then(|s| s.container_statuses),
                b.status.and_then(|s| s.container_statuses)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let log = pods
            .logs("vm1", &LogParams::default())
            .await
            .unwrap_or_default();
        if log.contains("ARKTOS-GUEST-BOOTED") && log.contains("ARKTOS-GUEST-HOSTNAME vm1") {
            break;
        }
        if Instant::now() > deadline {
            bail!("kubectl logs of the VM pod never showed the guest booting:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = pods.logs("container1", &LogParams::default()).await?;
    ensure!(
        log.contains("hello from container1"),
        "container log: {log}"
    );

    let vm_container = pods
        .get("vm1")
        .await?
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().and_then(|c| c.container_id.clone()))
        .and_then(|id| id.split("://").nth(1).map(str::to_string))
        .context("the VM pod reports no container ID")?;
    pods.delete("vm1", &DeleteParams::default()).await?;
    pods.delete("container1", &DeleteParams::default()).await?;
    // The kubelet stops both pods, then its garbage collection removes them:
    // no sandbox, container, domain or VM file is left.
    let label = format!("io.kubernetes.pod.namespace={}", ns.name);
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let sandboxes = node.crictl(&["pods", "-q", "--label", &label]).await?;
        let containers = node.crictl(&["ps", "-a", "-q", "--label", &label]).await?;
        let domains = virsh(&["list", "--all", "--name"]).await?;
        let domain_left = domains
            .lines()
            .any(|d| d.trim() == format!("arktos-{vm_container}"));
        let files_left = node.state.join("vms").join(&vm_container).exists();
        if sandboxes.is_empty() && containers.is_empty() && !domain_left && !files_left {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "left after deleting the pods: sandboxes {sandboxes:?}, containers {containers:?}, domain {domain_left}, VM files {files_left}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ns.delete().await?;
    Ok(())
}

/// Shared nodes and private images: tenant A pulls a private container
/// image and a private VM image with its pull secret; tenant B's pods name
/// the same images with `IfNotPresent` and no secret, are scheduled to the
/// same node where both images now are, and must not start (the kubelet's
/// pull-credential check, KEP-2535, asks the runtime to pull again without
/// credentials: containerd and arktos-node both ask the server).
async fn private_images(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use crate::support::TenantOwner;
    use arktos_e2e::cluster::node::{PRIVATE_USER, PRIVATE_VM_PREFIX};
    use k8s_openapi::api::core::v1::Secret;
    let (registry, password) = {
        let local = ctx
            .cluster
            .local()
            .context("this test needs the local cluster's real node")?;
        (local.private_registry(), local.private_password()?)
    };
    let container_image = format!("{registry}/private/bash:5");
    let vm_image = format!("{PRIVATE_VM_PREFIX}guest.qcow2");
    let pods_of = |with_secret: bool| -> anyhow::Result<Vec<Pod>> {
        let secrets = if with_secret {
            serde_json::json!([{"name": "private"}])
        } else {
            serde_json::json!([])
        };
        Ok(vec![
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "c"},
                "spec": {"terminationGracePeriodSeconds": 1, "imagePullSecrets": secrets,
                    "nodeSelector": {"vm.arktos.io/capable": "true"},
                    "containers": [{"name": "c", "image": container_image, "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/bash", "-c", "exec sleep 3600"],
                        "resources": {"requests": {"cpu": "10m"}}}]}
            }))?,
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "vm"},
                "spec": {"runtimeClassName": "arktos-vm", "terminationGracePeriodSeconds": 5,
                    "imagePullSecrets": secrets,
                    "containers": [{"name": "vm", "image": vm_image, "imagePullPolicy": "IfNotPresent",
                        "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}}]}
            }))?,
        ])
    };
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{PRIVATE_USER}:{password}"));
    let docker_config = serde_json::json!({"auths": {
        registry.clone(): {"auth": auth},
        PRIVATE_VM_PREFIX.trim_end_matches('/'): {"auth": auth},
    }});
    let a = TenantOwner::create(ctx, "pra", serde_json::json!({"podSecurity": "baseline"})).await?;
    let b = TenantOwner::create(ctx, "prb", serde_json::json!({"podSecurity": "baseline"})).await?;
    a.namespace("web").await?;
    b.namespace("web").await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "private"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": docker_config.to_string()},
    }))?;
    Api::<Secret>::namespaced(a.client.clone(), "web")
        .create(&PostParams::default(), &secret)
        .await?;
    let a_pods: Api<Pod> = Api::namespaced(a.client.clone(), "web");
    for pod in pods_of(true)? {
        a_pods.create(&PostParams::default(), &pod).await?;
    }
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let waiting = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .map(|w| {
                format!(
                    "{}: {}",
                    w.reason.clone().unwrap_or_default(),
                    w.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let (c, vm) = (a_pods.get("c").await?, a_pods.get("vm").await?);
        if phase(&c) == "Running" && phase(&vm) == "Running" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tenant A's private pods with the pull secret not Running: c {} {}, vm {} {}",
            phase(&c),
            waiting(&c),
            phase(&vm),
            waiting(&vm)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Tenant B: the same images, no secret, the same node.
    let b_pods: Api<Pod> = Api::namespaced(b.client.clone(), "web");
    for pod in pods_of(false)? {
        b_pods.create(&PostParams::default(), &pod).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let refused =
        |why: &str| why.starts_with("ErrImagePull") || why.starts_with("ImagePullBackOff");
    loop {
        let (c, vm) = (b_pods.get("c").await?, b_pods.get("vm").await?);
        ensure!(
            phase(&c) != "Running" && phase(&vm) != "Running",
            "tenant B runs another tenant's private image without credentials: c {}, vm {}",
            phase(&c),
            phase(&vm)
        );
        let (why_c, why_vm) = (waiting(&c), waiting(&vm));
        if refused(&why_c) && refused(&why_vm) {
            eprintln!("  tenant B without credentials: container {why_c}; VM {why_vm}");
            ensure!(
                why_vm.contains("401")
                    || why_vm.contains("credentials")
                    || why_vm.contains("back-off"),
                "the VM pod's pull error should say credentials are needed: {why_vm}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tenant B's pods should fail to pull: c {why_c:?}, vm {why_vm:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for tenant in [&a, &b] {
        Api::<arktos_crds::Tenant>::all(tenant.admin.clone())
            .delete(&tenant.tenant, &DeleteParams::default())
            .await?;
    }
    Ok(())
}

/// exec, attach and port-forward through the tenant gateway reach a pod on
/// the real node (kubectl with a tenant kubeconfig, websockets), and a
/// second tenant cannot reach it.
async fn gateway_streams(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    use crate::support::{TenantOwner, kubectl_path, tenant_kubeconfig};
    let registry = ctx
        .cluster
        .local()
        .context("this test needs the local cluster's real node")?
        .registry();
    let owner = TenantOwner::create(ctx, "streams", serde_json::json!({})).await?;
    owner.namespace("web").await?;
    let pods: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
    let pod = |name: &str, command: serde_json::Value, stdin: bool| -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "nodeSelector": {"vm.arktos.io/capable": "true"},
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "main",
                    "image": format!("{registry}/arktos/bash:5"),
                    "command": command,
                    "stdin": stdin,
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
                }]
            }
        }))?)
    };
    pods.create(
        &PostParams::default(),
        &pod(
            "web",
            serde_json::json!(["/bin/sh", "-c", "mkdir -p /tmp/www && echo hello-through-port-forward > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]),
            false,
        )?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &pod("att", serde_json::json!(["/bin/cat"]), true)?,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    for name in ["web", "att"] {
        loop {
            let p = pods.get(name).await?;
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "pod {name} not Running: {:?}",
                p.status
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // A kubeconfig for the tenant owner: plain kubectl, gateway URL.
    let kubeconfig = tenant_kubeconfig(ctx, &owner, "web")?;
    let kubectl = kubectl_path(ctx);
    let run = |args: Vec<&str>, stdin: &'static str| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            let mut input = child.stdin.take().context("stdin")?;
            input.write_all(stdin.as_bytes()).await?;
            // Held open a moment: attach ends its stream at stdin's end,
            // before the echo comes back otherwise (slower on a busy node).
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(input);
            let out =
                tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
            anyhow::Ok((
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    };
    let (out, err) = run(
        vec!["exec", "web", "--", "sh", "-c", "echo exec-ok; id -u"],
        "",
    )
    .await?;
    ensure!(
        out.contains("exec-ok") && out.contains("65534"),
        "exec: {out} {err}"
    );
    let (out, err) = run(
        vec!["exec", "-i", "web", "--", "cat"],
        "stdin-reached-the-pod\n",
    )
    .await?;
    ensure!(
        out.contains("stdin-reached-the-pod"),
        "exec with stdin: {out} {err}"
    );
    let (out, err) = run(vec!["attach", "-i", "att"], "attached-line\n").await?;
    ensure!(out.contains("attached-line"), "attach: {out} {err}");

    // port-forward to a loopback port kubectl picks.
    let mut forward = tokio::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["port-forward", "pod/web", ":8080", "--address", "127.0.0.1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = forward.stdout.take().context("port-forward stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
    )
    .await
    .context("port-forward printed nothing")??;
    let port = line
        .trim()
        .rsplit_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .context("no local port in the port-forward output")?
        .to_string();
    let page = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .await?;
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    ensure!(
        page.contains("hello-through-port-forward"),
        "port-forward answered {page:?} ({line})"
    );
    forward.kill().await?;

    // Another tenant has no such pod, whatever it names.
    let other = TenantOwner::create(ctx, "streams-other", serde_json::json!({})).await?;
    other.namespace("web").await?;
    let theirs = tenant_kubeconfig(ctx, &other, "web")?;
    let out = tokio::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&theirs)
        .args(["exec", "web", "--", "true"])
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && (err.contains("NotFound") || err.contains("not found")),
        "another tenant's exec: {err}"
    );
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_file(&theirs);
    Ok(())
}

/// Files in arktos-node's image cache that its index does not name (the
/// index itself aside): partial downloads, or images of failed pulls.
fn unindexed_images(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap_or_default())
            .unwrap_or_default();
    let indexed: Vec<String> = index["images"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|image| {
            format!(
                "{}.{}",
                image["id"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("sha256:"),
                image["format"].as_str().unwrap_or_default()
            )
        })
        .collect();
    Ok(std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "index.json" && !indexed.contains(name))
        .collect())
}
