//! gRPC handlers of `MasterService`: thin wrappers that validate and delegate
//! to the services a worker talks to (auth, workers, telemetry, tasks).

use crate::auth::Auth;
use crate::core::metrics::MasterMetrics;
use crate::core::runtime::Settings;
use crate::core::tasks::Tasks;
use crate::core::telemetry::Telemetry;
use crate::core::workers::Workers;
use crate::services::Services;
use cloudai_common::ids::{TaskId, WorkerId};
use cloudai_proto::v1::master_service_server::{MasterService, MasterServiceServer};
use cloudai_proto::v1::{
    CertificateResponse, Heartbeat, HeartbeatResponse, JoinClusterRequest, RegisterWorkerRequest,
    RegisterWorkerResponse, RenewCertificateRequest, ReportTaskCompletionResponse,
    ReportTaskProgressResponse, TaskLogPart, TaskProgress, TaskResult, UploadTaskLogResponse,
};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

/// Largest gRPC message the master accepts from a worker (log tails and
/// uploaded log parts included).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Most task ids one heartbeat may list as running or held.
pub const MAX_HEARTBEAT_TASKS: usize = 10_000;

/// The `MasterService` implementation.
pub struct MasterGrpc {
    settings: Settings,
    metrics: Arc<MasterMetrics>,
    auth: Auth,
    workers: Workers,
    telemetry: Telemetry,
    tasks: Tasks,
}

impl MasterGrpc {
    /// A tonic service over the master's services, with message size limits.
    pub fn service(services: &Services) -> MasterServiceServer<Self> {
        let service = Self {
            settings: services.settings.clone(),
            metrics: services.metrics.clone(),
            auth: services.auth.clone(),
            workers: services.workers.clone(),
            telemetry: services.telemetry.clone(),
            tasks: services.tasks.clone(),
        };
        MasterServiceServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The `worker_id` of a request, checked once here.
fn worker_id(text: &str) -> Result<WorkerId, Status> {
    WorkerId::parse("worker_id", text).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl MasterService for MasterGrpc {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let started = Instant::now();
        let peer = request.remote_addr();
        let claimed = request
            .get_ref()
            .info
            .as_ref()
            .map(|i| i.worker_id.clone())
            .unwrap_or_default();
        self.auth.authenticate_worker(
            &claimed,
            request.peer_certs().as_deref().map(Vec::as_slice),
            peer,
        )?;
        let stop_task_ids = self.workers.accept_worker(request.into_inner(), peer).await;
        self.metrics
            .observe_rpc("RegisterWorker", started.elapsed());
        let stop_task_ids = stop_task_ids?;
        Ok(Response::new(RegisterWorkerResponse {
            heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u64,
            message: "registered".into(),
            stop_task_ids,
            disconnect_window_ms: self.settings.disconnect_window.as_millis() as u64,
        }))
    }

    async fn send_heartbeat(
        &self,
        request: Request<Heartbeat>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let started = Instant::now();
        let (peer, certs) = (request.remote_addr(), request.peer_certs());
        let heartbeat = request.into_inner();
        let worker_id = worker_id(&heartbeat.worker_id)?;
        self.auth
            .authenticate_worker(&worker_id, certs.as_deref().map(Vec::as_slice), peer)?;
        for (field, ids) in [
            ("running_task_ids", &heartbeat.running_task_ids),
            ("held_task_ids", &heartbeat.held_task_ids),
        ] {
            if ids.len() > MAX_HEARTBEAT_TASKS {
                return Err(Status::invalid_argument(format!(
                    "{field}: at most {MAX_HEARTBEAT_TASKS} task ids, got {}",
                    ids.len()
                )));
            }
        }
        let stop_task_ids = self.telemetry.ingest_heartbeat(heartbeat).ok_or_else(|| {
            Status::permission_denied(format!(
                "worker '{worker_id}' is not registered with this master: run `register {worker_id} <host:port>` on the master"
            ))
        });
        self.metrics.observe_rpc("SendHeartbeat", started.elapsed());
        Ok(Response::new(HeartbeatResponse {
            stop_task_ids: stop_task_ids?,
        }))
    }

    async fn report_task_completion(
        &self,
        request: Request<TaskResult>,
    ) -> Result<Response<ReportTaskCompletionResponse>, Status> {
        let started = Instant::now();
        let worker_id = request.get_ref().worker_id.clone();
        self.auth.authenticate_worker(
            &worker_id,
            request.peer_certs().as_deref().map(Vec::as_slice),
            request.remote_addr(),
        )?;
        let outcome = self.tasks.complete_task(request.into_inner()).await;
        self.metrics
            .observe_rpc("ReportTaskCompletion", started.elapsed());
        outcome?;
        Ok(Response::new(ReportTaskCompletionResponse {}))
    }

    async fn report_task_progress(
        &self,
        request: Request<TaskProgress>,
    ) -> Result<Response<ReportTaskProgressResponse>, Status> {
        let started = Instant::now();
        let (peer, certs) = (request.remote_addr(), request.peer_certs());
        let report = request.into_inner();
        let worker_id = worker_id(&report.worker_id)?;
        self.auth
            .authenticate_worker(&worker_id, certs.as_deref().map(Vec::as_slice), peer)?;
        TaskId::parse("task_id", &report.task_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let kept = self.tasks.lifecycle().record_progress(&report);
        self.metrics
            .observe_rpc("ReportTaskProgress", started.elapsed());
        kept?;
        Ok(Response::new(ReportTaskProgressResponse {}))
    }

    async fn upload_task_log(
        &self,
        request: Request<Streaming<TaskLogPart>>,
    ) -> Result<Response<UploadTaskLogResponse>, Status> {
        let started = Instant::now();
        let (peer, certs) = (request.remote_addr(), request.peer_certs());
        let mut parts = request.into_inner();
        let Some(first) = parts.message().await? else {
            return Err(Status::invalid_argument(
                "an upload needs at least one part",
            ));
        };
        let worker_id = worker_id(&first.worker_id)?;
        self.auth
            .authenticate_worker(&worker_id, certs.as_deref().map(Vec::as_slice), peer)?;
        let stored = self.tasks.store_task_log(first, parts).await;
        self.metrics.observe_rpc("UploadTaskLog", started.elapsed());
        let stored = stored?;
        Ok(Response::new(UploadTaskLogResponse {
            chunks: stored.chunks,
            bytes: stored.bytes,
        }))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinClusterRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        let response = self
            .auth
            .join_cluster(&worker_id, &request.token, &request.csr_der, peer)
            .await?;
        Ok(Response::new(response))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let worker_id = worker_id(&request.get_ref().worker_id)?;
        self.auth.authenticate_worker(
            &worker_id,
            request.peer_certs().as_deref().map(Vec::as_slice),
            request.remote_addr(),
        )?;
        let response = self
            .auth
            .renew_certificate(&worker_id, &request.into_inner().csr_der)
            .await?;
        Ok(Response::new(response))
    }
}
