//! The CloudAI worker.
//!
//! - [`Worker`]: the shared handle (tasks held, master link state);
//! - `task/`: one task's life: Docker over bollard (`executor`), the task
//!   held (`handle`), the run (`runner`), the adoption of leftover containers
//!   (`reconcile`), its output in memory (`logs`) and on disk (`spool`);
//! - `master_link/`: registration, heartbeats, result delivery and uploads,
//!   the certificate (`identity`) and the disconnect window (`disconnect`);
//! - [`gpu`]: NVML GPU discovery, metrics and leases (none without a driver);
//! - `server`: gRPC `WorkerService` handlers; [`config`]: flags and environment;
//! - `startup`: [`start`] (identity, Docker, leftover containers, the background
//!   tasks) and [`Running`].
//!
//! [`start`] takes an already-bound listener so tests can bind port 0.

pub mod config;
pub mod gpu;
mod master_link;
mod server;
mod startup;
mod task;

pub use config::WorkerConfig;
pub use startup::{Running, StartError, start};

use cloudai_proto::v1::TaskResult;
use master_link::identity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use task::executor::Executor;
use task::handle::{StopReason, TaskHandle};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A result waiting to be acknowledged by the master, and the container to
/// remove once it is.
#[derive(Debug, Clone)]
pub struct PendingReport {
    /// The result.
    pub result: TaskResult,
    /// Container to remove after the master acknowledged.
    pub container: Option<String>,
}

/// Cheap cloneable handle to the worker's state.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    config: WorkerConfig,
    id: String,
    address: String,
    executor: Executor,
    gpus: gpu::GpuProbe,
    /// GPUs found at start (NVML), and which task holds each.
    gpu_inventory: Vec<cloudai_proto::v1::GpuInfo>,
    gpu_leases: gpu::Leases,
    /// Tasks held, by id (std mutex: never held across `.await`).
    tasks: Mutex<HashMap<String, Arc<TaskHandle>>>,
    reports: mpsc::UnboundedSender<PendingReport>,
    heartbeat_now: Notify,
    link: master_link::LinkState,
    /// TLS identity; `None` with --insecure.
    identity: Mutex<Option<identity::Identity>>,
    identity_changed: Notify,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Worker {
    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The address the master reaches this worker at.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// Docker access.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// The host's GPUs (empty without an NVIDIA driver).
    pub fn gpus(&self) -> &gpu::GpuProbe {
        &self.inner.gpus
    }

    /// GPUs found at start.
    pub fn gpu_inventory(&self) -> &[cloudai_proto::v1::GpuInfo] {
        &self.inner.gpu_inventory
    }

    /// Which task holds which GPU.
    pub fn gpu_leases(&self) -> &gpu::Leases {
        &self.inner.gpu_leases
    }

    /// Tracker of the worker's background tasks.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// The token that stops the worker.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The worker's TLS identity (`None` with --insecure).
    pub fn identity(&self) -> Option<identity::Identity> {
        self.inner
            .identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Switches to a renewed identity; the gRPC server restarts with it.
    pub(crate) fn set_identity(&self, identity: identity::Identity) {
        *self
            .inner
            .identity
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(identity);
        self.inner.identity_changed.notify_one();
    }

    /// The link to the master.
    pub fn link(&self) -> &master_link::LinkState {
        &self.inner.link
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TaskHandle>>> {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a task handle unless one with that id is held; returns whether it was added.
    pub fn adopt(&self, task_id: &str, handle: Arc<TaskHandle>) -> bool {
        let mut tasks = self.tasks();
        if tasks.contains_key(task_id) {
            return false;
        }
        tasks.insert(task_id.to_string(), handle);
        true
    }

    /// The handle of a task held.
    pub fn task(&self, task_id: &str) -> Option<Arc<TaskHandle>> {
        self.tasks().get(task_id).cloned()
    }

    /// Ids of every task held (running or awaiting acknowledgement).
    pub fn held_task_ids(&self) -> Vec<String> {
        self.tasks().keys().cloned().collect()
    }

    /// Ids of tasks whose container is running.
    pub fn running_task_ids(&self) -> Vec<String> {
        self.tasks()
            .iter()
            .filter(|(_, h)| h.running.load(std::sync::atomic::Ordering::SeqCst))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets a task once its result was acknowledged.
    pub(crate) fn forget(&self, task_id: &str) {
        self.tasks().remove(task_id);
    }

    /// Queues a result for delivery to the master; the task's GPUs are free again.
    pub fn queue_result(&self, result: TaskResult, container: Option<String>) {
        self.gpu_leases().release(&result.task_id);
        if let Some(handle) = self.task(&result.task_id) {
            handle.done.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if self
            .inner
            .reports
            .send(PendingReport { result, container })
            .is_err()
        {
            tracing::error!(
                "result reporter stopped; the result will be recovered from the container at restart"
            );
        }
    }

    /// Sends the next heartbeat now rather than at the next interval.
    pub fn heartbeat_soon(&self) {
        self.inner.heartbeat_now.notify_one();
    }

    /// Resolves when someone asked for an early heartbeat.
    pub(crate) async fn heartbeat_requested(&self) {
        self.inner.heartbeat_now.notified().await;
    }

    /// Asks every task still running or starting to stop, with `grace`
    /// between SIGTERM and SIGKILL; returns how many were asked for the first time.
    pub fn stop_all(&self, reason: StopReason, grace: std::time::Duration) -> usize {
        let handles: Vec<Arc<TaskHandle>> = self.tasks().values().cloned().collect();
        handles
            .into_iter()
            .filter(|h| !h.done.load(std::sync::atomic::Ordering::SeqCst) && !h.stop.is_cancelled())
            .map(|h| h.request_stop_with_grace(reason, grace))
            .count()
    }

    /// Stops tasks the master no longer wants here.
    pub fn stop_unwanted(&self, task_ids: &[String]) {
        for task_id in task_ids {
            if let Some(handle) = self.task(task_id) {
                tracing::warn!(
                    task_id,
                    "the master does not want this task here: stopping it"
                );
                handle.request_stop(StopReason::Cancelled);
            }
        }
    }
}
