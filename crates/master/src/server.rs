//! gRPC handlers of `MasterService`: thin wrappers that validate and delegate to [`Master`].

use crate::cluster::Master;
use cloudai_proto::v1::master_service_server::{MasterService, MasterServiceServer};
use cloudai_proto::v1::{
    Heartbeat, HeartbeatResponse, RegisterWorkerRequest, RegisterWorkerResponse,
    ReportTaskCompletionResponse, TaskResult,
};
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Largest gRPC message the master accepts from a worker (log tails included).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The `MasterService` implementation.
pub struct MasterGrpc {
    master: Master,
}

impl MasterGrpc {
    /// A tonic service over `master`, with message size limits.
    pub fn service(master: Master) -> MasterServiceServer<Self> {
        MasterServiceServer::new(Self { master })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl MasterService for MasterGrpc {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let peer = request.remote_addr();
        let stop_task_ids = self
            .master
            .accept_worker(request.into_inner(), peer)
            .await?;
        Ok(Response::new(RegisterWorkerResponse {
            heartbeat_interval_ms: self.master.settings().heartbeat_interval.as_millis() as u64,
            message: "registered".into(),
            stop_task_ids,
        }))
    }

    async fn send_heartbeat(
        &self,
        request: Request<Heartbeat>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let started = Instant::now();
        let heartbeat = request.into_inner();
        cloudai_common::validate::id("worker_id", &heartbeat.worker_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let worker_id = heartbeat.worker_id.clone();
        let stop_task_ids = self.master.ingest_heartbeat(heartbeat).ok_or_else(|| {
            Status::permission_denied(format!(
                "worker '{worker_id}' is not registered with this master: run `register {worker_id} <host:port>` on the master"
            ))
        });
        self.master
            .metrics()
            .observe_rpc("SendHeartbeat", started.elapsed());
        Ok(Response::new(HeartbeatResponse {
            stop_task_ids: stop_task_ids?,
        }))
    }

    async fn report_task_completion(
        &self,
        request: Request<TaskResult>,
    ) -> Result<Response<ReportTaskCompletionResponse>, Status> {
        let started = Instant::now();
        let outcome = self.master.complete_task(request.into_inner()).await;
        self.master
            .metrics()
            .observe_rpc("ReportTaskCompletion", started.elapsed());
        outcome?;
        Ok(Response::new(ReportTaskCompletionResponse {}))
    }
}
