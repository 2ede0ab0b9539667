//! `arktos-bench vm-actions`: how long VM operations take through the
//! tenant gateway, from the request to the moment the cluster reports them
//! done (an Action's phase Succeeded; the pod's `virtualMachineStatus` for
//! resize and hot-plug), next to the floor where there is one: the same
//! libvirt operation on the same domain with `virsh`.

use std::time::{Duration, Instant};

use arktos_e2e::bench::{Sample, report};
use arktos_e2e::cluster::LocalCluster;
use serde_json::{Value, json};

const TENANT: &str = "vmbench";
const OWNER: &str = "vmbench-owner";
const NAMESPACE: &str = "vms";
const POD: &str = "vm";
const GATEWAY: &str = "through the tenant gateway";
const FLOOR: &str = "virsh direct";
/// Longest wait for any one operation.
const PATIENCE: Duration = Duration::from_secs(120);

struct Bench {
    client: kube::Client,
    samples: Vec<Sample>,
}

fn sample(operation: &str, target: &str, latencies: Vec<Duration>, errors: usize) -> Sample {
    let wall = latencies.iter().sum();
    Sample {
        operation: operation.into(),
        target: target.into(),
        latencies,
        wall,
        errors,
    }
}

impl Bench {
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        content_type: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        Ok(arktos_e2e::api::request_json(&self.client, method, path, content_type, body).await??)
    }

    async fn pod(&self) -> anyhow::Result<Value> {
        self.call(
            http::Method::GET,
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}"),
            "",
            Value::Null,
        )
        .await
    }

    async fn log(&self) -> String {
        let request = http::Request::get(format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}/log"))
            .body(Vec::new())
            .expect("a request");
        self.client.request_text(request).await.unwrap_or_default()
    }

    async fn wait_pod(
        &self,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if self.pod().await.is_ok_and(|p| check(&p)) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{what}: not within {PATIENCE:?}")
    }

    async fn wait_boots(&self, boots: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if self.log().await.matches("ARKTOS-GUEST-STATE").count() > 0
                && self.log().await.matches("ARKTOS-GUEST-BOOTED").count() >= boots
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("the guest did not boot {boots} times")
    }

    /// POSTs an Action and times it until Succeeded.
    async fn act(&self, body: Value) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let created = self
            .call(
                http::Method::POST,
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}/action"),
                "application/json",
                body,
            )
            .await?;
        let name = created["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let path = format!("/apis/vm.arktos.io/v1alpha1/namespaces/{NAMESPACE}/actions/{name}");
        while started.elapsed() < PATIENCE {
            let action = self.call(http::Method::GET, &path, "", Value::Null).await?;
            match action["status"]["phase"].as_str() {
                Some("Succeeded") => return Ok(started.elapsed()),
                Some("Failed") => {
                    anyhow::bail!("action {name} failed: {}", action["status"]["message"])
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        anyhow::bail!("action {name} did not finish")
    }

    /// PATCHes the VM pod and times it until `check` holds.
    async fn patch_until(
        &self,
        patch: Value,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.call(
            http::Method::PATCH,
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}"),
            "application/merge-patch+json",
            patch,
        )
        .await?;
        self.wait_pod("the patch is carried out", check).await?;
        Ok(started.elapsed())
    }
}

async fn virsh(args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = tokio::process::Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "virsh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(started.elapsed())
}

fn status(pod: &Value) -> &Value {
    &pod["status"]["virtualMachineStatus"]
}

pub async fn run(cluster: &LocalCluster, runs: usize) -> anyhow::Result<()> {
    let client = crate::tenant_pods::tenant_owner(cluster, TENANT, OWNER, "").await?;
    let mut bench = Bench {
        client,
        samples: Vec::new(),
    };
    bench
        .call(
            http::Method::POST,
            "/api/v1/namespaces",
            "application/json",
            json!({"metadata": {"name": NAMESPACE}}),
        )
        .await?;
    bench
        .call(
            http::Method::POST,
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            "application/json",
            json!({"metadata": {"name": POD}, "spec": {"terminationGracePeriodSeconds": 5, "virtualMachine": {
                "name": "vm", "image": "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img",
                "resources": {"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}}}}),
        )
        .await?;
    eprintln!("[1/4] waiting for the VM pod");
    bench
        .wait_pod("the VM pod runs", |p| status(p)["state"] == "Running")
        .await?;
    bench.wait_boots(1).await?;
    let domain = format!(
        "arktos-{}",
        status(&bench.pod().await?)["virtualMachineID"]
            .as_str()
            .and_then(|id| id.split("://").nth(1))
            .unwrap_or_default()
    );
    let mut boots = 1;
    actions(&mut bench, runs, &mut boots).await?;
    resize_and_hot_plug(&mut bench, runs).await?;
    virsh_floor(&mut bench, cluster, &domain, runs, &mut boots).await?;
    println!();
    report(&bench.samples, FLOOR);
    println!(
        "\nTimes through the gateway run from the request to the cluster saying it is done: an Action's phase Succeeded, or the pod's virtualMachineStatus (the node agent's report) showing the change. The floor is the virsh command alone. stop, start, restore, NIC plug and vCPU have no floor here (they need the pod's network plumbing around the libvirt call)."
    );
    Ok(())
}

/// Each Action `runs` times through the gateway; `boots` counts the
/// guest's boots so far.
async fn actions(bench: &mut Bench, runs: usize, boots: &mut usize) -> anyhow::Result<()> {
    eprintln!("[2/4] {runs} runs of each Action through the gateway");
    let mut latencies: Vec<(&str, Vec<Duration>)> =
        ["reboot", "snapshot", "restore", "stop", "start"]
            .into_iter()
            .map(|op| (op, Vec::new()))
            .collect();
    for run in 0..runs {
        let timed = [
            bench.act(json!({"spec": {"reboot": {}}})).await?,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        ];
        *boots += 1;
        bench.wait_boots(*boots).await?;
        let snapshot = bench
            .act(json!({"spec": {"snapshot": {"name": format!("s{run}")}}}))
            .await?;
        let restore = bench
            .act(json!({"spec": {"restore": {"snapshot": format!("s{run}")}}}))
            .await?;
        let stop = bench.act(json!({"spec": {"stop": {}}})).await?;
        let start = bench.act(json!({"spec": {"start": {}}})).await?;
        *boots += 1;
        bench.wait_boots(*boots).await?;
        for (i, d) in [timed[0], snapshot, restore, stop, start]
            .into_iter()
            .enumerate()
        {
            latencies[i].1.push(d);
        }
        eprintln!("  run {}/{runs} done", run + 1);
    }
    for (op, l) in latencies {
        bench.samples.push(sample(op, GATEWAY, l, 0));
    }
    Ok(())
}

/// Live resize and NIC and disk hot-plug `runs` times through the gateway.
async fn resize_and_hot_plug(bench: &mut Bench, runs: usize) -> anyhow::Result<()> {
    eprintln!("[3/4] {runs} runs of live resize and hot-plug through the gateway");
    let mut resize_up = Vec::new();
    let mut resize_down = Vec::new();
    let mut disk_in = Vec::new();
    let mut disk_out = Vec::new();
    let mut nic_in = Vec::new();
    let mut nic_out = Vec::new();
    let size = |cpu: &str, memory: &str| {
        json!({"spec": {"virtualMachine": {"resources": {
            "limits": {"cpu": cpu, "memory": memory}, "requests": {"cpu": "100m", "memory": memory}}}}})
    };
    for run in 0..runs {
        resize_up.push(
            bench
                .patch_until(size("1", "512Mi"), |p| status(p)["memoryMiB"] == 512)
                .await?,
        );
        resize_down.push(
            bench
                .patch_until(size("1", "256Mi"), |p| status(p)["memoryMiB"] == 256)
                .await?,
        );
        let disk = format!("d{run}");
        disk_in.push(
            bench
                .patch_until(json!({"spec": {"virtualMachine": {"disks": [{"name": disk, "size": "64Mi"}]}}}), |p| {
                    status(p)["disks"] == json!([disk])
                })
                .await?,
        );
        disk_out.push(
            bench
                .patch_until(json!({"spec": {"virtualMachine": {"disks": null}}}), |p| {
                    status(p)["disks"] == json!([])
                })
                .await?,
        );
        nic_in.push(
            bench
                .patch_until(
                    json!({"spec": {"nics": [{"name": "eth0"}, {"name": "eth1"}]}}),
                    |p| status(p)["nics"] == json!(["eth1"]),
                )
                .await?,
        );
        nic_out.push(
            bench
                .patch_until(json!({"spec": {"nics": [{"name": "eth0"}]}}), |p| {
                    status(p)["nics"] == json!([])
                })
                .await?,
        );
        eprintln!("  run {}/{runs} done", run + 1);
    }
    // One vCPU more, once: the test guest cannot give a vCPU back.
    let vcpu = bench
        .patch_until(size("2", "256Mi"), |p| status(p)["vcpus"] == 2)
        .await?;
    for (op, l) in [
        ("memory+", resize_up),
        ("memory-", resize_down),
        ("disk+", disk_in),
        ("disk-", disk_out),
        ("nic+", nic_in),
        ("nic-", nic_out),
        ("vcpu+", vec![vcpu]),
    ] {
        bench.samples.push(sample(op, GATEWAY, l, 0));
    }
    Ok(())
}

/// The same libvirt operations with virsh on `domain`, `runs` times.
async fn virsh_floor(
    bench: &mut Bench,
    cluster: &LocalCluster,
    domain: &str,
    runs: usize,
    boots: &mut usize,
) -> anyhow::Result<()> {
    eprintln!("[4/4] the floor: the same libvirt operations with virsh on the same domain");
    let mut floor: Vec<(&str, Vec<Duration>)> =
        ["reboot", "snapshot", "memory+", "memory-", "disk+", "disk-"]
            .into_iter()
            .map(|op| (op, Vec::new()))
            .collect();
    let scratch = cluster.node_paths().state.join("bench");
    std::fs::create_dir_all(&scratch)?;
    for run in 0..runs {
        floor[0].1.push(virsh(&["reset", domain]).await?);
        *boots += 1;
        bench.wait_boots(*boots).await?;
        floor[1].1.push(
            virsh(&[
                "snapshot-create-as",
                "--atomic",
                "--domain",
                domain,
                "--name",
                &format!("floor{run}"),
            ])
            .await?,
        );
        floor[2]
            .1
            .push(virsh(&["setmem", domain, "512M", "--live"]).await?);
        floor[3]
            .1
            .push(virsh(&["setmem", domain, "256M", "--live"]).await?);
        let file = scratch.join(format!("floor{run}.qcow2"));
        let created = tokio::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&file)
            .arg("64M")
            .status()
            .await?;
        anyhow::ensure!(created.success(), "qemu-img create failed");
        let started = Instant::now();
        virsh(&[
            "attach-disk",
            domain,
            &file.to_string_lossy(),
            "vdz",
            "--subdriver",
            "qcow2",
            "--live",
        ])
        .await?;
        floor[4].1.push(started.elapsed());
        let started = Instant::now();
        virsh(&["detach-disk", domain, "vdz", "--live"]).await?;
        // Done when the guest has let go, as for the gateway.
        while tokio::process::Command::new("virsh")
            .args(["-c", "qemu:///system", "domblklist", domain])
            .output()
            .await
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("vdz"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        floor[5].1.push(started.elapsed());
        let _ = std::fs::remove_file(&file);
    }
    for (op, l) in floor {
        bench.samples.push(sample(op, FLOOR, l, 0));
    }
    Ok(())
}
