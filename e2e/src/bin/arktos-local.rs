//! arktos-local: starts, stops and describes local clusters of the real
//! upstream components (plus, as they arrive, every Arktos component).
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = arktos_e2e::launcher::Cli::parse();
    arktos_e2e::launcher::init_tracing();
    arktos_e2e::launcher::run(cli)
}
