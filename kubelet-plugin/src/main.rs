//! arktos-node: CRI runtime for the kubelet; pods of RuntimeClass arktos-vm
//! run as libvirt/QEMU VMs, all others pass through to containerd.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = arktos_node::server::Cli::parse();
    arktos_crds::logging::init(cli.log_json, "info");
    arktos_node::server::run(cli).await
}
