//! Live worker state: who is registered, who is alive, their latest metrics.
//!
//! A cheap cloneable handle over a std `Mutex`: no `.await` ever happens while
//! it is held. Workers are kept by id, so listings come out sorted and every
//! other operation is O(log workers).

use crate::store::WorkerRecord;
use cloudai_proto::v1::{Heartbeat, WorkerInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Liveness of a registered worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Registered by the operator, not heard from since the master started.
    Pending,
    /// Heartbeating.
    Active,
    /// Silent for longer than the inactivity timeout.
    Inactive,
}

impl WorkerState {
    /// Lower-case name for operators.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Pending => "pending",
            WorkerState::Active => "active",
            WorkerState::Inactive => "inactive",
        }
    }
}

/// Everything the master knows about one worker right now.
#[derive(Debug, Clone)]
pub struct WorkerEntry {
    /// The persisted registration.
    pub record: WorkerRecord,
    /// Liveness.
    pub state: WorkerState,
    /// Host facts from its latest registration.
    pub info: Option<WorkerInfo>,
    /// Latest heartbeat.
    pub latest: Option<Heartbeat>,
    /// When the latest heartbeat (or registration) arrived.
    pub last_seen: Option<Instant>,
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The worker was already active.
    Refreshed,
    /// The worker was pending or inactive and is active again.
    BecameActive,
}

/// Shared handle to the live registry.
#[derive(Clone, Default)]
pub struct Registry {
    workers: Arc<Mutex<BTreeMap<String, WorkerEntry>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, WorkerEntry>> {
        // A panic while holding the lock cannot leave a half-written entry
        // (every update is a single assignment), so poisoning is ignored.
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds (or replaces) a registered worker in the pending state.
    pub fn insert(&self, record: WorkerRecord) {
        let id = record.id.clone();
        self.lock().insert(
            id,
            WorkerEntry {
                record,
                state: WorkerState::Pending,
                info: None,
                latest: None,
                last_seen: None,
            },
        );
    }

    /// Removes a worker; returns whether it was there.
    pub fn remove(&self, worker_id: &str) -> bool {
        self.lock().remove(worker_id).is_some()
    }

    /// A copy of one worker's entry.
    pub fn get(&self, worker_id: &str) -> Option<WorkerEntry> {
        self.lock().get(worker_id).cloned()
    }

    /// Copies of all entries, sorted by id.
    pub fn list(&self) -> Vec<WorkerEntry> {
        self.lock().values().cloned().collect()
    }

    /// Whether `f` holds for every entry, by id, stopping at the first that
    /// fails; under the lock, without copying entries.
    pub fn all(&self, f: impl FnMut(&WorkerEntry) -> bool) -> bool {
        self.lock().values().all(f)
    }

    /// Number of workers in each state: (pending, active, inactive).
    pub fn counts(&self) -> (usize, usize, usize) {
        let workers = self.lock();
        let count = |state| workers.values().filter(|w| w.state == state).count();
        (
            count(WorkerState::Pending),
            count(WorkerState::Active),
            count(WorkerState::Inactive),
        )
    }

    /// Marks a worker active after a successful registration. Returns the
    /// updated record (host facts filled in) so the caller can persist it.
    pub fn mark_registered(
        &self,
        info: WorkerInfo,
        now: Instant,
        now_millis: i64,
    ) -> Option<WorkerRecord> {
        let mut workers = self.lock();
        let entry = workers.get_mut(&info.worker_id)?;
        entry.record.host = Some(crate::core::convert::host_record(&info));
        entry.record.last_seen_at = Some(now_millis);
        entry.state = WorkerState::Active;
        entry.info = Some(info);
        entry.last_seen = Some(now);
        Some(entry.record.clone())
    }

    /// Records a heartbeat; `None` when the worker is not registered.
    pub fn record_heartbeat(&self, heartbeat: Heartbeat, now: Instant) -> Option<HeartbeatOutcome> {
        let mut workers = self.lock();
        let entry = workers.get_mut(&heartbeat.worker_id)?;
        let outcome = if entry.state == WorkerState::Active {
            HeartbeatOutcome::Refreshed
        } else {
            HeartbeatOutcome::BecameActive
        };
        entry.state = if heartbeat.stopping {
            WorkerState::Inactive
        } else {
            WorkerState::Active
        };
        entry.latest = Some(heartbeat);
        entry.last_seen = Some(now);
        Some(outcome)
    }

    /// Replaces a worker's persisted record (token, certificate), keeping its live state.
    pub fn update_record(&self, record: WorkerRecord) {
        if let Some(entry) = self.lock().get_mut(&record.id) {
            entry.record = record;
        }
    }

    /// Whether `fingerprint` is the current certificate of `worker_id`.
    pub fn certificate_matches(&self, worker_id: &str, fingerprint: &str) -> bool {
        self.lock()
            .get(worker_id)
            .is_some_and(|w| w.record.cert_fingerprint.as_deref() == Some(fingerprint))
    }

    /// Whether a worker is registered.
    pub fn contains(&self, worker_id: &str) -> bool {
        self.lock().contains_key(worker_id)
    }

    /// Marks an active worker inactive; returns whether it was active.
    pub fn mark_inactive(&self, worker_id: &str) -> bool {
        match self.lock().get_mut(worker_id) {
            Some(entry) if entry.state == WorkerState::Active => {
                entry.state = WorkerState::Inactive;
                true
            }
            _ => false,
        }
    }

    /// Ids of workers that are not active (the master keeps inviting them).
    pub fn not_active(&self) -> Vec<(String, String)> {
        self.lock()
            .values()
            .filter(|w| w.state != WorkerState::Active)
            .map(|w| (w.record.id.clone(), w.record.address.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> WorkerRecord {
        WorkerRecord::new(id, "127.0.0.1:1")
    }

    #[test]
    fn heartbeat_activates_and_inactive_marking() {
        let registry = Registry::default();
        registry.insert(record("w1"));
        assert_eq!(registry.counts(), (1, 0, 0));
        let start = Instant::now();
        let hb = Heartbeat {
            worker_id: "w1".into(),
            ..Default::default()
        };
        assert_eq!(
            registry.record_heartbeat(hb.clone(), start),
            Some(HeartbeatOutcome::BecameActive)
        );
        assert_eq!(
            registry.record_heartbeat(hb.clone(), start),
            Some(HeartbeatOutcome::Refreshed)
        );
        assert!(registry.mark_inactive("w1"));
        assert!(!registry.mark_inactive("w1"), "already inactive");
        assert_eq!(registry.get("w1").unwrap().state, WorkerState::Inactive);
        assert_eq!(
            registry.record_heartbeat(hb, start),
            Some(HeartbeatOutcome::BecameActive)
        );
    }

    #[test]
    fn unknown_worker_heartbeat_is_refused() {
        let registry = Registry::default();
        let hb = Heartbeat {
            worker_id: "ghost".into(),
            ..Default::default()
        };
        assert_eq!(registry.record_heartbeat(hb, Instant::now()), None);
    }
}
