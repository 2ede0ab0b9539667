//! What a local cluster's real node can leave on the host: libvirt domains
//! (QEMU is libvirtd's child, so no parent-death signal reaches it, and a
//! call libvirt was still busy with can start one after the node stopped),
//! network namespaces, taps, the pod bridge, the node address on `lo`,
//! kubelet mounts and folders.
//!
//! A running cluster holds `/run/arktos/<name>/node.lock` (an advisory lock
//! that dies with its holder, however it dies). Whatever belongs to a
//! cluster whose lock nobody holds is left over: `arktos-local status` lists
//! it, and the next start (or `arktos-local down`) removes it. A stopping
//! cluster removes its own.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arktos_node::vm::domain::DOMAIN_PREFIX;
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, IoContext, Result};

/// Where real nodes keep their state (QEMU must reach it).
pub const STATE_ROOT: &str = "/var/lib/arktos";
/// Where real nodes keep sockets and the cluster's lock.
pub const RUN_ROOT: &str = "/run/arktos";
const LOCK_FILE: &str = "node.lock";
const BASE_FILE: &str = "port-base";
/// In a node's state folder: remove the folder once the cluster is gone.
const EPHEMERAL_MARK: &str = ".ephemeral";
/// Tap devices of VM pods in the host namespace (see `network::tap_name`).
const TAP_PREFIX: &str = "ak";
const BRIDGE_PREFIX: &str = "akbr";

/// The network namespace prefix of a cluster's node: its VM pods'
/// namespaces carry the cluster's name, so they can be told apart.
pub fn netns_prefix(cluster: &str) -> String {
    format!("arktos-{cluster}-")
}

/// Held while a cluster with a real node runs.
#[derive(Debug)]
pub struct NodeLock {
    _lock: Flock<File>,
}

impl NodeLock {
    /// Takes the cluster's lock, recording its port base (which names its
    /// bridge and node address); fails when the cluster runs already.
    pub fn take(cluster: &str, base: u16, ephemeral: bool) -> Result<Self> {
        let run = Path::new(RUN_ROOT).join(cluster);
        let state = Path::new(STATE_ROOT).join(cluster);
        for dir in [&run, &state] {
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::create(run.join(LOCK_FILE)).context(|| "creating the node lock".into())?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            Error::Node(format!(
                "cluster {cluster:?} runs already (its node lock is held)"
            ))
        })?;
        std::fs::write(run.join(BASE_FILE), base.to_string())
            .context(|| "recording the port base".into())?;
        if ephemeral {
            std::fs::write(state.join(EPHEMERAL_MARK), "")
                .context(|| "marking the node state ephemeral".into())?;
        }
        Ok(Self { _lock: lock })
    }
}

/// Clusters whose lock is held, with their port bases.
fn live_clusters() -> HashMap<String, u16> {
    let mut live = HashMap::new();
    for name in dir_names(Path::new(RUN_ROOT)) {
        let dir = Path::new(RUN_ROOT).join(&name);
        let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
            continue;
        };
        if Flock::lock(file, FlockArg::LockSharedNonblock).is_err() {
            let base = std::fs::read_to_string(dir.join(BASE_FILE))
                .ok()
                .and_then(|b| b.trim().parse().ok())
                .unwrap_or(0);
            live.insert(name, base);
        }
    }
    live
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster a domain belongs to: its disks live in the node's state.
pub fn cluster_of_domain(xml: &str) -> Option<String> {
    let root = format!("{STATE_ROOT}/");
    let rest = &xml[xml.find(&root)? + root.len()..];
    let name = &rest[..rest.find(['/', '\'', '"'])?];
    (!name.is_empty()).then(|| name.to_string())
}

/// The cluster a VM pod's network namespace belongs to
/// (`arktos-<cluster>-<16 hex digits>`).
pub fn cluster_of_netns(netns: &str) -> Option<String> {
    let (cluster, sandbox) = netns.strip_prefix("arktos-")?.rsplit_once('-')?;
    let hex = sandbox.len() == 16 && sandbox.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && !cluster.is_empty()).then(|| cluster.to_string())
}

/// The port base a bridge (`akbr<base>`) or node address (`10.255.h.l`)
/// was made for (see `NodeNet::for_base`).
pub fn base_of_bridge(name: &str) -> Option<u16> {
    name.strip_prefix(BRIDGE_PREFIX)?.parse().ok()
}

pub fn base_of_address(cidr: &str) -> Option<u16> {
    let ip: std::net::Ipv4Addr = cidr.strip_suffix("/32")?.parse().ok()?;
    let [a, b, h, l] = ip.octets();
    ((a, b) == (10, 255)).then_some(u16::from_be_bytes([h, l]))
}

/// Whose leftovers to look for.
#[derive(Clone, Debug)]
pub enum Owner {
    /// Every cluster whose lock nobody holds.
    Stopped,
    /// One cluster, which its caller is stopping.
    Cluster { name: String, base: u16 },
}

impl Owner {
    fn owns(&self, live: &HashMap<String, u16>, cluster: &str) -> bool {
        match self {
            Owner::Stopped => !live.contains_key(cluster),
            Owner::Cluster { name, .. } => name == cluster,
        }
    }

    fn owns_base(&self, live: &HashMap<String, u16>, base: u16) -> bool {
        match self {
            Owner::Stopped => !live.values().any(|b| *b == base),
            Owner::Cluster { base: own, .. } => *own == base,
        }
    }
}

/// Leftovers found on the host.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub domains: Vec<String>,
    pub netns: Vec<String>,
    pub taps: Vec<String>,
    pub bridges: Vec<String>,
    pub addresses: Vec<String>,
    /// Node state of ephemeral clusters, and run folders.
    pub folders: Vec<PathBuf>,
}

impl Leftovers {
    /// Looks for what `owner` left: with `Owner::Cluster`, everything of that
    /// cluster (its state folder only if it is ephemeral).
    pub fn find(owner: &Owner) -> Self {
        let live = live_clusters();
        let mut found = Self::default();
        let all_domains = lines(
            "virsh",
            &["-c", "qemu:///system", "list", "--all", "--name"],
        );
        let mut kept_domains = Vec::new();
        for domain in all_domains.iter().filter(|d| d.starts_with(DOMAIN_PREFIX)) {
            let xml = virsh(&["dumpxml", domain]).join("\n");
            match cluster_of_domain(&xml) {
                Some(c) if owner.owns(&live, &c) => found.domains.push(domain.clone()),
                _ => kept_domains.push(domain.clone()),
            }
        }
        for netns in lines("ip", &["netns", "list"]) {
            let name = netns
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if cluster_of_netns(&name).is_some_and(|c| owner.owns(&live, &c)) {
                found.netns.push(name);
            }
        }
        for link in lines("ip", &["-o", "link", "show"]) {
            let Some(name) = link
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or_default())
            else {
                continue;
            };
            if let Some(base) = base_of_bridge(name) {
                if owner.owns_base(&live, base) {
                    found.bridges.push(name.to_string());
                }
            } else if let Some(id) = name
                .strip_prefix(TAP_PREFIX)
                .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                // A tap in the host namespace whose domain is gone.
                let domain = format!("{DOMAIN_PREFIX}{id}");
                if !kept_domains.iter().any(|d| d.starts_with(&domain)) {
                    found.taps.push(name.to_string());
                }
            }
        }
        for address in lines("ip", &["-4", "-o", "addr", "show", "dev", "lo"]) {
            let Some(cidr) = address.split_whitespace().nth(3) else {
                continue;
            };
            if base_of_address(cidr).is_some_and(|b| owner.owns_base(&live, b)) {
                found.addresses.push(cidr.to_string());
            }
        }
        for name in dir_names(Path::new(STATE_ROOT)) {
            let dir = Path::new(STATE_ROOT).join(&name);
            if dir.join(EPHEMERAL_MARK).exists() && owner.owns(&live, &name) {
                found.folders.push(dir);
            }
        }
        for name in dir_names(Path::new(RUN_ROOT)) {
            if owner.owns(&live, &name) {
                found.folders.push(Path::new(RUN_ROOT).join(name));
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
            && self.netns.is_empty()
            && self.taps.is_empty()
            && self.bridges.is_empty()
            && self.addresses.is_empty()
            && self.folders.is_empty()
    }

    /// Removes everything found, VMs first; what cannot be removed is
    /// reported, never fatal.
    pub fn remove(&self) {
        for domain in &self.domains {
            let _ = quiet("virsh", &["-c", "qemu:///system", "destroy", domain]);
            if let Err(e) = quiet(
                "virsh",
                &[
                    "-c",
                    "qemu:///system",
                    "undefine",
                    "--snapshots-metadata",
                    "--managed-save",
                    domain,
                ],
            ) {
                eprintln!("  could not undefine {domain}: {e}");
            }
        }
        for netns in &self.netns {
            let _ = quiet("ip", &["netns", "del", netns]);
        }
        for link in self.taps.iter().chain(&self.bridges) {
            let _ = quiet("ip", &["link", "del", link]);
        }
        for address in &self.addresses {
            let _ = quiet("ip", &["addr", "del", address, "dev", "lo"]);
        }
        for folder in &self.folders {
            unmount_below(folder);
            if let Err(e) = std::fs::remove_dir_all(folder) {
                eprintln!("  could not remove {}: {e}", folder.display());
            }
        }
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut list = |what: &str, items: Vec<String>| {
            if !items.is_empty() {
                parts.push(format!("{} {what}: {}", items.len(), items.join(", ")));
            }
        };
        list("libvirt domains", self.domains.clone());
        list("network namespaces", self.netns.clone());
        list("taps", self.taps.clone());
        list("bridges", self.bridges.clone());
        list("node addresses on lo", self.addresses.clone());
        list(
            "folders",
            self.folders
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        );
        write!(f, "{}", parts.join("; "))
    }
}

/// Lazily unmounts whatever is mounted below `dir` (the kubelet's pod
/// volumes and its bind mount of its own root), deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    let prefix = dir.to_string_lossy();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| t.starts_with(&*prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = Command::new("umount").arg("-l").arg(t).status();
    }
}

/// How long one virsh call may take: a stuck libvirt must not hang a
/// status or a stop (what it holds is found by the next look).
const VIRSH_TIMEOUT_SECS: &str = "15";

/// virsh's output lines, within `VIRSH_TIMEOUT_SECS`.
fn virsh(args: &[&str]) -> Vec<String> {
    let mut full = vec![VIRSH_TIMEOUT_SECS, "virsh", "-c", "qemu:///system"];
    full.extend_from_slice(args);
    lines("timeout", &full)
}

/// A command's output lines; nothing when it fails or is missing.
fn lines(program: &str, args: &[&str]) -> Vec<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn quiet(program: &str, args: &[&str]) -> std::result::Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_belong_to_the_cluster_whose_state_holds_their_disks() {
        let xml = "<domain><devices><disk><source file='/var/lib/arktos/e2e-4242/arktos-node/vms/ab/disk.qcow2'/></disk></devices></domain>";
        assert_eq!(cluster_of_domain(xml).as_deref(), Some("e2e-4242"));
        assert_eq!(cluster_of_domain("<domain/>"), None);
    }

    #[test]
    fn netns_names_carry_their_cluster() {
        let prefix = netns_prefix("e2e-second-77");
        let name = arktos_node::vm::network::netns_name(&prefix, "0123456789abcdef0123");
        assert_eq!(cluster_of_netns(&name).as_deref(), Some("e2e-second-77"));
        // A node run outside the launcher (default prefix) is never ours.
        assert_eq!(cluster_of_netns("arktos-0123456789abcdef"), None);
        assert_eq!(cluster_of_netns("arktos-x-nothex0123456789"), None);
    }

    #[test]
    fn bridges_and_addresses_name_their_port_base() {
        let net = super::super::node::NodeNet::for_base(41234);
        assert_eq!(base_of_bridge(&net.bridge), Some(41234));
        assert_eq!(base_of_address(&format!("{}/32", net.node_ip)), Some(41234));
        assert_eq!(base_of_address("127.0.0.1/8"), None);
        assert_eq!(base_of_bridge("akbrx"), None);
    }

    #[test]
    fn stopped_means_nobody_holds_the_lock() {
        let live = HashMap::from([("default".to_string(), 6443)]);
        assert!(!Owner::Stopped.owns(&live, "default"));
        assert!(Owner::Stopped.owns(&live, "e2e-1"));
        assert!(!Owner::Stopped.owns_base(&live, 6443));
        let one = Owner::Cluster {
            name: "default".into(),
            base: 6443,
        };
        assert!(one.owns(&live, "default") && one.owns_base(&live, 6443));
        assert!(!one.owns(&live, "e2e-1"));
    }
}
