//! The CloudAI worker.
//!
//! - [`Worker`]: the shared handle (tasks held, master link state);
//! - `task/`: one task's life: Docker over bollard (`executor`), the run
//!   (`runner`), its output in memory (`logs`) and on disk (`spool`);
//! - `master_link/`: registration, heartbeats, result delivery and uploads,
//!   the certificate (`identity`) and the disconnect window (`disconnect`);
//! - [`gpu`]: NVML GPU discovery, metrics and leases (none without a driver);
//! - `server`: gRPC `WorkerService` handlers; [`config`]: flags and environment.
//!
//! [`start`] takes an already-bound listener so tests can bind port 0.

pub mod config;
pub mod gpu;
mod master_link;
mod server;
mod task;

pub use config::WorkerConfig;

use cloudai_proto::v1::TaskResult;
use master_link::{disconnect, identity};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use task::executor::Executor;
use task::runner::{self, TaskHandle};
use tokio::net::TcpListener;
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
    pub fn stop_all(&self, reason: runner::StopReason, grace: std::time::Duration) -> usize {
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
                handle.request_stop(runner::StopReason::Cancelled);
            }
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Docker is not reachable.
    #[error(transparent)]
    Docker(#[from] task::executor::DockerError),
    /// The worker has no certificate and no join token.
    #[error("{0}")]
    NotJoined(String),
    /// Joining the cluster, or the stored certificate, failed.
    #[error(transparent)]
    Join(#[from] identity::IdentityError),
    /// The listener has no local address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// Loads the stored identity, or joins the cluster with the configured token.
async fn obtain_identity(
    config: &WorkerConfig,
    id: &str,
    address: &str,
) -> Result<identity::Identity, StartError> {
    // A stored certificate is used unless an explicit --join-token asks to
    // join again (after re-registration, or with a new CA).
    if config.join_token.is_none()
        && let Some(identity) =
            identity::Identity::load(&config.data_dir).map_err(StartError::Join)?
    {
        return Ok(identity);
    }
    let token = match (&config.join_token, &config.join_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => read_token_file(path).await.map_err(StartError::Join)?,
        (None, None) => {
            return Err(StartError::NotJoined(format!(
                "this worker has not joined a cluster yet: run `register {id} {address}` on the master, then start the worker with --master <master-host:port> --join-token <token>"
            )));
        }
    };
    let master = config.master.clone().ok_or_else(|| {
        StartError::NotJoined("--join-token needs --master <master-host:port>".into())
    })?;
    let identity =
        identity::join_patiently(&master, id, &token, std::time::Duration::from_secs(60))
            .await
            .map_err(StartError::Join)?;
    identity.save(&config.data_dir).map_err(StartError::Join)?;
    tracing::info!(
        master,
        expires_at = identity.expires_at(),
        "joined the cluster: certificate stored"
    );
    Ok(identity)
}

/// Reads a join token file, waiting up to 60s for it to appear.
async fn read_token_file(path: &std::path::Path) -> Result<String, identity::IdentityError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
            _ if tokio::time::Instant::now() >= deadline => {
                let message = format!("no join token in {} after 60s", path.display());
                return Err(identity::IdentityError(message));
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Serves `WorkerService` on the listener until shutdown, restarting the
/// server with the new certificate whenever the identity changes.
async fn serve_grpc(worker: Worker, listener: Arc<TcpListener>) {
    let limits = cloudai_common::net::ConnectionLimits::default()
        .within_file_limit(cloudai_common::net::raise_open_file_limit());
    let gate = cloudai_common::net::ConnectionGate::new(limits);
    loop {
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
        if let Some(identity) = worker.identity() {
            builder = match builder.tls_config(identity.server_tls()) {
                Ok(builder) => builder,
                Err(error) => {
                    tracing::error!(%error, "cannot use the worker certificate for the gRPC server");
                    return;
                }
            };
        }
        let incoming = cloudai_common::net::incoming(listener.clone(), gate.clone());
        let restart = worker.inner.identity_changed.notified();
        let stop = {
            let shutdown = worker.shutdown_token().clone();
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = restart => {}
                }
            }
        };
        let served = builder
            .add_service(server::WorkerGrpc::service(worker.clone()))
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "gRPC server failed");
            return;
        }
        if worker.shutdown_token().is_cancelled() {
            return;
        }
        tracing::info!("restarting the gRPC server with the renewed certificate");
    }
}

/// A started worker.
pub struct Running {
    /// The worker handle.
    pub worker: Worker,
}

impl Running {
    /// Waits for shutdown, a last "stopping" heartbeat, and every background task.
    pub async fn wait(self) {
        let worker = self.worker;
        worker.shutdown_token().cancelled().await;
        worker.tracker().close();
        worker.tracker().wait().await;
    }
}

/// Connects to Docker, adopts leftover containers, and starts the gRPC server,
/// the master link and the result reporter.
pub async fn start(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let port = listener.local_addr()?.port();
    let id = config.worker_id();
    let address = format!("{}:{port}", config.advertise_host());
    let identity = if config.insecure {
        tracing::warn!(
            "--insecure: no TLS; use only with a master started with --insecure, for local experiments"
        );
        None
    } else {
        cloudai_common::tls::install_crypto_provider();
        Some(obtain_identity(&config, &id, &address).await?)
    };
    let executor = Executor::connect().await.map_err(StartError::Docker)?;
    let (reports, report_queue) = mpsc::unbounded_channel();
    let probe = gpu::GpuProbe::new();
    let tracker = TaskTracker::new();
    let worker = Worker {
        inner: Arc::new(Inner {
            link: master_link::LinkState::new(
                config.master.clone(),
                config.heartbeat_interval,
                identity.as_ref().map(identity::Identity::client_tls),
                Some(config.data_dir.join("master")),
                Some(config.data_dir.join("master-contact")),
            ),
            identity: Mutex::new(identity),
            identity_changed: Notify::new(),
            config,
            id,
            address,
            executor,
            gpu_inventory: probe.info(),
            gpus: probe,
            gpu_leases: gpu::Leases::default(),
            tasks: Mutex::new(HashMap::new()),
            reports,
            heartbeat_now: Notify::new(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        }),
    };
    match runner::reconcile(&worker).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "found containers from an earlier run"),
        Err(error) => tracing::warn!(%error, "could not look for containers from an earlier run"),
    }
    tracker.spawn(serve_grpc(worker.clone(), Arc::new(listener)));
    tracker.spawn(master_link::run_heartbeats(worker.clone()));
    tracker.spawn(master_link::run_reporter(worker.clone(), report_queue));
    tracker.spawn(disconnect::run_watchdog(worker.clone()));
    Ok(Running { worker })
}
