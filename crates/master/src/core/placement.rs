//! Resource-aware placement: a pure function from a task's demand and the
//! workers' capacities to a worker (and exact GPUs), under a policy.
//!
//! Capacity is what a worker has minus what its placed tasks reserved,
//! cross-checked with live telemetry (memory actually in use). One call scans
//! the candidates once: O(workers).

use cloudai_common::resources::GpuRequest;
use cloudai_common::validate::host_path_allowed;
use std::collections::HashSet;

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

/// How to choose among workers that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// Fill the busiest worker that still fits (keeps big holes free).
    #[default]
    Binpack,
    /// Use the worker with the most free capacity.
    Spread,
    /// Use the worker with the lowest live CPU load.
    LeastLoaded,
}

/// What a task needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Demand {
    /// CPU in billionths (0: no reservation).
    pub nano_cpus: i64,
    /// Memory in bytes (0: no reservation).
    pub memory_bytes: i64,
    /// GPUs.
    pub gpus: GpuRequest,
    /// Host paths it mounts: only a worker allowing each can take it.
    pub host_paths: Vec<String>,
    /// It uses the host's network: only a worker allowing it can take it.
    pub host_network: bool,
    /// It shares the host's IPC namespace: only a worker allowing it can take it.
    pub host_ipc: bool,
}

/// One active worker as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// Worker id.
    pub id: String,
    /// CPUs in billionths.
    pub nano_cpus: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// GPU UUIDs of the host, in index order.
    pub gpus: Vec<String>,
    /// CPU reserved by placed tasks.
    pub reserved_nano_cpus: i64,
    /// Memory reserved by placed tasks.
    pub reserved_memory_bytes: i64,
    /// GPUs held by placed tasks.
    pub used_gpus: HashSet<String>,
    /// Live memory in use (telemetry), if known.
    pub live_memory_used: Option<i64>,
    /// Live CPU load 0–100 (telemetry), if known.
    pub live_cpu_percent: Option<f32>,
    /// Host path prefixes it lets tasks mount (`--allow-host-path`).
    pub allowed_host_paths: Vec<String>,
    /// Whether it lets tasks use the host's network (`--allow-host-network`).
    pub allow_host_network: bool,
    /// Whether it lets tasks share the host's IPC namespace (`--allow-host-ipc`).
    pub allow_host_ipc: bool,
}

/// A placement decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Index into the candidates.
    pub index: usize,
    /// Exact GPUs given to the task.
    pub gpus: Vec<String>,
}

impl Candidate {
    fn free_cpu(&self) -> i64 {
        self.nano_cpus.saturating_sub(self.reserved_nano_cpus)
    }

    fn free_memory(&self) -> i64 {
        let reserved = self.memory_bytes.saturating_sub(self.reserved_memory_bytes);
        match self.live_memory_used {
            Some(used) => reserved.min(self.memory_bytes.saturating_sub(used)),
            None => reserved,
        }
    }

    fn free_gpus(&self) -> impl Iterator<Item = &String> {
        self.gpus.iter().filter(|g| !self.used_gpus.contains(*g))
    }

    /// A requested GPU by UUID, or by index (`"0"`, `"1"`…; GPUs are in index order).
    fn resolve(&self, wanted: &str) -> Option<&String> {
        self.gpus
            .iter()
            .find(|g| *g == wanted)
            .or_else(|| wanted.parse::<usize>().ok().and_then(|i| self.gpus.get(i)))
    }

    /// Free GPUs, O(1): held GPUs are always among the worker's own.
    fn free_gpu_count(&self) -> usize {
        self.gpus.len().saturating_sub(self.used_gpus.len())
    }

    /// Whether the demand fits, without allocating (the hot loop).
    fn allows(&self, demand: &Demand) -> bool {
        (!demand.host_network || self.allow_host_network)
            && (!demand.host_ipc || self.allow_host_ipc)
            && demand
                .host_paths
                .iter()
                .all(|path| host_path_allowed(path, &self.allowed_host_paths))
    }

    fn fits(&self, demand: &Demand) -> bool {
        if (demand.host_network || demand.host_ipc || !demand.host_paths.is_empty())
            && !self.allows(demand)
        {
            return false;
        }
        if demand.nano_cpus > 0 && self.free_cpu() < demand.nano_cpus {
            return false;
        }
        if demand.memory_bytes > 0 && self.free_memory() < demand.memory_bytes {
            return false;
        }
        match &demand.gpus {
            GpuRequest::None => true,
            GpuRequest::Exact(ids) => ids.iter().all(|id| {
                self.resolve(id)
                    .is_some_and(|uuid| !self.used_gpus.contains(uuid))
            }),
            GpuRequest::All => !self.gpus.is_empty() && self.used_gpus.is_empty(),
            GpuRequest::Count(n) => self.free_gpu_count() >= *n as usize,
        }
    }

    /// Takes a placed task's share: its CPU, memory and exact GPUs.
    pub fn reserve(&mut self, nano_cpus: i64, memory_bytes: i64, gpus: &[String]) {
        self.reserved_nano_cpus = self.reserved_nano_cpus.saturating_add(nano_cpus);
        self.reserved_memory_bytes = self.reserved_memory_bytes.saturating_add(memory_bytes);
        self.used_gpus.extend(gpus.iter().cloned());
    }

    /// The GPUs this candidate gives a demand that fits.
    pub(crate) fn gpus_for(&self, demand: &Demand) -> Vec<String> {
        match &demand.gpus {
            GpuRequest::None => Vec::new(),
            GpuRequest::Exact(ids) => ids
                .iter()
                .filter_map(|id| self.resolve(id).cloned())
                .collect(),
            GpuRequest::All => self.gpus.clone(),
            GpuRequest::Count(n) => self.free_gpus().take(*n as usize).cloned().collect(),
        }
    }

    /// The GPUs this candidate would give, if the demand fits.
    fn fit(&self, demand: &Demand) -> Option<Vec<String>> {
        self.fits(demand).then(|| self.gpus_for(demand))
    }

    /// Fraction of capacity free after placing `demand` (lower = fuller).
    fn free_fraction_after(&self, demand: &Demand) -> f64 {
        let ratio = |free: i64, total: i64| {
            if total > 0 {
                free as f64 / total as f64
            } else {
                0.0
            }
        };
        let gpus = match &demand.gpus {
            GpuRequest::None => 0,
            GpuRequest::Exact(ids) => ids.len(),
            GpuRequest::All => self.gpus.len(),
            GpuRequest::Count(n) => *n as usize,
        };
        let cpu = ratio(
            self.free_cpu().saturating_sub(demand.nano_cpus.max(0)),
            self.nano_cpus,
        );
        let memory = ratio(
            self.free_memory()
                .saturating_sub(demand.memory_bytes.max(0)),
            self.memory_bytes,
        );
        let gpu = ratio(
            (self.free_gpu_count() as i64).saturating_sub(gpus as i64),
            self.gpus.len() as i64,
        );
        cpu + memory + gpu
    }
}

/// Why no worker fits a demand, in operator words (`no worker with 3 free GPUs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoFit(String);

impl std::ops::Deref for NoFit {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for NoFit {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Chooses a worker for `demand`, or says why none fits.
pub fn place(demand: &Demand, candidates: &[Candidate], policy: Policy) -> Result<Choice, NoFit> {
    let mut best: Option<(f64, usize)> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        let Some(score) = score(candidate, demand, policy) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((best_score, best_index)) => score
                .total_cmp(&best_score)
                .then_with(|| candidate.id.cmp(&candidates[best_index].id))
                .is_lt(),
        };
        if better {
            best = Some((score, index));
        }
    }
    match best {
        // GPUs are only picked for the winner: the loop itself never allocates.
        Some((_, index)) => Ok(Choice {
            index,
            gpus: candidates[index].gpus_for(demand),
        }),
        None => Err(NoFit(why_not(demand, candidates))),
    }
}

/// How well `candidate` suits `demand` under `policy` (lower is better), or
/// `None` when it does not fit. Always comparable with `total_cmp`: a NaN
/// (a worker reporting a NaN load) ranks last, and -0 is 0.
pub(crate) fn score(candidate: &Candidate, demand: &Demand, policy: Policy) -> Option<f64> {
    if !candidate.fits(demand) {
        return None;
    }
    let score = match policy {
        Policy::Binpack => candidate.free_fraction_after(demand),
        Policy::Spread => -candidate.free_fraction_after(demand),
        Policy::LeastLoaded => f64::from(candidate.live_cpu_percent.unwrap_or(0.0)),
    };
    Some(if score.is_nan() {
        f64::INFINITY
    } else {
        score + 0.0
    })
}

/// The first resource no worker can offer, in operator words.
fn why_not(demand: &Demand, candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "no active worker".into();
    }
    if demand.host_network && !candidates.iter().any(|c| c.allow_host_network) {
        return "no active worker allows the host's network (start one with --allow-host-network)"
            .into();
    }
    if demand.host_ipc && !candidates.iter().any(|c| c.allow_host_ipc) {
        return "no active worker allows the host's IPC namespace (start one with --allow-host-ipc)"
            .into();
    }
    if let Some(path) = demand.host_paths.iter().find(|path| {
        !candidates
            .iter()
            .any(|c| host_path_allowed(path, &c.allowed_host_paths))
    }) {
        return format!(
            "no active worker allows host path '{path}' (start one with --allow-host-path)"
        );
    }
    let wanted = match &demand.gpus {
        GpuRequest::Exact(ids) => {
            return format!("GPUs {} are not free on any one worker", ids.join(", "));
        }
        GpuRequest::None => None,
        GpuRequest::All => Some("all GPUs free".to_string()),
        GpuRequest::Count(n) => Some(format!("{n} free GPUs")),
    };
    let gpus_only = Demand {
        nano_cpus: 0,
        memory_bytes: 0,
        ..demand.clone()
    };
    if let Some(wanted) = wanted
        && !candidates.iter().any(|c| c.fit(&gpus_only).is_some())
    {
        return format!("no worker with {wanted}");
    }
    if demand.nano_cpus > 0 && !candidates.iter().any(|c| c.free_cpu() >= demand.nano_cpus) {
        return format!("no worker with {} free CPUs", demand.nano_cpus as f64 / 1e9);
    }
    if demand.memory_bytes > 0
        && !candidates
            .iter()
            .any(|c| c.free_memory() >= demand.memory_bytes)
    {
        return format!(
            "no worker with {} free memory",
            cloudai_common::units::format_bytes(demand.memory_bytes as u64)
        );
    }
    "no worker has all of the CPU, memory and GPUs it needs free at once".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: i64 = 1_000_000_000;
    const GIB: i64 = 1 << 30;

    fn worker(id: &str, cpus: i64, gib: i64, gpus: usize) -> Candidate {
        Candidate {
            id: id.into(),
            nano_cpus: cpus * CPU,
            memory_bytes: gib * GIB,
            gpus: (0..gpus).map(|i| format!("{id}-gpu{i}")).collect(),
            ..Candidate::default()
        }
    }

    fn demand(cpus: i64, gib: i64, gpus: i32) -> Demand {
        Demand {
            nano_cpus: cpus * CPU,
            memory_bytes: gib * GIB,
            gpus: GpuRequest::of(gpus, &[]),
            host_paths: Vec::new(),
            host_network: false,
            host_ipc: false,
        }
    }

    #[test]
    fn host_paths_go_only_to_workers_that_allow_them() {
        let allowing = Candidate {
            allowed_host_paths: vec!["/data".into()],
            ..worker("b", 1, 1, 0)
        };
        let workers = vec![worker("a", 8, 8, 0), allowing];
        let mut wants = demand(0, 0, 0);
        wants.host_paths = vec!["/data/imagenet".into()];
        assert_eq!(place(&wants, &workers, Policy::Binpack).unwrap().index, 1);
        wants.host_paths = vec!["/database".into()];
        let reason = place(&wants, &workers, Policy::Binpack).unwrap_err();
        assert!(reason.contains("allows host path '/database'"), "{reason}");
        assert!(reason.contains("--allow-host-path"), "{reason}");
        let mut host_network = demand(0, 0, 0);
        host_network.host_network = true;
        let reason = place(&host_network, &workers, Policy::Binpack).unwrap_err();
        assert!(reason.contains("--allow-host-network"), "{reason}");
        let mut host_ipc = demand(0, 0, 0);
        host_ipc.host_ipc = true;
        let reason = place(&host_ipc, &workers, Policy::Binpack).unwrap_err();
        assert!(reason.contains("--allow-host-ipc"), "{reason}");
        let mut sharing = workers.clone();
        sharing[1].allow_host_ipc = true;
        assert_eq!(
            place(&host_ipc, &sharing, Policy::Binpack).unwrap().index,
            1
        );
        let mut networked = workers.clone();
        networked[0].allow_host_network = true;
        assert_eq!(
            place(&host_network, &networked, Policy::Binpack)
                .unwrap()
                .index,
            0
        );
    }

    #[test]
    fn fits_and_reasons() {
        let workers = vec![worker("a", 4, 8, 0), worker("b", 2, 16, 2)];
        assert_eq!(
            place(&demand(1, 12, 0), &workers, Policy::Binpack)
                .unwrap()
                .index,
            1
        );
        assert_eq!(
            place(&demand(0, 0, 1), &workers, Policy::Binpack)
                .unwrap()
                .gpus,
            ["b-gpu0"]
        );
        assert_eq!(
            place(&demand(0, 0, 3), &workers, Policy::Binpack).unwrap_err(),
            "no worker with 3 free GPUs"
        );
        assert_eq!(
            place(&demand(8, 0, 0), &workers, Policy::Binpack).unwrap_err(),
            "no worker with 8 free CPUs"
        );
        assert!(
            place(&demand(0, 32, 0), &workers, Policy::Binpack)
                .unwrap_err()
                .contains("free memory")
        );
        assert_eq!(
            place(&demand(1, 1, 0), &[], Policy::Binpack).unwrap_err(),
            "no active worker"
        );
    }

    #[test]
    fn reservations_and_live_memory_count() {
        let mut busy = worker("a", 4, 8, 2);
        busy.reserved_nano_cpus = 3 * CPU;
        busy.used_gpus.insert("a-gpu0".into());
        assert!(
            place(
                &demand(2, 0, 0),
                std::slice::from_ref(&busy),
                Policy::Binpack
            )
            .is_err()
        );
        assert_eq!(
            place(
                &demand(1, 0, 1),
                std::slice::from_ref(&busy),
                Policy::Binpack
            )
            .unwrap()
            .gpus,
            ["a-gpu1"]
        );
        assert!(
            place(
                &demand(0, 0, 2),
                std::slice::from_ref(&busy),
                Policy::Binpack
            )
            .is_err()
        );
        assert!(
            place(
                &demand(0, 0, -1),
                std::slice::from_ref(&busy),
                Policy::Binpack
            )
            .is_err(),
            "all GPUs but one is held"
        );
        busy.live_memory_used = Some(7 * GIB);
        assert!(
            place(&demand(0, 2, 0), &[busy], Policy::Binpack).is_err(),
            "live memory use counts"
        );
    }

    #[test]
    fn exact_gpus_by_index_resolve_to_uuids() {
        let w = worker("a", 4, 8, 2);
        let by_index = Demand {
            gpus: GpuRequest::Exact(vec!["1".into()]),
            ..Demand::default()
        };
        assert_eq!(
            place(&by_index, &[w], Policy::Binpack).unwrap().gpus,
            ["a-gpu1"]
        );
    }

    #[test]
    fn exact_gpus_by_uuid() {
        let mut w = worker("a", 4, 8, 2);
        assert_eq!(
            place(
                &Demand {
                    gpus: GpuRequest::Exact(vec!["a-gpu1".into()]),
                    ..Demand::default()
                },
                std::slice::from_ref(&w),
                Policy::Binpack
            )
            .unwrap()
            .gpus,
            ["a-gpu1"]
        );
        w.used_gpus.insert("a-gpu1".into());
        assert!(
            place(
                &Demand {
                    gpus: GpuRequest::Exact(vec!["a-gpu1".into()]),
                    ..Demand::default()
                },
                &[w],
                Policy::Binpack
            )
            .is_err()
        );
    }

    #[test]
    fn policies_choose_differently() {
        let mut full = worker("full", 8, 16, 0);
        full.reserved_nano_cpus = 6 * CPU;
        full.reserved_memory_bytes = 12 * GIB;
        full.live_cpu_percent = Some(90.0);
        let mut empty = worker("empty", 8, 16, 0);
        empty.live_cpu_percent = Some(5.0);
        let workers = vec![full, empty];
        let small = demand(1, 1, 0);
        assert_eq!(
            workers[place(&small, &workers, Policy::Binpack).unwrap().index].id,
            "full"
        );
        assert_eq!(
            workers[place(&small, &workers, Policy::Spread).unwrap().index].id,
            "empty"
        );
        assert_eq!(
            workers[place(&small, &workers, Policy::LeastLoaded).unwrap().index].id,
            "empty"
        );
    }

    #[test]
    fn ties_break_by_id_for_fairness_and_determinism() {
        let workers = vec![worker("b", 4, 8, 0), worker("a", 4, 8, 0)];
        assert_eq!(
            workers[place(&demand(1, 1, 0), &workers, Policy::Spread)
                .unwrap()
                .index]
                .id,
            "a"
        );
    }
}
