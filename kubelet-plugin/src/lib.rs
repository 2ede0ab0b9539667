//! arktos-node: the CRI runtime the kubelet uses on Arktos nodes. Pods of
//! RuntimeClass `arktos-vm` run as libvirt/QEMU VMs; everything else goes to
//! containerd unchanged.
#![forbid(unsafe_code)]

pub mod cri_client;
pub mod fsutil;
pub mod ids;
pub mod metrics;
pub mod router;
pub mod server;
pub mod vm;
