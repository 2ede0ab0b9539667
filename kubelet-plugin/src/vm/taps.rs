//! The tap devices that carry a VM's NICs, as a trait: ip(8) and tc(8) on
//! the host in production (`network.rs`), a fake in the runtime's unit
//! tests, so power, restore and hot-plug are tested without touching the
//! host's links.

use std::future::Future;

use super::network;

pub trait Taps: Send + Sync + 'static {
    /// A fresh tap in the host's namespace, for libvirt to open.
    fn create(&self, tap: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Moves the VM's first tap into the pod's namespace, wired to eth0.
    fn plug(&self, tap: &str, netns: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Moves an extra NIC's tap into the pod's namespace, wired to nothing.
    fn park(&self, tap: &str, netns: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Removes the VM's first tap wherever it is.
    fn remove(&self, tap: &str, netns: &str) -> impl Future<Output = ()> + Send;
    /// Removes an extra NIC's tap wherever it is.
    fn remove_extra(&self, tap: &str, netns: &str) -> impl Future<Output = ()> + Send;
}

/// The host's links, changed with ip(8) and tc(8).
pub struct HostTaps;

impl Taps for HostTaps {
    async fn create(&self, tap: &str) -> anyhow::Result<()> {
        network::create_tap(tap).await
    }
    async fn plug(&self, tap: &str, netns: &str) -> anyhow::Result<()> {
        network::plug_tap(tap, netns).await
    }
    async fn park(&self, tap: &str, netns: &str) -> anyhow::Result<()> {
        network::park_tap(tap, netns).await
    }
    async fn remove(&self, tap: &str, netns: &str) {
        network::remove_tap(tap, netns).await
    }
    async fn remove_extra(&self, tap: &str, netns: &str) {
        network::remove_extra_tap(tap, netns).await
    }
}
