//! The simulated workers' shared `WorkerService` endpoint, and latency samples.

use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::worker_service_server::WorkerService;
use cloudai_proto::v1::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Latency samples in microseconds.
#[derive(Default)]
pub struct Samples(Mutex<Vec<u64>>);

impl Samples {
    /// Adds one sample.
    pub fn add(&self, value: Duration) {
        self.0
            .lock()
            .unwrap()
            .push(value.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Count, p50, p99 and max as JSON.
    pub fn percentiles(&self) -> serde_json::Value {
        let mut values = self.0.lock().unwrap().clone();
        values.sort_unstable();
        let at = |p: f64| {
            values
                .get(((values.len() as f64 * p) as usize).min(values.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        serde_json::json!({
            "count": values.len(),
            "p50_us": at(0.50),
            "p99_us": at(0.99),
            "max_us": values.last().copied().unwrap_or(0),
        })
    }
}

/// Every simulated worker behind one endpoint: accepts each task and reports
/// it completed after `delay`.
pub struct SimWorkers {
    /// Set once the master's address is known (the server starts first, so
    /// the master's invitations at start-up are answered at once).
    pub master: Arc<OnceLock<MasterServiceClient<Channel>>>,
    /// How long a task "runs".
    pub delay: Duration,
    /// When each task reached its worker (compared with its submission
    /// afterwards: an assignment can arrive before the submitter hears back).
    pub assigned: Arc<Mutex<HashMap<String, Instant>>>,
    /// Completion reports the master acknowledged.
    pub completed: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl WorkerService for SimWorkers {
    async fn master_register(
        &self,
        _: Request<MasterRegisterRequest>,
    ) -> Result<Response<MasterRegisterResponse>, Status> {
        Ok(Response::new(MasterRegisterResponse {
            message: "simulated".into(),
        }))
    }

    async fn assign_task(
        &self,
        request: Request<AssignTaskRequest>,
    ) -> Result<Response<AssignTaskResponse>, Status> {
        let request = request.into_inner();
        let task = request
            .task
            .ok_or_else(|| Status::invalid_argument("task"))?;
        self.assigned
            .lock()
            .unwrap()
            .insert(task.task_id.clone(), Instant::now());
        let mut master = self
            .master
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("not ready"))?;
        let (delay, completed) = (self.delay, self.completed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let now = Some(cloudai_proto::timestamp(SystemTime::now()));
            let result = TaskResult {
                task_id: task.task_id,
                worker_id: request.worker_id,
                status: TaskStatus::Completed as i32,
                exit_code: Some(0),
                started_at: now,
                finished_at: now,
                attempt: task.attempt,
                ..Default::default()
            };
            if master.report_task_completion(result).await.is_ok() {
                completed.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Response::new(AssignTaskResponse {
            accepted: true,
            message: String::new(),
        }))
    }

    async fn cancel_task(
        &self,
        _: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        Ok(Response::new(CancelTaskResponse { found: false }))
    }

    type StreamTaskLogsStream = tokio_stream::Empty<Result<LogChunk, Status>>;

    async fn stream_task_logs(
        &self,
        _: Request<StreamTaskLogsRequest>,
    ) -> Result<Response<Self::StreamTaskLogsStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }
}
