//! One scheduling pass's placements: [`place`] for many tasks in a row
//! against candidates that change only where a task lands.
//!
//! Each kind of demand seen in the pass keeps a heap of the candidates that
//! fit it, by score. Placing a task pops the best; reserving it re-scores
//! only that worker, in every heap. A pass of N tasks of one kind over W
//! workers costs O(W + N log W) instead of the O(N·W) of calling [`place`]
//! per task, and chooses exactly what those calls would.

use crate::core::placement::{Candidate, Choice, Demand, NoFit, Policy, place, score};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Kinds of demand one pass keeps heaps for; past them a task is placed by a
/// plain scan, so a queue of all-different tasks costs what it did.
const MAX_KINDS: usize = 32;

/// Places a pass's tasks, reserving what each one takes.
pub struct Placer {
    /// Sorted by worker id: ties go to the lower index, as [`place`] breaks
    /// them by id.
    candidates: Vec<Candidate>,
    /// Bumped on each reservation: a heap entry of an older version is stale.
    versions: Vec<u32>,
    policy: Policy,
    heaps: HashMap<Demand, BinaryHeap<Entry>>,
}

/// A candidate's score for one kind of demand, as of one of its versions.
struct Entry {
    score: f64,
    index: usize,
    version: u32,
}

impl Ord for Entry {
    /// The heap is a max-heap: the best entry (lowest score, then lowest
    /// index) is the greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl Placer {
    /// A placer over `candidates`, which must be sorted by id (as
    /// [`crate::core::capacity::refresh`] leaves them).
    pub fn new(candidates: Vec<Candidate>, policy: Policy) -> Self {
        debug_assert!(
            candidates.is_sorted_by(|a, b| a.id <= b.id),
            "candidates not sorted by id"
        );
        Self {
            versions: vec![0; candidates.len()],
            candidates,
            policy,
            heaps: HashMap::new(),
        }
    }

    /// Chooses a worker for `demand` and reserves its share there, or says
    /// why none fits.
    pub fn place(&mut self, demand: &Demand) -> Result<Choice, NoFit> {
        let choice = match self.best_from_heap(demand) {
            Some(found) => found,
            None => place(demand, &self.candidates, self.policy)?,
        };
        self.reserve(choice.index, demand, &choice.gpus);
        Ok(choice)
    }

    /// The candidates, with the pass's reservations, for the next pass to
    /// refresh in place.
    pub fn into_candidates(self) -> Vec<Candidate> {
        self.candidates
    }

    /// The candidate at `index` of a choice.
    pub fn candidate(&self, index: usize) -> &Candidate {
        &self.candidates[index]
    }

    /// The best fit from the demand's heap (built on first use); `None` when
    /// there are too many kinds for a heap or nothing fits.
    fn best_from_heap(&mut self, demand: &Demand) -> Option<Choice> {
        if !self.heaps.contains_key(demand) {
            if self.heaps.len() >= MAX_KINDS {
                return None;
            }
            let heap = self.scored(demand).collect();
            self.heaps.insert(demand.clone(), heap);
        }
        let heap = self.heaps.get_mut(demand)?;
        while let Some(entry) = heap.pop() {
            if entry.version == self.versions[entry.index] {
                let gpus = self.candidates[entry.index].gpus_for(demand);
                return Some(Choice {
                    index: entry.index,
                    gpus,
                });
            }
        }
        None
    }

    fn scored<'a>(&'a self, demand: &'a Demand) -> impl Iterator<Item = Entry> + 'a {
        self.candidates
            .iter()
            .enumerate()
            .filter_map(move |(index, candidate)| {
                score(candidate, demand, self.policy).map(|score| Entry {
                    score,
                    index,
                    version: self.versions[index],
                })
            })
    }

    /// Takes `demand`'s share of the candidate and re-scores it in every heap.
    fn reserve(&mut self, index: usize, demand: &Demand, gpus: &[String]) {
        self.candidates[index].reserve(demand.nano_cpus, demand.memory_bytes, gpus);
        let version = self.versions[index].wrapping_add(1);
        self.versions[index] = version;
        let candidate = &self.candidates[index];
        for (kind, heap) in &mut self.heaps {
            if let Some(score) = score(candidate, kind, self.policy) {
                heap.push(Entry {
                    score,
                    index,
                    version,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudai_common::resources::GpuRequest;

    const CPU: i64 = 1_000_000_000;
    const GIB: i64 = 1 << 30;

    /// A small deterministic generator: the test needs no crate for this.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn workers(rng: &mut Rng, count: usize) -> Vec<Candidate> {
        (0..count)
            .map(|i| {
                let gpus = rng.below(3) as usize;
                Candidate {
                    // Not in id order: the test sorts them, as the placer needs.
                    id: format!("w{:03}", (i * 7) % count),
                    nano_cpus: (1 + rng.below(8) as i64) * CPU,
                    memory_bytes: (1 + rng.below(16) as i64) * GIB,
                    gpus: (0..gpus).map(|g| format!("w{i}-gpu{g}")).collect(),
                    reserved_nano_cpus: rng.below(2) as i64 * CPU,
                    live_cpu_percent: Some(rng.below(100) as f32),
                    ..Candidate::default()
                }
            })
            .collect()
    }

    fn demand(rng: &mut Rng) -> Demand {
        Demand {
            nano_cpus: rng.below(3) as i64 * CPU / 2,
            memory_bytes: rng.below(3) as i64 * GIB,
            gpus: match rng.below(4) {
                0 => GpuRequest::Count(1),
                1 if rng.below(4) == 0 => GpuRequest::All,
                _ => GpuRequest::None,
            },
            ..Demand::default()
        }
    }

    /// The placer against [`place`] called per task on candidates updated
    /// by hand: the same worker, the same GPUs, the same reason, every time.
    #[test]
    fn chooses_what_placing_one_task_at_a_time_would() {
        for policy in [Policy::Binpack, Policy::Spread, Policy::LeastLoaded] {
            for seed in 1..=20u64 {
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let count = 1 + rng.below(40) as usize;
                let mut expected = workers(&mut rng, count);
                expected.sort_by(|a, b| a.id.cmp(&b.id));
                let mut placer = Placer::new(expected.clone(), policy);
                let kinds: Vec<Demand> = (0..1 + rng.below(5)).map(|_| demand(&mut rng)).collect();
                for _ in 0..200 {
                    let wanted = &kinds[rng.below(kinds.len() as u64) as usize];
                    let by_scan = place(wanted, &expected, policy);
                    let by_placer = placer.place(wanted);
                    assert_eq!(by_placer, by_scan, "{policy:?}, seed {seed}");
                    if let Ok(choice) = by_scan {
                        let worker = &mut expected[choice.index];
                        worker.reserved_nano_cpus += wanted.nano_cpus;
                        worker.reserved_memory_bytes += wanted.memory_bytes;
                        worker.used_gpus.extend(choice.gpus);
                    }
                }
                assert_eq!(placer.candidates, expected);
            }
        }
    }

    #[test]
    fn past_the_kinds_it_keeps_heaps_for_it_scans() {
        let candidates = vec![Candidate {
            id: "a".into(),
            nano_cpus: 1000 * CPU,
            ..Candidate::default()
        }];
        let mut placer = Placer::new(candidates, Policy::Binpack);
        for cpus in 1..=(MAX_KINDS as i64 + 5) {
            let wanted = Demand {
                nano_cpus: cpus * CPU / 100,
                ..Demand::default()
            };
            assert_eq!(placer.place(&wanted).unwrap().index, 0);
        }
        assert_eq!(placer.heaps.len(), MAX_KINDS);
        let reserved: i64 = (1..=(MAX_KINDS as i64 + 5)).map(|c| c * CPU / 100).sum();
        assert_eq!(placer.candidate(0).reserved_nano_cpus, reserved);
        let too_big = Demand {
            nano_cpus: 1000 * CPU,
            ..Demand::default()
        };
        assert_eq!(
            placer.place(&too_big).unwrap_err(),
            "no worker with 1000 free CPUs"
        );
    }
}
