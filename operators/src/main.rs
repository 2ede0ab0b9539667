//! arktos-operators: wires the command line to `arktos_operators::run`.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = arktos_operators::Config::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    arktos_crds::logging::init(config.log_json, "info");
    arktos_operators::run(config).await
}
