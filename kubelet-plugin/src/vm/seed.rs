//! The NoCloud seed a VM boots with: meta-data (instance id, hostname,
//! public keys), user-data, and network-config giving the guest the pod IP.
//! Written as an iso9660 volume labelled `cidata` (genisoimage), which
//! cloud-init and the test guest both find.

use std::path::Path;

use super::network::PodNetwork;

pub struct Seed<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    pub public_keys: Vec<String>,
    pub user_data: Option<Vec<u8>>,
    pub network: Option<&'a PodNetwork>,
}

impl Seed<'_> {
    pub fn meta_data(&self) -> String {
        let mut s = format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            self.instance_id, self.hostname
        );
        if !self.public_keys.is_empty() {
            s.push_str("public-keys:\n");
            for k in &self.public_keys {
                s.push_str(&format!("  - {}\n", k.trim()));
            }
        }
        s
    }

    pub fn network_config(&self) -> Option<String> {
        let n = self.network?;
        let mut s = format!(
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: \"{}\"\n    subnets:\n      - type: static\n        address: {}/{}\n",
            n.mac, n.ip, n.prefix
        );
        if let Some(gw) = &n.gateway {
            s.push_str(&format!("        gateway: {gw}\n"));
        }
        Some(s)
    }

    /// Writes the seed volume to `iso`, using `dir` for its files.
    pub async fn write(&self, dir: &Path, iso: &Path) -> anyhow::Result<()> {
        let files = dir.join("seed");
        tokio::fs::create_dir_all(&files).await?;
        tokio::fs::write(files.join("meta-data"), self.meta_data()).await?;
        tokio::fs::write(
            files.join("user-data"),
            self.user_data.as_deref().unwrap_or_default(),
        )
        .await?;
        let mut names = vec!["meta-data", "user-data"];
        if let Some(net) = self.network_config() {
            tokio::fs::write(files.join("network-config"), net).await?;
            names.push("network-config");
        }
        let out = tokio::process::Command::new("genisoimage")
            .arg("-quiet")
            .arg("-output")
            .arg(iso)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .args(names.iter().map(|n| files.join(n)))
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("genisoimage: {e}"))?;
        if !out.status.success() {
            anyhow::bail!(
                "genisoimage: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_carries_keys_and_the_pod_ip() {
        let net = PodNetwork {
            netns: "n".into(),
            ip: "10.88.0.5".into(),
            prefix: 24,
            gateway: Some("10.88.0.1".into()),
            mac: "02:42:0a:58:00:05".into(),
            conflist: serde_json::Value::Null,
            result: serde_json::Value::Null,
        };
        let seed = Seed {
            instance_id: "c1",
            hostname: "vm1",
            public_keys: vec!["ssh-ed25519 AAAA k@x\n".into()],
            user_data: None,
            network: Some(&net),
        };
        assert_eq!(
            seed.meta_data(),
            "instance-id: c1\nlocal-hostname: vm1\npublic-keys:\n  - ssh-ed25519 AAAA k@x\n"
        );
        let nc = seed.network_config().unwrap();
        assert!(nc.contains("mac_address: \"02:42:0a:58:00:05\""));
        assert!(nc.contains("address: 10.88.0.5/24"));
        assert!(nc.contains("gateway: 10.88.0.1"));
    }
}
