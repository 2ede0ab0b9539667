//! arktos-apiserver: wires the command line to `arktos_apiserver::run`.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = arktos_apiserver::Config::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    arktos_crds::logging::init(config.log_json, "info");
    arktos_apiserver::run(config).await
}
