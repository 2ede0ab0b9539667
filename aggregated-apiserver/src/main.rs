//! arktos-apiserver: aggregated API server for tenancy.arktos.io (Tenant objects, and tenant-prefixed routes that serve an isolated Kubernetes API per tenant).
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "arktos-apiserver",
    version,
    about = "aggregated API server for tenancy.arktos.io (Tenant objects, and tenant-prefixed routes that serve an isolated Kubernetes API per tenant)."
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    // Only --help and --version exist so far; say so rather than pretend.
    anyhow::bail!(
        "arktos-apiserver does nothing yet beyond --help; its features arrive with issues #3 and #4"
    )
}
