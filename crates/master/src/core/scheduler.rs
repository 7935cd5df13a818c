//! The built-in scheduler: a persistent priority queue (queued tasks in the
//! store, ordered by priority then age) drained by one loop that places each
//! task with [`crate::core::placement`]. It wakes on every submit, completion and
//! worker change, and once a second; a pass's placements go through one
//! [`Placer`], so a burst of like tasks costs O(log workers) each; tasks that fit nowhere wait with a
//! reason and are placed as soon as capacity frees up.
//!
//! In `agent` mode the loop leaves a queued task to the external agent for
//! `--agent-timeout`, then places it itself, so a dead agent never stalls the
//! cluster.

use crate::core::capacity::{demand, refresh};
use crate::core::lifecycle::Lifecycle;
use crate::core::placement::{Candidate, PlacementMode};
use crate::core::placer::Placer;
use crate::core::registry::Registry;
use crate::core::tasks::Tasks;
use crate::store::TaskState;
use crate::store::now_millis;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Handle to the built-in scheduler (cheap to clone).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    lifecycle: Lifecycle,
    registry: Registry,
    tasks: Tasks,
    /// Why each queued task is still waiting.
    waiting: Mutex<HashMap<String, String>>,
    /// The workers as the last pass saw them, kept so the next one updates
    /// them rather than building 10,000 anew.
    candidates: Mutex<Vec<Candidate>>,
}

impl Scheduler {
    /// A scheduler placing through `tasks`.
    pub fn new(lifecycle: Lifecycle, registry: Registry, tasks: Tasks) -> Self {
        Self {
            inner: Arc::new(Inner {
                lifecycle,
                registry,
                tasks,
                waiting: Mutex::new(HashMap::new()),
                candidates: Mutex::new(Vec::new()),
            }),
        }
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn candidates(&self) -> std::sync::MutexGuard<'_, Vec<Candidate>> {
        self.inner
            .candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Why a queued task waits, if the scheduler has looked at it.
    pub fn waiting_reason(&self, task_id: &str) -> Option<String> {
        self.waiting().get(task_id).cloned()
    }

    /// The scheduling loop, until shutdown.
    pub async fn run(self) {
        loop {
            tokio::select! {
                _ = self.lifecycle().runtime().shutdown.cancelled() => return,
                _ = self.lifecycle().queue_changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(error) = self.schedule_pass().await {
                tracing::error!(%error, "scheduling pass failed; retrying");
            }
        }
    }

    /// Places every queued task that fits, in queue order.
    pub async fn schedule_pass(&self) -> crate::error::MasterResult<usize> {
        let mut queued: Vec<(i32, i64, String, i64)> = self
            .lifecycle()
            .active_tasks()
            .iter()
            // A queued task already naming a worker is being placed by its submitter.
            .filter(|(_, t)| t.state == TaskState::Queued && t.worker_id.is_none())
            .map(|(id, t)| (t.priority, t.created_at, id.clone(), t.queued_at))
            .collect();
        {
            let queued_ids: HashSet<&str> = queued.iter().map(|q| q.2.as_str()).collect();
            self.waiting()
                .retain(|id, _| queued_ids.contains(id.as_str()));
        }
        if queued.is_empty() {
            return Ok(0);
        }
        queued.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        // Last pass's candidates, refreshed in place (a concurrent pass finds
        // none and builds its own).
        let mut candidates = std::mem::take(&mut *self.candidates());
        refresh(&self.inner.registry, self.lifecycle(), &mut candidates);
        let mut placer = Placer::new(candidates, self.lifecycle().settings().policy);
        let now = now_millis();
        let agent_window = self.lifecycle().settings().agent_timeout.as_millis() as i64;
        let mut reservations = Vec::new();
        for (_, _, task_id, queued_at) in queued {
            let held = self.lifecycle().holds().get(&task_id).copied();
            let reason = match held {
                Some(until) if until > tokio::time::Instant::now() => {
                    let left = until - tokio::time::Instant::now();
                    Some(format!("retrying in {}s", left.as_millis().div_ceil(1000)))
                }
                _ if self.lifecycle().settings().placement_mode == PlacementMode::Agent
                    && now - queued_at < agent_window =>
                {
                    Some(format!(
                        "waiting for agent ({}s before the built-in scheduler takes over)",
                        (agent_window - (now - queued_at) + 999) / 1000
                    ))
                }
                _ => None,
            };
            if let Some(reason) = reason {
                self.set_waiting(&task_id, reason);
                continue;
            }
            let Some(task) = self.lifecycle().store().get_task(&task_id).await? else {
                continue;
            };
            if task.state != TaskState::Queued {
                continue;
            }
            let demand = demand(&task);
            match placer.place(&demand) {
                Ok(choice) => {
                    let worker_id = placer.candidate(choice.index).id.clone();
                    self.waiting().remove(&task_id);
                    self.lifecycle().holds().remove(&task_id);
                    reservations.push(self.place_and_dispatch(task_id, worker_id, choice.gpus));
                }
                Err(reason) => self.set_waiting(&task_id, reason.to_string()),
            }
        }
        *self.candidates() = placer.into_candidates();
        // The pass's placements are stored together (the store groups
        // concurrent writes into one commit) and the pass ends once they
        // are, so the next pass sees their reservations.
        let placed = futures::future::join_all(reservations)
            .await
            .into_iter()
            .filter(|placed| *placed)
            .count();
        Ok(placed)
    }

    /// Records one placement of the pass and hands the task to its worker in
    /// the background; false when the task could not be reserved.
    async fn place_and_dispatch(
        &self,
        task_id: String,
        worker_id: String,
        gpus: Vec<String>,
    ) -> bool {
        let assigned = match self.inner.tasks.reserve(&task_id, &worker_id, gpus).await {
            Ok(assigned) => assigned,
            Err(error) => {
                // Placed meanwhile (by an agent) or cancelled: carry on with the rest.
                tracing::debug!(task_id, %error, "could not reserve");
                return false;
            }
        };
        tracing::info!(task_id, worker_id, "placed by the built-in scheduler");
        // The RPC runs on its own so a slow worker never stalls the queue.
        let tasks = self.inner.tasks.clone();
        self.lifecycle().runtime().spawn(async move {
            if let Err(error) = tasks.dispatch(assigned).await {
                tracing::error!(%error, "dispatch failed");
            }
        });
        true
    }

    fn set_waiting(&self, task_id: &str, reason: String) {
        self.waiting().insert(task_id.to_string(), reason);
    }
}
