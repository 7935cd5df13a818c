//! gRPC handlers of `WorkerService`: thin wrappers over [`Worker`].

use crate::Worker;
use crate::task::handle::{StopReason, TaskHandle};
use crate::task::runner;
use cloudai_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use cloudai_proto::v1::{
    AssignTaskRequest, AssignTaskResponse, CancelTaskRequest, CancelTaskResponse, LogChunk,
    MasterRegisterRequest, MasterRegisterResponse, StreamTaskLogsRequest,
};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Largest gRPC message the worker accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The `WorkerService` implementation.
pub struct WorkerGrpc {
    worker: Worker,
}

impl WorkerGrpc {
    /// A tonic service over `worker`, with message size limits.
    pub fn service(worker: Worker) -> WorkerServiceServer<Self> {
        WorkerServiceServer::new(Self { worker })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl WorkerGrpc {
    /// Only the master may call a worker (its certificate carries the master identity).
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.worker.identity().is_none()
            || crate::master_link::identity::is_master(
                request.peer_certs().as_deref().map(Vec::as_slice),
            )
        {
            return Ok(());
        }
        tracing::warn!(peer = ?request.remote_addr(), "refused a call from a client that is not the master");
        Err(Status::permission_denied(
            "only the cluster's master may call this worker",
        ))
    }
}

fn invalid(error: cloudai_common::validate::ValidationError) -> Status {
    Status::invalid_argument(error.to_string())
}

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    async fn master_register(
        &self,
        request: Request<MasterRegisterRequest>,
    ) -> Result<Response<MasterRegisterResponse>, Status> {
        self.authorize(&request)?;
        let peer = request.remote_addr();
        let request = request.into_inner();
        if request.worker_id != self.worker.id() {
            return Err(Status::invalid_argument(format!(
                "this worker's id is '{}', not '{}': run `unregister {}` and `register {} {}` on the master",
                self.worker.id(),
                request.worker_id,
                request.worker_id,
                self.worker.id(),
                self.worker.address()
            )));
        }
        let master = match request.master_address.strip_prefix(':') {
            Some(port) => {
                let peer = peer.ok_or_else(|| {
                    Status::invalid_argument(
                        "master_address: no host given and the caller's address is unknown",
                    )
                })?;
                match peer.ip().to_canonical() {
                    std::net::IpAddr::V6(ip) => format!("[{ip}]:{port}"),
                    ip => format!("{ip}:{port}"),
                }
            }
            None => request.master_address.clone(),
        };
        cloudai_common::validate::address("master_address", &master).map_err(invalid)?;
        tracing::info!(master, "invited by a master");
        self.worker.link().set_master(master.clone());
        crate::master_link::register(&self.worker).await?;
        Ok(Response::new(MasterRegisterResponse {
            message: format!("worker {} registered with {master}", self.worker.id()),
        }))
    }

    async fn assign_task(
        &self,
        request: Request<AssignTaskRequest>,
    ) -> Result<Response<AssignTaskResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        if !request.worker_id.is_empty() && request.worker_id != self.worker.id() {
            return Err(Status::failed_precondition(format!(
                "this is worker '{}', not '{}': the master's registration points at the wrong worker",
                self.worker.id(),
                request.worker_id
            )));
        }
        let credentials = request.registry_credentials;
        let task = request
            .task
            .ok_or_else(|| Status::invalid_argument("task: missing"))?;
        cloudai_common::validate::id("task.task_id", &task.task_id).map_err(invalid)?;
        cloudai_common::validate::task(&task).map_err(invalid)?;
        if task.options.as_ref().is_some_and(|o| o.network == "host")
            && !self.worker.config().allow_host_network
        {
            return Err(Status::permission_denied(
                "this worker does not allow the host's network: start it with --allow-host-network to allow it",
            ));
        }
        if task.options.as_ref().is_some_and(|o| o.ipc == "host")
            && !self.worker.config().allow_host_ipc
        {
            return Err(Status::permission_denied(
                "this worker does not allow the host's IPC namespace: start it with --allow-host-ipc to allow it",
            ));
        }
        let allowed = &self.worker.config().allow_host_paths;
        for mount in task.options.iter().flat_map(|o| &o.mounts) {
            if mount.kind == cloudai_proto::v1::mount::Kind::HostPath as i32
                && !cloudai_common::validate::host_path_allowed(&mount.source, allowed)
            {
                return Err(Status::permission_denied(format!(
                    "this worker does not allow host path '{}': start it with --allow-host-path <dir> to allow it",
                    mount.source
                )));
            }
        }
        if self.worker.shutdown_token().is_cancelled() {
            return Err(Status::unavailable("this worker is shutting down"));
        }
        if let Some(window) = self.worker.link().contact().overdue() {
            return Err(Status::unavailable(format!(
                "this worker's heartbeats have not reached the master for over {}s (the disconnect window): it takes no task until they do",
                window.as_secs()
            )));
        }
        let handle = Arc::new(TaskHandle::new(task.attempt.max(1)));
        if !self.worker.adopt(&task.task_id, handle.clone()) {
            return Ok(Response::new(AssignTaskResponse {
                accepted: true,
                message: "already running here".into(),
            }));
        }
        tracing::info!(task_id = %task.task_id, image = %task.image, "task assigned");
        self.worker.tracker().spawn(runner::run_new(
            self.worker.clone(),
            task,
            credentials,
            handle,
        ));
        Ok(Response::new(AssignTaskResponse {
            accepted: true,
            message: String::new(),
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        cloudai_common::validate::id("task_id", &request.task_id).map_err(invalid)?;
        let Some(handle) = self.worker.task(&request.task_id) else {
            return Ok(Response::new(CancelTaskResponse { found: false }));
        };
        let reason = if request.reason == "timed_out" {
            StopReason::TimedOut
        } else {
            StopReason::Cancelled
        };
        tracing::info!(task_id = %request.task_id, ?reason, "stopping task");
        match request.grace_period_seconds {
            0 => handle.request_stop(reason),
            seconds => handle.request_stop_with_grace(
                reason,
                std::time::Duration::from_secs(u64::from(seconds)),
            ),
        }
        Ok(Response::new(CancelTaskResponse { found: true }))
    }

    type StreamTaskLogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn stream_task_logs(
        &self,
        request: Request<StreamTaskLogsRequest>,
    ) -> Result<Response<Self::StreamTaskLogsStream>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        cloudai_common::validate::id("task_id", &request.task_id).map_err(invalid)?;
        let handle = self.worker.task(&request.task_id).ok_or_else(|| {
            Status::not_found(format!(
                "task '{}' is not on this worker (the master keeps the output of finished tasks)",
                request.task_id
            ))
        })?;
        let subscription = handle.logs.subscribe();
        let (tx, rx) = mpsc::channel(64);
        let task_id = request.task_id.clone();
        let shutdown = self.worker.shutdown_token().clone();
        self.worker.tracker().spawn(async move {
            for chunk in subscription.backlog {
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = subscription.live.filter(|_| request.follow) else {
                return;
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = live.recv() => next,
                };
                let item = match next {
                    Ok(chunk) => chunk,
                    Err(RecvError::Lagged(skipped)) => LogChunk {
                        task_id: task_id.clone(),
                        data: format!("[{skipped} log chunks skipped: reader too slow]\n")
                            .into_bytes(),
                        ..Default::default()
                    },
                    Err(RecvError::Closed) => return,
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
