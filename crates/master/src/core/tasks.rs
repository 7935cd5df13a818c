//! Task operations on the master: submit and place, complete, inspect, follow, cancel.

use crate::core::capacity::{candidates, demand};
use crate::core::convert;
use crate::core::lifecycle::Lifecycle;
use crate::core::registry::Registry;
use crate::core::registry::WorkerState;
use crate::core::secrets::Secrets;
use crate::core::task_ids;
use crate::core::telemetry::Telemetry;
use crate::core::worker_client::LogStream;
use crate::core::worker_client::WorkerCalls;
use crate::error::{MasterError, MasterResult};
use crate::store::{
    AssignmentRecord, ContainerOptions, Limits, TaskRecord, TaskState, Write, now_millis,
};
use cloudai_common::ids::{TaskId, WorkerId};
use cloudai_common::validate;
use cloudai_proto::v1::{AssignTaskRequest, CancelTaskRequest, StreamTaskLogsRequest};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest log tail the master stores for one task; older output is cut off.
pub const MAX_STORED_LOG_BYTES: usize = 1 << 20;

/// Where a submitted task should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Let the master choose an active worker.
    Auto,
    /// This worker.
    Worker(WorkerId),
}

/// A task as submitted by an operator or agent, before it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// Where to run it.
    pub placement: Placement,
    /// Container image.
    pub image: String,
    /// Command and arguments (empty: the image's default).
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Wall-clock limit in seconds (0 = none).
    pub timeout_seconds: u64,
    /// Queue priority (higher first).
    pub priority: i32,
    /// Retries after a failed or lost attempt.
    pub max_retries: u32,
    /// How the container runs (shared memory, user, working directory).
    pub options: ContainerOptions,
    /// Who submits it (a user name, or `console`).
    pub owner: String,
}

pub use cloudai_common::validate::MAX_RETRIES;

/// Handle to task operations (cheap to clone).
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    lifecycle: Lifecycle,
    secrets: Secrets,
    telemetry: Telemetry,
    registry: Registry,
    clients: Arc<dyn WorkerCalls>,
}

impl Tasks {
    /// Task operations that reach workers through `clients`.
    pub fn new(
        lifecycle: Lifecycle,
        telemetry: Telemetry,
        registry: Registry,
        clients: Arc<dyn WorkerCalls>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                secrets: Secrets::new(
                    lifecycle.store().clone(),
                    lifecycle.settings().secrets_key.clone(),
                ),
                lifecycle,
                telemetry,
                registry,
                clients,
            }),
        }
    }

    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The secrets tasks may use.
    pub fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    fn clients(&self) -> &dyn WorkerCalls {
        self.inner.clients.as_ref()
    }

    /// One task, or a clear `NotFound`.
    pub async fn task(&self, task_id: &TaskId) -> MasterResult<TaskRecord> {
        self.lifecycle().task(task_id).await
    }

    /// Validates and stores a task. `task auto …` queues it for the scheduler
    /// and returns at once; a named worker gets it right away (or a clear error
    /// when it is not active or cannot fit it now).
    pub async fn submit_task(&self, request: TaskRequest) -> MasterResult<TaskRecord> {
        let now = now_millis();
        let mut task = TaskRecord {
            command: request.command,
            env: request.env,
            limits: request.limits,
            timeout_seconds: request.timeout_seconds,
            priority: request.priority,
            max_retries: request.max_retries,
            options: request.options,
            owner: request.owner,
            ..TaskRecord::queued(&task_ids::new_task_id(), &request.image, now)
        };
        validate::task(&convert::task_message(&task))?;
        self.secrets().check_task(&task.options).await?;
        if request.max_retries > MAX_RETRIES {
            return Err(MasterError::InvalidArgument(format!(
                "retries: at most {MAX_RETRIES}"
            )));
        }
        match &request.placement {
            Placement::Auto => {
                self.lifecycle().add(&task).await?;
                self.lifecycle().wake_scheduler();
                Ok(task)
            }
            Placement::Worker(worker_id) => {
                let gpus = self.fit_on(worker_id, &task)?;
                task.worker_id = Some(worker_id.to_string());
                self.lifecycle().add(&task).await?;
                let task = self.reserve(&task.id, worker_id, gpus).await?;
                self.dispatch(task).await
            }
        }
    }

    /// Checks that a named worker is active and can fit the task now; returns
    /// the GPUs it would get.
    fn fit_on(&self, worker_id: &WorkerId, task: &TaskRecord) -> MasterResult<Vec<String>> {
        match self.registry().get(worker_id).map(|w| w.state) {
            None => {
                return Err(MasterError::NotFound(format!(
                    "no worker '{worker_id}': `workers` lists the registered ones, or use `task auto …`"
                )));
            }
            Some(WorkerState::Active) => {}
            Some(state) => {
                return Err(MasterError::FailedPrecondition(format!(
                    "worker '{worker_id}' is {}: start it, or use `task auto …`",
                    state.as_str()
                )));
            }
        }
        let candidate = candidates(self.registry(), self.lifecycle())
            .into_iter()
            .find(|c| c.id == worker_id.as_str());
        let demand = demand(task);
        // A policy refusal, not a lack of capacity: waiting would not help.
        if demand.host_network && !candidate.as_ref().is_some_and(|c| c.allow_host_network) {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' does not allow the host's network: start it with --allow-host-network"
            )));
        }
        if demand.host_ipc && !candidate.as_ref().is_some_and(|c| c.allow_host_ipc) {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' does not allow the host's IPC namespace: start it with --allow-host-ipc"
            )));
        }
        let allowed = candidate.as_ref().map(|c| c.allowed_host_paths.as_slice());
        if let Some(path) = demand.host_paths.iter().find(|path| {
            !cloudai_common::validate::host_path_allowed(path, allowed.unwrap_or_default())
        }) {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' does not allow host path '{path}': start it with --allow-host-path naming that directory or one above it"
            )));
        }
        let candidates: Vec<_> = candidate.into_iter().collect();
        crate::core::placement::place(&demand, &candidates, self.lifecycle().settings().policy)
            .map(|choice| choice.gpus)
            .map_err(|reason| {
                MasterError::FailedPrecondition(format!(
                    "worker '{worker_id}' cannot run it now ({}); `task auto …` queues it until capacity frees",
                    reason.replace("no worker with", "it lacks")
                ))
            })
    }

    /// Places a queued task on a worker chosen by an agent: validated like the
    /// built-in scheduler's own choices (worker active, resources fit).
    pub async fn place_queued(
        &self,
        task: TaskRecord,
        worker_id: &WorkerId,
        gpus: Vec<String>,
    ) -> MasterResult<TaskRecord> {
        if task.state != TaskState::Queued {
            return Err(MasterError::FailedPrecondition(format!(
                "task '{}' is {}, not queued",
                task.id, task.state
            )));
        }
        let mut wanted = task.clone();
        if !gpus.is_empty() {
            wanted.limits.gpu_device_ids = gpus;
        }
        let gpus = self.fit_on(worker_id, &wanted)?;
        let task = self.reserve(&task.id, worker_id, gpus).await?;
        self.dispatch(task).await
    }

    /// Records a placement: the assignment, and the task `assigned` to the
    /// worker with its exact GPUs (so reservations count at once).
    pub(crate) async fn reserve(
        &self,
        task_id: &str,
        worker_id: &str,
        gpus: Vec<String>,
    ) -> MasterResult<TaskRecord> {
        let owner = worker_id.to_string();
        // The conditional state change decides who wins a race (scheduler vs
        // agent); only the winner records the assignment, in the same commit.
        self.lifecycle()
            .transition_with(
                task_id,
                TaskState::Assigned,
                |t| {
                    t.worker_id = Some(owner.clone());
                    t.assigned_gpus = gpus.clone();
                },
                |t| {
                    vec![Write::PutAssignment(AssignmentRecord {
                        task_id: t.id.clone(),
                        attempt: t.attempt,
                        worker_id: owner.clone(),
                        assigned_at: now_millis(),
                    })]
                },
            )
            .await?
            .ok_or_else(|| {
                MasterError::FailedPrecondition(format!("task '{task_id}' can no longer be placed"))
            })
    }

    /// Hands an assigned task to its worker. A worker that does not take it
    /// sends the task back to the queue (or fails it when out of retries).
    pub(crate) async fn dispatch(&self, task: TaskRecord) -> MasterResult<TaskRecord> {
        let worker_id = task.worker_id.clone().unwrap_or_default();
        let address = self.registry().get(&worker_id).map(|w| w.record.address);
        let mut message = convert::task_message(&task);
        let registry_credentials = match self.secrets().fill(&mut message).await {
            Ok(login) => login,
            Err(error) => {
                // A secret it needs is gone: no retry brings it back.
                let error = format!("cannot send the task to its worker: {error}");
                tracing::warn!(task_id = %task.id, error, "task failed before dispatch");
                return Ok(self
                    .lifecycle()
                    .transition(&task.id, TaskState::Failed, |t| {
                        t.error = Some(error.clone())
                    })
                    .await?
                    .unwrap_or(task));
            }
        };
        let outcome = async {
            let address = address.ok_or_else(|| Refusal::Sure("it was unregistered".into()))?;
            let request = AssignTaskRequest {
                task: Some(message),
                worker_id: worker_id.clone(),
                registry_credentials,
            };
            let response = self
                .clients()
                .assign_task(&address, request)
                .await
                .map_err(Refusal::of)?;
            if response.accepted {
                Ok(())
            } else {
                Err(Refusal::Sure(response.message))
            }
        }
        .await;
        match outcome {
            Ok(()) => Ok(task),
            Err(Refusal::Sure(reason)) => {
                tracing::warn!(task_id = %task.id, worker_id, reason, "assignment failed");
                let error = format!("worker {worker_id} did not take the task: {reason}");
                Ok(self
                    .lifecycle()
                    .retry_or_fail(&task.id, &error)
                    .await?
                    .unwrap_or(task))
            }
            Err(Refusal::Unsure(reason)) => {
                // The worker may have taken it: running it elsewhere too could
                // run it twice. Its heartbeats (or its silence) settle it.
                tracing::warn!(task_id = %task.id, worker_id, reason, "no answer to an assignment; the task is unknown until the worker's heartbeat says");
                let unknown = self
                    .lifecycle()
                    .tasks_unknown(&worker_id, vec![task.id.clone()])
                    .await;
                self.inner.telemetry.watch_unknown(&worker_id, &unknown);
                Ok(self
                    .lifecycle()
                    .store()
                    .get_task(&task.id)
                    .await?
                    .unwrap_or(task))
            }
        }
    }

    /// Opens the live log stream of a task that is assigned or running.
    pub async fn follow_logs(&self, task: &TaskRecord) -> MasterResult<LogStream> {
        let worker_id = task.worker_id.clone().unwrap_or_default();
        let address = self
            .registry()
            .get(&worker_id)
            .map(|w| w.record.address)
            .ok_or_else(|| {
                MasterError::NotFound(format!("task '{}' has no registered worker", task.id))
            })?;
        let request = StreamTaskLogsRequest {
            task_id: task.id.clone(),
            follow: true,
        };
        self.clients()
            .stream_task_logs(&address, request)
            .await
            .map_err(|s| MasterError::Unavailable(format!("worker {worker_id}: {}", s.message())))
    }

    /// Cancels a task: queued tasks at once, placed ones through their worker.
    pub async fn cancel_task(&self, task_id: &TaskId) -> MasterResult<TaskRecord> {
        let task = self.task(task_id).await?;
        let task_id = task_id.as_str();
        if task.state.is_terminal() {
            return Err(MasterError::FailedPrecondition(format!(
                "task '{task_id}' already ended ({})",
                task.state
            )));
        }
        if let Some(worker_id) = task.worker_id.clone()
            && task.state != TaskState::Queued
            && let Some(worker) = self.registry().get(&worker_id)
        {
            let request = CancelTaskRequest {
                task_id: task_id.to_string(),
                grace_period_seconds: 0,
                reason: "cancelled".into(),
            };
            let reached = self
                .clients()
                .cancel_task(&worker.record.address, request)
                .await
                .map(|r| r.found);
            match reached {
                // The worker stops the container and reports `cancelled` itself.
                Ok(true) => return Ok(task),
                Ok(false) => {}
                Err(status) => {
                    tracing::warn!(task_id, worker_id, error = %status.message(), "worker unreachable for cancel; it will be told to stop the task when it returns")
                }
            }
        }
        let cancelled = self
            .lifecycle()
            .transition(task_id, TaskState::Cancelled, |t| {
                t.error = Some("cancelled by operator".into())
            })
            .await?;
        cancelled.ok_or_else(|| {
            MasterError::FailedPrecondition(format!("task '{task_id}' could not be cancelled"))
        })
    }
}

/// Why an assignment did not go through.
enum Refusal {
    /// The worker surely does not have the task (refused, unreachable).
    Sure(String),
    /// The call broke off or ran out of time: the worker may have it.
    Unsure(String),
}

impl Refusal {
    fn of(status: tonic::Status) -> Self {
        let reason = status.message().to_string();
        match status.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
                Refusal::Unsure(reason)
            }
            _ => Refusal::Sure(reason),
        }
    }
}

/// Refuses a worker's word on a task it does not hold (given away after a loss).
pub(crate) fn check_holder(task: &TaskRecord, worker_id: &str) -> MasterResult<()> {
    if task.worker_id.as_deref() == Some(worker_id) {
        return Ok(());
    }
    Err(MasterError::FailedPrecondition(format!(
        "task '{}' belongs to worker {:?}, not {worker_id}",
        task.id, task.worker_id
    )))
}

/// Refuses a worker's word on another attempt than the task's current one.
pub(crate) fn check_attempt(task: &TaskRecord, attempt: u32) -> MasterResult<()> {
    if task.attempt == attempt {
        return Ok(());
    }
    Err(MasterError::FailedPrecondition(format!(
        "task '{}' is on attempt {}, not {attempt}",
        task.id, task.attempt
    )))
}
