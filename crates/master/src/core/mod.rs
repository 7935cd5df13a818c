//! The core: cluster state and everything that changes it, with no transport
//! in it. The API layers (`api/`) and the REPL (`cli/`) call into it.
//!
//! Its services and what each may call (a DAG; arrows point at dependencies):
//!
//! ```text
//! Scheduler ─► Tasks ──┬─► Telemetry ─► Lifecycle ─► EventBus, Store, metrics
//!              Workers ┘    Tasks ─► Secrets ─► Store
//! ```
//!
//! Tasks, Workers and the Scheduler also call the Lifecycle directly, all but
//! the Lifecycle read the live `Registry`, and Tasks and Workers reach workers
//! through `WorkerCalls`. `auth/` (beside the core) uses only the store and the
//! registry; `tests/module_graph.rs` keeps the graph acyclic.
//!
//! - `events`: [`events::EventBus`], numbered cluster events;
//! - `lifecycle`: the one owner of task state and its transitions;
//!   `retries`: backoff and retry-or-fail; `disconnect`: a silent worker's
//!   tasks (unknown, then lost: the at-most-once rule);
//! - `registry`: live worker state; `telemetry`: one task per worker fed by
//!   heartbeats; `workers`: registration, removal, invitations;
//! - `tasks`: submit, place, dispatch, cancel; `task_ids`: ids that follow
//!   the submit time; `results`: a worker's report of
//!   an attempt; `task_logs`: whole outputs in chunks;
//! - `scheduler`: the queue and its loop; `capacity`: what workers can take;
//!   `placement`: the resource-aware choice; `placer`: a pass's choices,
//!   kept in heaps per kind of demand;
//! - `retention`: `--keep-history`, pruning finished tasks in the background;
//! - `secrets`: secrets sealed with the operator's key (`sealing`), opened
//!   only into the copy of a task sent to its worker; `progress`: the latest
//!   pull progress of each preparing task;
//! - `metrics`: Prometheus counters; `worker_client`: the master's channels to
//!   workers; `convert`: protobuf messages to and from records; `runtime`:
//!   settings, shutdown and the task tracker every service runs under.

pub(crate) mod capacity;
pub(crate) mod convert;
pub(crate) mod disconnect;
pub(crate) mod events;
pub(crate) mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
pub(crate) mod metrics;
pub(crate) mod placement;
pub(crate) mod placer;
pub(crate) mod progress;
pub(crate) mod registry;
pub(crate) mod results;
pub(crate) mod retention;
pub(crate) mod retries;
pub(crate) mod runtime;
pub(crate) mod scheduler;
#[cfg(test)]
mod scheduler_tests;
pub(crate) mod sealing;
pub(crate) mod secrets;
pub(crate) mod task_ids;
pub(crate) mod task_logs;
pub(crate) mod tasks;
pub(crate) mod telemetry;
#[cfg(test)]
mod test_cluster;
pub(crate) mod worker_client;
pub(crate) mod workers;
