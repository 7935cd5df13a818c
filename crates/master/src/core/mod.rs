//! The core: cluster state and everything that changes it, with no transport
//! in it. The API layers (`api/`) and the REPL (`cli/`) call into it.
//!
//! - `cluster`: the `Master` handle (store, registry, task index, events,
//!   worker clients); `workers`: worker registration and re-invites;
//! - `registry`: live worker state; `telemetry`: one task per worker fed by
//!   heartbeats; `disconnect`: silent workers' tasks (unknown, then lost);
//! - `tasks`: submit, place, dispatch, retry, cancel; `results`: a worker's
//!   report of an attempt; `task_logs`: whole outputs in chunks;
//! - `scheduler`: the queue and its loop; `placement`: the resource-aware choice;
//! - `events`: numbered cluster events; `metrics`: Prometheus counters;
//! - `worker_client`: the master's channels to workers; `convert`: protobuf
//!   messages to and from records.

pub(crate) mod cluster;
pub(crate) mod convert;
pub(crate) mod disconnect;
pub(crate) mod events;
#[cfg(test)]
mod lifecycle_tests;
pub(crate) mod metrics;
pub(crate) mod placement;
pub(crate) mod registry;
pub(crate) mod results;
pub(crate) mod scheduler;
pub(crate) mod task_logs;
pub(crate) mod tasks;
pub(crate) mod telemetry;
pub(crate) mod worker_client;
pub(crate) mod workers;
