//! kubectl-tenant: `kubectl tenant ...` manages tenants and tenant contexts.
#![forbid(unsafe_code)]

mod commands;
mod contexts;
mod ready;

use clap::Parser;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = commands::Cli::parse();
    if let Err(err) = commands::run(cli).await {
        // One clear line, as kubectl prints its errors.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
