//! VM pods: the names every Arktos binary shares about them (the
//! RuntimeClass, the `vm.arktos.io/` annotations the node reads and
//! writes), the Arktos pod shape (`spec.virtualMachine`) and its storage
//! form, and the `Action` API.

pub mod action;
pub mod shape;

/// The RuntimeClass (and CRI handler) whose pods are VMs.
pub const RUNTIME_CLASS: &str = "arktos-vm";
/// API group of VM objects.
pub const GROUP: &str = "vm.arktos.io";

/// Pod annotations. The first group is written from the Arktos shape and
/// read by the node; the second is written by the node agent.
pub mod annotations {
    /// Marks a pod stored from the Arktos shape; reads translate it back.
    pub const SHAPE: &str = "vm.arktos.io/shape";
    /// cloud-init user-data, base64.
    pub const USER_DATA: &str = "vm.arktos.io/user-data";
    /// `cloudInitUserDataScript` rather than `userData` was written.
    pub const USER_DATA_IS_SCRIPT: &str = "vm.arktos.io/user-data-is-script";
    /// SSH public keys for the guest, one a line.
    pub const PUBLIC_KEY: &str = "vm.arktos.io/public-key";
    /// The Secret the public key was read from (`keyPairName`).
    pub const KEY_PAIR_NAME: &str = "vm.arktos.io/key-pair-name";
    /// Wanted power state: `Running` or `Shutdown`.
    pub const POWER_SPEC: &str = "vm.arktos.io/power-spec";
    /// Extra NICs, a JSON list of `{name}` (Arktos' `spec.nics`).
    pub const NICS: &str = "vm.arktos.io/nics";
    /// Data disks, a JSON list of `{name, size}`.
    pub const DISKS: &str = "vm.arktos.io/disks";
    /// The memory limit was set from the request (a VM's memory is fixed).
    pub const MEMORY_LIMIT_DEFAULTED: &str = "vm.arktos.io/memory-limit-defaulted";
    /// Ceiling for live vCPU growth.
    pub const MAX_VCPUS: &str = "vm.arktos.io/max-vcpus";
    /// Ceiling for live memory growth, MiB.
    pub const MAX_MEMORY_MIB: &str = "vm.arktos.io/max-memory-mib";

    /// What the node agent observed of the VM, JSON [`super::shape::Observed`].
    pub const OBSERVED: &str = "vm.arktos.io/observed";

    /// Annotations that only carry the Arktos shape or the node's reports;
    /// a tenant reading the Arktos shape does not see them.
    pub const INTERNAL: &[&str] = &[
        SHAPE,
        USER_DATA,
        USER_DATA_IS_SCRIPT,
        PUBLIC_KEY,
        KEY_PAIR_NAME,
        POWER_SPEC,
        NICS,
        DISKS,
        MEMORY_LIMIT_DEFAULTED,
        OBSERVED,
    ];
}

/// Label on an Action: the node whose agent carries it out.
pub const NODE_LABEL: &str = "vm.arktos.io/node";
