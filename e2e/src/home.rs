//! Where the launcher keeps builds and cluster state: outside any clone, so
//! warm runs reuse them and a fresh clone does not rebuild.

use std::path::{Path, PathBuf};

/// `$ARKTOS_HOME`, or `~/.cache/arktos`.
#[derive(Clone, Debug)]
pub struct ArktosHome(PathBuf);

impl ArktosHome {
    pub fn from_env() -> Self {
        if let Some(dir) = std::env::var_os("ARKTOS_HOME") {
            return Self(PathBuf::from(dir));
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        Self(home.join(".cache").join("arktos"))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self(dir.into())
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// Built upstream components, one folder per pinned version and inputs.
    pub fn upstream_dir(&self) -> PathBuf {
        self.0.join("upstream")
    }

    /// Command links (`kubectl`, ...) to the built upstream binary.
    pub fn bin_dir(&self) -> PathBuf {
        self.0.join("bin")
    }

    /// State of the cluster called `name`: PKI, etcd data, logs, kubeconfig.
    pub fn cluster_dir(&self, name: &str) -> PathBuf {
        self.0.join("clusters").join(name)
    }
}

/// The source tree this crate was built from; the Go module of the pinned
/// upstream components lives in it.
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_path_buf()
}
