//! The master's core handle: store, live registry, task index, worker clients and
//! events. The REPL, the gRPC handlers and background loops all act through it.
//! Worker registration is in `workers.rs`.

use crate::core::events::{EVENT_CAPACITY, Envelope, Event};
use crate::core::registry::Registry;
use crate::core::telemetry::Telemetry;
use crate::core::worker_client::{WorkerCalls, WorkerClients};
use crate::error::{MasterError, MasterResult};
use crate::store::{Store, TaskRecord, TaskState, now_millis};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where a non-final task currently is, kept in memory for O(1) heartbeat checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTask {
    /// Worker holding it, if placed.
    pub worker_id: Option<String>,
    /// Its state.
    pub state: TaskState,
    /// CPU it reserves, billionths.
    pub nano_cpus: i64,
    /// Memory it reserves, bytes.
    pub memory_bytes: i64,
    /// GPUs it holds.
    pub gpus: Vec<String>,
    /// Queue priority.
    pub priority: i32,
    /// Submission time (ms), for queue order.
    pub created_at: i64,
    /// When it last changed state (ms): for a queued task, when it was queued.
    pub queued_at: i64,
}

impl ActiveTask {
    /// The index entry of a stored task.
    pub fn of(task: &TaskRecord) -> Self {
        Self {
            worker_id: task.worker_id.clone(),
            state: task.state,
            nano_cpus: task.limits.nano_cpus,
            memory_bytes: task.limits.memory_bytes,
            gpus: task.assigned_gpus.clone(),
            priority: task.priority,
            created_at: task.created_at,
            queued_at: task.updated_at,
        }
    }
}

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
    pub placement_mode: crate::core::scheduler::PlacementMode,
    /// In agent mode, how long a queued task waits for the agent.
    pub agent_timeout: Duration,
}

/// Cheap cloneable handle to the master's state.
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Arc<dyn Store>,
    registry: Registry,
    /// Non-final tasks by id (std mutex: never held across `.await`).
    active: Mutex<HashMap<String, ActiveTask>>,
    clients: Arc<dyn WorkerCalls>,
    events: broadcast::Sender<Arc<Envelope>>,
    /// Sequence number of the last event (the lock keeps sends in sequence order).
    last_seq: Mutex<u64>,
    telemetry: Telemetry,
    metrics: crate::core::metrics::MasterMetrics,
    /// The cluster PKI; `None` with `--insecure`.
    pki: Option<Arc<crate::auth::pki::Pki>>,
    limiter: crate::auth::admission::AuthLimiter,
    tokens: crate::auth::users::TokenIndex,
    scheduler: crate::core::scheduler::SchedulerState,
    /// Ids of the last finished tasks (bounded), for REPL completion.
    recent: Mutex<std::collections::VecDeque<String>>,
    /// Port of the gRPC server, for invitations.
    grpc_port: u16,
    started: Instant,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Master {
    /// Loads the registry and the non-final tasks from the store; workers
    /// are called over gRPC (mutual TLS with the PKI).
    pub async fn load(
        settings: Settings,
        store: Arc<dyn Store>,
        pki: Option<Arc<crate::auth::pki::Pki>>,
        grpc_port: u16,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> MasterResult<Self> {
        let workers = Arc::new(WorkerClients::new(pki.as_ref().map(|p| p.client_tls())));
        Self::load_with(settings, store, pki, workers, grpc_port, shutdown, tracker).await
    }

    /// [`Self::load`] with the given way of calling workers (a fake in tests).
    pub(crate) async fn load_with(
        settings: Settings,
        store: Arc<dyn Store>,
        pki: Option<Arc<crate::auth::pki::Pki>>,
        clients: Arc<dyn WorkerCalls>,
        grpc_port: u16,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> MasterResult<Self> {
        let registry = Registry::default();
        for worker in store.list_workers().await? {
            registry.insert(worker);
        }
        let active = store
            .list_tasks()
            .await?
            .into_iter()
            .filter(|t| !t.state.is_terminal())
            .map(|t| (t.id.clone(), ActiveTask::of(&t)))
            .collect();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                store,
                registry,
                active: Mutex::new(active),
                clients,
                events,
                last_seq: Mutex::new(0),
                telemetry: Telemetry::default(),
                metrics: crate::core::metrics::MasterMetrics::default(),
                pki,
                limiter: crate::auth::admission::AuthLimiter::default(),
                tokens: crate::auth::users::TokenIndex::default(),
                scheduler: crate::core::scheduler::SchedulerState::default(),
                recent: Mutex::new(std::collections::VecDeque::new()),
                grpc_port,
                started: Instant::now(),
                shutdown,
                tracker,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The store's health in one line for operators: `healthy`, or why not
    /// (checked with a 2 s limit so a dead store never stalls the caller).
    pub async fn store_health(&self) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(2), self.store().health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 2s".into()),
        }
    }

    /// The live registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Runtime settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Time since the master started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The token that stops the master.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Subscribes to cluster events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.events.subscribe()
    }

    /// Sequence number of the last event emitted.
    pub fn last_seq(&self) -> u64 {
        *self
            .inner
            .last_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Per-worker telemetry state and counters.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// The cluster PKI (`None` with `--insecure`).
    pub fn pki(&self) -> Option<&Arc<crate::auth::pki::Pki>> {
        self.inner.pki.as_ref()
    }

    pub(crate) fn limiter(&self) -> &crate::auth::admission::AuthLimiter {
        &self.inner.limiter
    }

    pub(crate) fn tokens(&self) -> &crate::auth::users::TokenIndex {
        &self.inner.tokens
    }

    pub(crate) fn scheduler(&self) -> &crate::core::scheduler::SchedulerState {
        &self.inner.scheduler
    }

    /// Prometheus metric handles.
    pub fn metrics(&self) -> &crate::core::metrics::MasterMetrics {
        &self.inner.metrics
    }

    /// Numbers and sends an event.
    pub(crate) fn emit(&self, event: Event) {
        let mut seq = self
            .inner
            .last_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        // No receiver is fine: nobody is watching.
        let _ = self
            .inner
            .events
            .send(Arc::new(Envelope::new(*seq, now_millis(), event)));
    }

    pub(crate) fn clients(&self) -> &dyn WorkerCalls {
        self.inner.clients.as_ref()
    }

    /// Port of the gRPC server, for invitations.
    pub(crate) fn grpc_port(&self) -> u16 {
        self.inner.grpc_port
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    pub(crate) fn active_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActiveTask>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of recently finished tasks (for completion), newest last.
    /// Ids of the unfinished tasks on a worker that are in one of `states`.
    pub(crate) fn tasks_on(&self, worker_id: &str, states: &[TaskState]) -> Vec<String> {
        self.active_tasks()
            .iter()
            .filter(|(_, t)| t.worker_id.as_deref() == Some(worker_id) && states.contains(&t.state))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn recent_task_ids(&self) -> Vec<String> {
        self.inner
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Number of non-final tasks on each worker.
    pub fn running_per_worker(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for task in self.active_tasks().values() {
            if let Some(worker) = &task.worker_id {
                *counts.entry(worker.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Moves a task to `next` if the lifecycle allows it, applying `update`,
    /// persisting, and emitting an event. Returns the new record, or `None`
    /// when the task is in a state that cannot go to `next`.
    pub async fn transition(
        &self,
        task_id: &str,
        next: TaskState,
        update: impl Fn(&mut TaskRecord),
    ) -> MasterResult<Option<TaskRecord>> {
        self.transition_with(task_id, next, update, |_| Vec::new())
            .await
    }

    /// [`Self::transition`], storing the records `also` makes from the new
    /// task together with it (one commit where the store batches).
    pub async fn transition_with(
        &self,
        task_id: &str,
        next: TaskState,
        update: impl Fn(&mut TaskRecord),
        also: impl Fn(&TaskRecord) -> Vec<crate::store::Write>,
    ) -> MasterResult<Option<TaskRecord>> {
        // A concurrent writer may win between read and conditional write: re-read and retry.
        for _ in 0..8 {
            let Some(current) = self.store().get_task(task_id).await? else {
                return Err(MasterError::NotFound(format!("no task '{task_id}'")));
            };
            if !current.state.can_become(next) {
                return Ok(None);
            }
            let mut task = current.clone();
            task.state = next;
            task.updated_at = now_millis();
            if next.is_terminal() {
                task.finished_at.get_or_insert(task.updated_at);
            }
            update(&mut task);
            if self
                .store()
                .update_task_if_then(&task, &[current.state], &also(&task))
                .await?
            {
                self.changed_state(current.state, &task);
                return Ok(Some(task));
            }
        }
        Err(MasterError::FailedPrecondition(format!(
            "task '{task_id}' is changing too fast to update; try again"
        )))
    }

    /// What follows a stored state change: the index, the metrics, the
    /// scheduler (capacity freed or a task to place), the log and the event.
    pub(crate) fn changed_state(&self, from: TaskState, task: &TaskRecord) {
        let next = task.state;
        self.index_task(task);
        self.metrics().count_transition(next);
        if next.is_terminal() || next == TaskState::Queued {
            self.wake_scheduler();
        }
        tracing::info!(task_id = %task.id, from = %from, to = %next, worker_id = ?task.worker_id, "task state");
        self.emit(Event::TaskState {
            task_id: task.id.clone(),
            state: next,
            worker_id: task.worker_id.clone(),
            exit_code: task.exit_code,
            error: task.error.clone(),
        });
    }

    /// Keeps the in-memory index of non-final tasks in step with a stored record.
    pub(crate) fn index_task(&self, task: &TaskRecord) {
        let mut active = self.active_tasks();
        if task.state.is_terminal() {
            active.remove(&task.id);
            let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.push_back(task.id.clone());
            if recent.len() > 200 {
                recent.pop_front();
            }
        } else {
            active.insert(task.id.clone(), ActiveTask::of(task));
        }
    }
}
