//! Logging set-up: structured `tracing` output on stderr.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs a stderr `tracing` subscriber. The filter comes from `RUST_LOG`
/// when set, otherwise from `default_filter` (for example `"info"`).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second call (tests that start several components) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .try_init();
}
