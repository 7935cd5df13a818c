//! Telemetry manager: one tokio task per worker, fed by the heartbeat handler
//! through a small bounded queue.
//!
//! The handler only pushes the sample (dropping the oldest one when the queue is
//! full, and counting it) and takes the worker's pending stop requests: O(1).
//! The worker's task updates the registry, emits `telemetry` and
//! `worker_active`/`worker_inactive` events, marks newly running tasks, and
//! watches for silence: past the inactivity timeout the worker is inactive and
//! its placed tasks `unknown`; past the disconnect window and its margin they
//! are lost (see `disconnect.rs`). A slow or silent worker only ever delays its
//! own task.

use crate::core::events::{Event, Metrics};
use crate::core::lifecycle::Lifecycle;
use crate::core::metrics::MasterMetrics;
use crate::core::registry::HeartbeatOutcome;
use crate::core::registry::Registry;
use crate::store::{TaskState, now_millis};
use cloudai_proto::v1::Heartbeat;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The states of a task placed on a worker and not yet unknown.
const PLACED: [TaskState; 2] = [TaskState::Assigned, TaskState::Running];

/// Samples queued per worker before the oldest is dropped.
pub const FEED_CAPACITY: usize = 8;

/// The queue between the heartbeat handler and one worker's task.
struct Feed {
    samples: Mutex<VecDeque<Heartbeat>>,
    ready: Notify,
    stop: CancellationToken,
    /// Tasks the worker should stop, handed out with the next heartbeat response.
    pending_stops: Mutex<Vec<String>>,
    /// This worker's tasks in the `unknown` state.
    unknown: Mutex<HashSet<String>>,
}

impl Feed {
    fn new() -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(FEED_CAPACITY)),
            ready: Notify::new(),
            stop: CancellationToken::new(),
            pending_stops: Mutex::new(Vec::new()),
            unknown: Mutex::new(HashSet::new()),
        }
    }

    fn unknown(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unknown.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a sample; returns whether an older one had to be dropped.
    fn push(&self, heartbeat: Heartbeat) -> bool {
        let dropped = {
            let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = samples.len() >= FEED_CAPACITY && samples.pop_front().is_some();
            samples.push_back(heartbeat);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    fn drain(&self) -> Vec<Heartbeat> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    fn take_stops(&self) -> Vec<String> {
        std::mem::take(&mut *self.pending_stops.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn add_stops(&self, task_ids: Vec<String>) {
        if !task_ids.is_empty() {
            self.pending_stops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(task_ids);
        }
    }
}

/// Handle to the telemetry manager (cheap to clone).
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    lifecycle: Lifecycle,
    registry: Registry,
    metrics: Arc<MasterMetrics>,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
}

impl Telemetry {
    /// A manager with no feeds yet.
    pub fn new(lifecycle: Lifecycle, registry: Registry, metrics: Arc<MasterMetrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                lifecycle,
                registry,
                metrics,
                feeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn feed(&self, worker_id: &str) -> Arc<Feed> {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(worker_id) {
            return feed.clone();
        }
        let feed = Arc::new(Feed::new());
        feeds.insert(worker_id.to_string(), feed.clone());
        self.lifecycle()
            .runtime()
            .spawn(self.clone().run_feed(worker_id.to_string(), feed.clone()));
        feed
    }

    /// Makes sure a worker has a telemetry task (after registration) and
    /// restarts its inactivity clock.
    pub(crate) fn start(&self, worker_id: &str) {
        self.feed(worker_id).ready.notify_one();
    }

    /// Stops a worker's telemetry task (after unregister).
    pub(crate) fn stop(&self, worker_id: &str) {
        let feed = self
            .inner
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker_id);
        if let Some(feed) = feed {
            feed.stop.cancel();
        }
    }

    fn drop_feed(&self, worker_id: &str, feed: &Arc<Feed>) {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds
            .get(worker_id)
            .is_some_and(|current| Arc::ptr_eq(current, feed))
        {
            feeds.remove(worker_id);
        }
    }

    /// The heartbeat handler's whole job: hand the sample to the worker's task
    /// and return the tasks the worker should stop. `None`: not registered.
    pub fn ingest_heartbeat(&self, heartbeat: Heartbeat) -> Option<Vec<String>> {
        if !self.registry().contains(&heartbeat.worker_id) {
            return None;
        }
        let feed = self.feed(&heartbeat.worker_id);
        self.inner.metrics.heartbeats.inc();
        if feed.push(heartbeat) {
            self.inner.metrics.telemetry_dropped.inc();
        }
        Some(feed.take_stops())
    }

    /// Notes tasks of a worker that are now `unknown`, so its telemetry task
    /// settles them: by its next heartbeats, or as lost once it stayed silent
    /// past the disconnect window.
    pub(crate) fn watch_unknown(&self, worker_id: &str, task_ids: &[String]) {
        let feed = self.feed(worker_id);
        feed.unknown().extend(task_ids.iter().cloned());
    }

    async fn run_feed(self, worker_id: String, feed: Arc<Feed>) {
        let timeout = self.lifecycle().settings().inactivity_timeout;
        let lost_after =
            self.lifecycle().settings().disconnect_window + crate::core::disconnect::STOP_MARGIN;
        // Tasks left unknown by an earlier run of the master.
        feed.unknown()
            .extend(self.lifecycle().tasks_on(&worker_id, &[TaskState::Unknown]));
        let mut heard = Instant::now();
        let mut watching = true;
        let mut silent = false;
        loop {
            let waiting_for_loss = silent && !feed.unknown().is_empty();
            tokio::select! {
                _ = self.lifecycle().runtime().shutdown.cancelled() => return,
                _ = feed.stop.cancelled() => return,
                _ = feed.ready.notified() => {
                    for heartbeat in feed.drain() {
                        watching = self.process_heartbeat(&worker_id, &feed, heartbeat).await;
                    }
                    // A heartbeat that raced an unregister re-created this feed: end it.
                    if !self.registry().contains(&worker_id) {
                        self.drop_feed(&worker_id, &feed);
                        return;
                    }
                    heard = Instant::now();
                    silent = false;
                }
                _ = tokio::time::sleep_until(heard + timeout), if watching && !silent => {
                    silent = true;
                    if self.registry().mark_inactive(&worker_id) {
                        tracing::warn!(worker_id, timeout_s = timeout.as_secs_f32(), "worker inactive: no heartbeat within the inactivity timeout");
                        self.lifecycle().events().emit(Event::WorkerInactive { worker_id: worker_id.clone(), reason: "timeout" });
                    }
                    let placed = self.lifecycle().tasks_on(&worker_id, &PLACED);
                    if !placed.is_empty() {
                        let unknown = self.lifecycle().tasks_unknown(&worker_id, placed).await;
                        feed.unknown().extend(unknown);
                    }
                }
                _ = tokio::time::sleep_until(heard + lost_after), if waiting_for_loss => {
                    let unknown: Vec<String> = feed.unknown().drain().collect();
                    let why = format!(
                        "worker {worker_id} was silent past the disconnect window ({}s)",
                        self.lifecycle().settings().disconnect_window.as_secs()
                    );
                    self.lifecycle().tasks_lost_if_unknown(&worker_id, unknown, &why).await;
                }
            }
        }
    }

    /// Applies one sample; returns whether the worker should be watched for silence.
    async fn process_heartbeat(
        &self,
        worker_id: &str,
        feed: &Feed,
        mut heartbeat: Heartbeat,
    ) -> bool {
        let stopping = heartbeat.stopping;
        let running = heartbeat.running_task_ids.clone();
        // Needed only to settle unknown tasks; the registry keeps the rest.
        let held = std::mem::take(&mut heartbeat.held_task_ids);
        let metrics = Metrics::from(&heartbeat);
        let Some(outcome) = self
            .registry()
            .record_heartbeat(heartbeat, std::time::Instant::now())
        else {
            return false;
        };
        if outcome == HeartbeatOutcome::BecameActive && !stopping {
            tracing::info!(worker_id, "worker active");
            self.lifecycle().events().emit(Event::WorkerActive {
                worker_id: worker_id.to_string(),
            });
        }
        self.lifecycle().events().emit(Event::Telemetry {
            worker_id: worker_id.to_string(),
            metrics,
        });
        if stopping {
            tracing::info!(worker_id, "worker is stopping");
            self.lifecycle().events().emit(Event::WorkerInactive {
                worker_id: worker_id.to_string(),
                reason: "stopping",
            });
        }
        self.mark_started(worker_id, &running);
        let unknown: Vec<String> = feed.unknown().iter().cloned().collect();
        if !unknown.is_empty() {
            let settled = self
                .lifecycle()
                .settle_unknown(worker_id, unknown, &running, &held)
                .await;
            let mut still = feed.unknown();
            for task_id in settled {
                still.remove(&task_id);
            }
        }
        feed.add_stops(self.lifecycle().unwanted_tasks(worker_id, &running));
        if outcome == HeartbeatOutcome::BecameActive {
            self.lifecycle().wake_scheduler();
        }
        // A stopping worker is watched too: if it does not come back within the
        // inactivity timeout, its tasks are lost.
        true
    }

    /// Moves tasks the worker reports as running from `assigned` to `running`.
    fn mark_started(&self, worker_id: &str, running: &[String]) {
        let started: Vec<String> = {
            let active = self.lifecycle().active_tasks();
            running
                .iter()
                .filter(|id| {
                    active.get(*id).is_some_and(|t| {
                        t.state == TaskState::Assigned && t.worker_id.as_deref() == Some(worker_id)
                    })
                })
                .cloned()
                .collect()
        };
        for task_id in started {
            let master = self.clone();
            self.lifecycle().runtime().spawn(async move {
                let result = master
                    .lifecycle()
                    .transition(&task_id, TaskState::Running, |t| {
                        t.started_at = Some(now_millis())
                    })
                    .await;
                if let Err(error) = result {
                    tracing::error!(task_id, %error, "could not mark task running");
                }
            });
        }
    }
}
