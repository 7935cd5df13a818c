//! The built-in scheduler: a persistent priority queue (queued tasks in the
//! store, ordered by priority then age) drained by one loop that places each
//! task with [`crate::core::placement`]. It wakes on every submit, completion and
//! worker change, and once a second; tasks that fit nowhere wait with a
//! reason and are placed as soon as capacity frees up.
//!
//! In `agent` mode the loop leaves a queued task to the external agent for
//! `--agent-timeout`, then places it itself, so a dead agent never stalls the
//! cluster.

use crate::core::cluster::Master;
use crate::core::placement::{self, Candidate, Demand};
use crate::core::registry::WorkerState;
use crate::store::{TaskRecord, TaskState, now_millis};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Who places queued tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PlacementMode {
    /// The built-in scheduler.
    #[default]
    Builtin,
    /// An external agent over `MasterAgent`, with the built-in scheduler as fallback.
    Agent,
}

impl PlacementMode {
    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementMode::Builtin => "builtin",
            PlacementMode::Agent => "agent",
        }
    }
}

/// The scheduler's in-memory state.
#[derive(Default)]
pub struct SchedulerState {
    wake: Notify,
    /// Why each queued task is still waiting.
    waiting: Mutex<HashMap<String, String>>,
    /// Retry backoff: not before this instant (monotonic, tokio's clock).
    hold: Mutex<HashMap<String, tokio::time::Instant>>,
}

/// Backoff before retry `attempt` + 1: 1s, 2s, 4s … capped at 60s.
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// What a task asks for, as placement sees it.
pub fn demand(task: &TaskRecord) -> Demand {
    Demand {
        nano_cpus: task.limits.nano_cpus,
        memory_bytes: task.limits.memory_bytes,
        gpus: task.limits.gpus(),
    }
}

impl Master {
    /// Runs a scheduling pass soon.
    pub fn wake_scheduler(&self) {
        self.scheduler().wake.notify_one();
    }

    /// Why a queued task waits, if the scheduler has looked at it.
    pub fn waiting_reason(&self, task_id: &str) -> Option<String> {
        self.scheduler()
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_id)
            .cloned()
    }

    pub(crate) fn hold_until(&self, task_id: &str, until: tokio::time::Instant) {
        self.scheduler()
            .hold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id.to_string(), until);
    }

    /// Active workers with their capacity, reservations and live load.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut reserved: HashMap<String, (i64, i64, HashSet<String>)> = HashMap::new();
        for task in self.active_tasks().values() {
            // An unknown task may still run on its silent worker: it keeps its share.
            if let (Some(worker), TaskState::Assigned | TaskState::Running | TaskState::Unknown) =
                (&task.worker_id, task.state)
            {
                let entry = reserved.entry(worker.clone()).or_default();
                entry.0 = entry.0.saturating_add(task.nano_cpus);
                entry.1 = entry.1.saturating_add(task.memory_bytes);
                entry.2.extend(task.gpus.iter().cloned());
            }
        }
        let mut candidates = self.registry().filter_map(|w| {
            (w.state == WorkerState::Active).then(|| {
                let (cpus, memory, gpus) = match (&w.info, &w.record.host) {
                    (Some(info), _) => (
                        info.cpu_count,
                        info.memory_total_bytes,
                        info.gpus.iter().map(|g| g.uuid.clone()).collect(),
                    ),
                    (None, Some(host)) => (
                        host.cpu_count,
                        host.memory_total_bytes,
                        host.gpus.iter().map(|g| g.uuid.clone()).collect(),
                    ),
                    (None, None) => (0, 0, Vec::new()),
                };
                let (reserved_cpu, reserved_memory, mut used_gpus) =
                    reserved.remove(&w.record.id).unwrap_or_default();
                // Cross-check with telemetry: a GPU a task holds there is busy too.
                if let Some(hb) = &w.latest {
                    used_gpus.extend(
                        hb.gpus
                            .iter()
                            .filter(|g| !g.task_id.is_empty())
                            .map(|g| g.uuid.clone()),
                    );
                }
                Candidate {
                    id: w.record.id.clone(),
                    nano_cpus: i64::from(cpus) * 1_000_000_000,
                    memory_bytes: saturating_i64(memory),
                    gpus,
                    reserved_nano_cpus: reserved_cpu,
                    reserved_memory_bytes: reserved_memory,
                    used_gpus,
                    live_memory_used: w
                        .latest
                        .as_ref()
                        .map(|hb| saturating_i64(hb.memory_used_bytes)),
                    live_cpu_percent: w.latest.as_ref().map(|hb| hb.cpu_percent),
                }
            })
        });
        // Placement breaks ties by position: keep it stable, by worker id.
        candidates.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        candidates
    }

    /// The scheduling loop, until shutdown.
    pub async fn run_scheduler(self) {
        loop {
            tokio::select! {
                _ = self.shutdown_token().cancelled() => return,
                _ = self.scheduler().wake.notified() => {}
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
            .active_tasks()
            .iter()
            // A queued task already naming a worker is being placed by its submitter.
            .filter(|(_, t)| t.state == TaskState::Queued && t.worker_id.is_none())
            .map(|(id, t)| (t.priority, t.created_at, id.clone(), t.queued_at))
            .collect();
        {
            let mut waiting = self
                .scheduler()
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            waiting.retain(|id, _| queued.iter().any(|q| &q.2 == id));
        }
        if queued.is_empty() {
            return Ok(0);
        }
        queued.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut candidates = self.candidates();
        let now = now_millis();
        let agent_window = self.settings().agent_timeout.as_millis() as i64;
        let mut reservations = Vec::new();
        for (_, _, task_id, queued_at) in queued {
            let held = self
                .scheduler()
                .hold
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&task_id)
                .copied();
            let reason = match held {
                Some(until) if until > tokio::time::Instant::now() => {
                    let left = until - tokio::time::Instant::now();
                    Some(format!("retrying in {}s", left.as_millis().div_ceil(1000)))
                }
                _ if self.settings().placement_mode == PlacementMode::Agent
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
            let Some(task) = self.store().get_task(&task_id).await? else {
                continue;
            };
            if task.state != TaskState::Queued {
                continue;
            }
            let demand = demand(&task);
            match placement::place(&demand, &candidates, self.settings().policy) {
                Ok(choice) => {
                    let candidate = &mut candidates[choice.index];
                    candidate.reserved_nano_cpus += demand.nano_cpus;
                    candidate.reserved_memory_bytes += demand.memory_bytes;
                    candidate.used_gpus.extend(choice.gpus.iter().cloned());
                    let worker_id = candidate.id.clone();
                    self.scheduler()
                        .waiting
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&task_id);
                    self.scheduler()
                        .hold
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&task_id);
                    reservations.push(self.place_and_dispatch(task_id, worker_id, choice.gpus));
                }
                Err(reason) => self.set_waiting(&task_id, reason),
            }
        }
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
        let assigned = match self.reserve(&task_id, &worker_id, gpus).await {
            Ok(assigned) => assigned,
            Err(error) => {
                // Placed meanwhile (by an agent) or cancelled: carry on with the rest.
                tracing::debug!(task_id, %error, "could not reserve");
                return false;
            }
        };
        tracing::info!(task_id, worker_id, "placed by the built-in scheduler");
        // The RPC runs on its own so a slow worker never stalls the queue.
        let master = self.clone();
        self.tracker().spawn(async move {
            if let Err(error) = master.dispatch(assigned).await {
                tracing::error!(%error, "dispatch failed");
            }
        });
        true
    }

    fn set_waiting(&self, task_id: &str, reason: String) {
        self.scheduler()
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id.to_string(), reason);
    }
}

/// A worker-reported byte count as the signed numbers placement works in.
fn saturating_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(1), Duration::from_secs(1));
        assert_eq!(retry_backoff(2), Duration::from_secs(2));
        assert_eq!(retry_backoff(4), Duration::from_secs(8));
        assert_eq!(retry_backoff(50), Duration::from_secs(60));
    }
}
