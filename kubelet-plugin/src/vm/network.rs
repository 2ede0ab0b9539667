//! A VM pod's network: a network namespace set up by the node's CNI plugins,
//! as for any pod, and a tap device inside it whose traffic is mirrored to
//! and from the pod's `eth0` by tc (as Kata does), so the guest, with
//! eth0's MAC, holds the pod IP.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const IFNAME: &str = "eth0";

/// The pod network of a VM sandbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodNetwork {
    /// Name under /var/run/netns.
    pub netns: String,
    pub ip: String,
    pub prefix: u8,
    pub gateway: Option<String>,
    pub mac: String,
    /// The CNI configuration used at ADD, for the DEL.
    pub conflist: Value,
    pub result: Value,
}

/// Who a CNI call is for (CNI_ARGS, as the kubelet's runtimes pass them).
pub struct PodRef<'a> {
    pub sandbox_id: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// Starts the name of every network namespace this node makes, so that
    /// what a node left behind can be told from another node's on one host.
    pub netns_prefix: String,
}

/// The network namespace of a sandbox: the node's prefix and 16 hex digits
/// of the sandbox ID.
pub fn netns_name(prefix: &str, sandbox_id: &str) -> String {
    format!("{prefix}{}", &sandbox_id[..16.min(sandbox_id.len())])
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// Tap names must fit IFNAMSIZ (15).
pub fn tap_name(container_id: &str) -> String {
    format!("ak{}", &container_id[..12.min(container_id.len())])
}

impl Cni {
    /// The network the node's CNI configuration gives: the first file of the
    /// conf dir in name order, as container runtimes pick it.
    async fn conflist(&self) -> anyhow::Result<Value> {
        let mut names = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.conf_dir)
            .await
            .map_err(|e| anyhow::anyhow!("CNI conf dir {}: {e}", self.conf_dir.display()))?;
        while let Some(entry) = dir.next_entry().await? {
            let path = entry.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            ) {
                names.push(path);
            }
        }
        names.sort();
        let path = names.first().ok_or_else(|| {
            anyhow::anyhow!("no CNI configuration in {}", self.conf_dir.display())
        })?;
        let conf: Value = serde_json::from_slice(&tokio::fs::read(path).await?)
            .map_err(|e| anyhow::anyhow!("CNI configuration {}: {e}", path.display()))?;
        Ok(if conf.get("plugins").is_some() {
            conf
        } else {
            json!({"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": [conf]})
        })
    }

    /// Creates the pod's namespace and runs the CNI ADD chain in it.
    pub async fn setup(&self, pod: &PodRef<'_>) -> anyhow::Result<PodNetwork> {
        let netns = netns_name(&self.netns_prefix, pod.sandbox_id);
        // A namespace left by a crash of an earlier attempt is reused.
        if !netns_path(&netns).exists() {
            ip(&["netns", "add", &netns]).await?;
        }
        ip(&["-n", &netns, "link", "set", "lo", "up"]).await?;
        let conflist = self.conflist().await?;
        let result = match self.run_chain("ADD", pod, &netns, &conflist, None).await {
            Ok(r) => r,
            Err(e) => {
                let _ = ip(&["netns", "del", &netns]).await;
                return Err(e);
            }
        };
        let (ip_addr, prefix, gateway) = first_ip(&result)?;
        let mac = result["interfaces"]
            .as_array()
            .and_then(|ifs| {
                ifs.iter()
                    .find(|i| i["name"] == IFNAME && i.get("sandbox").is_some_and(|s| s != ""))
            })
            .and_then(|i| i["mac"].as_str())
            .map(str::to_string);
        let mac = match mac {
            Some(m) => m,
            None => link_mac(&netns, IFNAME).await?,
        };
        Ok(PodNetwork {
            netns,
            ip: ip_addr,
            prefix,
            gateway,
            mac,
            conflist,
            result,
        })
    }

    /// Runs the CNI DEL chain and removes the namespace; absent is fine.
    pub async fn teardown(&self, pod: &PodRef<'_>, net: &PodNetwork) -> anyhow::Result<()> {
        if netns_path(&net.netns).exists() {
            self.run_chain("DEL", pod, &net.netns, &net.conflist, Some(&net.result))
                .await?;
            ip(&["netns", "del", &net.netns]).await?;
        }
        Ok(())
    }

    async fn run_chain(
        &self,
        command: &str,
        pod: &PodRef<'_>,
        netns: &str,
        conflist: &Value,
        prev: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let plugins = conflist["plugins"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("CNI configuration without plugins"))?;
        let mut order: Vec<&Value> = plugins.iter().collect();
        if command == "DEL" {
            order.reverse();
        }
        let mut result = prev.cloned().unwrap_or(Value::Null);
        for plugin in order {
            let mut conf = plugin.clone();
            conf["name"] = conflist["name"].clone();
            conf["cniVersion"] = conflist["cniVersion"].clone();
            if !result.is_null() {
                conf["prevResult"] = result.clone();
            }
            let out = self.exec(command, pod, netns, &conf).await?;
            if command == "ADD" {
                result = out;
            }
        }
        Ok(result)
    }

    async fn exec(
        &self,
        command: &str,
        pod: &PodRef<'_>,
        netns: &str,
        conf: &Value,
    ) -> anyhow::Result<Value> {
        let kind = conf["type"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("CNI plugin without type"))?;
        let bin = self
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| anyhow::anyhow!("CNI plugin {kind} not found in {:?}", self.bin_dirs))?;
        let path = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.namespace, pod.name, pod.sandbox_id, pod.uid
        );
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", pod.sandbox_id)
            .env("CNI_NETNS", netns_path(netns))
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", path)
            .env("CNI_ARGS", args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(&serde_json::to_vec(conf)?).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let msg = err["msg"].as_str().map_or_else(
                || String::from_utf8_lossy(&out.stderr).trim().to_string(),
                |m| {
                    format!("{m} {}", err["details"].as_str().unwrap_or(""))
                        .trim()
                        .to_string()
                },
            );
            anyhow::bail!("CNI {command} with plugin {kind} failed: {msg}");
        }
        if command == "DEL" || out.stdout.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

fn first_ip(result: &Value) -> anyhow::Result<(String, u8, Option<String>)> {
    let first = result["ips"]
        .as_array()
        .and_then(|ips| ips.first())
        .ok_or_else(|| anyhow::anyhow!("CNI result has no IP: {result}"))?;
    let cidr = first["address"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("CNI result IP without address"))?;
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("CNI address {cidr} is not a CIDR"))?;
    Ok((
        addr.to_string(),
        prefix.parse()?,
        first["gateway"].as_str().map(str::to_string),
    ))
}

async fn link_mac(netns: &str, ifname: &str) -> anyhow::Result<String> {
    let out = ip(&["-n", netns, "-j", "link", "show", ifname]).await?;
    let v: Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no MAC on {ifname} in {netns}"))
}

/// A persistent tap in the host's namespace, for libvirt to open at domain
/// start (it opens managed='no' taps by name there).
pub async fn create_tap(tap: &str) -> anyhow::Result<()> {
    let _ = ip(&["link", "del", tap]).await;
    ip(&["tuntap", "add", "dev", tap, "mode", "tap"]).await?;
    Ok(())
}

/// Moves the tap QEMU now holds into the pod's namespace and mirrors it with
/// eth0 both ways. The open file descriptor survives the move.
pub async fn plug_tap(tap: &str, netns: &str) -> anyhow::Result<()> {
    ip(&["link", "set", tap, "netns", netns]).await?;
    ip(&["-n", netns, "link", "set", tap, "up"]).await?;
    for (from, to) in [(IFNAME, tap), (tap, IFNAME)] {
        let _ = tc(netns, &["qdisc", "del", "dev", from, "ingress"]).await;
        tc(netns, &["qdisc", "add", "dev", from, "ingress"]).await?;
        tc(
            netns,
            &[
                "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ],
        )
        .await?;
    }
    Ok(())
}

/// The tap of a NIC plugged in later: named after the container and the
/// NIC, within the kernel's 15 characters.
pub fn extra_tap_name(container_id: &str, nic: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{container_id}/{nic}").as_bytes());
    format!("an{}", &crate::ids::hex(&digest)[..12])
}

/// Moves the tap of an extra NIC into the pod's namespace, up but wired to
/// nothing: the guest sees the NIC, the pod network stays on eth0.
pub async fn park_tap(tap: &str, netns: &str) -> anyhow::Result<()> {
    ip(&["link", "set", tap, "netns", netns]).await?;
    ip(&["-n", netns, "link", "set", tap, "up"]).await?;
    Ok(())
}

/// Removes an extra NIC's tap, wherever it is.
pub async fn remove_extra_tap(tap: &str, netns: &str) {
    if netns_path(netns).exists() {
        let _ = ip(&["-n", netns, "link", "del", tap]).await;
    }
    let _ = ip(&["link", "del", tap]).await;
}

/// Removes the tap wherever it is (pod namespace or, before the move, host).
pub async fn remove_tap(tap: &str, netns: &str) {
    if netns_path(netns).exists() {
        let _ = tc(netns, &["qdisc", "del", "dev", IFNAME, "ingress"]).await;
        let _ = ip(&["-n", netns, "link", "del", tap]).await;
    }
    let _ = ip(&["link", "del", tap]).await;
}

async fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args).await
}

async fn tc(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("tc", &full).await
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("{program}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(tap_name(id), "ak0123456789ab");
        assert!(tap_name(id).len() <= 15);
        assert_eq!(netns_name("arktos-", id), "arktos-0123456789abcdef");
        assert_eq!(
            netns_name("arktos-e2e-7-", id),
            "arktos-e2e-7-0123456789abcdef"
        );
    }

    #[test]
    fn the_first_ip_of_a_cni_result_is_the_pod_ip() {
        let r = json!({"ips": [{"address": "10.88.0.7/16", "gateway": "10.88.0.1"}]});
        assert_eq!(
            first_ip(&r).unwrap(),
            ("10.88.0.7".to_string(), 16, Some("10.88.0.1".to_string()))
        );
        assert!(first_ip(&json!({"ips": []})).is_err());
    }
}
