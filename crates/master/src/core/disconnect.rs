//! What happens to the tasks of a worker the master cannot hear: the
//! at-most-once rule.
//!
//! A worker silent past the inactivity timeout is inactive and its placed
//! tasks become `unknown`: they may still run there, so nothing else runs them.
//! A worker that cannot get a heartbeat through for the disconnect window
//! stops its tasks' containers itself; the master gives the tasks up as `lost`
//! (and retries them by policy) only once the window and [`STOP_MARGIN`] have
//! passed since it last heard the worker. Both clocks start at the same
//! heartbeat (the worker counts from when it sent the last one that was
//! acknowledged, the master from when it received it), so the master's
//! deadline always falls after the worker's. A worker that comes back first
//! settles its unknown tasks with its heartbeat: still running, still held, or
//! gone (lost at once: it no longer has them).

use crate::core::lifecycle::Lifecycle;
use crate::core::registry::Registry;
use crate::store::TaskState;
use std::time::Duration;

/// Time the master allows, past the disconnect window, for a cut-off worker
/// to have stopped its containers: the worker's stop grace on a disconnect
/// (`DISCONNECT_STOP_GRACE` in the worker, 5 s), Docker's kill, and its
/// once-a-second check.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// The states of a task its worker may still hold.
pub(crate) const HELD_THERE: [TaskState; 3] =
    [TaskState::Assigned, TaskState::Running, TaskState::Unknown];

/// How long a task must have been unknown before a heartbeat that does not
/// hold it proves the worker lost it: longer than an assignment can be in
/// flight (its 10 s deadline, twice).
pub(crate) const ABSENCE_PROOF_AGE: Duration = Duration::from_secs(20);

impl Lifecycle {
    /// The worker went silent: its placed tasks become `unknown`. Returns those
    /// that did.
    pub(crate) async fn tasks_unknown(
        &self,
        worker_id: &str,
        task_ids: Vec<String>,
    ) -> Vec<String> {
        let window = self.settings().disconnect_window + STOP_MARGIN;
        let note = format!(
            "worker {worker_id} is silent; the task is rerun after {}s unless the worker returns",
            window.as_secs()
        );
        self.tasks_unknown_because(worker_id, task_ids, &note).await
    }

    /// [`Self::tasks_unknown`] with another note on the tasks.
    pub(crate) async fn tasks_unknown_because(
        &self,
        worker_id: &str,
        task_ids: Vec<String>,
        note: &str,
    ) -> Vec<String> {
        let note = note.to_string();
        let mut unknown = Vec::new();
        for task_id in task_ids {
            match self
                .transition(&task_id, TaskState::Unknown, |t| {
                    t.error = Some(note.clone())
                })
                .await
            {
                Ok(Some(_)) => {
                    tracing::warn!(task_id, worker_id, "task unknown: its worker is silent");
                    unknown.push(task_id);
                }
                Ok(None) => {}
                Err(error) => tracing::error!(task_id, %error, "could not mark a task unknown"),
            }
        }
        unknown
    }

    /// Tasks whose attempt is surely over without a result (the worker came
    /// back without them, or stopped them): `lost`, then retried or failed.
    pub(crate) async fn tasks_lost(&self, worker_id: &str, task_ids: Vec<String>, why: &str) {
        for task_id in task_ids {
            tracing::warn!(task_id, worker_id, why, "task lost with its worker");
            if let Err(error) = self.attempt_lost(&task_id, why).await {
                tracing::error!(task_id, %error, "could not record a lost task");
            }
        }
    }

    /// [`Self::tasks_lost`] for those of `task_ids` that are still unknown
    /// (a result, a cancel or the worker's return may have settled others).
    pub(crate) async fn tasks_lost_if_unknown(
        &self,
        worker_id: &str,
        task_ids: Vec<String>,
        why: &str,
    ) {
        let still: Vec<String> = {
            let active = self.active_tasks();
            task_ids
                .into_iter()
                .filter(|id| {
                    active
                        .get(id)
                        .is_some_and(|t| t.state == TaskState::Unknown)
                })
                .collect()
        };
        self.tasks_lost(worker_id, still, why).await;
    }

    /// Settles unknown tasks with a heartbeat of their returning worker:
    /// running there again, held there (starting, or its result on the way),
    /// or no longer there (lost). Returns the ids that are no longer unknown.
    pub(crate) async fn settle_unknown(
        &self,
        worker_id: &str,
        unknown: Vec<String>,
        running: &[String],
        held: &[String],
    ) -> Vec<String> {
        let now = crate::store::now_millis();
        let proof_age = ABSENCE_PROOF_AGE.as_millis() as i64;
        let mut settled = Vec::new();
        let mut gone = Vec::new();
        for task_id in unknown {
            let since = {
                let active = self.active_tasks();
                match active.get(&task_id) {
                    Some(t) if t.state == TaskState::Unknown => Some(t.queued_at),
                    _ => None,
                }
            };
            let Some(since) = since else {
                settled.push(task_id);
                continue;
            };
            let back = if running.contains(&task_id) {
                Some(TaskState::Running)
            } else if held.contains(&task_id) {
                Some(TaskState::Assigned)
            } else {
                None
            };
            match back {
                Some(state) => match self.transition(&task_id, state, |t| t.error = None).await {
                    Ok(_) => {
                        tracing::info!(task_id, worker_id, state = %state, "unknown task found on its returning worker");
                        settled.push(task_id);
                    }
                    Err(error) => {
                        tracing::error!(task_id, %error, "could not settle an unknown task")
                    }
                },
                None if now.saturating_sub(since) >= proof_age => {
                    settled.push(task_id.clone());
                    gone.push(task_id);
                }
                None => {}
            }
        }
        if !gone.is_empty() {
            let why = format!("worker {worker_id} is back without the task");
            self.tasks_lost_if_unknown(worker_id, gone, &why).await;
        }
        settled
    }

    /// A worker that is no longer registered (unregistered, or gone from the
    /// registry across a restart) cannot reach the master any more, so it
    /// stops its tasks after the window: they are unknown until then, and
    /// lost after it. Tracked, so shutdown does not wait for the window.
    pub(crate) fn give_up_after_window(&self, worker_id: &str) {
        let placed = self.tasks_on(worker_id, &HELD_THERE);
        if placed.is_empty() {
            return;
        }
        let (master, worker_id) = (self.clone(), worker_id.to_string());
        let wait = self.settings().disconnect_window + STOP_MARGIN;
        self.runtime().spawn(async move {
            master.tasks_unknown(&worker_id, placed.clone()).await;
            tokio::select! {
                _ = master.runtime().shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let why = format!("worker {worker_id} is no longer registered");
            master.tasks_lost_if_unknown(&worker_id, placed, &why).await;
        });
    }

    /// Tasks a crash left `lost` (their attempt surely over, not yet retried
    /// or failed) are retried or failed now.
    pub(crate) fn finish_lost_left_by_a_crash(&self) {
        let lost: Vec<String> = self
            .active_tasks()
            .iter()
            .filter(|(_, t)| t.state == TaskState::Lost)
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in lost {
            let master = self.clone();
            self.runtime().spawn(async move {
                let why = "lost before the master restarted";
                if let Err(error) = master.retry_or_fail(&task_id, why).await {
                    tracing::error!(task_id, %error, "could not retry a lost task");
                }
            });
        }
    }

    /// Workers that hold placed tasks but are not registered (unregistered
    /// while the master was down, or before this run).
    pub(crate) fn workers_of_orphaned_tasks(&self, registry: &Registry) -> Vec<String> {
        let mut workers: Vec<String> = self
            .active_tasks()
            .values()
            .filter(|t| HELD_THERE.contains(&t.state))
            .filter_map(|t| t.worker_id.clone())
            .filter(|w| !registry.contains(w))
            .collect();
        workers.sort();
        workers.dedup();
        workers
    }
}
