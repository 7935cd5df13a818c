//! The `MasterAgent` gRPC service: lets an external (AI) scheduler read cluster
//! state, submit and cancel tasks, place queued tasks, and follow events.
//! Every call needs an API token (`authorization: Bearer <token>` metadata):
//! viewer for reads, operator for changes. Task environments go to operator
//! and admin tokens only.

use crate::api::grpc::agent_views::{
    millis_timestamp, progress_message, task_view_for, worker_view,
};
use crate::api::grpc::{bearer, caller};
use crate::auth::Auth;
use crate::auth::users::Role;
use crate::core::convert;
use crate::core::events::{Event, EventBus};
use crate::core::lifecycle::Lifecycle;
use crate::core::registry::WorkerState as LiveState;
use crate::core::runtime::{Runtime, Settings};
use crate::core::scheduler::Scheduler;
use crate::core::tasks::{Placement, TaskRequest, Tasks};
use crate::core::workers::Workers;
use crate::error::MasterError;
use crate::services::Services;
use crate::store::{Limits, Store, TaskState};
use cloudai_common::ids::{TaskId, WorkerId};
use cloudai_proto::v1::cluster_event::Event as Wire;
use cloudai_proto::v1::master_agent_server::{MasterAgent, MasterAgentServer};
use cloudai_proto::v1::{
    AgentAssignTaskRequest, AgentAssignTaskResponse, AgentCancelTaskRequest,
    AgentCancelTaskResponse, ClusterEvent, ClusterState, FreeResources, GetClusterStateRequest,
    GetTaskRequest, ListQueuedTasksRequest, ListQueuedTasksResponse, StreamEventsRequest,
    SubmitTaskRequest, SubmitTaskResponse, TaskView,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The `MasterAgent` implementation.
pub struct AgentGrpc {
    auth: Auth,
    settings: Settings,
    runtime: Runtime,
    store: Arc<dyn Store>,
    events: EventBus,
    lifecycle: Lifecycle,
    workers: Workers,
    tasks: Tasks,
    scheduler: Scheduler,
}

impl AgentGrpc {
    /// A tonic service over the master's services, with message size limits.
    pub fn service(services: &Services) -> MasterAgentServer<Self> {
        let service = Self {
            auth: services.auth.clone(),
            settings: services.settings.clone(),
            runtime: services.runtime.clone(),
            store: services.store.clone(),
            events: services.events.clone(),
            lifecycle: services.lifecycle.clone(),
            workers: services.workers.clone(),
            tasks: services.tasks.clone(),
            scheduler: services.scheduler.clone(),
        };
        MasterAgentServer::new(service)
            .max_decoding_message_size(crate::api::grpc::worker_api::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::api::grpc::worker_api::MAX_MESSAGE_BYTES)
    }

    /// The caller's role, when it has at least `role`.
    fn authorize<T>(&self, request: &Request<T>, role: Role) -> Result<Role, Status> {
        Ok(caller(&self.auth, request, role)?.role)
    }
}

#[tonic::async_trait]
impl MasterAgent for AgentGrpc {
    async fn get_cluster_state(
        &self,
        request: Request<GetClusterStateRequest>,
    ) -> Result<Response<ClusterState>, Status> {
        self.authorize(&request, Role::Viewer)?;
        // Free resources as the scheduler sees them: reservations of placed
        // tasks, live memory use and GPUs held per telemetry all count.
        let candidates: HashMap<String, crate::core::placement::Candidate> =
            crate::core::capacity::candidates(self.workers.registry(), &self.lifecycle)
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        let placed = self.lifecycle.running_per_worker();
        let workers = self
            .workers
            .registry()
            .list()
            .iter()
            .map(|w| {
                let mut view = worker_view(w, &HashMap::new());
                view.placed_tasks = placed.get(&w.record.id).copied().unwrap_or(0) as u32;
                if let Some(c) = candidates.get(&w.record.id) {
                    let live_free = c
                        .live_memory_used
                        .map_or(i64::MAX, |used| c.memory_bytes - used);
                    view.free = Some(FreeResources {
                        nano_cpus: (c.nano_cpus - c.reserved_nano_cpus).max(0),
                        memory_bytes: (c.memory_bytes - c.reserved_memory_bytes)
                            .min(live_free)
                            .max(0),
                        gpu_uuids: c
                            .gpus
                            .iter()
                            .filter(|g| !c.used_gpus.contains(*g))
                            .cloned()
                            .collect(),
                    });
                }
                view
            })
            .collect();
        let queued = self
            .lifecycle
            .active_tasks()
            .values()
            .filter(|t| t.state == TaskState::Queued)
            .count() as u32;
        Ok(Response::new(ClusterState {
            workers,
            queued_tasks: queued,
            placement_mode: self.settings.placement_mode.as_str().into(),
        }))
    }

    async fn list_queued_tasks(
        &self,
        request: Request<ListQueuedTasksRequest>,
    ) -> Result<Response<ListQueuedTasksResponse>, Status> {
        let role = self.authorize(&request, Role::Viewer)?;
        let limit = match request.get_ref().limit {
            0 => 1000,
            n => n.min(10_000) as usize,
        };
        let ids: Vec<String> = self
            .lifecycle
            .active_tasks()
            .iter()
            .filter(|(_, t)| t.state == TaskState::Queued)
            .map(|(id, _)| id.clone())
            .collect();
        let mut tasks = Vec::new();
        for id in ids {
            if let Some(task) = self.store.get_task(&id).await.map_err(MasterError::from)? {
                tasks.push(task);
            }
        }
        tasks.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.created_at.cmp(&b.created_at))
        });
        let tasks = tasks
            .iter()
            .take(limit)
            .map(|t| {
                let mut view = task_view_for(t, role, None);
                view.waiting_reason = self.scheduler.waiting_reason(&t.id).unwrap_or_default();
                view
            })
            .collect();
        Ok(Response::new(ListQueuedTasksResponse { tasks }))
    }

    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<TaskView>, Status> {
        let role = self.authorize(&request, Role::Viewer)?;
        let task_id =
            TaskId::parse("task_id", &request.get_ref().task_id).map_err(MasterError::from)?;
        let task = self.tasks.task(&task_id).await?;
        let progress = self.lifecycle.progress(&task.id);
        Ok(Response::new(task_view_for(&task, role, progress.as_ref())))
    }

    async fn submit_task(
        &self,
        request: Request<SubmitTaskRequest>,
    ) -> Result<Response<SubmitTaskResponse>, Status> {
        let owner = caller(&self.auth, &request, Role::Operator)?.user;
        let request = request.into_inner();
        let task = request
            .task
            .ok_or_else(|| Status::invalid_argument("task: missing"))?;
        let limits = task.limits.unwrap_or_default();
        let placement = if request.worker_id.is_empty() {
            Placement::Auto
        } else {
            Placement::Worker(
                WorkerId::parse("worker_id", &request.worker_id).map_err(MasterError::from)?,
            )
        };
        let submitted = self
            .tasks
            .submit_task(TaskRequest {
                placement,
                image: task.image,
                command: task.command,
                env: task.env.into_iter().collect(),
                limits: Limits {
                    nano_cpus: limits.nano_cpus,
                    memory_bytes: limits.memory_bytes,
                    gpu_count: limits.gpu_count,
                    gpu_device_ids: limits.gpu_device_ids,
                },
                timeout_seconds: task.timeout_seconds,
                priority: request.priority,
                max_retries: request.max_retries,
                options: convert::options_record(task.options).map_err(MasterError::from)?,
                owner,
            })
            .await?;
        Ok(Response::new(SubmitTaskResponse {
            task_id: submitted.id,
            status: convert::task_status(submitted.state) as i32,
        }))
    }

    async fn assign_task(
        &self,
        request: Request<AgentAssignTaskRequest>,
    ) -> Result<Response<AgentAssignTaskResponse>, Status> {
        self.authorize(&request, Role::Operator)?;
        let request = request.into_inner();
        let task_id = TaskId::parse("task_id", &request.task_id).map_err(MasterError::from)?;
        let worker_id =
            WorkerId::parse("worker_id", &request.worker_id).map_err(MasterError::from)?;
        let task = self.tasks.task(&task_id).await?;
        if task.state != TaskState::Queued {
            return Err(Status::failed_precondition(format!(
                "task '{}' is {}, not queued",
                task.id, task.state
            )));
        }
        match self.workers.worker_state(&request.worker_id) {
            None => {
                return Err(Status::not_found(format!(
                    "no worker '{}'",
                    request.worker_id
                )));
            }
            Some(LiveState::Active) => {}
            Some(state) => {
                return Err(Status::failed_precondition(format!(
                    "worker '{}' is {}",
                    request.worker_id,
                    state.as_str()
                )));
            }
        }
        let placed = self
            .tasks
            .place_queued(task, &worker_id, request.gpu_uuids)
            .await?;
        tracing::info!(task_id = %placed.id, worker_id = %request.worker_id, "placed by the agent");
        Ok(Response::new(AgentAssignTaskResponse {
            status: convert::task_status(placed.state) as i32,
            message: placed.error.unwrap_or_default(),
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<AgentCancelTaskRequest>,
    ) -> Result<Response<AgentCancelTaskResponse>, Status> {
        self.authorize(&request, Role::Operator)?;
        let task_id =
            TaskId::parse("task_id", &request.get_ref().task_id).map_err(MasterError::from)?;
        let task = self.tasks.cancel_task(&task_id).await?;
        Ok(Response::new(AgentCancelTaskResponse {
            status: convert::task_status(task.state) as i32,
        }))
    }

    type StreamEventsStream = ReceiverStream<Result<ClusterEvent, Status>>;

    async fn stream_events(
        &self,
        request: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let role = self.authorize(&request, Role::Viewer)?;
        let revoked = self
            .auth
            .revoked(bearer(&request).map(str::to_string), Role::Viewer);
        let telemetry = request.get_ref().include_telemetry;
        let mut events = self.events.subscribe();
        let shutdown = self.runtime.shutdown.clone();
        let (registry, store) = (self.workers.registry().clone(), self.store.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        self.runtime.tracker.spawn(async move {
            let mut revoked = std::pin::pin!(revoked);
            loop {
                let envelope = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = &mut revoked => {
                        let _ = tx.send(Err(Status::unauthenticated("the API token was revoked"))).await;
                        return;
                    }
                    next = events.recv() => match next {
                        Ok(envelope) => envelope,
                        Err(RecvError::Lagged(missed)) => {
                            if tx.send(Err(Status::data_loss(format!("{missed} events missed: the stream was too slow; reconnect and re-read the state")))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        Err(RecvError::Closed) => return,
                    },
                };
                let view = |id: &str| registry.get(id).map(|w| worker_view(&w, &HashMap::new()));
                let event = match &envelope.event {
                    Event::Telemetry { worker_id, .. } if telemetry => registry
                        .get(worker_id)
                        .and_then(|w| w.latest)
                        .map(Wire::Telemetry),
                    Event::Telemetry { .. } => None,
                    Event::WorkerRegistered { worker_id, .. } => {
                        view(worker_id).map(Wire::WorkerRegistered)
                    }
                    Event::WorkerUnregistered { worker_id } => {
                        Some(Wire::WorkerUnregistered(worker_id.clone()))
                    }
                    Event::WorkerActive { worker_id } => view(worker_id).map(Wire::WorkerActive),
                    Event::WorkerInactive { worker_id, .. } => {
                        Some(Wire::WorkerInactive(worker_id.clone()))
                    }
                    Event::TaskState { task_id, .. } => {
                        match store.get_task(task_id).await {
                            Ok(Some(task)) => Some(Wire::TaskState(task_view_for(&task, role, None))),
                            _ => None,
                        }
                    }
                    Event::TaskProgress { task_id, worker_id, progress, .. } => {
                        Some(Wire::TaskProgress(progress_message(task_id, worker_id, progress)))
                    }
                };
                let Some(event) = event else { continue };
                let message = ClusterEvent {
                    sequence: envelope.seq,
                    timestamp: Some(millis_timestamp(envelope.timestamp)),
                    event: Some(event),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
