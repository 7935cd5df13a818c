//! The CloudAI master.
//!
//! - `core/`: the cluster state and what changes it, as services with narrow
//!   handles (task lifecycle, telemetry, workers, tasks, scheduler, events);
//! - `auth/`: the PKI, worker admission, users and API tokens;
//! - `api/grpc/` and `api/http/`: transport only (gRPC services; the HTTP
//!   server with the dashboard, its API, WebSocket telemetry and metrics);
//! - [`cli`]: the console REPL (the shared `cloudai_cli` command layer, in-process); [`store`]: the `Store` trait and its backends;
//!   [`config`]: flags and environment.
//!
//! - `services`: builds the services once and hands each adapter its handles.
//!
//! [`start`] takes already-bound listeners so tests can bind port 0.

mod api;
mod auth;
pub mod cli;
pub mod config;
mod core;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod services;
pub mod store;

pub use crate::core::events::{Envelope, Event, GpuSample, Metrics};
pub use crate::core::placement::PlacementMode;
pub use crate::core::placement::{Candidate, Demand, Policy, place};
pub use crate::core::placer::Placer;
pub use crate::core::runtime::{Runtime, Settings};
pub use crate::core::telemetry::Telemetry;
pub use crate::core::workers::{Registration, Workers};
pub use crate::services::Services;
pub use config::{MasterConfig, StoreCommand};

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the master could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Loading state or applying start-up registrations failed.
    #[error(transparent)]
    Master(#[from] error::MasterError),
    /// The PKI could not be loaded or created.
    #[error("TLS: {0}")]
    Tls(#[from] cloudai_common::tls::TlsError),
    /// The gRPC server could not be set up.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A listener had no local address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The secrets key could not be loaded or created.
    #[error(transparent)]
    Secrets(#[from] core::sealing::SealingError),
}

/// How long a stopping master waits for an unreachable store to take the
/// writes it holds.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The master's two listeners, already bound.
pub struct Listeners {
    /// gRPC (workers, agents).
    pub grpc: TcpListener,
    /// HTTP (health, telemetry).
    pub http: TcpListener,
}

/// A started master: its services and the task tracker of its servers and loops.
pub struct Running {
    /// The services, for the REPL.
    pub services: Services,
    tracker: TaskTracker,
}

impl Running {
    /// Waits until shutdown has been requested, every server and loop has
    /// stopped, and the store holds every write it acknowledged (for at most
    /// [`DRAIN_LIMIT`] while the store is unreachable; what is left is logged).
    pub async fn wait(self) {
        self.services.shutdown_token().cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
        let held = self.services.store.drain(DRAIN_LIMIT).await;
        if held > 0 {
            tracing::error!(
                held,
                "stopping with writes the store never took (it stayed unreachable): they are lost"
            );
        }
    }
}

/// Writes a fresh join token for a start-up registration to
/// `<data-dir>/join-tokens/<id>.token` (owner-only), for `--join-token-file`.
async fn write_join_token(
    auth: &auth::Auth,
    config: &MasterConfig,
    worker_id: &cloudai_common::ids::WorkerId,
) -> Result<(), RunError> {
    if let Some(token) = auth.issue_join_token(worker_id).await? {
        let path = config
            .data_dir
            .join("join-tokens")
            .join(format!("{worker_id}.token"));
        cloudai_common::tls::write_private(&path, &token)?;
        tracing::info!(%worker_id, path = %path.display(), "join token written for a start-up registration");
    }
    Ok(())
}

/// The bounds on connections to both ports, within this process's open-file
/// limit (raised to its hard limit first).
fn connection_gate(config: &MasterConfig) -> Arc<cloudai_common::net::ConnectionGate> {
    let open_files = cloudai_common::net::raise_open_file_limit();
    let limits = cloudai_common::net::ConnectionLimits {
        max_total: config.max_connections,
        max_per_ip: config.max_connections_per_ip,
        idle_timeout: config.idle_timeout,
    }
    .within_file_limit(open_files);
    tracing::info!(
        open_files,
        max_connections = limits.max_total,
        max_connections_per_ip = limits.max_per_ip,
        idle_timeout_s = limits.idle_timeout.as_secs(),
        "connection limits"
    );
    cloudai_common::net::ConnectionGate::new(limits)
}

/// Opens the backend the configuration selects: MongoDB with `--mongodb-uri`,
/// the embedded store in the data directory otherwise.
pub async fn open_backend(
    config: &MasterConfig,
) -> Result<Arc<dyn store::Store>, store::StoreError> {
    Ok(match &config.mongodb_uri {
        Some(uri) => Arc::new(store::MongoStore::connect(uri, &config.mongodb_database).await?),
        None => Arc::new(store::EmbeddedStore::open(&config.data_dir)?),
    })
}

/// Opens the store, loads state, and starts the gRPC server, the HTTP server and
/// the liveness loop. Everything stops when `shutdown` is cancelled.
pub async fn start(
    config: &MasterConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Running, RunError> {
    let backend = open_backend(config).await?;
    let store: Arc<dyn store::Store> = Arc::new(store::ResilientStore::load(backend).await?);
    tracing::info!(store = %store.describe(), "store ready");
    let grpc_port = listeners.grpc.local_addr()?.port();
    let tracker = TaskTracker::new();
    let settings = Settings {
        heartbeat_interval: config.heartbeat_interval,
        inactivity_timeout: config.inactivity_timeout,
        disconnect_window: config.disconnect_window,
        reinvite_interval: config.reinvite_interval,
        advertise_addr: config.advertise_addr.clone(),
        join_token_ttl: config.join_token_ttl,
        policy: config.placement_policy,
        placement_mode: config.placement_mode,
        agent_timeout: config.agent_timeout,
        secrets_key: match &config.secrets_key_file {
            Some(path) => Some(Arc::new(core::sealing::SealingKey::load_or_create(path)?)),
            None => None,
        },
    };
    let pki = if config.insecure {
        tracing::warn!(
            "--insecure: no TLS and no worker authentication; use only for local experiments"
        );
        None
    } else {
        cloudai_common::tls::install_crypto_provider();
        let options = crate::auth::pki::PkiOptions {
            ca_cert: config.tls_ca_cert.clone(),
            ca_key: config.tls_ca_key.clone(),
            extra_sans: config.tls_sans.clone(),
            worker_cert_validity: config.worker_cert_validity,
        };
        Some(Arc::new(crate::auth::pki::Pki::load_or_create(
            &config.data_dir,
            &options,
        )?))
    };
    let runtime = core::runtime::Runtime {
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    let services = Services::load(settings, store, pki.clone(), grpc_port, runtime).await?;
    let (lifecycle, workers) = (&services.lifecycle, &services.workers);
    // Every registered worker is watched from the start: tasks placed on one
    // that never comes back become unknown, then lost, like any other's.
    for (worker_id, _) in workers.registry().not_active() {
        services.telemetry.start(&worker_id);
    }
    for worker_id in lifecycle.workers_of_orphaned_tasks(workers.registry()) {
        lifecycle.give_up_after_window(&worker_id);
    }
    lifecycle.finish_lost_left_by_a_crash();
    if let Some(keep) = config.keep_history {
        core::retention::keep_history(lifecycle, keep);
    }
    for (id, address) in config.preregistrations() {
        let Some(existing) = workers.registry().get(&id) else {
            workers.register(&id, &address).await?;
            if services.auth.pki().is_some() {
                write_join_token(&services.auth, config, &id).await?;
            } else if let Err(reason) = workers.invite(&id, &address).await {
                tracing::info!(worker_id = %id, %reason, "worker not reachable yet; it is accepted when it starts");
            }
            continue;
        };
        if existing.record.address != address {
            tracing::warn!(worker_id = %id, registered = %existing.record.address, requested = %address,
                "--register ignored: the worker is already registered at another address (unregister it first)");
        } else if existing.record.cert_fingerprint.is_none() {
            // Registered but never joined (e.g. the token expired): a fresh token.
            write_join_token(&services.auth, config, &id).await?;
        }
    }

    let gate = connection_gate(config);
    let keepalive = (gate.limits().idle_timeout / 3).min(Duration::from_secs(20));
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Pinged well within the idle timeout; a peer that does not answer is dropped.
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(cloudai_common::grpc::conventional_codes_layer::<
            tonic::body::Body,
        >());
    if let Some(pki) = &pki {
        builder = builder.tls_config(pki.server_tls())?;
    }
    let grpc = builder
        .add_service(crate::api::grpc::worker_api::MasterGrpc::service(&services))
        .add_service(crate::api::grpc::agent_api::AgentGrpc::service(&services))
        .add_service(crate::api::grpc::admin_api::AdminGrpc::service(&services))
        .serve_with_incoming_shutdown(
            cloudai_common::net::incoming(Arc::new(listeners.grpc), gate.clone()),
            shutdown.clone().cancelled_owned(),
        );
    tracker.spawn(async move {
        if let Err(error) = grpc.await {
            tracing::error!(%error, "gRPC server failed");
        }
    });

    let app = crate::api::http::router::router(&services)
        .into_make_service_with_connect_info::<crate::api::http::listener::Peer>();
    let stop = shutdown.clone();
    match &pki {
        Some(pki) => {
            let listener = crate::api::http::listener::TlsListener::new(
                listeners.http,
                gate.clone(),
                pki.https_config()?,
                shutdown.clone(),
                tracker.clone(),
            )?;
            tracker.spawn(async move {
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(%error, "HTTPS server failed");
                }
            });
        }
        None => {
            let listener =
                crate::api::http::listener::PlainListener::new(listeners.http, gate.clone());
            tracker.spawn(async move {
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(%error, "HTTP server failed");
                }
            });
        }
    }

    tracker.spawn(services.workers.clone().run_reinvites());
    tracker.spawn(services.scheduler.clone().run());
    Ok(Running { services, tracker })
}
