//! The handles the HTTP server's routes share ([`App`]), and the credential a
//! request was admitted with.

use crate::auth::Auth;
use crate::core::events::EventBus;
use crate::core::lifecycle::Lifecycle;
use crate::core::metrics::MasterMetrics;
use crate::core::registry::Registry;
use crate::core::scheduler::Scheduler;
use crate::core::tasks::Tasks;
use crate::services::{Services, Vitals};
use crate::store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The handles the HTTP server uses.
#[derive(Clone)]
pub struct App {
    pub(crate) auth: Auth,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) events: EventBus,
    pub(crate) metrics: Arc<MasterMetrics>,
    pub(crate) registry: Registry,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) tasks: Tasks,
    pub(crate) scheduler: Scheduler,
    pub(crate) vitals: Vitals,
    pub(crate) shutdown: CancellationToken,
}

impl App {
    /// The handles of `services` the routes use.
    pub fn new(services: &Services) -> Self {
        Self {
            auth: services.auth.clone(),
            store: services.store.clone(),
            events: services.events.clone(),
            metrics: services.metrics.clone(),
            registry: services.workers.registry().clone(),
            lifecycle: services.lifecycle.clone(),
            tasks: services.tasks.clone(),
            scheduler: services.scheduler.clone(),
            vitals: services.vitals.clone(),
            shutdown: services.runtime.shutdown.clone(),
        }
    }
}

/// The token a request was admitted with, for streams that must end when it
/// is revoked (`Auth::revoked`).
#[derive(Debug, Clone)]
pub struct Credential(pub Option<String>);
