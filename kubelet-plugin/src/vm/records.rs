//! What arktos-node remembers of VM sandboxes and containers: JSON records
//! under the state directory, written atomically, read back at start. What a
//! VM is doing right now is asked of libvirt, never remembered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::network::PodNetwork;
use super::shape::VmShape;
use crate::fsutil::{remove_all, write_atomic};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub log_directory: String,
    pub hostname: String,
    pub network: Option<PodNetwork>,
    pub created_at: i64,
    pub ready: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Created,
    Running,
    Exited,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the kubelet named it, and the cache id it resolved to.
    pub image: String,
    pub image_id: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// Absolute path of the CRI log (empty when the sandbox has no log
    /// directory).
    pub log_path: String,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub phase: Phase,
    pub reason: String,
    pub message: String,
    pub shape: VmShape,
    /// Directory of the overlay disk, seed and raw console.
    pub dir: PathBuf,
    pub tap: String,
    /// Powered off by an Action or `powerSpec`: to the kubelet the
    /// container still runs (its pod keeps its node, disk and IP).
    #[serde(default)]
    pub powered_off: bool,
    /// The pod's `powerSpec` last carried out (a change is acted on once,
    /// so stop/start Actions in between are not undone).
    #[serde(default)]
    pub power_spec_applied: String,
    /// NICs plugged in after the first, by name.
    #[serde(default)]
    pub extra_nics: Vec<String>,
    /// Data disks plugged in, by name, with their guest device.
    #[serde(default)]
    pub data_disks: Vec<DataDisk>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDisk {
    pub name: String,
    /// vdc, vdd, ...
    pub target: String,
    pub size_bytes: u64,
}

/// The records on disk.
pub struct Store {
    sandboxes: PathBuf,
    containers: PathBuf,
}

impl Store {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let store = Self {
            sandboxes: state_dir.join("sandboxes"),
            containers: state_dir.join("containers"),
        };
        std::fs::create_dir_all(&store.sandboxes)?;
        std::fs::create_dir_all(&store.containers)?;
        Ok(store)
    }

    pub async fn save_sandbox(&self, s: &SandboxRecord) -> std::io::Result<()> {
        save(&self.sandboxes, &s.id, s).await
    }

    pub async fn save_container(&self, c: &ContainerRecord) -> std::io::Result<()> {
        save(&self.containers, &c.id, c).await
    }

    pub async fn delete_sandbox(&self, id: &str) -> std::io::Result<()> {
        remove_all(&self.sandboxes.join(format!("{id}.json"))).await
    }

    pub async fn delete_container(&self, id: &str) -> std::io::Result<()> {
        remove_all(&self.containers.join(format!("{id}.json"))).await
    }

    pub fn load(&self) -> anyhow::Result<(Vec<SandboxRecord>, Vec<ContainerRecord>)> {
        Ok((load_all(&self.sandboxes)?, load_all(&self.containers)?))
    }
}

async fn save<T: Serialize>(dir: &Path, id: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(format!("{id}.json")), &bytes).await
}

fn load_all<T: DeserializeOwned>(dir: &Path) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => out.push(v),
            // A record we cannot read is kept for a human, not fatal.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable record skipped")
            }
        }
    }
    Ok(out)
}
