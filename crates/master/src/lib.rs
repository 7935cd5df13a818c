//! The CloudAI master.
//!
//! - [`cluster`]: the core handle ([`Master`]) every other part acts through;
//! - [`registry`]: live worker state; [`tasks`]: submit, place, complete, cancel;
//! - [`telemetry`]: one task per worker fed by heartbeats, inactivity detection;
//! - [`server`]: gRPC `MasterService` handlers; [`http`]: the axum server
//!   ([`ws`]: WebSocket telemetry, [`metrics`]: Prometheus);
//! - [`worker_client`]: the master's side of `WorkerService`;
//! - [`db`]: the `Store` trait and its backends; [`events`]: cluster events;
//! - [`cli`]: the operator REPL; [`config`]: flags and environment.
//!
//! [`start`] takes already-bound listeners so tests can bind port 0.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod tasks;
pub mod telemetry;
pub mod worker_client;
pub mod ws;

pub use cluster::{Master, Settings};
pub use config::MasterConfig;

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the master could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] db::StoreError),
    /// Loading state or applying start-up registrations failed.
    #[error(transparent)]
    Master(#[from] error::MasterError),
    /// A listener had no local address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// The master's two listeners, already bound.
pub struct Listeners {
    /// gRPC (workers, agents).
    pub grpc: TcpListener,
    /// HTTP (health, telemetry).
    pub http: TcpListener,
}

/// A started master: its handle and the task tracker of its servers and loops.
pub struct Running {
    /// The core handle.
    pub master: Master,
    tracker: TaskTracker,
}

impl Running {
    /// Waits until shutdown has been requested and every server and loop has stopped.
    pub async fn wait(self) {
        self.master.shutdown_token().cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Opens the store, loads state, and starts the gRPC server, the HTTP server and
/// the liveness loop. Everything stops when `shutdown` is cancelled.
pub async fn start(
    config: &MasterConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Running, RunError> {
    let store: Arc<dyn db::Store> = Arc::new(db::EmbeddedStore::open(&config.data_dir)?);
    let grpc_port = listeners.grpc.local_addr()?.port();
    let tracker = TaskTracker::new();
    let settings = Settings {
        heartbeat_interval: config.heartbeat_interval,
        inactivity_timeout: config.inactivity_timeout,
        reinvite_interval: config.reinvite_interval,
        advertise_addr: config.advertise_addr.clone(),
    };
    let master = Master::load(
        settings,
        store,
        grpc_port,
        shutdown.clone(),
        tracker.clone(),
    )
    .await?;
    for (id, address) in config.preregistrations() {
        if master.registry().get(&id).is_none() {
            let outcome = master.register_worker(&id, &address).await?;
            tracing::info!(worker_id = %id, outcome, "start-up registration");
        }
    }

    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(server::MasterGrpc::service(master.clone()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listeners.grpc),
            shutdown.clone().cancelled_owned(),
        );
    tracker.spawn(async move {
        if let Err(error) = grpc.await {
            tracing::error!(%error, "gRPC server failed");
        }
    });

    let http = axum::serve(listeners.http, http::router(master.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tracker.spawn(async move {
        if let Err(error) = http.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });

    tracker.spawn(master.clone().run_reinvites());
    Ok(Running { master, tracker })
}
