//! What workers can take now: each active worker's capacity, less what its
//! placed tasks reserve, cross-checked with its live telemetry.

use crate::core::lifecycle::Lifecycle;
use crate::core::placement::{Candidate, Demand};
use crate::core::registry::{Registry, WorkerState};
use crate::store::{TaskRecord, TaskState};
use std::collections::{HashMap, HashSet};

/// What a task asks for, as placement sees it.
pub fn demand(task: &TaskRecord) -> Demand {
    Demand {
        nano_cpus: task.limits.nano_cpus,
        memory_bytes: task.limits.memory_bytes,
        gpus: task.limits.gpus(),
        host_paths: task.options.host_paths(),
        host_network: task.options.host_network(),
        host_ipc: task.options.host_ipc(),
    }
}

/// Active workers with their capacity, reservations and live load.
pub fn candidates(registry: &Registry, lifecycle: &Lifecycle) -> Vec<Candidate> {
    let mut reserved: HashMap<String, (i64, i64, HashSet<String>)> = HashMap::new();
    for task in lifecycle.active_tasks().values() {
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
    let mut candidates = registry.filter_map(|w| {
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
                allowed_host_paths: w
                    .info
                    .as_ref()
                    .map(|info| info.allowed_host_paths.clone())
                    .unwrap_or_default(),
                allow_host_network: w.info.as_ref().is_some_and(|info| info.allow_host_network),
                allow_host_ipc: w.info.as_ref().is_some_and(|info| info.allow_host_ipc),
            }
        })
    });
    // Placement breaks ties by position: keep it stable, by worker id.
    candidates.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    candidates
}

/// A worker-reported byte count as the signed numbers placement works in.
fn saturating_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
