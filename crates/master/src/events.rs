//! Cluster events: every worker and task transition, fanned out to whoever listens
//! (the REPL's live views now; WebSocket clients and agents later).

use crate::db::TaskState;

/// Capacity of the event channel; a receiver that falls further behind is told it lagged.
pub const EVENT_CAPACITY: usize = 4096;

/// A change in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The operator pre-registered a worker.
    WorkerRegistered {
        /// Worker id.
        worker_id: String,
    },
    /// The operator removed a worker.
    WorkerUnregistered {
        /// Worker id.
        worker_id: String,
    },
    /// A worker registered or resumed heartbeating.
    WorkerActive {
        /// Worker id.
        worker_id: String,
    },
    /// A worker went silent past the inactivity timeout, or said it is stopping.
    WorkerInactive {
        /// Worker id.
        worker_id: String,
    },
    /// A task changed state (already persisted).
    TaskState {
        /// Task id.
        task_id: String,
        /// New state.
        state: TaskState,
        /// Worker holding the task, if any.
        worker_id: Option<String>,
    },
}
