//! Persistent state: the [`Store`] trait, the records it keeps, and its backends.
//!
//! Collections follow DESIGN.md: `USERS`, `WORKER_REGISTRY`, `TASKS`,
//! `ASSIGNMENTS` and `RESULTS`, plus `LOG_CHUNKS` for whole task outputs too
//! large for a result. Nothing outside this module knows which backend
//! runs; the master holds an `Arc<dyn Store>`.

#[cfg(test)]
pub mod contract;
mod embedded;
#[cfg(test)]
mod memory;
mod mongo;
mod query;
mod records;
mod resilient;
pub mod transfer;

pub use embedded::EmbeddedStore;
#[cfg(test)]
pub(crate) use memory::MemoryStore;
pub use mongo::{MongoStore, redact};
pub use query::{BadCursor, MAX_PAGE, TaskCursor, TaskPage, TaskQuery};
pub use records::{
    ApiTokenRecord, AssignmentRecord, ContainerOptions, GpuRecord, HostRecord, LateResult, Limits,
    LogChunkRecord, MAX_LATE_RESULTS, MountKind, MountRecord, PullPolicy, ResultRecord,
    SecretRecord, TaskRecord, TaskState, UserRecord, WorkerRecord, now_millis,
};
pub use resilient::ResilientStore;
use std::collections::BTreeMap;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, database error); the message says which operation.
    #[error("store error while {operation}: {message}")]
    Backend {
        /// What the store was doing.
        operation: &'static str,
        /// The backend's message.
        message: String,
    },
    /// A stored document could not be decoded.
    #[error("corrupt {collection} record '{id}': {message}")]
    Corrupt {
        /// Collection holding the record.
        collection: &'static str,
        /// Id of the record.
        id: String,
        /// Decoder message.
        message: String,
    },
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// One write of a batch ([`Store::write_batch`]). Every write is idempotent:
/// applying it twice leaves the same state, so a batch can be retried whole.
#[derive(Debug, Clone)]
pub enum Write {
    /// [`Store::put_worker`].
    PutWorker(WorkerRecord),
    /// [`Store::delete_worker`].
    DeleteWorker(String),
    /// [`Store::put_task`].
    PutTask(TaskRecord),
    /// [`Store::put_assignment`].
    PutAssignment(AssignmentRecord),
    /// [`Store::put_result`].
    PutResult(ResultRecord),
    /// [`Store::put_user`].
    PutUser(UserRecord),
    /// [`Store::delete_user`].
    DeleteUser(String),
    /// [`Store::put_secret`].
    PutSecret(SecretRecord),
    /// [`Store::delete_secret`].
    DeleteSecret(String),
}

/// Everything the master persists. Writes are durable when they return (the
/// master wraps its backend in a [`ResilientStore`], which holds writes in
/// memory while the backend is unreachable).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short human description ("embedded file /var/lib/cloudai/cloudai.redb").
    fn describe(&self) -> String;

    /// Whether the store answers right now (a cheap round trip); the error
    /// says why not.
    async fn health(&self) -> StoreResult<()>;

    /// Inserts or replaces a pre-registered worker.
    async fn put_worker(&self, worker: &WorkerRecord) -> StoreResult<()>;
    /// Removes a worker; returns whether it existed.
    async fn delete_worker(&self, worker_id: &str) -> StoreResult<bool>;
    /// All registered workers, by id.
    async fn list_workers(&self) -> StoreResult<Vec<WorkerRecord>>;

    /// Inserts a new task (or replaces one unconditionally).
    async fn put_task(&self, task: &TaskRecord) -> StoreResult<()>;
    /// Replaces a task only if its stored state is one of `expected`; returns
    /// whether it was written (false: unknown task or another state).
    async fn update_task_if(&self, task: &TaskRecord, expected: &[TaskState]) -> StoreResult<bool>;
    /// One task by id.
    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>>;
    /// A page of tasks, newest first ([`TaskQuery`]).
    async fn query_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage>;
    /// Every task not in a final state (what a master holds while it runs).
    async fn list_unfinished_tasks(&self) -> StoreResult<Vec<TaskRecord>>;
    /// How many tasks there are in each state (states with none may be missing).
    async fn count_tasks(&self) -> StoreResult<BTreeMap<TaskState, u64>>;
    /// Removes those of `task_ids` that are finished, with their
    /// assignments, results and output chunks (pruned history); returns the
    /// ids removed and the state each had. Unknown and unfinished tasks are
    /// left alone.
    async fn delete_finished_tasks(
        &self,
        task_ids: &[String],
    ) -> StoreResult<Vec<(String, TaskState)>>;

    /// Records that a task attempt was placed on a worker.
    async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()>;
    /// All placements of one task, oldest first.
    async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>>;

    /// Stores a task's result (replacing any earlier one for the same task).
    async fn put_result(&self, result: &ResultRecord) -> StoreResult<()>;
    /// The stored result of a task.
    async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>>;

    /// Stores one chunk of a task attempt's output, replacing a chunk with the
    /// same task, attempt and number. Chunks bypass the write journal: a
    /// caller gets an error rather than a held write, so large outputs never
    /// pile up in memory while the store is away.
    async fn put_log_chunk(&self, chunk: &LogChunkRecord) -> StoreResult<()>;
    /// Removes every chunk of one task attempt; returns how many there were.
    async fn delete_log_chunks(&self, task_id: &str, attempt: u32) -> StoreResult<u64>;
    /// Up to `limit` chunks of one task attempt numbered `from_seq` on, in order.
    async fn log_chunks(
        &self,
        task_id: &str,
        attempt: u32,
        from_seq: u32,
        limit: usize,
    ) -> StoreResult<Vec<LogChunkRecord>>;

    /// Inserts or replaces a user.
    async fn put_user(&self, user: &UserRecord) -> StoreResult<()>;
    /// All users, by name.
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Removes a user; returns whether it existed.
    async fn delete_user(&self, name: &str) -> StoreResult<bool>;

    /// Inserts or replaces a (sealed) secret.
    async fn put_secret(&self, secret: &SecretRecord) -> StoreResult<()>;
    /// All secrets, by name.
    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>>;
    /// Removes a secret; returns whether it existed.
    async fn delete_secret(&self, name: &str) -> StoreResult<bool>;

    /// [`Store::update_task_if`], and when it writes, also `also`: records
    /// that belong to the same change (the assignment of a placement).
    /// Backends that batch write them together; by default they follow.
    async fn update_task_if_then(
        &self,
        task: &TaskRecord,
        expected: &[TaskState],
        also: &[Write],
    ) -> StoreResult<bool> {
        if !self.update_task_if(task, expected).await? {
            return Ok(false);
        }
        self.write_batch(also).await?;
        Ok(true)
    }

    /// Waits, for at most `limit`, until every write this store accepted is
    /// stored; returns how many are still held (at shutdown). Backends store
    /// each write before it returns: nothing to wait for.
    async fn drain(&self, _limit: std::time::Duration) -> usize {
        0
    }

    /// Applies `writes` in order, all durable when it returns. Backends that
    /// can commit several writes at once override it (the embedded store: one
    /// commit, one fsync); by default the writes are applied one by one.
    async fn write_batch(&self, writes: &[Write]) -> StoreResult<()> {
        for write in writes {
            write.apply_to(self).await?;
        }
        Ok(())
    }
}

/// The key of an assignment: task id and zero-padded attempt, so a task's
/// assignments sort in attempt order.
pub(crate) fn assignment_key(task_id: &str, attempt: u32) -> String {
    format!("{task_id}/{attempt:010}")
}

/// The key of a log chunk: its attempt's [`assignment_key`] and zero-padded
/// number, so an attempt's chunks sort in order.
pub(crate) fn log_chunk_key(task_id: &str, attempt: u32, seq: u32) -> String {
    format!("{}/{seq:010}", assignment_key(task_id, attempt))
}

impl Write {
    /// Applies this write alone through the store's single-record methods.
    pub async fn apply_to<S: Store + ?Sized>(&self, store: &S) -> StoreResult<()> {
        match self {
            Write::PutWorker(worker) => store.put_worker(worker).await,
            Write::DeleteWorker(id) => store.delete_worker(id).await.map(drop),
            Write::PutTask(task) => store.put_task(task).await,
            Write::PutAssignment(assignment) => store.put_assignment(assignment).await,
            Write::PutResult(result) => store.put_result(result).await,
            Write::PutUser(user) => store.put_user(user).await,
            Write::DeleteUser(name) => store.delete_user(name).await.map(drop),
            Write::PutSecret(secret) => store.put_secret(secret).await,
            Write::DeleteSecret(name) => store.delete_secret(name).await.map(drop),
        }
    }

    /// The document this write replaces or removes: its collection and id.
    /// Of several writes to one document only the last one matters.
    pub fn document(&self) -> (&'static str, String) {
        match self {
            Write::PutWorker(worker) => ("WORKER_REGISTRY", worker.id.clone()),
            Write::DeleteWorker(id) => ("WORKER_REGISTRY", id.clone()),
            Write::PutTask(task) => ("TASKS", task.id.clone()),
            Write::PutAssignment(a) => ("ASSIGNMENTS", assignment_key(&a.task_id, a.attempt)),
            Write::PutResult(result) => ("RESULTS", result.task_id.clone()),
            Write::PutUser(user) => ("USERS", user.name.clone()),
            Write::DeleteUser(name) => ("USERS", name.clone()),
            Write::PutSecret(secret) => ("SECRETS", secret.name.clone()),
            Write::DeleteSecret(name) => ("SECRETS", name.clone()),
        }
    }
}
