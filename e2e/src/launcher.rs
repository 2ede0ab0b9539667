//! The `arktos-local` command: `up` starts a cluster in the background and
//! returns once it is ready, `down` stops it, `status` describes it, `run`
//! keeps one in the foreground until interrupted.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cluster::leftovers::{Leftovers, Owner};
use crate::cluster::{ClusterSpec, LocalCluster, Ports};
use crate::home::ArktosHome;
use crate::upstream::Upstream;

#[derive(Debug, Parser)]
#[command(
    name = "arktos-local",
    version,
    about = "Local Kubernetes clusters of real upstream components for Arktos",
    long_about = "Starts etcd, kube-apiserver (with the aggregation layer configured), \
kube-controller-manager, kube-scheduler and KWOK-simulated nodes as plain processes, \
built from the Kubernetes release pinned in e2e/upstream/go.mod. State lives in \
$ARKTOS_HOME/clusters/<name> (default ~/.cache/arktos)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a cluster in the background and return once it is ready.
    Up(UpArgs),
    /// Run a cluster in the foreground until SIGINT/SIGTERM.
    Run(ClusterArgs),
    /// Stop a cluster started with `up`, and every process it started.
    Down(NameArg),
    /// Tell whether a cluster runs, its processes, ports and kubeconfig.
    Status(NameArg),
    /// Print the path of a cluster's admin kubeconfig.
    Kubeconfig(NameArg),
    /// Build (or find already built) the pinned upstream components.
    Build,
    /// Run critest (the CRI validation suite) against the real node's
    /// runtime on a cluster of its own; arguments after `--` go to critest
    /// (e.g. `-- -ginkgo.focus=PodSandbox`).
    Critest(CritestArgs),
}

#[derive(Debug, Args)]
struct CritestArgs {
    /// The runtime critest talks to.
    #[arg(long, value_enum, default_value = "arktos-node")]
    target: crate::critest::Target,
    /// The runtime handler of critest's pod sandboxes (`arktos-vm` for VMs).
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// Passed to critest as they are.
    #[arg(last = true)]
    critest_args: Vec<String>,
}

#[derive(Debug, Args)]
struct NameArg {
    /// Cluster name; its state lives in $ARKTOS_HOME/clusters/<name>.
    #[arg(long, default_value = "default")]
    name: String,
}

#[derive(Debug, Args, Clone)]
struct ClusterArgs {
    #[arg(long, default_value = "default")]
    name: String,
    /// Number of simulated (KWOK) nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// First of the 20 consecutive ports the cluster uses (kube-apiserver
    /// listens on it). Give clusters bases 20 apart to run them at once.
    #[arg(long, default_value_t = 6443)]
    port_base: u16,
    /// Seconds to wait for each component to become ready.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Tenant partitions: 1 is the cluster alone; each more is a control
    /// plane of its own (etcd, kube-apiserver, kcm, scheduler, KWOK nodes)
    /// on the next 20 ports, registered as Partition `p2`, `p3`, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    partitions: u16,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Seconds to wait for the whole cluster, first build included.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// What a running launcher records about itself.
#[derive(Debug, Serialize, Deserialize)]
struct LauncherState {
    pid: u32,
    ports: Ports,
    nodes: u32,
    kubeconfig: PathBuf,
    components: Vec<(String, u32)>,
    /// The extra partitions and their ports.
    #[serde(default)]
    partitions: Vec<(String, Ports)>,
}

pub fn init_tracing() {
    // Connection errors while waiting for a component to come up are
    // expected; kube's client builder logs each at ERROR.
    arktos_crds::logging::init(false, "info,kube_client::client::builder=off");
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let home = ArktosHome::from_env();
    match cli.command {
        Cmd::Up(args) => up(&home, args),
        Cmd::Run(args) => run_foreground(&home, args),
        Cmd::Down(NameArg { name }) => down(&home, &name),
        Cmd::Status(NameArg { name }) => status(&home, &name),
        Cmd::Kubeconfig(NameArg { name }) => {
            println!("{}", home.cluster_dir(&name).join("kubeconfig").display());
            Ok(())
        }
        Cmd::Critest(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let code = runtime.block_on(crate::critest::run(
                args.target,
                &args.runtime_handler,
                &args.critest_args,
            ))?;
            std::process::exit(code);
        }
        Cmd::Build => {
            let upstream = Upstream::ensure(&home)?;
            let kubectl = upstream.link_kubectl(&home)?;
            println!("{}", upstream.dir().display());
            eprintln!("kubectl: {}", kubectl.display());
            Ok(())
        }
    }
}

fn spec(home: &ArktosHome, args: &ClusterArgs) -> ClusterSpec {
    let mut spec = ClusterSpec::new(&args.name, home.clone(), Ports::new(args.port_base));
    spec.nodes = args.nodes;
    spec.ready_timeout = Duration::from_secs(args.ready_timeout);
    spec
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("launcher.json")
}

fn read_state(dir: &Path) -> Option<LauncherState> {
    let text = std::fs::read_to_string(state_file(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// The recorded launcher, if it still runs.
fn running(dir: &Path) -> Option<LauncherState> {
    read_state(dir).filter(|state| alive(state.pid))
}

fn up(home: &ArktosHome, args: UpArgs) -> anyhow::Result<()> {
    let spec = spec(home, &args.cluster);
    let dir = spec.dir();
    if let Some(state) = running(&dir) {
        eprintln!(
            "cluster {:?} is already running (launcher pid {})",
            spec.name, state.pid
        );
        print_next_steps(home, &spec.name, &state);
        return Ok(());
    }
    // Build in the foreground so its progress shows here.
    let upstream = Upstream::ensure(home)?;
    upstream.link_kubectl(home)?;
    spec.ports.check_free()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(state_file(&dir));
    let log_path = dir.join("launcher.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = spawn_background_launcher(&args, log)?;
    eprintln!(
        "starting cluster {:?} in the background (launcher pid {}, log {})",
        spec.name,
        child.id(),
        log_path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut progress = LogFollower::open(&log_path)?;
    loop {
        progress.show_new_lines()?;
        if let Some(state) = read_state(&dir).filter(|s| s.pid == child.id()) {
            print_next_steps(home, &spec.name, &state);
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the launcher exited ({status}) before the cluster was ready; see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            bail!(
                "the cluster was not ready within {}s; see {}",
                args.timeout,
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `arktos-local run` with the same cluster flags, in the background,
/// writing to `log`.
fn spawn_background_launcher(
    args: &UpArgs,
    log: std::fs::File,
) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    Command::new(std::env::current_exe()?)
        .arg("run")
        .args(["--name", &args.cluster.name])
        .args(["--nodes", &args.cluster.nodes.to_string()])
        .args(["--port-base", &args.cluster.port_base.to_string()])
        .args(["--ready-timeout", &args.cluster.ready_timeout.to_string()])
        .args(["--partitions", &args.cluster.partitions.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal later must
        // not reach the background cluster.
        .process_group(0)
        .spawn()
        .context("starting the background launcher")
}

/// The background launcher's log, read as it grows: its progress lines
/// and errors are shown here.
struct LogFollower {
    reader: BufReader<std::fs::File>,
    offset: u64,
}

impl LogFollower {
    fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            reader: BufReader::new(std::fs::File::open(path)?),
            offset: 0,
        })
    }

    fn show_new_lines(&mut self) -> anyhow::Result<()> {
        self.reader.seek(SeekFrom::Start(self.offset))?;
        let mut line = String::new();
        while self.reader.read_line(&mut line)? > 0 {
            // A line still being written is read again next time.
            if line.ends_with('\n') {
                self.offset += line.len() as u64;
                if line.starts_with('[') || line.contains("ERROR") || line.starts_with("error") {
                    eprint!("  {line}");
                }
            }
            line.clear();
            self.reader.seek(SeekFrom::Start(self.offset))?;
        }
        Ok(())
    }
}

fn print_next_steps(home: &ArktosHome, name: &str, state: &LauncherState) {
    let kubectl = home.bin_dir().join("kubectl");
    let partitions: String = state
        .partitions
        .iter()
        .map(|(partition, ports)| {
            format!(
                "\n  partition {partition}: kube-apiserver https://127.0.0.1:{}",
                ports.apiserver()
            )
        })
        .collect();
    println!(
        "\nLocal cluster {name:?} is up: kube-apiserver https://127.0.0.1:{}, {} simulated nodes.{partitions}\n\
         \n  kubeconfig: {}\n  kubectl:    {}\n\nNext:\n  export KUBECONFIG={}\n  {} get nodes\n\
         \nStop it with `hack/down` (or `arktos-local down --name {name}`); logs are in {}.",
        state.ports.apiserver(),
        state.nodes,
        state.kubeconfig.display(),
        kubectl.display(),
        state.kubeconfig.display(),
        kubectl.display(),
        home.cluster_dir(name).join("logs").display(),
    );
}

fn run_foreground(home: &ArktosHome, args: ClusterArgs) -> anyhow::Result<()> {
    let spec = spec(home, &args);
    let dir = spec.dir();
    if let Some(state) = running(&dir) {
        bail!(
            "cluster {:?} is already running (launcher pid {})",
            spec.name,
            state.pid
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut cluster = tokio::select! {
            cluster = start_with_partitions(spec.clone(), args.partitions) => cluster?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted while starting"),
            _ = terminate.recv() => bail!("terminated while starting"),
        };
        let state = LauncherState {
            pid: std::process::id(),
            ports: spec.ports,
            nodes: spec.nodes,
            kubeconfig: cluster.kubeconfig_path(),
            components: cluster.pids(),
            partitions: cluster
                .partitions()
                .map(|(name, p)| (name.to_string(), p.spec().ports))
                .collect(),
        };
        std::fs::write(state_file(&dir), serde_json::to_string_pretty(&state)?)?;
        tracing::info!(cluster = %spec.name, kubeconfig = %state.kubeconfig.display(), "cluster ready");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break Ok(()),
                _ = terminate.recv() => break Ok(()),
                _ = tick.tick() => {
                    if let Err(err) = cluster.check_running() {
                        tracing::error!(error = %err, "a component died; stopping the cluster");
                        break Err(anyhow::Error::from(err));
                    }
                }
            }
        };
        tracing::info!(cluster = %spec.name, "stopping");
        cluster.stop();
        let _ = std::fs::remove_file(state_file(&dir));
        tracing::info!(cluster = %spec.name, "stopped");
        outcome
    })
}

/// The cluster, then its extra partitions `p2`, `p3`, ... on the port
/// ranges after its own.
async fn start_with_partitions(spec: ClusterSpec, partitions: u16) -> anyhow::Result<LocalCluster> {
    let base = spec.ports.base;
    let nodes = spec.nodes;
    let mut cluster = LocalCluster::start(spec).await?;
    for n in 2..=partitions {
        let ports = Ports::new(base + (n - 1) * crate::cluster::RESERVED_PORTS);
        cluster
            .add_partition(&format!("p{n}"), ports, nodes)
            .await?;
    }
    Ok(cluster)
}

fn down(home: &ArktosHome, name: &str) -> anyhow::Result<()> {
    let dir = home.cluster_dir(name);
    let Some(state) = running(&dir) else {
        eprintln!("cluster {name:?} is not running");
        let _ = std::fs::remove_file(state_file(&dir));
        sweep_stopped();
        return Ok(());
    };
    let launcher = Pid::from_raw(state.pid as i32);
    kill(launcher, Signal::SIGTERM).context("signalling the launcher")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while alive(state.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(state.pid) {
        // Its components die with it (see cluster::process).
        let _ = kill(launcher, Signal::SIGKILL);
    }
    let leftover: Vec<_> = state
        .components
        .iter()
        .filter(|(_, pid)| alive(*pid))
        .collect();
    for (_, pid) in &leftover {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(state_file(&dir));
    eprintln!("cluster {name:?} stopped");
    sweep_stopped();
    Ok(())
}

/// Removes what stopped clusters' real nodes left on the host.
fn sweep_stopped() {
    let left = Leftovers::find(&Owner::Stopped);
    if !left.is_empty() {
        eprintln!("removing what stopped clusters left behind: {left}");
        left.remove();
    }
}

fn status(home: &ArktosHome, name: &str) -> anyhow::Result<()> {
    let left = Leftovers::find(&Owner::Stopped);
    if !left.is_empty() {
        println!(
            "left behind by stopped clusters (removed by the next start or `arktos-local down`): {left}"
        );
    }
    let dir = home.cluster_dir(name);
    let Some(state) = running(&dir) else {
        println!("cluster {name:?}: not running");
        return Ok(());
    };
    println!("cluster {name:?}: running (launcher pid {})", state.pid);
    println!("  kubeconfig: {}", state.kubeconfig.display());
    println!(
        "  kube-apiserver: https://127.0.0.1:{}",
        state.ports.apiserver()
    );
    for (partition, ports) in &state.partitions {
        println!(
            "  partition {partition}: kube-apiserver https://127.0.0.1:{}",
            ports.apiserver()
        );
    }
    for (component, pid) in &state.components {
        let mark = if alive(*pid) { "running" } else { "EXITED" };
        println!("  {component:<32} pid {pid:<8} {mark}");
    }
    Ok(())
}
