//! The built-in scheduler: a persistent priority queue (queued tasks in the
//! store, ordered by priority then age) drained by passes that place each
//! task with [`crate::core::placement`]. A pass runs on every submit,
//! completion and worker change, and once a second; tasks that fit nowhere
//! wait with a reason and are placed as soon as capacity frees up.
//!
//! A pass plans under one lock (so no two passes place against the same free
//! capacity), through one [`Placer`] (a burst of like tasks costs O(log
//! workers) each), then waits for its placements to be stored. While it
//! waits the next pass may plan: placements not stored yet are kept
//! in flight, and count against their workers as if stored, so passes overlap
//! the store's commits instead of queueing behind them.
//!
//! In `agent` mode a pass leaves a queued task to the external agent for
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
    /// Held while a pass plans. It keeps the workers as the last pass left
    /// them, so the next one updates them rather than building 10,000 anew.
    planning: tokio::sync::Mutex<Vec<Candidate>>,
    /// Placements planned whose reservation is not stored yet, by task id.
    in_flight: Mutex<HashMap<String, InFlight>>,
}

/// What a placement not stored yet takes from its worker.
#[derive(Clone)]
struct InFlight {
    worker_id: String,
    nano_cpus: i64,
    memory_bytes: i64,
    gpus: Vec<String>,
}

/// Passes at once: one planning while the others' placements are stored.
const PASSES_IN_FLIGHT: usize = 2;

impl Scheduler {
    /// A scheduler placing through `tasks`.
    pub fn new(lifecycle: Lifecycle, registry: Registry, tasks: Tasks) -> Self {
        Self {
            inner: Arc::new(Inner {
                lifecycle,
                registry,
                tasks,
                waiting: Mutex::new(HashMap::new()),
                planning: tokio::sync::Mutex::new(Vec::new()),
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Why a queued task waits, if the scheduler has looked at it.
    pub fn waiting_reason(&self, task_id: &str) -> Option<String> {
        self.waiting().get(task_id).cloned()
    }

    /// The scheduling loop, until shutdown.
    pub async fn run(self) {
        let passes = Arc::new(tokio::sync::Semaphore::new(PASSES_IN_FLIGHT));
        loop {
            tokio::select! {
                _ = self.lifecycle().runtime().shutdown.cancelled() => return,
                _ = self.lifecycle().queue_changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let permit = tokio::select! {
                _ = self.lifecycle().runtime().shutdown.cancelled() => return,
                permit = passes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let scheduler = self.clone();
            self.lifecycle().runtime().spawn(async move {
                scheduler.schedule_pass().await;
                drop(permit);
            });
        }
    }

    /// Places every queued task that fits, in queue order; returns once the
    /// placements are stored, with how many were.
    pub async fn schedule_pass(&self) -> usize {
        let reservations = {
            let mut candidates = self.inner.planning.lock().await;
            self.plan(&mut candidates).await
        };
        // The pass's placements are stored together (the store groups
        // concurrent writes into one commit, with the next pass's if it
        // plans meanwhile).
        futures::future::join_all(reservations)
            .await
            .into_iter()
            .filter(|placed| *placed)
            .count()
    }

    /// Chooses a worker for every queued task that fits, counting what is in
    /// flight; returns the reservations to store.
    async fn plan(
        &self,
        candidates: &mut Vec<Candidate>,
    ) -> Vec<impl Future<Output = bool> + use<>> {
        let mut queued: Vec<(i32, i64, String, i64)> = self
            .lifecycle()
            .active_tasks()
            .iter()
            // A queued task already naming a worker is being placed by its submitter.
            .filter(|(_, t)| t.state == TaskState::Queued && t.worker_id.is_none())
            .map(|(id, t)| (t.priority, t.created_at, id.clone(), t.queued_at))
            .collect();
        {
            let in_flight = self.in_flight();
            queued.retain(|q| !in_flight.contains_key(&q.2));
        }
        {
            let queued_ids: HashSet<&str> = queued.iter().map(|q| q.2.as_str()).collect();
            self.waiting()
                .retain(|id, _| queued_ids.contains(id.as_str()));
        }
        if queued.is_empty() {
            return Vec::new();
        }
        queued.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        // In flight first, then the stored tasks: a placement leaves the
        // flight only once stored, so each is seen at least once. One seen
        // twice (stored meanwhile) makes the pass briefly too careful, never
        // too generous.
        let in_flight: Vec<InFlight> = self.in_flight().values().cloned().collect();
        refresh(&self.inner.registry, self.lifecycle(), candidates);
        for flight in &in_flight {
            if let Ok(index) = candidates.binary_search_by(|c| c.id.cmp(&flight.worker_id)) {
                candidates[index].reserve(flight.nano_cpus, flight.memory_bytes, &flight.gpus);
            }
        }
        let mut placer = Placer::new(
            std::mem::take(candidates),
            self.lifecycle().settings().policy,
        );
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
            let task = match self.lifecycle().store().get_task(&task_id).await {
                Ok(Some(task)) => task,
                Ok(None) => continue,
                Err(error) => {
                    // What is planned goes ahead; the rest waits for a pass.
                    tracing::error!(%error, task_id, "cannot read a queued task; the pass stops here");
                    break;
                }
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
                    self.in_flight().insert(
                        task_id.clone(),
                        InFlight {
                            worker_id: worker_id.clone(),
                            nano_cpus: demand.nano_cpus,
                            memory_bytes: demand.memory_bytes,
                            gpus: choice.gpus.clone(),
                        },
                    );
                    let scheduler = self.clone();
                    reservations.push(async move {
                        scheduler
                            .place_and_dispatch(task_id, worker_id, choice.gpus)
                            .await
                    });
                }
                Err(reason) => self.set_waiting(&task_id, reason.to_string()),
            }
        }
        *candidates = placer.into_candidates();
        reservations
    }

    /// Records one placement of the pass and hands the task to its worker in
    /// the background; false when the task could not be reserved.
    async fn place_and_dispatch(
        &self,
        task_id: String,
        worker_id: String,
        gpus: Vec<String>,
    ) -> bool {
        let reserved = self.inner.tasks.reserve(&task_id, &worker_id, gpus).await;
        // Stored (and so counted by the next refresh), or not placed at all.
        self.in_flight().remove(&task_id);
        let assigned = match reserved {
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

#[cfg(test)]
mod tests {
    use super::InFlight;
    use crate::core::tasks::Placement;
    use crate::core::test_cluster::*;
    use std::time::Duration;
    use tokio::time::Instant;

    fn flight(cpus: i64) -> InFlight {
        InFlight {
            worker_id: "wa".into(),
            nano_cpus: cpus * 1_000_000_000,
            memory_bytes: 0,
            gpus: Vec::new(),
        }
    }

    /// Placements not stored yet hold their worker's capacity, and their
    /// tasks are not placed again, until they leave the flight.
    #[tokio::test(start_paused = true)]
    async fn placements_in_flight_count_and_are_not_placed_twice() {
        let (master, workers) = cluster().await;
        join(&master, "wa").await;
        let alive = [("wa", vec![])];
        master
            .scheduler
            .in_flight()
            .insert("t-elsewhere".into(), flight(3));
        let mut two_cpus = request(Placement::Auto, 0);
        two_cpus.limits.nano_cpus = 2_000_000_000;
        let id = master.tasks.submit_task(two_cpus).await.unwrap().id;
        assert_eq!(master.scheduler.schedule_pass().await, 0);
        let reason = master.scheduler.waiting_reason(&id).unwrap_or_default();
        assert!(reason.contains("free CPUs"), "{reason}");
        // Its own placement in flight: no pass touches it.
        master.scheduler.in_flight().remove("t-elsewhere");
        master.scheduler.in_flight().insert(id.clone(), flight(0));
        let later = Instant::now() + Duration::from_secs(2);
        until(&master, &alive, async |_| Instant::now() >= later).await;
        assert!(workers.assignments().is_empty());
        master.scheduler.in_flight().remove(&id);
        until(&master, &alive, async |_| workers.assignments().len() == 1).await;
        assert_eq!(workers.assignments()[0].0, id);
        assert!(master.scheduler.in_flight().is_empty());
    }
}
