//! Cluster events: every worker and task transition and every telemetry sample,
//! numbered and fanned out to whoever listens (WebSocket clients, the REPL's live
//! views, agents). Each event is encoded to JSON at most once, however many
//! clients receive it.

use crate::store::TaskState;
use serde::Serialize;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// Capacity of the event channel; a receiver that falls further behind is told
/// how many events it missed.
pub const EVENT_CAPACITY: usize = 8192;

/// One GPU in a telemetry sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSample {
    /// NVML index.
    pub index: u32,
    /// GPU UUID.
    pub uuid: String,
    /// Model name.
    pub name: String,
    /// Utilisation, 0–100.
    pub utilization_percent: f32,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory size, bytes.
    pub memory_total_bytes: u64,
    /// Temperature, °C.
    pub temperature_celsius: f32,
    /// Power draw, W.
    pub power_watts: f32,
    /// Task holding the GPU, if any.
    pub task_id: Option<String>,
}

/// A worker's metrics from one heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// When the worker took the sample (ms since epoch).
    pub sampled_at: i64,
    /// Overall CPU usage, 0–100.
    pub cpu_percent: f32,
    /// Logical CPUs.
    pub cpu_count: u32,
    /// One-minute load average.
    pub load_average_1m: f32,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Physical memory, bytes.
    pub memory_total_bytes: u64,
    /// Used bytes on the disk holding Docker's data root.
    pub disk_used_bytes: u64,
    /// Size of that disk.
    pub disk_total_bytes: u64,
    /// GPUs.
    pub gpus: Vec<GpuSample>,
    /// Tasks whose containers are running.
    pub running_task_ids: Vec<String>,
}

impl From<&cloudai_proto::v1::Heartbeat> for Metrics {
    fn from(hb: &cloudai_proto::v1::Heartbeat) -> Self {
        Metrics {
            sampled_at: hb
                .timestamp
                .as_ref()
                .and_then(cloudai_proto::timestamp_millis)
                .unwrap_or(0),
            cpu_percent: hb.cpu_percent,
            cpu_count: hb.cpu_count,
            load_average_1m: hb.load_average_1m,
            memory_used_bytes: hb.memory_used_bytes,
            memory_total_bytes: hb.memory_total_bytes,
            disk_used_bytes: hb.disk_used_bytes,
            disk_total_bytes: hb.disk_total_bytes,
            gpus: hb
                .gpus
                .iter()
                .map(|g| GpuSample {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    name: g.name.clone(),
                    utilization_percent: g.utilization_percent,
                    memory_used_bytes: g.memory_used_bytes,
                    memory_total_bytes: g.memory_total_bytes,
                    temperature_celsius: g.temperature_celsius,
                    power_watts: g.power_watts,
                    task_id: (!g.task_id.is_empty()).then(|| g.task_id.clone()),
                })
                .collect(),
            running_task_ids: hb.running_task_ids.clone(),
        }
    }
}

/// What a worker last said about preparing an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskProgress {
    /// The attempt it is about.
    pub attempt: u32,
    /// What the worker is doing: `pulling`.
    pub phase: String,
    /// Image layers done.
    pub layers_done: u32,
    /// Image layers announced so far.
    pub layers_total: u32,
    /// Bytes downloaded, over layers of known size.
    pub bytes_done: u64,
    /// Bytes to download, over layers of known size.
    pub bytes_total: u64,
    /// The latest note ("retrying in 2s: …"), empty when none.
    pub message: String,
    /// When the master got it (ms since epoch).
    pub updated_at: i64,
}

/// A change in the cluster. Serialised with a `type` field (snake_case variant name).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A heartbeat's metrics.
    Telemetry {
        /// Worker id.
        worker_id: String,
        /// The sample.
        metrics: Metrics,
    },
    /// The operator pre-registered a worker.
    WorkerRegistered {
        /// Worker id.
        worker_id: String,
        /// Its address.
        address: String,
    },
    /// The operator removed a worker.
    WorkerUnregistered {
        /// Worker id.
        worker_id: String,
    },
    /// A worker registered or resumed heartbeating.
    WorkerActive {
        /// Worker id.
        worker_id: String,
    },
    /// A worker went silent past the inactivity timeout, or said it is stopping.
    WorkerInactive {
        /// Worker id.
        worker_id: String,
        /// `timeout` or `stopping`.
        reason: &'static str,
    },
    /// A task changed state (already persisted).
    TaskState {
        /// Task id.
        task_id: String,
        /// New state.
        state: TaskState,
        /// Worker holding the task, if any.
        worker_id: Option<String>,
        /// Exit code, once known.
        exit_code: Option<i32>,
        /// Failure reason, if any.
        error: Option<String>,
    },
    /// A worker reported how an assigned task's image pull goes.
    TaskProgress {
        /// Task id.
        task_id: String,
        /// Worker preparing it.
        worker_id: String,
        /// The progress.
        progress: TaskProgress,
        /// The progress as a line for people (`pulling 43% (1.2 of 2.8 GiB)`).
        text: String,
    },
}

impl Event {
    /// The worker an event concerns, for per-worker subscriptions.
    pub fn worker_id(&self) -> Option<&str> {
        match self {
            Event::Telemetry { worker_id, .. }
            | Event::WorkerRegistered { worker_id, .. }
            | Event::WorkerUnregistered { worker_id }
            | Event::WorkerActive { worker_id }
            | Event::WorkerInactive { worker_id, .. }
            | Event::TaskProgress { worker_id, .. } => Some(worker_id),
            Event::TaskState { worker_id, .. } => worker_id.as_deref(),
        }
    }
}

/// An event with its sequence number and time, as delivered.
#[derive(Debug)]
pub struct Envelope {
    /// Increases by one per event; a gap means the receiver missed events.
    pub seq: u64,
    /// When the master emitted it (ms since epoch).
    pub timestamp: i64,
    /// The event.
    pub event: Event,
    json: OnceLock<Arc<str>>,
}

#[derive(Serialize)]
struct Wire<'a> {
    seq: u64,
    timestamp: i64,
    #[serde(flatten)]
    event: &'a Event,
}

impl Envelope {
    /// Wraps an event.
    pub fn new(seq: u64, timestamp: i64, event: Event) -> Self {
        Self {
            seq,
            timestamp,
            event,
            json: OnceLock::new(),
        }
    }

    /// The JSON text of this event (encoded once, shared by all receivers).
    pub fn json(&self) -> Arc<str> {
        self.json
            .get_or_init(|| {
                let wire = Wire {
                    seq: self.seq,
                    timestamp: self.timestamp,
                    event: &self.event,
                };
                serde_json::to_string(&wire).map_or_else(
                    |e| format!("{{\"type\":\"error\",\"message\":\"{e}\"}}").into(),
                    Into::into,
                )
            })
            .clone()
    }
}

/// The cluster's event stream: numbers each event and fans it out. Cheap to
/// clone; every clone sends on the same stream.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    sender: broadcast::Sender<Arc<Envelope>>,
    /// Sequence number of the last event (the lock keeps sends in sequence order).
    last_seq: Mutex<u64>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            inner: Arc::new(BusInner {
                sender,
                last_seq: Mutex::new(0),
            }),
        }
    }
}

impl EventBus {
    /// Numbers and sends an event (nobody listening is fine).
    pub fn emit(&self, event: Event) {
        let mut seq = self
            .inner
            .last_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        let _ = self.inner.sender.send(Arc::new(Envelope::new(
            *seq,
            crate::store::now_millis(),
            event,
        )));
    }

    /// A receiver of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.sender.subscribe()
    }

    /// Sequence number of the last event sent.
    pub fn last_seq(&self) -> u64 {
        *self
            .inner
            .last_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_with_type_seq_and_timestamp() {
        let envelope = Envelope::new(
            7,
            1_700_000_000_000,
            Event::WorkerInactive {
                worker_id: "w1".into(),
                reason: "timeout",
            },
        );
        let value: serde_json::Value = serde_json::from_str(&envelope.json()).unwrap();
        assert_eq!(value["type"], "worker_inactive");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["timestamp"], 1_700_000_000_000i64);
        assert_eq!(value["worker_id"], "w1");
        assert!(
            Arc::ptr_eq(&envelope.json(), &envelope.json()),
            "encoded once"
        );
        let task = Event::TaskState {
            task_id: "t-1".into(),
            state: TaskState::TimedOut,
            worker_id: None,
            exit_code: None,
            error: None,
        };
        let value = serde_json::to_value(&task).unwrap();
        assert_eq!(value["type"], "task_state");
        assert_eq!(value["state"], "timed_out");
        assert_eq!(task.worker_id(), None);
    }
}
