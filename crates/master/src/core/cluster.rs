//! The master's core handle: store, live registry, task index, worker clients and
//! events. The REPL, the gRPC handlers and background loops all act through it.

use crate::core::events::{EVENT_CAPACITY, Envelope, Event};
use crate::core::registry::{Registry, WorkerState};
use crate::core::telemetry::Telemetry;
use crate::core::worker_client::{WorkerCalls, WorkerClients};
use crate::error::{MasterError, MasterResult};
use crate::store::{Store, TaskRecord, TaskState, WorkerRecord, now_millis};
use cloudai_common::validate;
use cloudai_proto::v1::{MasterRegisterRequest, RegisterWorkerRequest};
use std::collections::HashMap;
use std::net::SocketAddr;
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

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    pub(crate) fn active_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActiveTask>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of recently finished tasks (for completion), newest last.
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

    /// Pre-registers a worker (authorization first) and invites it. Returns what
    /// the invitation achieved, for the operator.
    pub async fn register_worker(&self, worker_id: &str, address: &str) -> MasterResult<String> {
        validate::id("worker id", worker_id)?;
        validate::address("address", address)?;
        if let Some(existing) = self.registry().get(worker_id) {
            if existing.record.address == address {
                return Ok(format!(
                    "worker {worker_id} is already registered at {address} ({})",
                    existing.state.as_str()
                ));
            }
            return Err(MasterError::FailedPrecondition(format!(
                "worker {worker_id} is already registered at {}: run `unregister {worker_id}` first",
                existing.record.address
            )));
        }
        let record = WorkerRecord::new(worker_id, address);
        self.store().put_worker(&record).await?;
        self.registry().insert(record);
        tracing::info!(worker_id, address, "worker pre-registered");
        self.emit(Event::WorkerRegistered {
            worker_id: worker_id.to_string(),
            address: address.to_string(),
        });
        if let Some(token) = self.issue_join_token(worker_id).await? {
            return Ok(self.join_instructions(worker_id, address, &token));
        }
        Ok(match self.invite(worker_id, address).await {
            Ok(()) => {
                format!("worker {worker_id} registered at {address}; it accepted the invitation")
            }
            Err(reason) => format!(
                "worker {worker_id} registered at {address}; not reachable yet ({reason}); it will be accepted when it starts"
            ),
        })
    }

    /// What the operator needs to start a worker with its join token.
    pub fn join_instructions(&self, worker_id: &str, address: &str, token: &str) -> String {
        let ttl = cloudai_common::units::format_duration(self.settings().join_token_ttl);
        let master = if self.settings().advertise_addr.is_empty() {
            format!("<this-master-host>:{}", self.inner.grpc_port)
        } else {
            self.settings().advertise_addr.clone()
        };
        format!(
            "worker {worker_id} registered at {address}\njoin token (single use, expires in {ttl}): {token}\nstart the worker with: cloudai-worker --id {worker_id} --master {master} --join-token {token}"
        )
    }

    /// Removes a worker: it is no longer accepted and its connection is dropped.
    pub async fn unregister_worker(&self, worker_id: &str) -> MasterResult<String> {
        let Some(entry) = self.registry().get(worker_id) else {
            return Err(MasterError::NotFound(format!(
                "no worker '{worker_id}': `workers` lists the registered ones"
            )));
        };
        self.store().delete_worker(worker_id).await?;
        self.registry().remove(worker_id);
        self.clients().forget(&entry.record.address);
        self.stop_telemetry(worker_id);
        self.give_up_after_window(worker_id);
        tracing::info!(worker_id, "worker unregistered");
        self.emit(Event::WorkerUnregistered {
            worker_id: worker_id.to_string(),
        });
        Ok(format!(
            "worker {worker_id} unregistered; it is no longer accepted"
        ))
    }

    /// Calls the worker's `MasterRegister`, asking it to register back.
    pub async fn invite(&self, worker_id: &str, address: &str) -> Result<(), String> {
        let master_address = if self.settings().advertise_addr.is_empty() {
            format!(":{}", self.inner.grpc_port)
        } else {
            self.settings().advertise_addr.clone()
        };
        let request = MasterRegisterRequest {
            worker_id: worker_id.to_string(),
            master_address,
        };
        self.clients()
            .master_register(address, request)
            .await
            .map(|_| ())
            .map_err(|status| status.message().to_string())
    }

    /// Handles a worker's `RegisterWorker`: only pre-registered ids, from the
    /// registered address, are accepted.
    pub async fn accept_worker(
        &self,
        request: RegisterWorkerRequest,
        peer: Option<SocketAddr>,
    ) -> MasterResult<Vec<String>> {
        let info = request
            .info
            .ok_or_else(|| MasterError::InvalidArgument("info: missing worker info".into()))?;
        validate::id("info.worker_id", &info.worker_id)?;
        validate::address("info.address", &info.address)?;
        let worker_id = info.worker_id.clone();
        let Some(entry) = self.registry().get(&worker_id) else {
            tracing::warn!(worker_id, address = %info.address, "refused a worker that is not pre-registered");
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' is not pre-registered: run `register {worker_id} {}` on the master",
                info.address
            )));
        };
        if !address_matches(&entry.record.address, &info.address, peer) {
            let seen = peer.map_or(info.address.clone(), |p| p.ip().to_string());
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' is registered at {} but connected as {} (from {seen}): run `unregister {worker_id}` and `register {worker_id} {}` on the master",
                entry.record.address, info.address, info.address
            )));
        }
        let stop = self.unwanted_tasks(&worker_id, &request.task_ids);
        self.fail_missing_tasks(&worker_id, &request.task_ids);
        let Some(record) = self
            .registry()
            .mark_registered(info, Instant::now(), now_millis())
        else {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' was unregistered"
            )));
        };
        self.store().put_worker(&record).await?;
        self.start_telemetry(&worker_id);
        self.wake_scheduler();
        tracing::info!(worker_id, "worker registered");
        self.emit(Event::WorkerActive { worker_id });
        Ok(stop)
    }

    /// Tasks placed on a worker that (re-)registers without them were lost with
    /// its containers: they become `lost`, then are retried or failed.
    fn fail_missing_tasks(&self, worker_id: &str, held: &[String]) {
        let missing: Vec<String> = self
            .active_tasks()
            .iter()
            .filter(|(id, t)| {
                t.worker_id.as_deref() == Some(worker_id)
                    && matches!(
                        t.state,
                        TaskState::Assigned | TaskState::Running | TaskState::Unknown
                    )
                    && !held.contains(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if missing.is_empty() {
            return;
        }
        let master = self.clone();
        let worker_id = worker_id.to_string();
        self.tracker().spawn(async move {
            let why = format!("worker {worker_id} came back without this task's container");
            master.tasks_lost(&worker_id, missing, &why).await;
        });
    }

    /// Of the tasks a worker holds, those the master does not want on it.
    pub(crate) fn unwanted_tasks(&self, worker_id: &str, held: &[String]) -> Vec<String> {
        let active = self.active_tasks();
        held.iter()
            .filter(|id| {
                active
                    .get(*id)
                    .is_none_or(|t| t.worker_id.as_deref() != Some(worker_id))
            })
            .cloned()
            .collect()
    }

    /// Background loop: re-invites registered workers that are not active
    /// (restart recovery without operator action), until shutdown.
    pub async fn run_reinvites(self) {
        let mut reinvite = tokio::time::interval(self.settings().reinvite_interval);
        loop {
            tokio::select! {
                _ = self.shutdown_token().cancelled() => return,
                _ = reinvite.tick() => {
                    for (worker_id, address) in self.registry().not_active() {
                        let master = self.clone();
                        self.tracker().spawn(async move {
                            if let Err(reason) = master.invite(&worker_id, &address).await {
                                tracing::debug!(worker_id, address, reason, "worker not reachable yet");
                            }
                        });
                    }
                }
            }
        }
    }

    /// Whether a worker is registered and active.
    pub fn worker_state(&self, worker_id: &str) -> Option<WorkerState> {
        self.registry().get(worker_id).map(|w| w.state)
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
                self.index_task(&task);
                self.metrics().count_transition(next);
                if next.is_terminal() || next == TaskState::Queued {
                    // Capacity freed or a task to place.
                    self.wake_scheduler();
                }
                tracing::info!(task_id, from = %current.state, to = %next, worker_id = ?task.worker_id, "task state");
                self.emit(Event::TaskState {
                    task_id: task.id.clone(),
                    state: next,
                    worker_id: task.worker_id.clone(),
                    exit_code: task.exit_code,
                    error: task.error.clone(),
                });
                return Ok(Some(task));
            }
        }
        Err(MasterError::FailedPrecondition(format!(
            "task '{task_id}' is changing too fast to update; try again"
        )))
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

/// Whether a worker claiming `claimed` and connecting from `peer` is the one
/// registered at `registered`: the ports must agree, and the host must be the
/// claimed host or the connection's source IP.
fn address_matches(registered: &str, claimed: &str, peer: Option<SocketAddr>) -> bool {
    if registered == claimed {
        return true;
    }
    let (Some((reg_host, reg_port)), Some((_, claimed_port))) =
        (registered.rsplit_once(':'), claimed.rsplit_once(':'))
    else {
        return false;
    };
    if reg_port != claimed_port {
        return false;
    }
    let reg_host = reg_host.trim_start_matches('[').trim_end_matches(']');
    match peer {
        Some(peer) => {
            let peer_ip = peer.ip().to_canonical();
            reg_host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical() == peer_ip)
                || (reg_host == "localhost" && peer_ip.is_loopback())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::address_matches;

    #[test]
    fn addresses_match_by_claim_or_peer_ip() {
        let peer = Some("10.0.0.7:41234".parse().unwrap());
        assert!(address_matches("10.0.0.7:50052", "10.0.0.7:50052", None));
        assert!(address_matches("10.0.0.7:50052", "gpu-3:50052", peer));
        assert!(!address_matches("10.0.0.8:50052", "gpu-3:50052", peer));
        assert!(!address_matches("10.0.0.7:50053", "10.0.0.7:50052", peer));
        assert!(address_matches(
            "localhost:50052",
            "127.0.0.1:50052",
            Some("127.0.0.1:5".parse().unwrap())
        ));
    }
}
