//! Generated protobuf messages and tonic clients/servers for CloudAI.
//!
//! - `MasterService` (served by the master, called by workers) and
//!   `WorkerService` (served by workers, called by the master) come from
//!   `proto/master_worker.proto`;
//! - `MasterAgent` (served by the master, called by external schedulers)
//!   comes from `proto/master_agent.proto`.
//!
//! Everything lives in [`v1`], the `cloudai.v1` protobuf package.

/// The `cloudai.v1` protobuf package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("cloudai.v1");
}

pub use prost_types::Timestamp;

/// Converts a wall-clock time into a protobuf timestamp.
pub fn timestamp(time: std::time::SystemTime) -> Timestamp {
    Timestamp::from(time)
}

/// Converts a protobuf timestamp into milliseconds since the Unix epoch
/// (negative or malformed values clamp to 0).
pub fn timestamp_millis(ts: &Timestamp) -> i64 {
    (ts.seconds.max(0)).saturating_mul(1000) + i64::from(ts.nanos.clamp(0, 999_999_999) / 1_000_000)
}
