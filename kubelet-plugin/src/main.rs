//! arktos-node: CRI runtime for the kubelet; pods of RuntimeClass arktos-vm run as libvirt/QEMU VMs, all others pass through to containerd.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "arktos-node",
    version,
    about = "CRI runtime for the kubelet; pods of RuntimeClass arktos-vm run as libvirt/QEMU VMs, all others pass through to containerd."
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    // Only --help and --version exist so far; say so rather than pretend.
    anyhow::bail!("arktos-node does nothing yet beyond --help; its features arrive with issue #7")
}
