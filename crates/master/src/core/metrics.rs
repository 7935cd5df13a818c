//! Prometheus metrics of the master (`GET /metrics`), in the text exposition format.
//!
//! Counters and histograms are updated where things happen (O(1), atomic);
//! gauges that describe current state are computed when scraped.

use crate::core::registry::WorkerState;
use crate::store::TaskState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// A `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state's name.
    pub state: String,
}

/// A `method` label (gRPC method name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The method's name.
    pub method: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The master's metric handles and their registry.
pub struct MasterMetrics {
    registry: Registry,
    workers: Family<StateLabel, Gauge>,
    tasks: Family<StateLabel, Gauge>,
    queue_depth: Gauge,
    /// Heartbeats accepted.
    pub heartbeats: Counter,
    /// Telemetry samples dropped because a worker's task fell behind.
    pub telemetry_dropped: Counter,
    /// Task state transitions, by new state.
    pub transitions: Family<StateLabel, Counter>,
    rpc_latency: Family<MethodLabel, Histogram, fn() -> Histogram>,
    /// Connected WebSocket clients.
    pub websocket_clients: Gauge,
    /// Events WebSocket clients missed because they were too slow.
    pub websocket_lagged: Counter,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudai");
        let metrics = Self {
            workers: Family::default(),
            tasks: Family::default(),
            queue_depth: Gauge::default(),
            heartbeats: Counter::default(),
            telemetry_dropped: Counter::default(),
            transitions: Family::default(),
            rpc_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            websocket_clients: Gauge::default(),
            websocket_lagged: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "workers",
            "Registered workers by state",
            metrics.workers.clone(),
        );
        registry.register("tasks", "Non-final tasks by state", metrics.tasks.clone());
        registry.register(
            "queue_depth",
            "Tasks waiting for placement",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "heartbeats_received",
            "Heartbeats accepted",
            metrics.heartbeats.clone(),
        );
        registry.register(
            "telemetry_dropped",
            "Telemetry samples dropped because a worker's telemetry task fell behind",
            metrics.telemetry_dropped.clone(),
        );
        registry.register(
            "task_transitions",
            "Task state transitions by new state",
            metrics.transitions.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Latency of gRPC requests served by the master",
            metrics.rpc_latency.clone(),
        );
        registry.register(
            "websocket_clients",
            "Connected WebSocket telemetry clients",
            metrics.websocket_clients.clone(),
        );
        registry.register(
            "websocket_lagged_events",
            "Events slow WebSocket clients missed",
            metrics.websocket_lagged.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl MasterMetrics {
    /// Records how long a gRPC method took.
    pub fn observe_rpc(&self, method: &str, elapsed: Duration) {
        self.rpc_latency
            .get_or_create(&MethodLabel {
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a task transition.
    pub fn count_transition(&self, state: TaskState) {
        self.transitions
            .get_or_create(&StateLabel {
                state: state.as_str().to_string(),
            })
            .inc();
    }
}

impl MasterMetrics {
    /// Renders every metric in the Prometheus text format, with the gauges set
    /// from the workers (pending, active, inactive) and the unfinished tasks
    /// by state.
    pub fn render(
        &self,
        (pending, active, inactive): (usize, usize, usize),
        tasks: &std::collections::BTreeMap<TaskState, usize>,
    ) -> String {
        let metrics = self;
        for (state, count) in [
            (WorkerState::Pending, pending),
            (WorkerState::Active, active),
            (WorkerState::Inactive, inactive),
        ] {
            metrics
                .workers
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(count as i64);
        }
        for (state, count) in tasks {
            metrics
                .tasks
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(*count as i64);
        }
        metrics
            .queue_depth
            .set(tasks.get(&TaskState::Queued).copied().unwrap_or(0) as i64);
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}
