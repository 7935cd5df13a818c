//! Pieces shared by the CloudAI master and worker.
//!
//! - [`grpc`]: conventional status codes for what a client sent;
//! - [`host`]: system information and live CPU/memory samples (sysinfo);
//! - [`resources`]: what a task asks of a host (`GpuRequest`);
//! - [`units`]: human sizes and durations (`512m`, `2g`, `90s`);
//! - [`validate`]: checks of everything a client sends (ids, addresses, images, limits);
//! - [`logging`]: the `tracing` subscriber both binaries install;
//! - [`net`]: connection limits and idle timeouts for the servers;
//! - [`signals`]: Ctrl-C / SIGTERM handling;
//! - [`tls`]: identities, fingerprints, PEM, private files, the pinned-CA join client.

pub mod grpc;
pub mod host;
pub mod ids;
pub mod logging;
pub mod net;
pub mod resources;
pub mod signals;
pub mod tls;
pub mod units;
pub mod validate;

/// Version of the CloudAI binaries (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Loads `.env` from the working directory when there is one; a malformed file
/// is reported on stderr (logging is not set up yet) and otherwise ignored.
pub fn load_dotenv() {
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("warning: ignoring .env: {error}");
    }
}
