//! The local cluster of real upstream components, and the harness the
//! end-to-end tests run on.
//!
//! `arktos-local` (the launcher binary), the README's commands and the e2e
//! tests all start clusters through [`LocalCluster`], so there is one way a
//! cluster comes up and goes down.
#![deny(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cluster;
pub mod critest;
pub mod harness;
pub mod home;
pub mod launcher;
pub mod observe;
pub mod upstream;

pub use cluster::{ClusterSpec, LocalCluster, Ports};
pub use home::ArktosHome;

/// Errors of the launcher and harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the upstream components failed: {0}")]
    UpstreamBuild(String),
    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error(
        "port {port} ({what}) is already in use: is another cluster running? choose --port-base"
    )]
    PortInUse { port: u16, what: &'static str },
    #[error("{component} exited before the cluster was ready ({status}); see {log}")]
    ComponentExited {
        component: String,
        status: String,
        log: String,
    },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("real node: {0}")]
    Node(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a description of what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
