//! Starting the worker: its TLS identity (stored, or obtained by joining the
//! cluster), Docker, the containers left by an earlier run, and the tracked
//! background tasks (the gRPC server, heartbeats, the result reporter, the
//! disconnect watchdog); [`Running`] waits for them at shutdown.

use crate::master_link::{self, disconnect, identity};
use crate::task::executor::{self, Executor};
use crate::task::reconcile;
use crate::{Inner, Worker, WorkerConfig, gpu, server};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Docker is not reachable.
    #[error(transparent)]
    Docker(#[from] executor::DockerError),
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
    match reconcile::reconcile(&worker).await {
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
