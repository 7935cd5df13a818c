//! The task lifecycle: the one owner of task state. Every state change goes
//! through [`Lifecycle::transition`] (a conditional store write, then the
//! in-memory index of unfinished tasks, the metrics, the scheduler's wake-up
//! and the event). Retries are in `retries.rs`, the rules for a silent
//! worker's tasks in `disconnect.rs`.

use crate::core::events::{Envelope, Event, EventBus};
use crate::core::metrics::MasterMetrics;
use crate::core::runtime::{Runtime, Settings};
use crate::error::{MasterError, MasterResult};
use crate::store::{Store, TaskRecord, TaskState, Write, now_millis};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

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

/// Handle to the task lifecycle (cheap to clone).
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Arc<dyn Store>,
    events: EventBus,
    metrics: Arc<MasterMetrics>,
    runtime: Runtime,
    /// Non-final tasks by id (std mutex: never held across `.await`).
    active: Mutex<HashMap<String, ActiveTask>>,
    /// Finished tasks by final state: counted from the store at start, then
    /// kept in step with every transition (history stays in the store).
    finished: Mutex<BTreeMap<TaskState, usize>>,
    /// Signalled when the queue or the free capacity changed.
    queue_changed: Notify,
    /// Retry backoff: not placed before this instant (tokio's clock).
    holds: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Pull progress of assigned tasks (dropped when they leave `assigned`).
    progress: Mutex<HashMap<String, crate::core::events::TaskProgress>>,
}

impl Lifecycle {
    /// Loads the non-final tasks from the store.
    pub async fn load(
        settings: Settings,
        store: Arc<dyn Store>,
        events: EventBus,
        metrics: Arc<MasterMetrics>,
        runtime: Runtime,
    ) -> MasterResult<Self> {
        let active = store
            .list_unfinished_tasks()
            .await?
            .into_iter()
            .map(|t| (t.id.clone(), ActiveTask::of(&t)))
            .collect();
        // New ids continue after the newest stored one if the clock is behind it.
        let newest = store
            .query_tasks(&crate::store::TaskQuery {
                limit: 1,
                ..Default::default()
            })
            .await?;
        if let Some(task) = newest.tasks.first() {
            crate::core::task_ids::continue_after(&task.id);
        }
        let finished = store
            .count_tasks()
            .await?
            .into_iter()
            .filter(|(state, _)| state.is_terminal())
            .map(|(state, n)| (state, usize::try_from(n).unwrap_or(usize::MAX)))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                store,
                events,
                metrics,
                runtime,
                active: Mutex::new(active),
                finished: Mutex::new(finished),
                queue_changed: Notify::new(),
                holds: Mutex::new(HashMap::new()),
                progress: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn events(&self) -> &EventBus {
        &self.inner.events
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub(crate) fn active_tasks(&self) -> MutexGuard<'_, HashMap<String, ActiveTask>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn progress_map(
        &self,
    ) -> MutexGuard<'_, HashMap<String, crate::core::events::TaskProgress>> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn holds(&self) -> MutexGuard<'_, HashMap<String, tokio::time::Instant>> {
        self.inner.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the scheduler for a pass soon.
    pub fn wake_scheduler(&self) {
        self.inner.queue_changed.notify_one();
    }

    /// Resolves at the next [`Self::wake_scheduler`].
    pub(crate) async fn queue_changed(&self) {
        self.inner.queue_changed.notified().await;
    }

    /// Ids of the unfinished tasks on a worker that are in one of `states`.
    pub(crate) fn tasks_on(&self, worker_id: &str, states: &[TaskState]) -> Vec<String> {
        self.active_tasks()
            .iter()
            .filter(|(_, t)| t.worker_id.as_deref() == Some(worker_id) && states.contains(&t.state))
            .map(|(id, _)| id.clone())
            .collect()
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

    /// Unfinished tasks by state, every unfinished state listed (from memory).
    pub fn active_counts(&self) -> BTreeMap<TaskState, usize> {
        let states: Vec<TaskState> = self.active_tasks().values().map(|t| t.state).collect();
        count_states(
            states,
            TaskState::ALL.into_iter().filter(|s| !s.is_terminal()),
        )
    }

    /// All tasks by state, every state listed (from memory).
    pub fn task_counts(&self) -> BTreeMap<TaskState, usize> {
        let mut counts = self.active_counts();
        let finished = self
            .inner
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for state in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            counts.insert(state, finished.get(&state).copied().unwrap_or(0));
        }
        counts
    }

    /// Counts a finished task that left the store (pruned history).
    pub(crate) fn forget_finished(&self, state: TaskState) {
        let mut finished = self
            .inner
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = finished.get_mut(&state) {
            *count = count.saturating_sub(1);
        }
    }

    /// One task, or a clear `NotFound` (the id was checked where it entered).
    pub async fn task(&self, task_id: &str) -> MasterResult<TaskRecord> {
        self.store().get_task(task_id).await?.ok_or_else(|| {
            MasterError::NotFound(format!("no task '{task_id}': `tasks` lists known tasks"))
        })
    }

    /// Stores a new task and announces it.
    pub(crate) async fn add(&self, task: &TaskRecord) -> MasterResult<()> {
        self.store().put_task(task).await?;
        self.index_task(task);
        self.events().emit(Event::TaskState {
            task_id: task.id.clone(),
            state: task.state,
            worker_id: task.worker_id.clone(),
            exit_code: None,
            error: None,
        });
        Ok(())
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
        also: impl Fn(&TaskRecord) -> Vec<Write>,
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
        if from.is_terminal() {
            self.forget_finished(from);
        }
        if next.is_terminal() {
            let mut finished = self
                .inner
                .finished
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *finished.entry(next).or_default() += 1;
        }
        self.inner.metrics.count_transition(next);
        if next.is_terminal() || next == TaskState::Queued {
            self.wake_scheduler();
        }
        tracing::info!(task_id = %task.id, from = %from, to = %next, worker_id = ?task.worker_id, "task state");
        self.events().emit(Event::TaskState {
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
        // Under the index's lock, as `record_progress` checks it: no report
        // lands after the task left `assigned`.
        if task.state != TaskState::Assigned {
            self.progress_map().remove(&task.id);
        }
        if task.state.is_terminal() {
            active.remove(&task.id);
        } else {
            active.insert(task.id.clone(), ActiveTask::of(task));
        }
    }

    /// Waits until a task is in a final state, re-reading it whenever an event
    /// says it ended (or events were missed); `None` if `deadline` passes first.
    /// Subscribe `events` before reading the task the first time, so no event
    /// falls between the two.
    pub async fn wait_until_final(
        &self,
        task_id: &str,
        events: &mut tokio::sync::broadcast::Receiver<Arc<Envelope>>,
        deadline: tokio::time::Instant,
    ) -> MasterResult<Option<TaskRecord>> {
        loop {
            let task = self.task(task_id).await?;
            if task.state.is_terminal() {
                return Ok(Some(task));
            }
            let ended = async {
                loop {
                    match events.recv().await {
                        Ok(envelope) => {
                            if let Event::TaskState {
                                task_id: id, state, ..
                            } = &envelope.event
                                && id == task_id
                                && state.is_terminal()
                            {
                                return;
                            }
                        }
                        // Missed events: re-read the task instead.
                        Err(RecvError::Lagged(_)) => return,
                        // The master is stopping: nothing more will come.
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return Ok(None);
            }
        }
    }
}

/// How many of `states` are in each state; every state of `listed` appears.
fn count_states(
    states: impl IntoIterator<Item = TaskState>,
    listed: impl IntoIterator<Item = TaskState>,
) -> BTreeMap<TaskState, usize> {
    let mut counts: BTreeMap<TaskState, usize> = listed.into_iter().map(|s| (s, 0)).collect();
    for state in states {
        *counts.entry(state).or_default() += 1;
    }
    counts
}
