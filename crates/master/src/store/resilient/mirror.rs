//! What [`ResilientStore`] serves reads from: the [`Mirror`] of workers,
//! tasks and users, and the assignments and results not yet stored, kept
//! in step with the journal by changing both under one lock.

use super::ResilientStore;
use crate::store::{
    AssignmentRecord, ResultRecord, SecretRecord, TaskRecord, UserRecord, WorkerRecord, Write,
};
use std::collections::{BTreeMap, HashMap};
use tokio::sync::oneshot;

/// What the store holds in memory.
#[derive(Default)]
pub(super) struct Mirror {
    pub(super) workers: BTreeMap<String, WorkerRecord>,
    pub(super) tasks: HashMap<String, TaskRecord>,
    pub(super) users: BTreeMap<String, UserRecord>,
    pub(super) secrets: BTreeMap<String, SecretRecord>,
    /// Assignments and results not yet written (read back before the backend).
    pub(super) unwritten_assignments: Vec<AssignmentRecord>,
    pub(super) unwritten_results: HashMap<String, ResultRecord>,
}

impl ResilientStore {
    pub(super) fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `write` to memory and queues it for the backend, under one
    /// lock so that memory and journal change in the same order. Returns
    /// whether the record existed before (for deletes) and what to wait on.
    pub(super) fn record(
        &self,
        mirror: &mut Mirror,
        write: Write,
    ) -> (bool, Option<oneshot::Receiver<()>>) {
        let existed = match &write {
            Write::PutWorker(worker) => mirror
                .workers
                .insert(worker.id.clone(), worker.clone())
                .is_some(),
            Write::DeleteWorker(id) => mirror.workers.remove(id).is_some(),
            Write::PutTask(task) => mirror.tasks.insert(task.id.clone(), task.clone()).is_some(),
            Write::PutAssignment(assignment) => {
                mirror.unwritten_assignments.push(assignment.clone());
                false
            }
            Write::PutResult(result) => mirror
                .unwritten_results
                .insert(result.task_id.clone(), result.clone())
                .is_some(),
            Write::PutUser(user) => mirror
                .users
                .insert(user.name.clone(), user.clone())
                .is_some(),
            Write::DeleteUser(name) => mirror.users.remove(name).is_some(),
            Write::PutSecret(secret) => mirror
                .secrets
                .insert(secret.name.clone(), secret.clone())
                .is_some(),
            Write::DeleteSecret(name) => mirror.secrets.remove(name).is_some(),
        };
        (existed, self.enqueue(write))
    }

    /// Drops the unwritten copies of assignments and results once the journal
    /// is empty. Writes are enqueued under the mirror lock, so a zero count
    /// seen under it means every one of them is stored.
    pub(super) fn settled(&self) {
        let mut mirror = self.mirror();
        if self.pending_writes() == 0 {
            mirror.unwritten_assignments.clear();
            mirror.unwritten_results.clear();
        }
    }
}
