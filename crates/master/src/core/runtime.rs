//! What every core service is started with: the settings it runs by, and the
//! shutdown token and task tracker its background work runs under.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runtime settings of the core (a subset of the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Heartbeat interval announced to workers.
    pub heartbeat_interval: Duration,
    /// Silence that makes a worker inactive.
    pub inactivity_timeout: Duration,
    /// How long a cut-off worker keeps its tasks running; the master reruns
    /// them only after this and `disconnect::STOP_MARGIN` have passed.
    pub disconnect_window: Duration,
    /// Interval of invitations to workers not heard from.
    pub reinvite_interval: Duration,
    /// Address sent in invitations (empty: the worker uses the caller's IP).
    pub advertise_addr: String,
    /// Lifetime of join tokens.
    pub join_token_ttl: Duration,
    /// Placement policy of the built-in scheduler.
    pub policy: crate::core::placement::Policy,
    /// Who places queued tasks.
    pub placement_mode: crate::core::placement::PlacementMode,
    /// In agent mode, how long a queued task waits for the agent.
    pub agent_timeout: Duration,
    /// The key that seals secrets (`None`: secrets are off).
    pub secrets_key: Option<std::sync::Arc<crate::core::sealing::SealingKey>>,
}

/// The shutdown token and the tracker of every task the core spawns, so
/// stopping waits for all of them.
#[derive(Clone)]
pub struct Runtime {
    /// Cancelled when the master stops.
    pub shutdown: CancellationToken,
    /// Tracks every spawned task.
    pub tracker: TaskTracker,
}

impl Runtime {
    /// Spawns `work` on the tracker.
    pub fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(work);
    }
}
