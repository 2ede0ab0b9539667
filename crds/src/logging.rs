//! The one logging set-up of every Arktos binary: `tracing` events to
//! stderr, filtered by `ARKTOS_LOG` (EnvFilter syntax; a default per binary
//! otherwise), as text (coloured on a terminal) or as JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable every binary reads its log filter from.
pub const FILTER_ENV: &str = "ARKTOS_LOG";

/// Installs the global subscriber; `default_filter` applies when
/// `ARKTOS_LOG` is unset or invalid.
pub fn init(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
