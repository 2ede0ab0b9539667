//! What the VM runtime asks of its hypervisor, as a trait: libvirt in
//! production (`libvirt.rs`), a fake in the runtime's unit tests (so the
//! runtime's orchestration is tested without libvirt or QEMU).

use std::future::Future;

use super::libvirt::{DomainFacts, LibvirtError};

type Answer<T> = Result<T, LibvirtError>;

/// Domains by name; every call may block on the hypervisor, none on a
/// tokio worker.
pub trait Hypervisor: Send + Sync + 'static {
    /// Whether the hypervisor answers: its version, or why not.
    fn ping(&self) -> impl Future<Output = Answer<String>> + Send;
    fn define(&self, xml: String) -> impl Future<Output = Answer<()>> + Send;
    fn start(&self, name: &str) -> impl Future<Output = Answer<()>> + Send;
    /// Presses the ACPI power button; false when the domain is not running.
    fn shutdown(&self, name: &str) -> impl Future<Output = Answer<bool>> + Send;
    /// Stops the domain at once; not running or absent is fine.
    fn destroy(&self, name: &str) -> impl Future<Output = Answer<()>> + Send;
    /// Destroys and forgets the domain with its snapshots; absent is fine.
    fn undefine(&self, name: &str) -> impl Future<Output = Answer<()>> + Send;
    /// None when there is no such domain.
    fn facts(&self, name: &str) -> impl Future<Output = Answer<Option<DomainFacts>>> + Send;
    fn resize(
        &self,
        name: &str,
        vcpus: u32,
        memory_mib: u64,
    ) -> impl Future<Output = Answer<()>> + Send;
    fn define_vcpus(&self, name: &str, vcpus: u32) -> impl Future<Output = Answer<()>> + Send;
    fn reset(&self, name: &str) -> impl Future<Output = Answer<()>> + Send;
    /// Snapshot names, each with whether it holds memory.
    fn snapshots(&self, name: &str) -> impl Future<Output = Answer<Vec<(String, bool)>>> + Send;
    fn create_snapshot(
        &self,
        name: &str,
        snapshot: &str,
    ) -> impl Future<Output = Answer<()>> + Send;
    fn revert_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        running: bool,
    ) -> impl Future<Output = Answer<()>> + Send;
    fn attach(&self, name: &str, xml: String) -> impl Future<Output = Answer<()>> + Send;
    fn detach(&self, name: &str, xml: String) -> impl Future<Output = Answer<()>> + Send;
    fn domain_xml(&self, name: &str) -> impl Future<Output = Answer<String>> + Send;
    /// Arktos' domains, each with whether it is active.
    fn ours(&self) -> impl Future<Output = Answer<Vec<(String, bool)>>> + Send;
}
