//! A store in memory, for unit tests of the core: it passes the same contract
//! as the real backends (see the tests below) but keeps nothing and never
//! blocks, so tests can run on tokio's paused clock.

use super::{
    AssignmentRecord, LogChunkRecord, ResultRecord, SecretRecord, Store, StoreResult, TaskPage,
    TaskQuery, TaskRecord, TaskState, UserRecord, WorkerRecord, assignment_key, log_chunk_key,
};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every table as an ordered map (keys as the embedded store's).
#[derive(Default)]
pub(crate) struct MemoryStore {
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    workers: BTreeMap<String, WorkerRecord>,
    tasks: Vec<TaskRecord>,
    assignments: BTreeMap<String, AssignmentRecord>,
    results: BTreeMap<String, ResultRecord>,
    chunks: BTreeMap<String, LogChunkRecord>,
    users: BTreeMap<String, UserRecord>,
    secrets: BTreeMap<String, SecretRecord>,
}

impl MemoryStore {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory (tests)".into()
    }

    async fn health(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn put_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
        self.tables()
            .workers
            .insert(worker.id.clone(), worker.clone());
        Ok(())
    }

    async fn delete_worker(&self, worker_id: &str) -> StoreResult<bool> {
        Ok(self.tables().workers.remove(worker_id).is_some())
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerRecord>> {
        Ok(self.tables().workers.values().cloned().collect())
    }

    async fn put_task(&self, task: &TaskRecord) -> StoreResult<()> {
        let mut tables = self.tables();
        match tables.tasks.iter_mut().find(|t| t.id == task.id) {
            Some(stored) => *stored = task.clone(),
            None => tables.tasks.push(task.clone()),
        }
        Ok(())
    }

    async fn update_task_if(&self, task: &TaskRecord, expected: &[TaskState]) -> StoreResult<bool> {
        let mut tables = self.tables();
        match tables.tasks.iter_mut().find(|t| t.id == task.id) {
            Some(stored) if expected.contains(&stored.state) => {
                *stored = task.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self
            .tables()
            .tasks
            .iter()
            .find(|t| t.id == task_id)
            .cloned())
    }

    async fn query_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        Ok(query.page(self.tables().tasks.clone()))
    }

    async fn list_unfinished_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let tables = self.tables();
        let unfinished = tables.tasks.iter().filter(|t| !t.state.is_terminal());
        Ok(unfinished.cloned().collect())
    }

    async fn delete_finished_tasks(
        &self,
        task_ids: &[String],
    ) -> StoreResult<Vec<(String, TaskState)>> {
        let mut tables = self.tables();
        let mut removed = Vec::new();
        for id in task_ids {
            let found = tables.tasks.iter().position(|t| &t.id == id);
            let Some(at) = found.filter(|&at| tables.tasks[at].state.is_terminal()) else {
                continue;
            };
            let state = tables.tasks.remove(at).state;
            let prefix = format!("{id}/");
            tables
                .assignments
                .retain(|key, _| !key.starts_with(&prefix));
            tables.chunks.retain(|key, _| !key.starts_with(&prefix));
            tables.results.remove(id);
            removed.push((id.clone(), state));
        }
        Ok(removed)
    }

    async fn count_tasks(&self) -> StoreResult<BTreeMap<TaskState, u64>> {
        let mut counts = BTreeMap::new();
        for task in &self.tables().tasks {
            *counts.entry(task.state).or_default() += 1;
        }
        Ok(counts)
    }

    async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        let key = assignment_key(&assignment.task_id, assignment.attempt);
        self.tables().assignments.insert(key, assignment.clone());
        Ok(())
    }

    async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        let prefix = format!("{task_id}/");
        Ok(self
            .tables()
            .assignments
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn put_result(&self, result: &ResultRecord) -> StoreResult<()> {
        self.tables()
            .results
            .insert(result.task_id.clone(), result.clone());
        Ok(())
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>> {
        Ok(self.tables().results.get(task_id).cloned())
    }

    async fn put_log_chunk(&self, chunk: &LogChunkRecord) -> StoreResult<()> {
        let key = log_chunk_key(&chunk.task_id, chunk.attempt, chunk.seq);
        self.tables().chunks.insert(key, chunk.clone());
        Ok(())
    }

    async fn delete_log_chunks(&self, task_id: &str, attempt: u32) -> StoreResult<u64> {
        let prefix = format!("{}/", assignment_key(task_id, attempt));
        let mut tables = self.tables();
        let before = tables.chunks.len();
        tables.chunks.retain(|key, _| !key.starts_with(&prefix));
        Ok((before - tables.chunks.len()) as u64)
    }

    async fn log_chunks(
        &self,
        task_id: &str,
        attempt: u32,
        from_seq: u32,
        limit: usize,
    ) -> StoreResult<Vec<LogChunkRecord>> {
        let prefix = format!("{}/", assignment_key(task_id, attempt));
        let start = log_chunk_key(task_id, attempt, from_seq);
        Ok(self
            .tables()
            .chunks
            .range(start..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.tables().users.insert(user.name.clone(), user.clone());
        Ok(())
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        Ok(self.tables().users.values().cloned().collect())
    }

    async fn delete_user(&self, name: &str) -> StoreResult<bool> {
        Ok(self.tables().users.remove(name).is_some())
    }

    async fn put_secret(&self, secret: &SecretRecord) -> StoreResult<()> {
        let mut tables = self.tables();
        tables.secrets.insert(secret.name.clone(), secret.clone());
        Ok(())
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
        Ok(self.tables().secrets.values().cloned().collect())
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        Ok(self.tables().secrets.remove(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    super::super::contract::contract_tests!(async {
        ((), Arc::new(MemoryStore::default()) as Arc<dyn Store>)
    });
}
