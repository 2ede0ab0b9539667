//! arktos-operators: sharded, active-active controllers and admission webhooks for tenants, quota and VMs.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "arktos-operators",
    version,
    about = "sharded, active-active controllers and admission webhooks for tenants, quota and VMs."
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    // Only --help and --version exist so far; say so rather than pretend.
    anyhow::bail!(
        "arktos-operators does nothing yet beyond --help; its features arrive with issues #5 and #6"
    )
}
