//! The default backend: one redb file under the data directory.
//!
//! redb commits are durable (fsync) when `commit` returns, so a master killed
//! with SIGKILL loses nothing it acknowledged. Documents are stored as JSON,
//! one table per collection, keyed by id. Blocking redb calls run on tokio's
//! blocking pool so they never stall the async core.

mod tables;
mod task_index;

use super::{
    AssignmentRecord, LogChunkRecord, ResultRecord, SecretRecord, Store, StoreError, StoreResult,
    TaskPage, TaskQuery, TaskRecord, TaskState, UserRecord, WorkerRecord, Write, assignment_key,
    log_chunk_key,
};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tables::{
    ASSIGNMENTS, LOG_CHUNKS, META, RESULTS, SECRETS, TASK_COUNTS, TASKS, TASKS_BY_TIME,
    TASKS_UNFINISHED, USERS, WORKER_REGISTRY, backend, table_operation,
};

/// redb's page cache (its default, 1 GiB, would let the master's memory
/// grow with its history; what a master reads again is recent and small).
const CACHE_BYTES: usize = 32 << 20;

/// File name of the embedded store inside the data directory.
pub const FILE_NAME: &str = "cloudai.redb";

/// Embedded, durable, single-process store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, creating every table.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        let opening = backend("opening the embedded store");
        std::fs::create_dir_all(data_dir)
            .map_err(|e| opening(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| opening(format!("{}: {e}", path.display())))?;
        let txn = tables::begin_write(&db).map_err(&opening)?;
        for table in [
            USERS,
            WORKER_REGISTRY,
            TASKS,
            ASSIGNMENTS,
            RESULTS,
            LOG_CHUNKS,
            SECRETS,
            TASKS_BY_TIME,
            TASKS_UNFINISHED,
            TASK_COUNTS,
            META,
        ] {
            txn.open_table(table).map_err(|e| opening(e.to_string()))?;
        }
        task_index::ensure_indexes(&txn).map_err(&opening)?;
        txn.commit().map_err(|e| opening(e.to_string()))?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded file {}", self.path.display())
    }

    async fn health(&self) -> StoreResult<()> {
        // A read transaction proves the file is open and readable.
        self.blocking("checking the embedded store", |db| {
            db.begin_read().map(|_| ()).map_err(|e| e.to_string())
        })
        .await
    }

    async fn put_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
        self.put(
            "saving a worker",
            WORKER_REGISTRY,
            worker.id.clone(),
            worker,
        )
        .await
    }

    async fn delete_worker(&self, worker_id: &str) -> StoreResult<bool> {
        self.delete("deleting a worker", WORKER_REGISTRY, worker_id.to_string())
            .await
    }

    async fn delete_user(&self, name: &str) -> StoreResult<bool> {
        self.delete("deleting a user", USERS, name.to_string())
            .await
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerRecord>> {
        self.scan("listing workers", WORKER_REGISTRY, String::new())
            .await
    }

    async fn put_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.write_batch(&[Write::PutTask(task.clone())]).await
    }

    async fn update_task_if(&self, task: &TaskRecord, expected: &[TaskState]) -> StoreResult<bool> {
        let operation = "updating a task";
        let bytes = serde_json::to_vec(task).map_err(|e| backend(operation)(e.to_string()))?;
        let key = task.id.clone();
        let expected = expected.to_vec();
        let task = task.clone();
        self.blocking(operation, move |db| {
            let txn = tables::begin_write(db)?;
            let written = {
                let table = txn.open_table(TASKS).map_err(|e| e.to_string())?;
                let current: Option<TaskRecord> =
                    match table.get(key.as_str()).map_err(|e| e.to_string())? {
                        Some(value) => {
                            Some(serde_json::from_slice(value.value()).map_err(|e| e.to_string())?)
                        }
                        None => None,
                    };
                current.is_some_and(|current| expected.contains(&current.state))
            };
            if written {
                task_index::write_task(&txn, &task, &bytes)?;
            }
            txn.commit().map_err(|e| e.to_string())?;
            Ok(written)
        })
        .await
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        self.get("reading a task", TASKS, task_id.to_string()).await
    }

    async fn write_batch(&self, writes: &[Write]) -> StoreResult<()> {
        let operation = "writing a batch";
        let operations = writes
            .iter()
            .map(table_operation)
            .collect::<Result<Vec<_>, String>>()
            .map_err(backend(operation))?;
        let writes = writes.to_vec();
        self.blocking(operation, move |db| {
            let txn = tables::begin_write(db)?;
            for ((table, key, value), write) in operations.iter().zip(&writes) {
                if let (Write::PutTask(task), Some(bytes)) = (write, value) {
                    task_index::write_task(&txn, task, bytes)?;
                    continue;
                }
                let mut table = txn.open_table(*table).map_err(|e| e.to_string())?;
                match value {
                    Some(bytes) => table.insert(key.as_str(), bytes.as_slice()).map(drop),
                    None => table.remove(key.as_str()).map(drop),
                }
                .map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })
        .await
    }

    async fn query_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        let query = query.clone();
        let (tasks, next) = self
            .blocking("listing tasks", move |db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                task_index::query(&txn, &query)
            })
            .await?;
        Ok(TaskPage { tasks, next })
    }

    async fn list_unfinished_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.blocking("listing unfinished tasks", |db| {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            task_index::unfinished(&txn)
        })
        .await
    }

    async fn delete_finished_tasks(
        &self,
        task_ids: &[String],
    ) -> StoreResult<Vec<(String, TaskState)>> {
        let task_ids = task_ids.to_vec();
        self.blocking("pruning tasks", move |db| {
            let txn = tables::begin_write(db)?;
            let mut removed = Vec::new();
            for id in task_ids {
                if let Some(state) = task_index::remove_finished_task(&txn, &id)? {
                    removed.push((id, state));
                }
            }
            txn.commit().map_err(|e| e.to_string())?;
            Ok(removed)
        })
        .await
    }

    async fn count_tasks(&self) -> StoreResult<BTreeMap<TaskState, u64>> {
        self.blocking("counting tasks", |db| {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            task_index::counts(&txn)
        })
        .await
    }

    async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        let key = assignment_key(&assignment.task_id, assignment.attempt);
        self.put("saving an assignment", ASSIGNMENTS, key, assignment)
            .await
    }

    async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        self.scan("listing assignments", ASSIGNMENTS, format!("{task_id}/"))
            .await
    }

    async fn put_result(&self, result: &ResultRecord) -> StoreResult<()> {
        self.put("saving a result", RESULTS, result.task_id.clone(), result)
            .await
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>> {
        self.get("reading a result", RESULTS, task_id.to_string())
            .await
    }

    async fn put_log_chunk(&self, chunk: &LogChunkRecord) -> StoreResult<()> {
        let key = log_chunk_key(&chunk.task_id, chunk.attempt, chunk.seq);
        let data = chunk.data.clone();
        self.blocking("saving a log chunk", move |db| {
            let txn = tables::begin_write(db)?;
            txn.open_table(LOG_CHUNKS)
                .map_err(|e| e.to_string())?
                .insert(key.as_str(), data.as_slice())
                .map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await
    }

    async fn delete_log_chunks(&self, task_id: &str, attempt: u32) -> StoreResult<u64> {
        // Every key of the attempt: from its chunk 0 up to (not including)
        // the attempt key followed by '0', the character after '/'.
        let start = log_chunk_key(task_id, attempt, 0);
        let end = format!("{}0", assignment_key(task_id, attempt));
        self.blocking("deleting log chunks", move |db| {
            let txn = tables::begin_write(db)?;
            let mut removed = 0;
            {
                let mut table = txn.open_table(LOG_CHUNKS).map_err(|e| e.to_string())?;
                let extracted = table
                    .extract_from_if(start.as_str()..end.as_str(), |_, _| true)
                    .map_err(|e| e.to_string())?;
                for entry in extracted {
                    entry.map_err(|e| e.to_string())?;
                    removed += 1;
                }
            }
            txn.commit().map_err(|e| e.to_string())?;
            Ok(removed)
        })
        .await
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
        let rows: Vec<(String, Vec<u8>)> = self
            .blocking("reading log chunks", move |db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let table = txn.open_table(LOG_CHUNKS).map_err(|e| e.to_string())?;
                let mut rows = Vec::new();
                for entry in table.range(start.as_str()..).map_err(|e| e.to_string())? {
                    let (key, value) = entry.map_err(|e| e.to_string())?;
                    if rows.len() == limit || !key.value().starts_with(prefix.as_str()) {
                        break;
                    }
                    rows.push((key.value().to_string(), value.value().to_vec()));
                }
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(key, data)| {
                let seq = key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        collection: "LOG_CHUNKS",
                        id: key.clone(),
                        message: "the key does not end in a chunk number".into(),
                    })?;
                Ok(LogChunkRecord {
                    task_id: task_id.to_string(),
                    attempt,
                    seq,
                    data,
                })
            })
            .collect()
    }

    async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.put("saving a user", USERS, user.name.clone(), user)
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.scan("listing users", USERS, String::new()).await
    }

    async fn put_secret(&self, secret: &SecretRecord) -> StoreResult<()> {
        self.put("saving a secret", SECRETS, secret.name.clone(), secret)
            .await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
        self.scan("listing secrets", SECRETS, String::new()).await
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        self.delete("deleting a secret", SECRETS, name.to_string())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;

    fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        (dir, store)
    }

    crate::store::contract::contract_tests!(async { fresh() });

    #[tokio::test]
    async fn persistence() {
        let (dir, store) = fresh();
        let path = dir.path().to_path_buf();
        contract::persistence(store, async move |old| {
            drop(old);
            Arc::new(EmbeddedStore::open(&path).unwrap()) as Arc<dyn Store>
        })
        .await;
    }

    /// A file from before the task indexes (tasks only in `TASKS`) is
    /// indexed when it is opened: history, unfinished tasks and counts.
    #[tokio::test]
    async fn a_store_without_indexes_is_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            for (id, state) in [("t-a", TaskState::Completed), ("t-b", TaskState::Queued)] {
                let task = TaskRecord {
                    state,
                    ..TaskRecord::queued(id, "busybox", 5)
                };
                store.put_task(&task).await.unwrap();
            }
            // Back to what an older master left: no indexes, no marker.
            let txn = store.db.begin_write().unwrap();
            for table in [TASKS_BY_TIME, TASKS_UNFINISHED, TASK_COUNTS, META] {
                txn.delete_table(table).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let all = contract::all_tasks(&store).await;
        assert_eq!(
            all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["t-b", "t-a"]
        );
        let unfinished = store.list_unfinished_tasks().await.unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].id, "t-b");
        let counts = store.count_tasks().await.unwrap();
        assert_eq!(counts[&TaskState::Completed], 1);
        assert_eq!(counts[&TaskState::Queued], 1);
    }

    #[test]
    fn a_second_master_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let error = EmbeddedStore::open(dir.path())
            .err()
            .expect("the file is locked");
        assert!(error.to_string().contains("cloudai.redb"), "{error}");
    }
}
