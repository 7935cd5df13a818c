//! Serving through a store outage: [`ResilientStore`] wraps either backend,
//! answers reads of workers, users and the tasks a master works on from
//! memory, and writes through an ordered journal that one flusher task
//! drains with retries and backoff.
//!
//! Memory holds every unfinished task and every task whose last write is not
//! stored yet; a finished task leaves it once stored (into a cache of the
//! last [`RECENT_TASKS`](mirror::RECENT_TASKS)), and reads of older tasks
//! and pages of history go to the backend, merged with what memory holds.
//! While the backend is away, history pages show what memory holds.
//!
//! While the backend answers, a write returns once it is stored, exactly as
//! with the bare backend. When the backend fails or stalls, the write returns
//! after its first failed try (or at once, if the store is already known to be
//! down): it is held in memory, visible to every read, and written in order
//! once the backend is back. Health reports how many writes wait. Conditional
//! task updates are decided against memory, which this master alone writes, so
//! no state transition depends on reaching the store.
//!
//! What is lost: writes still held when the master process itself dies during
//! an outage. On a graceful stop the master waits for them (`Store::drain`,
//! 10 s) and logs how many it could not store. Everything else reaches the store.
//!
//! Log chunks are the exception to the journal: they go straight to the
//! backend and fail while it is away (their sender, a worker, keeps them and
//! retries), so a large output never waits in the master's memory.
//!
//! The journal and its flusher live in `journal`, the copy in memory in `mirror`.

mod journal;
mod mirror;

use super::query::is_older;
use super::{
    AssignmentRecord, LogChunkRecord, ResultRecord, SecretRecord, Store, StoreError, StoreResult,
    TaskCursor, TaskPage, TaskQuery, TaskRecord, TaskState, UserRecord, WorkerRecord, Write,
};
use journal::{CALL_TIMEOUT, Journal, Pending, flush, within};
use mirror::Mirror;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a log chunk (up to 1 MiB) may take to be written or read.
const LOG_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// A store that keeps serving while its backend is unreachable (see the module docs).
pub struct ResilientStore {
    backend: Arc<dyn Store>,
    mirror: Mutex<Mirror>,
    journal: Arc<Journal>,
    sender: mpsc::UnboundedSender<Pending>,
    /// The flusher: told to stop by `drain` once the journal is empty, and
    /// awaited there, so a stopped master leaves no flusher behind (a drain
    /// that empties the journal is the store's last act: later writes stay in
    /// memory only).
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop_flusher: CancellationToken,
    /// Serializes conditional updates of tasks not in memory, which are
    /// decided against a read of the backend.
    cold_updates: tokio::sync::Mutex<()>,
}

/// Backend pages one history page may read to fill itself around the tasks
/// memory holds.
const MAX_PAGE_READS: usize = 4;
/// Reads of the backend one conditional update of a stored task may take.
const COLD_READS: usize = 4;

impl ResilientStore {
    /// Loads workers, users, secrets and the unfinished tasks from `backend`
    /// and starts the flusher (on the current tokio runtime).
    pub async fn load(backend: Arc<dyn Store>) -> StoreResult<Self> {
        let mut mirror = Mirror::default();
        for worker in backend.list_workers().await? {
            mirror.workers.insert(worker.id.clone(), worker);
        }
        for task in backend.list_unfinished_tasks().await? {
            mirror.hold_loaded(task);
        }
        for secret in backend.list_secrets().await? {
            mirror.secrets.insert(secret.name.clone(), secret);
        }
        for user in backend.list_users().await? {
            mirror.users.insert(user.name.clone(), user);
        }
        let journal = Arc::new(Journal::default());
        let (sender, receiver) = mpsc::unbounded_channel();
        let stop_flusher = CancellationToken::new();
        let flusher = tokio::spawn(flush(
            backend.clone(),
            receiver,
            journal.clone(),
            stop_flusher.clone(),
        ));
        Ok(Self {
            backend,
            mirror: Mutex::new(mirror),
            journal,
            sender,
            flusher: Mutex::new(Some(flusher)),
            stop_flusher,
            cold_updates: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes held in memory, not yet stored.
    pub fn pending_writes(&self) -> usize {
        self.journal.pending.load(Ordering::SeqCst)
    }

    /// Records one write and waits for it like the backend would.
    async fn write(&self, write: Write) -> bool {
        let (existed, done) = {
            let mut mirror = self.mirror();
            self.record(&mut mirror, write)
        };
        Self::settle(done).await;
        existed
    }

    /// Waits until the flusher stored the write or gave it its first try.
    async fn settle(done: Option<oneshot::Receiver<()>>) {
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    /// A backend read with the call timeout.
    async fn read<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        within(CALL_TIMEOUT, operation, call).await
    }

    /// Records a task write and the writes that come with it; returns what
    /// to wait on (the last of them).
    fn record_all(
        &self,
        mirror: &mut mirror::Mirror,
        task: &TaskRecord,
        also: &[Write],
    ) -> Option<oneshot::Receiver<()>> {
        let mut done = self.record(mirror, Write::PutTask(task.clone())).1;
        for write in also {
            done = self.record(mirror, write.clone()).1;
        }
        done
    }

    /// A conditional update of a task memory does not hold (it finished and
    /// was stored): decided against the backend's copy, one at a time. A task
    /// released while it was read is in the recent cache, unless so many were
    /// released that it may have left it: then it is read again.
    async fn update_stored_task_if(
        &self,
        task: &TaskRecord,
        expected: &[TaskState],
        also: &[Write],
    ) -> StoreResult<bool> {
        let _one_at_a_time = self.cold_updates.lock().await;
        for _ in 0..COLD_READS {
            let releases = self.mirror().releases;
            let read = self.read("reading a task", self.backend.get_task(&task.id));
            let stored = read.await?;
            let done = {
                let mut mirror = self.mirror();
                let current = match mirror.task(&task.id) {
                    Some(task) => task.state,
                    None if mirror.releases - releases >= mirror::RECENT_TASKS as u64 => {
                        continue;
                    }
                    None => match stored {
                        Some(stored) => stored.state,
                        None => return Ok(false),
                    },
                };
                if !expected.contains(&current) {
                    return Ok(false);
                }
                self.record_all(&mut mirror, task, also)
            };
            Self::settle(done).await;
            return Ok(true);
        }
        Err(StoreError::Backend {
            operation: "updating a task",
            message: "tasks finish too fast to read this one consistently; try again".into(),
        })
    }

    /// A page of history from memory alone (held and recent tasks).
    fn page_from_memory(&self, query: &TaskQuery) -> TaskPage {
        let mirror = self.mirror();
        let held = mirror.tasks.values().map(|held| &held.task);
        let recent = mirror
            .recent
            .values()
            .filter(|t| !mirror.tasks.contains_key(&t.id));
        // Older history is in the backend, out of reach until it is back.
        query.page(held.chain(recent).cloned())
    }

    /// A page of history: backend pages, their tasks replaced by the copies
    /// memory holds, merged with the held tasks in the range read.
    async fn query_merged(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        let size = query.page_size();
        // One view of memory for the whole page: a task held in it is shown
        // as memory has it, every other one as the backend has it, even if
        // memory changes while the backend is read.
        let (held_ids, held): (HashSet<String>, Vec<TaskRecord>) = {
            let mirror = self.mirror();
            let ids = mirror.tasks.keys().cloned().collect();
            let held = mirror.tasks.values().map(|held| &held.task);
            let matching = held
                .filter(|t| query.matches(t) && query.beyond_cursor(&TaskCursor::of(t)))
                .cloned()
                .collect();
            (ids, matching)
        };
        let mut stored: Vec<TaskRecord> = Vec::new();
        let mut read_to: Option<TaskCursor> = None;
        let mut ask = query.clone();
        for _ in 0..MAX_PAGE_READS {
            let page = self
                .read("listing tasks", self.backend.query_tasks(&ask))
                .await?;
            stored.extend(page.tasks.into_iter().filter(|t| !held_ids.contains(&t.id)));
            read_to = page.next;
            let Some(to) = &read_to else { break };
            let held_in_range = held.iter().filter(|t| !is_older(t, to)).count();
            if stored.len() + held_in_range >= size {
                break;
            }
            ask.before = read_to.clone();
        }
        // Held tasks older than what was read belong to a later page.
        let in_range = held
            .into_iter()
            .filter(|t| read_to.as_ref().is_none_or(|to| !is_older(t, to)));
        let mut tasks: Vec<TaskRecord> = stored.into_iter().chain(in_range).collect();
        tasks.sort_by(super::query::newest_first);
        let next = if tasks.len() > size {
            tasks.truncate(size);
            tasks.last().map(TaskCursor::of)
        } else {
            read_to
        };
        Ok(TaskPage { tasks, next })
    }
}

#[async_trait::async_trait]
impl Store for ResilientStore {
    fn describe(&self) -> String {
        self.backend.describe()
    }

    async fn health(&self) -> StoreResult<()> {
        if self.journal.degraded.load(Ordering::SeqCst) {
            let error = self
                .journal
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(StoreError::Backend {
                operation: "writing",
                message: format!(
                    "{} writes held in memory, retrying ({error})",
                    self.pending_writes()
                ),
            });
        }
        self.read("checking health", self.backend.health()).await
    }

    async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending_writes() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = self.pending_writes();
        if held == 0 {
            // Everything is stored: the flusher ends at its next idle moment.
            self.stop_flusher.cancel();
            let flusher = self
                .flusher
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(flusher) = flusher
                && tokio::time::timeout_at(
                    deadline.max(tokio::time::Instant::now() + CALL_TIMEOUT),
                    flusher,
                )
                .await
                .is_err()
            {
                tracing::warn!("the store's flusher did not stop in time");
            }
        }
        held
    }

    async fn put_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
        self.write(Write::PutWorker(worker.clone())).await;
        Ok(())
    }

    async fn delete_worker(&self, worker_id: &str) -> StoreResult<bool> {
        Ok(self.write(Write::DeleteWorker(worker_id.into())).await)
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerRecord>> {
        Ok(self.mirror().workers.values().cloned().collect())
    }

    async fn put_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.write(Write::PutTask(task.clone())).await;
        Ok(())
    }

    async fn update_task_if(&self, task: &TaskRecord, expected: &[TaskState]) -> StoreResult<bool> {
        self.update_task_if_then(task, expected, &[]).await
    }

    /// The conditional update and the writes that come with it are queued
    /// under one lock, so they reach the backend in the same batch and the
    /// caller waits for one commit.
    async fn update_task_if_then(
        &self,
        task: &TaskRecord,
        expected: &[TaskState],
        also: &[Write],
    ) -> StoreResult<bool> {
        let done = {
            let mut mirror = self.mirror();
            match mirror.tasks.get(&task.id) {
                Some(held) if expected.contains(&held.task.state) => {
                    Some(self.record_all(&mut mirror, task, also))
                }
                Some(_) => return Ok(false),
                // Not in memory: finished and stored, or unknown.
                None if !expected.iter().any(|s| s.is_terminal()) => return Ok(false),
                None => None,
            }
        };
        let Some(done) = done else {
            return self.update_stored_task_if(task, expected, also).await;
        };
        // The journal is ordered: once the last write is stored, all are.
        Self::settle(done).await;
        Ok(true)
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        if let Some(task) = self.mirror().task(task_id) {
            return Ok(Some(task.clone()));
        }
        let stored = self.read("reading a task", self.backend.get_task(task_id));
        let stored = stored.await?;
        // Written while it was read: memory has the newer copy.
        Ok(self.mirror().task(task_id).cloned().or(stored))
    }

    async fn query_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        // While writes are held the backend is known to be away: memory
        // answers at once. Otherwise a failed read is an error, never a page
        // that looks like the end of history.
        if self.journal.degraded.load(Ordering::SeqCst) {
            return Ok(self.page_from_memory(query));
        }
        self.query_merged(query).await
    }

    async fn list_unfinished_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let mirror = self.mirror();
        let held = mirror.tasks.values().map(|held| &held.task);
        Ok(held.filter(|t| !t.state.is_terminal()).cloned().collect())
    }

    async fn count_tasks(&self) -> StoreResult<BTreeMap<TaskState, u64>> {
        self.read("counting tasks", self.backend.count_tasks())
            .await
    }

    /// Only tasks memory does not hold and with no write of theirs waiting
    /// (finished and stored) are removed, one prune at a time with the
    /// updates decided against the backend.
    async fn delete_finished_tasks(
        &self,
        task_ids: &[String],
    ) -> StoreResult<Vec<(String, TaskState)>> {
        let _one_at_a_time = self.cold_updates.lock().await;
        let stored: Vec<String> = {
            let mirror = self.mirror();
            let ids = task_ids.iter().filter(|id| {
                !mirror.tasks.contains_key(*id)
                    && mirror.unwritten_result(id).is_none()
                    && mirror.unwritten_assignments(id).is_empty()
            });
            ids.cloned().collect()
        };
        let call = self.backend.delete_finished_tasks(&stored);
        let removed = within(LOG_CHUNK_TIMEOUT, "pruning tasks", call).await?;
        let mut mirror = self.mirror();
        for (id, _) in &removed {
            mirror.recent.remove(id);
        }
        Ok(removed)
    }

    async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        self.write(Write::PutAssignment(assignment.clone())).await;
        Ok(())
    }

    async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        let unwritten = self.mirror().unwritten_assignments(task_id);
        let mut all = match self
            .read(
                "listing assignments",
                self.backend.list_assignments(task_id),
            )
            .await
        {
            Ok(stored) => stored,
            Err(error) if !unwritten.is_empty() => {
                tracing::debug!(%error, "listing assignments from memory only");
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        for assignment in unwritten {
            all.retain(|a| a.attempt != assignment.attempt);
            all.push(assignment);
        }
        all.sort_by_key(|a| a.attempt);
        Ok(all)
    }

    async fn put_result(&self, result: &ResultRecord) -> StoreResult<()> {
        self.write(Write::PutResult(result.clone())).await;
        Ok(())
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>> {
        if let Some(result) = self.mirror().unwritten_result(task_id) {
            return Ok(Some(result.clone()));
        }
        self.read("reading a result", self.backend.get_result(task_id))
            .await
    }

    async fn put_log_chunk(&self, chunk: &LogChunkRecord) -> StoreResult<()> {
        let operation = "saving a log chunk";
        within(
            LOG_CHUNK_TIMEOUT,
            operation,
            self.backend.put_log_chunk(chunk),
        )
        .await
    }

    async fn delete_log_chunks(&self, task_id: &str, attempt: u32) -> StoreResult<u64> {
        let call = self.backend.delete_log_chunks(task_id, attempt);
        within(LOG_CHUNK_TIMEOUT, "deleting log chunks", call).await
    }

    async fn log_chunks(
        &self,
        task_id: &str,
        attempt: u32,
        from_seq: u32,
        limit: usize,
    ) -> StoreResult<Vec<LogChunkRecord>> {
        let call = self.backend.log_chunks(task_id, attempt, from_seq, limit);
        within(LOG_CHUNK_TIMEOUT, "reading log chunks", call).await
    }

    async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.write(Write::PutUser(user.clone())).await;
        Ok(())
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        Ok(self.mirror().users.values().cloned().collect())
    }

    async fn delete_user(&self, name: &str) -> StoreResult<bool> {
        Ok(self.write(Write::DeleteUser(name.into())).await)
    }

    async fn put_secret(&self, secret: &SecretRecord) -> StoreResult<()> {
        self.write(Write::PutSecret(secret.clone())).await;
        Ok(())
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
        Ok(self.mirror().secrets.values().cloned().collect())
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        Ok(self.write(Write::DeleteSecret(name.into())).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;
    use std::sync::atomic::AtomicBool;

    fn embedded() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        (dir, store)
    }

    async fn wrapped() -> (tempfile::TempDir, Arc<dyn Store>) {
        let (dir, backend) = embedded();
        (dir, Arc::new(ResilientStore::load(backend).await.unwrap()))
    }

    crate::store::contract::contract_tests!(wrapped());

    /// A backend that fails every call while `down` is set (a unit-test double;
    /// the end-to-end proof stops a real MongoDB server, tests/tests/mongo.rs).
    struct Flaky {
        inner: Arc<dyn Store>,
        down: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> StoreResult<()> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Backend {
                    operation: "test",
                    message: "backend down".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    #[async_trait::async_trait]
    impl Store for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn health(&self) -> StoreResult<()> {
            self.check()
        }
        async fn put_worker(&self, worker: &WorkerRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_worker(worker).await
        }
        async fn delete_worker(&self, worker_id: &str) -> StoreResult<bool> {
            self.check()?;
            self.inner.delete_worker(worker_id).await
        }
        async fn list_workers(&self) -> StoreResult<Vec<WorkerRecord>> {
            self.check()?;
            self.inner.list_workers().await
        }
        async fn put_task(&self, task: &TaskRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_task(task).await
        }
        async fn update_task_if(
            &self,
            task: &TaskRecord,
            expected: &[TaskState],
        ) -> StoreResult<bool> {
            self.check()?;
            self.inner.update_task_if(task, expected).await
        }
        async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
            self.check()?;
            self.inner.get_task(task_id).await
        }
        async fn query_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
            self.check()?;
            self.inner.query_tasks(query).await
        }
        async fn list_unfinished_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
            self.check()?;
            self.inner.list_unfinished_tasks().await
        }
        async fn count_tasks(&self) -> StoreResult<BTreeMap<TaskState, u64>> {
            self.check()?;
            self.inner.count_tasks().await
        }
        async fn delete_finished_tasks(
            &self,
            ids: &[String],
        ) -> StoreResult<Vec<(String, TaskState)>> {
            self.check()?;
            self.inner.delete_finished_tasks(ids).await
        }
        async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_assignment(assignment).await
        }
        async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
            self.check()?;
            self.inner.list_assignments(task_id).await
        }
        async fn put_result(&self, result: &ResultRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_result(result).await
        }
        async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>> {
            self.check()?;
            self.inner.get_result(task_id).await
        }
        async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_user(user).await
        }
        async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
            self.check()?;
            self.inner.list_users().await
        }
        async fn delete_user(&self, name: &str) -> StoreResult<bool> {
            self.check()?;
            self.inner.delete_user(name).await
        }
        async fn put_secret(&self, secret: &SecretRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_secret(secret).await
        }
        async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
            self.check()?;
            self.inner.list_secrets().await
        }
        async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
            self.check()?;
            self.inner.delete_secret(name).await
        }
        async fn put_log_chunk(&self, chunk: &LogChunkRecord) -> StoreResult<()> {
            self.check()?;
            self.inner.put_log_chunk(chunk).await
        }
        async fn delete_log_chunks(&self, task_id: &str, attempt: u32) -> StoreResult<u64> {
            self.check()?;
            self.inner.delete_log_chunks(task_id, attempt).await
        }
        async fn log_chunks(
            &self,
            task_id: &str,
            attempt: u32,
            from_seq: u32,
            limit: usize,
        ) -> StoreResult<Vec<LogChunkRecord>> {
            self.check()?;
            self.inner
                .log_chunks(task_id, attempt, from_seq, limit)
                .await
        }
    }

    fn with_state(task: &TaskRecord, state: TaskState) -> TaskRecord {
        TaskRecord {
            state,
            ..task.clone()
        }
    }

    /// Waits, for at most `limit`, until every held write is stored.
    async fn stored_everything(store: &ResilientStore, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while store.pending_writes() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes never drained"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn finished_tasks_leave_memory_and_are_read_from_the_backend() {
        let (_dir, inner) = embedded();
        let store = ResilientStore::load(inner.clone()).await.unwrap();
        let total = mirror::RECENT_TASKS + 500;
        for n in 0..total {
            let queued = TaskRecord::queued(&format!("t-{n:05}"), "busybox", n as i64);
            store.put_task(&queued).await.unwrap();
            let state = if n == 0 {
                TaskState::Failed
            } else {
                TaskState::Completed
            };
            let done = with_state(&queued, state);
            assert!(
                store
                    .update_task_if(&done, &[TaskState::Queued])
                    .await
                    .unwrap()
            );
        }
        store
            .put_task(&TaskRecord::queued("t-waiting", "busybox", 0))
            .await
            .unwrap();
        stored_everything(&store, Duration::from_secs(30)).await;
        {
            let mirror = store.mirror();
            let held: Vec<&str> = mirror.tasks.keys().map(String::as_str).collect();
            assert_eq!(
                held,
                ["t-waiting"],
                "only the unfinished task stays in memory"
            );
            assert!(mirror.recent.values().count() <= mirror::RECENT_TASKS);
        }
        // The oldest is only in the backend now; reads still find it.
        let oldest = store.get_task("t-00000").await.unwrap().unwrap();
        assert_eq!(oldest.state, TaskState::Failed);
        // A conditional update of a stored finished task is decided by the backend's copy.
        let corrected = with_state(&oldest, TaskState::Completed);
        assert!(
            !store
                .update_task_if(&corrected, &[TaskState::Cancelled])
                .await
                .unwrap()
        );
        assert!(
            store
                .update_task_if(&corrected, &[TaskState::Failed])
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_task("t-00000").await.unwrap().unwrap().state,
            TaskState::Completed
        );
        let unfinished = store.list_unfinished_tasks().await.unwrap();
        assert_eq!(unfinished.len(), 1);
        let listed = crate::store::contract::all_tasks(&store).await;
        assert_eq!(listed.len(), total + 1);
        assert_eq!(listed.last().unwrap().id, "t-00000", "oldest last");
        assert_eq!(
            store.count_tasks().await.unwrap()[&TaskState::Completed],
            total as u64
        );
    }

    #[tokio::test]
    async fn pages_merge_what_memory_holds_and_fall_back_to_it_in_an_outage() {
        let (_dir, inner) = embedded();
        let flaky = Arc::new(Flaky {
            inner: inner.clone(),
            down: AtomicBool::new(false),
        });
        let store = ResilientStore::load(flaky.clone()).await.unwrap();
        for n in 0..10 {
            let task = TaskRecord::queued(&format!("t-{n}"), "busybox", n);
            store
                .put_task(&with_state(&task, TaskState::Completed))
                .await
                .unwrap();
        }
        stored_everything(&store, Duration::from_secs(30)).await;
        flaky.down.store(true, Ordering::SeqCst);
        // Written during the outage: only memory has it, and it is the newest.
        let queued = TaskRecord::queued("t-new", "busybox", 50);
        store.put_task(&queued).await.unwrap();
        let page = store
            .query_tasks(&TaskQuery {
                limit: 3,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            page.tasks[0].id, "t-new",
            "memory answers while the store is away"
        );
        // Memory's pages go on through what it holds (here the recent cache).
        assert_eq!(page.tasks.len(), 3);
        assert!(page.next.is_some());

        flaky.down.store(false, Ordering::SeqCst);
        stored_everything(&store, Duration::from_secs(30)).await;
        // The queued task was stored as queued; memory's newer copy wins.
        let running = with_state(&queued, TaskState::Running);
        flaky.down.store(true, Ordering::SeqCst);
        assert!(
            store
                .update_task_if(&running, &[TaskState::Queued])
                .await
                .unwrap()
        );
        flaky.down.store(false, Ordering::SeqCst);
        let running_only = TaskQuery {
            state: Some(TaskState::Running),
            limit: 5,
            ..TaskQuery::default()
        };
        let page = store.query_tasks(&running_only).await.unwrap();
        assert_eq!(page.tasks.len(), 1);
        assert_eq!(page.tasks[0].state, TaskState::Running);
        stored_everything(&store, Duration::from_secs(30)).await;
        let seen: Vec<String> = crate::store::contract::every_page(&store, 4)
            .await
            .into_iter()
            .map(|t| t.id)
            .collect();
        let mut expected = vec!["t-new".to_string()];
        expected.extend((0..10).rev().map(|n| format!("t-{n}")));
        assert_eq!(seen, expected, "every task once, newest first");
    }

    #[tokio::test]
    async fn a_stop_waits_for_held_writes() {
        let (_dir, inner) = embedded();
        let flaky = Arc::new(Flaky {
            inner: inner.clone(),
            down: AtomicBool::new(false),
        });
        let store = ResilientStore::load(flaky.clone()).await.unwrap();
        flaky.down.store(true, Ordering::SeqCst);
        store
            .put_task(&TaskRecord::queued("t-held", "busybox", 1))
            .await
            .unwrap();
        assert_eq!(store.pending_writes(), 1);
        // Still down: the drain gives up after its limit and says so.
        assert_eq!(store.drain(Duration::from_millis(200)).await, 1);
        // Back while the master waits: the write is stored before it stops.
        let back = flaky.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            back.down.store(false, Ordering::SeqCst);
        });
        assert_eq!(store.drain(Duration::from_secs(20)).await, 0);
        assert!(inner.get_task("t-held").await.unwrap().is_some());
        // The drain that found nothing held also stopped the flusher.
        assert!(store.sender.is_closed(), "the flusher still runs");
    }

    #[tokio::test]
    async fn an_outage_loses_no_transition() {
        let (_dir, inner) = embedded();
        let flaky = Arc::new(Flaky {
            inner: inner.clone(),
            down: AtomicBool::new(false),
        });
        let store = ResilientStore::load(flaky.clone()).await.unwrap();
        let queued = TaskRecord::queued("t-1", "busybox", 1);
        store.put_task(&queued).await.unwrap();
        store.health().await.unwrap();

        flaky.down.store(true, Ordering::SeqCst);
        for state in [
            TaskState::Assigned,
            TaskState::Running,
            TaskState::Completed,
        ] {
            let expected = TaskState::predecessors(state);
            let next = with_state(&queued, state);
            assert!(store.update_task_if(&next, &expected).await.unwrap());
        }
        let result = ResultRecord {
            task_id: "t-1".into(),
            worker_id: "w1".into(),
            attempt: 1,
            state: TaskState::Completed,
            exit_code: Some(0),
            error: None,
            oom_killed: false,
            started_at: Some(2),
            finished_at: Some(3),
            log: "done\n".into(),
            log_truncated: false,
            log_chunks: 0,
            log_chunk_bytes: 0,
            log_total_bytes: 0,
        };
        store.put_result(&result).await.unwrap();
        // Log chunks are not held: their sender hears of the outage and retries.
        let chunk = LogChunkRecord {
            task_id: "t-1".into(),
            attempt: 1,
            seq: 0,
            data: b"done\n".to_vec(),
        };
        let refused = store.put_log_chunk(&chunk).await.unwrap_err().to_string();
        assert!(refused.contains("backend down"), "{refused}");
        // Reads are served from memory; the finished task cannot run again.
        assert_eq!(
            store.get_task("t-1").await.unwrap().unwrap().state,
            TaskState::Completed
        );
        assert_eq!(store.get_result("t-1").await.unwrap(), Some(result.clone()));
        let running = with_state(&queued, TaskState::Running);
        let allowed = TaskState::predecessors(TaskState::Running);
        assert!(!store.update_task_if(&running, &allowed).await.unwrap());
        let health = store.health().await.unwrap_err().to_string();
        assert!(health.contains("writes held in memory"), "{health}");
        assert_eq!(
            inner.get_task("t-1").await.unwrap().unwrap().state,
            TaskState::Queued
        );

        flaky.down.store(false, Ordering::SeqCst);
        stored_everything(&store, Duration::from_secs(60)).await;
        store.health().await.unwrap();
        assert_eq!(
            inner.get_task("t-1").await.unwrap().unwrap().state,
            TaskState::Completed
        );
        assert_eq!(inner.get_result("t-1").await.unwrap(), Some(result));
        assert!(inner.log_chunks("t-1", 1, 0, 8).await.unwrap().is_empty());
    }
}
