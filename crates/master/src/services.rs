//! The master's services, built once at start and handed out by handle: each
//! adapter (gRPC service, HTTP router, REPL) takes the handles it uses. This
//! file only wires them; the behaviour is in `core/` and `auth/`.

use crate::auth::Auth;
use crate::auth::pki::Pki;
use crate::core::events::EventBus;
use crate::core::lifecycle::Lifecycle;
use crate::core::metrics::MasterMetrics;
use crate::core::registry::Registry;
use crate::core::runtime::{Runtime, Settings};
use crate::core::scheduler::Scheduler;
use crate::core::secrets::Secrets;
use crate::core::tasks::Tasks;
use crate::core::telemetry::Telemetry;
use crate::core::worker_client::{WorkerCalls, WorkerClients};
use crate::core::workers::Workers;
use crate::error::MasterResult;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every service of a running master (cheap to clone).
#[derive(Clone)]
pub struct Services {
    pub(crate) settings: Settings,
    pub(crate) runtime: Runtime,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) events: EventBus,
    pub(crate) metrics: Arc<MasterMetrics>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) telemetry: Telemetry,
    pub(crate) workers: Workers,
    pub(crate) tasks: Tasks,
    pub(crate) scheduler: Scheduler,
    pub(crate) secrets: Secrets,
    pub(crate) auth: Auth,
    pub(crate) vitals: Vitals,
}

impl Services {
    /// Loads the registry, the unfinished tasks and the users from the store;
    /// workers are called over gRPC (mutual TLS with the PKI).
    pub async fn load(
        settings: Settings,
        store: Arc<dyn Store>,
        pki: Option<Arc<Pki>>,
        grpc_port: u16,
        runtime: Runtime,
    ) -> MasterResult<Self> {
        let clients = Arc::new(WorkerClients::new(pki.as_ref().map(|p| p.client_tls())));
        Self::load_with(settings, store, pki, clients, grpc_port, runtime).await
    }

    /// [`Self::load`] with the given way of calling workers (a fake in tests).
    pub(crate) async fn load_with(
        settings: Settings,
        store: Arc<dyn Store>,
        pki: Option<Arc<Pki>>,
        clients: Arc<dyn WorkerCalls>,
        grpc_port: u16,
        runtime: Runtime,
    ) -> MasterResult<Self> {
        let registry = Registry::default();
        for worker in store.list_workers().await? {
            registry.insert(worker);
        }
        let events = EventBus::default();
        let metrics = Arc::new(MasterMetrics::default());
        let lifecycle = Lifecycle::load(
            settings.clone(),
            store.clone(),
            events.clone(),
            metrics.clone(),
            runtime.clone(),
        )
        .await?;
        let telemetry = Telemetry::new(lifecycle.clone(), registry.clone(), metrics.clone());
        let workers = Workers::new(
            lifecycle.clone(),
            telemetry.clone(),
            registry.clone(),
            clients.clone(),
            grpc_port,
        );
        let tasks = Tasks::new(
            lifecycle.clone(),
            telemetry.clone(),
            registry.clone(),
            clients,
        );
        let scheduler = Scheduler::new(lifecycle.clone(), registry.clone(), tasks.clone());
        let secrets = tasks.secrets().clone();
        match secrets.sealed_with_other_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                secrets = n,
                "secrets sealed with another key cannot be opened: start with the key that set them, or set them again"
            ),
            Err(error) => tracing::warn!(%error, "cannot check the stored secrets"),
        }
        let auth = Auth::load(store.clone(), registry, pki, settings.join_token_ttl).await?;
        Ok(Self {
            vitals: Vitals {
                store: store.clone(),
                started: Instant::now(),
            },
            settings,
            runtime,
            store,
            events,
            metrics,
            lifecycle,
            telemetry,
            workers,
            tasks,
            scheduler,
            secrets,
            auth,
        })
    }

    /// The store's description (backend and where), for the start-up line.
    pub fn vitals_store_description(&self) -> String {
        self.vitals.store_description()
    }

    /// Worker membership.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// Heartbeat intake and liveness.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The token that stops the master.
    pub fn shutdown_token(&self) -> &tokio_util::sync::CancellationToken {
        &self.runtime.shutdown
    }
}

/// The master's own vital signs: its uptime and whether its store answers.
#[derive(Clone)]
pub struct Vitals {
    store: Arc<dyn Store>,
    started: Instant,
}

impl Vitals {
    /// Time since the master started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the store answers (within 2 s, so a dead store never stalls
    /// the caller).
    pub async fn store(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(Duration::from_secs(2), self.store.health()).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Backend {
                operation: "checking health",
                message: "no answer within 2s".into(),
            }),
        }
    }

    /// The store's description (backend and where).
    pub fn store_description(&self) -> String {
        self.store.describe()
    }
}
