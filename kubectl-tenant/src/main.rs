//! kubectl-tenant: kubectl plugin that manages tenants and tenant contexts.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-tenant",
    version,
    about = "kubectl plugin that manages tenants and tenant contexts."
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    // Only --help and --version exist so far; say so rather than pretend.
    anyhow::bail!(
        "kubectl-tenant does nothing yet beyond --help; its features arrive with issue #4"
    )
}
