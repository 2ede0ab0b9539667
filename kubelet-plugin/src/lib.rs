//! arktos-node: the CRI runtime the kubelet uses on Arktos nodes. Pods of
//! RuntimeClass `arktos-vm` run as libvirt/QEMU VMs; everything else goes to
//! containerd unchanged. Beside the CRI, its node agent carries out VM
//! Actions and keeps VM pods' power, NICs and disks as asked.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cri_client;
pub mod fsutil;
pub mod ids;
pub mod metrics;
pub mod router;
pub mod server;
pub mod vm;
