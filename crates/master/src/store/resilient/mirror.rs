//! What [`ResilientStore`] serves reads from: the [`Mirror`] of workers,
//! users, secrets and the tasks a master works on, and the assignments and
//! results not yet stored, kept in step with the journal by changing both
//! under one lock.
//!
//! Every write carries the journal's sequence number. A finished task stays
//! in memory until its last write is stored, then moves to a small cache of
//! recent tasks: memory holds what is unfinished and what is not yet stored,
//! never the whole history.

use super::ResilientStore;
use crate::store::{
    AssignmentRecord, ResultRecord, SecretRecord, TaskRecord, UserRecord, WorkerRecord, Write,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

/// Finished tasks kept in memory after they are stored, newest last.
pub(super) const RECENT_TASKS: usize = 1024;

/// A task held in memory and the sequence number of its last write.
pub(super) struct Held {
    pub(super) task: TaskRecord,
    seq: u64,
}

/// What the store holds in memory.
#[derive(Default)]
pub(super) struct Mirror {
    pub(super) workers: BTreeMap<String, WorkerRecord>,
    pub(super) users: BTreeMap<String, UserRecord>,
    pub(super) secrets: BTreeMap<String, SecretRecord>,
    /// Unfinished tasks, and finished ones whose last write is not stored.
    pub(super) tasks: HashMap<String, Held>,
    /// Finished tasks by the sequence number of the write that finished
    /// them, to release once it is stored.
    finishing: VecDeque<(u64, String)>,
    /// Tasks released from `tasks` most recently (a bounded cache).
    pub(super) recent: Recent,
    /// Tasks released so far: a read of the backend that began before a
    /// release may be older than memory was.
    pub(super) releases: u64,
    /// Assignments and results not yet written (read back before the backend).
    unwritten_assignments: VecDeque<(u64, AssignmentRecord)>,
    unwritten_results: HashMap<String, (u64, ResultRecord)>,
    result_order: VecDeque<(u64, String)>,
}

/// A first-in, first-out cache of finished tasks.
#[derive(Default)]
pub(super) struct Recent {
    tasks: HashMap<String, TaskRecord>,
    order: VecDeque<String>,
}

impl Recent {
    pub(super) fn get(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    fn insert(&mut self, task: TaskRecord) {
        let id = task.id.clone();
        if self.tasks.insert(id.clone(), task).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_TASKS {
            if let Some(oldest) = self.order.pop_front() {
                self.tasks.remove(&oldest);
            }
        }
    }

    /// Forgets a task (held again). Its place in `order` stays until it
    /// comes round: at worst a task leaves the cache a little early.
    pub(super) fn remove(&mut self, id: &str) {
        self.tasks.remove(id);
    }
}

/// The oldest entry of `queue` if its write is stored (`seq <= stored`).
fn pop_stored(queue: &mut VecDeque<(u64, String)>, stored: u64) -> Option<(u64, String)> {
    let (seq, _) = queue.front()?;
    if *seq <= stored {
        queue.pop_front()
    } else {
        None
    }
}

impl Mirror {
    /// Drops what the backend now has: finished tasks (into the recent
    /// cache), assignments and results whose writes are stored.
    fn release(&mut self, stored: u64) {
        while let Some((seq, id)) = pop_stored(&mut self.finishing, stored) {
            // A later write to the task is not stored yet: it stays.
            if self
                .tasks
                .get(&id)
                .is_some_and(|held| held.seq == seq && held.task.state.is_terminal())
                && let Some(held) = self.tasks.remove(&id)
            {
                self.recent.insert(held.task);
                self.releases += 1;
            }
        }
        while self
            .unwritten_assignments
            .front()
            .is_some_and(|(seq, _)| *seq <= stored)
        {
            self.unwritten_assignments.pop_front();
        }
        while let Some((seq, id)) = pop_stored(&mut self.result_order, stored) {
            if self
                .unwritten_results
                .get(&id)
                .is_some_and(|(s, _)| *s == seq)
            {
                self.unwritten_results.remove(&id);
            }
        }
    }

    /// The task with this id, from memory.
    pub(super) fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks
            .get(id)
            .map(|held| &held.task)
            .or_else(|| self.recent.get(id))
    }

    /// Assignments of one task not yet stored.
    pub(super) fn unwritten_assignments(&self, task_id: &str) -> Vec<AssignmentRecord> {
        let of_task = self.unwritten_assignments.iter();
        of_task
            .filter(|(_, a)| a.task_id == task_id)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// A result not yet stored.
    pub(super) fn unwritten_result(&self, task_id: &str) -> Option<&ResultRecord> {
        self.unwritten_results.get(task_id).map(|(_, r)| r)
    }

    /// Holds a task loaded from the backend (its writes are all stored).
    pub(super) fn hold_loaded(&mut self, task: TaskRecord) {
        self.tasks.insert(task.id.clone(), Held { task, seq: 0 });
    }
}

impl ResilientStore {
    /// The mirror, with whatever the backend has stored since released.
    pub(super) fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        mirror.release(self.journal.stored.load(Ordering::SeqCst));
        mirror
    }

    /// Applies `write` to memory and queues it for the backend, under one
    /// lock so that memory and journal change in the same order. Returns
    /// whether the record existed before (for deletes) and what to wait on.
    pub(super) fn record(
        &self,
        mirror: &mut Mirror,
        write: Write,
    ) -> (bool, Option<oneshot::Receiver<()>>) {
        let (seq, done) = self.enqueue(write.clone());
        let existed = match write {
            Write::PutWorker(worker) => mirror.workers.insert(worker.id.clone(), worker).is_some(),
            Write::DeleteWorker(id) => mirror.workers.remove(&id).is_some(),
            Write::PutTask(task) => {
                let id = task.id.clone();
                if task.state.is_terminal() {
                    mirror.finishing.push_back((seq, id.clone()));
                }
                mirror.recent.remove(&id);
                mirror.tasks.insert(id, Held { task, seq }).is_some()
            }
            Write::PutAssignment(assignment) => {
                mirror.unwritten_assignments.push_back((seq, assignment));
                false
            }
            Write::PutResult(result) => {
                let id = result.task_id.clone();
                mirror.result_order.push_back((seq, id.clone()));
                mirror.unwritten_results.insert(id, (seq, result)).is_some()
            }
            Write::PutUser(user) => mirror.users.insert(user.name.clone(), user).is_some(),
            Write::DeleteUser(name) => mirror.users.remove(&name).is_some(),
            Write::PutSecret(secret) => {
                mirror.secrets.insert(secret.name.clone(), secret).is_some()
            }
            Write::DeleteSecret(name) => mirror.secrets.remove(&name).is_some(),
        };
        (existed, done)
    }
}
