//! What workers can take now: each active worker's capacity, less what its
//! placed tasks reserve, cross-checked with its live telemetry.

use crate::core::lifecycle::Lifecycle;
use crate::core::placement::{Candidate, Demand};
use crate::core::registry::{Registry, WorkerEntry, WorkerState};
use crate::store::{TaskRecord, TaskState};
use std::collections::HashMap;

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

/// What placed tasks hold on one worker: CPU, memory, GPUs.
type Held<'a> = (i64, i64, Vec<&'a str>);

/// Active workers with their capacity, reservations and live load, by id.
pub fn candidates(registry: &Registry, lifecycle: &Lifecycle) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    refresh(registry, lifecycle, &mut candidates);
    candidates
}

/// Brings `candidates` (a previous pass's, or empty) up to date with the
/// registry and the placed tasks, as [`candidates`] would build them.
///
/// The scheduler calls this once per pass. While the active workers are the
/// same it rewrites each candidate in place, allocating only where a worker's
/// host facts or held GPUs changed; otherwise it builds the list afresh. The
/// task table is read under its lock, then the registry's (always in that
/// order), and tasks that reserve nothing are skipped.
pub fn refresh(registry: &Registry, lifecycle: &Lifecycle, candidates: &mut Vec<Candidate>) {
    let active = lifecycle.active_tasks();
    let mut held: HashMap<&str, Held<'_>> = HashMap::new();
    for task in active.values() {
        // An unknown task may still run on its silent worker: it keeps its share.
        if let (Some(worker), TaskState::Assigned | TaskState::Running | TaskState::Unknown) =
            (&task.worker_id, task.state)
            && (task.nano_cpus != 0 || task.memory_bytes != 0 || !task.gpus.is_empty())
        {
            let entry = held.entry(worker).or_default();
            entry.0 = entry.0.saturating_add(task.nano_cpus);
            entry.1 = entry.1.saturating_add(task.memory_bytes);
            entry.2.extend(task.gpus.iter().map(String::as_str));
        }
    }
    let mut index = 0;
    let in_place = registry.all(|w| {
        if w.state != WorkerState::Active {
            return true;
        }
        match candidates.get_mut(index) {
            Some(candidate) if candidate.id == w.record.id => {
                fill(candidate, w, held.get(w.record.id.as_str()));
                index += 1;
                true
            }
            _ => false,
        }
    });
    if in_place && index == candidates.len() {
        return;
    }
    candidates.clear();
    registry.all(|w| {
        if w.state == WorkerState::Active {
            let mut candidate = Candidate {
                id: w.record.id.clone(),
                ..Candidate::default()
            };
            fill(&mut candidate, w, held.get(w.record.id.as_str()));
            candidates.push(candidate);
        }
        true
    });
}

/// Sets every field of `candidate` but its id from the worker's entry and
/// what its placed tasks hold, reusing what it already owns.
fn fill(candidate: &mut Candidate, w: &WorkerEntry, held: Option<&Held<'_>>) {
    let (cpus, memory, gpus) = match (&w.info, &w.record.host) {
        (Some(info), _) => (
            info.cpu_count,
            info.memory_total_bytes,
            GpuIds::Info(&info.gpus),
        ),
        (None, Some(host)) => (
            host.cpu_count,
            host.memory_total_bytes,
            GpuIds::Host(&host.gpus),
        ),
        (None, None) => (0, 0, GpuIds::Info(&[])),
    };
    candidate.nano_cpus = i64::from(cpus) * 1_000_000_000;
    candidate.memory_bytes = saturating_i64(memory);
    if !gpus.are(&candidate.gpus) {
        candidate.gpus = gpus.to_vec();
    }
    let (reserved_cpu, reserved_memory, held_gpus) = match held {
        Some((cpu, memory, gpus)) => (*cpu, *memory, gpus.as_slice()),
        None => (0, 0, &[][..]),
    };
    candidate.reserved_nano_cpus = reserved_cpu;
    candidate.reserved_memory_bytes = reserved_memory;
    candidate.used_gpus.clear();
    candidate
        .used_gpus
        .extend(held_gpus.iter().map(|&g| g.to_owned()));
    // Cross-check with telemetry: a GPU a task holds there is busy too.
    if let Some(hb) = &w.latest {
        candidate.used_gpus.extend(
            hb.gpus
                .iter()
                .filter(|g| !g.task_id.is_empty())
                .map(|g| g.uuid.clone()),
        );
    }
    candidate.live_memory_used = w
        .latest
        .as_ref()
        .map(|hb| saturating_i64(hb.memory_used_bytes));
    candidate.live_cpu_percent = w.latest.as_ref().map(|hb| hb.cpu_percent);
    let allowed: &[String] = w
        .info
        .as_ref()
        .map(|info| info.allowed_host_paths.as_slice())
        .unwrap_or_default();
    if candidate.allowed_host_paths != allowed {
        candidate.allowed_host_paths = allowed.to_vec();
    }
    candidate.allow_host_network = w.info.as_ref().is_some_and(|info| info.allow_host_network);
    candidate.allow_host_ipc = w.info.as_ref().is_some_and(|info| info.allow_host_ipc);
}

/// A worker's GPU UUIDs, from its latest registration or its stored record.
enum GpuIds<'a> {
    Info(&'a [cloudai_proto::v1::GpuInfo]),
    Host(&'a [crate::store::GpuRecord]),
}

impl GpuIds<'_> {
    fn are(&self, uuids: &[String]) -> bool {
        match self {
            GpuIds::Info(gpus) => gpus.iter().map(|g| &g.uuid).eq(uuids),
            GpuIds::Host(gpus) => gpus.iter().map(|g| &g.uuid).eq(uuids),
        }
    }

    fn to_vec(&self) -> Vec<String> {
        match self {
            GpuIds::Info(gpus) => gpus.iter().map(|g| g.uuid.clone()).collect(),
            GpuIds::Host(gpus) => gpus.iter().map(|g| g.uuid.clone()).collect(),
        }
    }
}

/// A worker-reported byte count as the signed numbers placement works in.
fn saturating_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
