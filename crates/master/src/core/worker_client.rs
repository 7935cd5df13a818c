//! The master's side of `WorkerService`: the calls the core makes to workers
//! ([`WorkerCalls`]), and their real form over gRPC ([`WorkerClients`], one
//! lazily connected channel per worker address). Behind the trait, unit tests
//! drive the scheduler, retries and lost tasks in-process with a fake.

use cloudai_proto::v1::worker_service_client::WorkerServiceClient;
use cloudai_proto::v1::{
    AssignTaskRequest, AssignTaskResponse, CancelTaskRequest, CancelTaskResponse, LogChunk,
    MasterRegisterRequest, MasterRegisterResponse, StreamTaskLogsRequest,
};
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;
use tonic::transport::{Channel, ClientTlsConfig};

/// A task's live output from its worker.
pub type LogStream = BoxStream<'static, Result<LogChunk, Status>>;

/// What the master asks of a worker at `address`. Unary calls end within
/// [`CALL_TIMEOUT`].
#[async_trait::async_trait]
pub trait WorkerCalls: Send + Sync + 'static {
    /// Invites the worker to register (`MasterRegister`).
    async fn master_register(
        &self,
        address: &str,
        request: MasterRegisterRequest,
    ) -> Result<MasterRegisterResponse, Status>;
    /// Hands it a task (`AssignTask`).
    async fn assign_task(
        &self,
        address: &str,
        request: AssignTaskRequest,
    ) -> Result<AssignTaskResponse, Status>;
    /// Stops a task there (`CancelTask`).
    async fn cancel_task(
        &self,
        address: &str,
        request: CancelTaskRequest,
    ) -> Result<CancelTaskResponse, Status>;
    /// Follows a task's output (`StreamTaskLogs`).
    async fn stream_task_logs(
        &self,
        address: &str,
        request: StreamTaskLogsRequest,
    ) -> Result<LogStream, Status>;
    /// Drops what is kept for `address` (after unregister).
    fn forget(&self, address: &str);
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

#[async_trait::async_trait]
impl WorkerCalls for WorkerClients {
    async fn master_register(
        &self,
        address: &str,
        request: MasterRegisterRequest,
    ) -> Result<MasterRegisterResponse, Status> {
        let mut client = self.client(address).map_err(Status::unavailable)?;
        match tokio::time::timeout(CALL_TIMEOUT, client.master_register(with_deadline(request)))
            .await
        {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer within 10s")),
        }
    }

    async fn assign_task(
        &self,
        address: &str,
        request: AssignTaskRequest,
    ) -> Result<AssignTaskResponse, Status> {
        let mut client = self.client(address).map_err(Status::unavailable)?;
        Ok(client
            .assign_task(with_deadline(request))
            .await?
            .into_inner())
    }

    async fn cancel_task(
        &self,
        address: &str,
        request: CancelTaskRequest,
    ) -> Result<CancelTaskResponse, Status> {
        let mut client = self.client(address).map_err(Status::unavailable)?;
        Ok(client
            .cancel_task(with_deadline(request))
            .await?
            .into_inner())
    }

    async fn stream_task_logs(
        &self,
        address: &str,
        request: StreamTaskLogsRequest,
    ) -> Result<LogStream, Status> {
        let mut client = self.client(address).map_err(Status::unavailable)?;
        let stream = client.stream_task_logs(request).await?.into_inner();
        Ok(Box::pin(stream))
    }

    fn forget(&self, address: &str) {
        WorkerClients::forget(self, address);
    }
}

/// How long a unary call to a worker may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cache of gRPC clients keyed by worker address. Channels reconnect by themselves.
#[derive(Clone, Default)]
pub struct WorkerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS towards workers; `None` with `--insecure`.
    tls: Option<ClientTlsConfig>,
}

impl WorkerClients {
    /// A client cache; `tls` is the master's client TLS, `None` for plaintext.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// A client for the worker at `address` (`host:port`).
    fn client(&self, address: &str) -> Result<WorkerServiceClient<Channel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(WorkerServiceClient::new(channel.clone()));
        }
        let channel = cloudai_common::tls::lazy_channel("worker", address, self.tls.clone())
            .map_err(|e| e.to_string())?;
        channels.insert(address.to_string(), channel.clone());
        Ok(WorkerServiceClient::new(channel))
    }

    /// Forgets the channel to `address` (after unregister).
    pub fn forget(&self, address: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }
}
