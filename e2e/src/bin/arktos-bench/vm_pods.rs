//! `arktos-bench vm-pods`: VM pod start latency through arktos-node (CRI
//! RunPodSandbox to the guest's boot marker on its console) next to the
//! floor, `virsh create` of the same domain XML; the same with VMs started
//! in parallel; container pod start through arktos-node next to containerd
//! directly; arktos-node's memory and the host memory a VM costs.
//!
//! The kubelet is paused meanwhile: it would kill sandboxes it did not make.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arktos_e2e::bench::{Sample, report};
use arktos_e2e::cluster::LocalCluster;
use arktos_e2e::observe;
use arktos_node::cri_client::CriClient;
use arktos_node::vm::domain::{Accel, DomainSpec};
use arktos_node::vm::shape::VmShape;
use k8s_cri::v1 as cri;

const MARKER: &str = "ARKTOS-GUEST-BOOTED";
const GUEST_MIB: u64 = 256;

pub async fn run(cluster: &mut LocalCluster, runs: usize, parallel: usize) -> anyhow::Result<()> {
    cluster.kill("kubelet")?;
    let result = measure(cluster, runs, parallel).await;
    let _ = cluster.start_again("kubelet");
    result
}

struct Bench {
    node: CriClient,
    containerd: CriClient,
    scratch: PathBuf,
    image: String,
    base: PathBuf,
    accel: Accel,
    registry: String,
}

async fn measure(cluster: &LocalCluster, runs: usize, parallel: usize) -> anyhow::Result<()> {
    let mut bench = Bench::open(cluster).await?;
    let cold = bench.cold_start(cluster).await?;
    let node_pid = cluster
        .pids()
        .into_iter()
        .find(|(n, _)| n == "arktos-node")
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow::anyhow!("arktos-node is not running"))?;
    let rss_idle = observe::rss_kib(node_pid)?;
    bench.one_at_a_time(runs, cold).await?;
    let mut footprint = bench.at_once(parallel, node_pid).await?;
    footprint.node_rss_kib.0 = rss_idle;
    bench.container_pods(runs).await?;
    footprint.print(parallel);
    Ok(())
}

/// What VMs started at once cost their host, and arktos-node's memory
/// (idle, busy).
struct Footprint {
    mem_available_drop_kib: u64,
    /// Resident and guest memory of each QEMU, KiB.
    qemu: Vec<(u64, u64)>,
    idle_millicores: f64,
    node_rss_kib: (u64, u64),
}

impl Footprint {
    fn print(&self, parallel: usize) {
        let per_vm = self.mem_available_drop_kib / parallel.max(1) as u64;
        let n = self.qemu.len().max(1) as u64;
        let qemu_avg = self.qemu.iter().map(|(rss, _)| rss).sum::<u64>() / n;
        let overheads = || self.qemu.iter().map(|(rss, guest)| rss - guest);
        let overhead_avg = overheads().sum::<u64>() / n;
        let overhead_max = overheads().max().unwrap_or(0);
        println!("\nmemory (guest memory {GUEST_MIB} MiB each):");
        println!(
            "  arktos-node resident: {} MiB idle, {} MiB with {parallel} VMs",
            self.node_rss_kib.0 / 1024,
            self.node_rss_kib.1 / 1024
        );
        println!(
            "  host memory per VM (MemAvailable drop / {parallel}): {} MiB; QEMU resident per VM: {} MiB (over {} processes)",
            per_vm / 1024,
            qemu_avg / 1024,
            self.qemu.len()
        );
        println!(
            "  QEMU's own memory (resident outside guest RAM): {} MiB average, {} MiB max: the RuntimeClass overhead",
            overhead_avg / 1024,
            overhead_max / 1024
        );
        println!(
            "  CPU of an idle VM: {:.0} millicores (QEMU, averaged over {parallel} VMs and 10 s)",
            self.idle_millicores
        );
    }
}

impl Bench {
    /// CRI clients of arktos-node and containerd, and the guest image
    /// pulled through arktos-node.
    async fn open(cluster: &LocalCluster) -> anyhow::Result<Self> {
        let paths = cluster.node_paths();
        // Under the node state: QEMU must reach the floor domains' files.
        let scratch = paths.state.join("bench");
        std::fs::create_dir_all(&scratch)?;
        let node = CriClient::connect(paths.runtime_socket())?;
        let containerd = CriClient::connect(paths.containerd_socket())?;
        let image = cluster.vm_image_url("guest.qcow2");
        let pulled = pull(&node, &image).await?;
        let base = paths
            .state
            .join("arktos-node")
            .join("images")
            .join(format!("{}.qcow2", pulled.trim_start_matches("sha256:")));
        Ok(Self {
            node,
            containerd,
            scratch,
            image,
            base,
            accel: Accel::Tcg,
            registry: cluster.registry(),
        })
    }

    /// The first VM on a node whose libvirt has nothing cached (a fresh
    /// host: QEMU's capabilities probed anew); it also settles the
    /// accelerator (KVM proven or TCG for good), which the floor then uses.
    async fn cold_start(&mut self, cluster: &LocalCluster) -> anyhow::Result<Duration> {
        eprintln!(
            "first VM pod with libvirt's caches cold (capabilities cleared, libvirtd restarted)"
        );
        restart_libvirt_cold().await?;
        let cold = self.vm_pod(9999).await?;
        let state = cluster.node_paths().state.join("arktos-node");
        let accel = std::fs::read_to_string(state.join("accel")).unwrap_or_default();
        self.accel = if accel.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        println!(
            "accelerator: {}",
            if self.accel == Accel::Kvm {
                "KVM"
            } else {
                "QEMU TCG (no usable KVM)"
            }
        );
        Ok(cold)
    }

    /// `runs` VM pods one after another, then `runs` virsh create.
    async fn one_at_a_time(&self, runs: usize, cold: Duration) -> anyhow::Result<()> {
        eprintln!("{runs} VM pods one after another, then {runs} virsh create");
        // Sequential runs: latencies are what counts (walls include clean-up).
        let mut vm = Vec::new();
        let mut floor = Vec::new();
        let started = Instant::now();
        for i in 0..runs {
            vm.push(self.vm_pod(i).await?);
            eprint!(".");
        }
        let vm_wall = started.elapsed();
        let warm = sample("vm-start", "warm", vm.clone(), vm_wall).percentile(50.0);
        println!(
            "first VM pod, libvirt caches cold: {:.2} s; warm p50 {:.2} s (x{:.2})",
            cold.as_secs_f64(),
            warm.as_secs_f64(),
            cold.as_secs_f64() / warm.as_secs_f64().max(1e-9)
        );
        let started = Instant::now();
        for i in 0..runs {
            floor.push(self.floor(i).await?);
            eprint!(".");
        }
        let floor_wall = started.elapsed();
        eprintln!();
        report(
            &[
                sample("vm-start", "arktos-node (CRI)", vm, vm_wall),
                sample("vm-start", "virsh create (floor)", floor, floor_wall),
            ],
            "virsh create (floor)",
        );
        Ok(())
    }

    /// `parallel` VM pods at once, what they cost their host once booted
    /// (and arktos-node's memory with them), then `parallel` virsh create at once.
    async fn at_once(&self, parallel: usize, node_pid: u32) -> anyhow::Result<Footprint> {
        eprintln!("{parallel} VM pods at once, then {parallel} virsh create at once");
        let before = mem_available_kib()?;
        let started = Instant::now();
        let (vm, sandboxes) = self.vm_pods_at_once(parallel).await?;
        let vm_wall = started.elapsed();
        // Booted and idle: what the host gave them.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = mem_available_kib()?;
        let qemu: Vec<(u64, u64)> = qemu_pids().into_iter().filter_map(qemu_memory).collect();
        // CPU an idle guest costs its host (timer ticks, under TCG emulated).
        let qemu_cpu = || -> f64 {
            qemu_pids()
                .into_iter()
                .filter_map(|p| observe::cpu_seconds(p).ok())
                .sum()
        };
        let cpu_before = qemu_cpu();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle_millicores = (qemu_cpu() - cpu_before) / 10.0 / parallel.max(1) as f64 * 1000.0;
        let footprint = Footprint {
            mem_available_drop_kib: before.saturating_sub(after),
            qemu,
            idle_millicores,
            node_rss_kib: (0, observe::rss_kib(node_pid)?),
        };
        for id in &sandboxes {
            self.remove_sandbox(&self.node, id).await;
        }
        let (floor, floor_wall) = self.floors_at_once(parallel).await?;
        let operation = format!("vm-start x{parallel}");
        report(
            &[
                sample(&operation, "arktos-node (CRI)", vm, vm_wall),
                sample(&operation, "virsh create (floor)", floor, floor_wall),
            ],
            "virsh create (floor)",
        );
        Ok(footprint)
    }

    /// `runs` container pods through arktos-node, then straight to
    /// containerd.
    async fn container_pods(&self, runs: usize) -> anyhow::Result<()> {
        eprintln!("{runs} container pods through arktos-node, then straight to containerd");
        let mut through = Vec::new();
        let mut direct = Vec::new();
        let started = Instant::now();
        for i in 0..runs {
            through.push(self.container_pod(&self.node, i).await?);
        }
        let through_wall = started.elapsed();
        let started = Instant::now();
        for i in 0..runs {
            direct.push(self.container_pod(&self.containerd, i + runs).await?);
        }
        let direct_wall = started.elapsed();
        report(
            &[
                sample(
                    "pod-start",
                    "arktos-node -> containerd",
                    through,
                    through_wall,
                ),
                sample("pod-start", "containerd (direct)", direct, direct_wall),
            ],
            "containerd (direct)",
        );
        Ok(())
    }
}

fn sample(operation: &str, target: &str, latencies: Vec<Duration>, wall: Duration) -> Sample {
    Sample {
        operation: operation.into(),
        target: target.into(),
        latencies,
        wall,
        errors: 0,
    }
}

/// libvirt as a fresh host has it: no cached QEMU capabilities, libvirtd
/// just started.
async fn restart_libvirt_cold() -> anyhow::Result<()> {
    if let Ok(dir) = std::fs::read_dir("/var/cache/libvirt/qemu/capabilities") {
        for entry in dir.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = exec("pkill", &["-x", "libvirtd"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while exec("pidof", &["libvirtd"]).await.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exec("libvirtd", &["-d"]).await?;
    while exec("virsh", &["-c", "qemu:///system", "uri"])
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "libvirtd did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn mem_available_kib() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no MemAvailable in /proc/meminfo"))
}

/// A QEMU process's resident memory, and the part of it that is guest RAM
/// (its largest mapping, the guest's memory at its maximum size).
fn qemu_memory(pid: u32) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut guest, mut size) = (0u64, 0u64, 0u64);
    let mut largest = 0u64;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("Size:") => size = words.next()?.parse().ok()?,
            Some("Rss:") => {
                let rss: u64 = words.next()?.parse().ok()?;
                total += rss;
                if size > largest {
                    largest = size;
                    guest = rss;
                }
            }
            _ => {}
        }
    }
    Some((total, guest))
}

fn qemu_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("guest=arktos-") {
                pids.push(pid);
            }
        }
    }
    pids
}

async fn wait_for_marker(file: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::fs::read(file)
            .await
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains(MARKER))
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {MARKER} in {} within {timeout:?}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Bench {
    fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-{}", std::process::id()),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.scratch.join(name).display().to_string(),
            linux: Some(Default::default()),
            ..Default::default()
        }
    }

    async fn remove_sandbox(&self, client: &CriClient, id: &str) {
        let _ = client
            .runtime()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
        let _ = client
            .runtime()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
    }

    /// RunPodSandbox -> CreateContainer -> StartContainer -> the marker in
    /// the CRI log; returns the time and the sandbox (still running).
    async fn start_vm_pod(&self, i: usize) -> anyhow::Result<(Duration, String)> {
        let name = format!("benchvm{i}");
        let config = self.pod_config(&name);
        let log = self.scratch.join(&name).join("vm.log");
        let _ = std::fs::remove_file(&log);
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "vm".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            log_path: "vm.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 100_000,
                    memory_limit_in_bytes: (GUEST_MIB * 1024 * 1024) as i64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let started = Instant::now();
        let sandbox = start_pod(&self.node, "arktos-vm", config, container).await?;
        wait_for_marker(&log, Duration::from_secs(180)).await?;
        Ok((started.elapsed(), sandbox))
    }

    async fn vm_pod(&self, i: usize) -> anyhow::Result<Duration> {
        let (took, sandbox) = self.start_vm_pod(i).await?;
        self.remove_sandbox(&self.node, &sandbox).await;
        Ok(took)
    }

    async fn vm_pods_at_once(&self, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<String>)> {
        let results = futures::future::join_all((0..n).map(|i| self.start_vm_pod(1000 + i))).await;
        let mut took = Vec::new();
        let mut sandboxes = Vec::new();
        for r in results {
            let (d, s) = r?;
            took.push(d);
            sandboxes.push(s);
        }
        Ok((took, sandboxes))
    }

    /// The same domain XML arktos-node defines, disk overlay, seed and tap
    /// prepared beforehand; timed from `virsh create` to the marker.
    async fn prepare_floor(&self, i: usize) -> anyhow::Result<(PathBuf, PathBuf, String)> {
        let dir = self.scratch.join(format!("floor{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let disk = dir.join("disk.qcow2");
        let seed = dir.join("seed.iso");
        let console = dir.join("console.raw");
        exec(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                &self.base.display().to_string(),
                &disk.display().to_string(),
            ],
        )
        .await?;
        std::fs::write(
            dir.join("meta-data"),
            format!("instance-id: floor{i}\nlocal-hostname: floor{i}\n"),
        )?;
        std::fs::write(dir.join("user-data"), "")?;
        exec(
            "genisoimage",
            &[
                "-quiet",
                "-output",
                &seed.display().to_string(),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                &dir.join("meta-data").display().to_string(),
                &dir.join("user-data").display().to_string(),
            ],
        )
        .await?;
        let tap = format!("akfl{}{i}", std::process::id() % 1000);
        let _ = exec("ip", &["link", "del", &tap]).await;
        exec("ip", &["tuntap", "add", "dev", &tap, "mode", "tap"]).await?;
        let spec = DomainSpec {
            container_id: format!("floor-{}-{i}", std::process::id()),
            sandbox_id: "floor".into(),
            accel: self.accel,
            shape: VmShape {
                vcpus: 1,
                max_vcpus: 4,
                memory_mib: GUEST_MIB,
                max_memory_mib: 1024,
            },
            disk,
            seed,
            tap: tap.clone(),
            mac: format!("52:54:00:00:{:02x}:{:02x}", (i >> 8) & 255, i & 255),
            console: console.clone(),
        };
        let xml = dir.join("domain.xml");
        std::fs::write(&xml, spec.to_xml())?;
        Ok((
            xml,
            console,
            format!(
                "{}|{tap}",
                arktos_node::vm::domain::domain_name(&spec.container_id)
            ),
        ))
    }

    async fn boot_floor(xml: &Path, console: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        exec(
            "virsh",
            &["-c", "qemu:///system", "create", &xml.display().to_string()],
        )
        .await?;
        wait_for_marker(console, Duration::from_secs(180)).await?;
        Ok(started.elapsed())
    }

    async fn clean_floor(handle: &str) {
        let (domain, tap) = handle.split_once('|').unwrap_or((handle, ""));
        let _ = exec("virsh", &["-c", "qemu:///system", "destroy", domain]).await;
        let _ = exec("ip", &["link", "del", tap]).await;
    }

    async fn floor(&self, i: usize) -> anyhow::Result<Duration> {
        let (xml, console, handle) = self.prepare_floor(i).await?;
        let took = Self::boot_floor(&xml, &console).await;
        Self::clean_floor(&handle).await;
        took
    }

    /// The boot times, and the wall time of the boots alone.
    async fn floors_at_once(&self, n: usize) -> anyhow::Result<(Vec<Duration>, Duration)> {
        let mut prepared = Vec::new();
        for i in 0..n {
            prepared.push(self.prepare_floor(1000 + i).await?);
        }
        let started = Instant::now();
        let results = futures::future::join_all(
            prepared
                .iter()
                .map(|(xml, console, _)| Self::boot_floor(xml, console)),
        )
        .await;
        let wall = started.elapsed();
        for (_, _, handle) in &prepared {
            Self::clean_floor(handle).await;
        }
        Ok((results.into_iter().collect::<anyhow::Result<_>>()?, wall))
    }

    /// RunPodSandbox -> CreateContainer -> StartContainer of a shell
    /// container (image pulled beforehand), timed until StartContainer
    /// returns.
    async fn container_pod(&self, client: &CriClient, i: usize) -> anyhow::Result<Duration> {
        let image = format!("{}/arktos/bash:5", self.registry);
        pull(client, &image).await?;
        let config = self.pod_config(&format!("benchctr{i}"));
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "shell".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image,
                ..Default::default()
            }),
            command: vec!["/bin/sleep".into(), "600".into()],
            log_path: "shell.log".into(),
            linux: Some(Default::default()),
            ..Default::default()
        };
        let started = Instant::now();
        let sandbox = start_pod(client, "", config, container).await?;
        let took = started.elapsed();
        self.remove_sandbox(client, &sandbox).await;
        Ok(took)
    }
}

/// PullImage; returns the image's reference (its ID).
async fn pull(client: &CriClient, image: &str) -> anyhow::Result<String> {
    Ok(client
        .image()
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .image_ref)
}

/// RunPodSandbox, CreateContainer, StartContainer: what the kubelet does
/// to start a pod. Returns the sandbox.
async fn start_pod(
    client: &CriClient,
    handler: &str,
    config: cri::PodSandboxConfig,
    container: cri::ContainerConfig,
) -> anyhow::Result<String> {
    let rt = client.runtime();
    let sandbox = rt
        .clone()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let container_id = rt
        .clone()
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await?
        .into_inner()
        .container_id;
    rt.clone()
        .start_container(cri::StartContainerRequest { container_id })
        .await?;
    Ok(sandbox)
}

async fn exec(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
