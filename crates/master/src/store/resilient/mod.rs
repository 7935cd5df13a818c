//! Serving through a store outage: [`ResilientStore`] wraps either backend,
//! answers reads of workers, tasks and users from memory, and writes through
//! an ordered journal that one flusher task drains with retries and backoff.
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

use super::{
    AssignmentRecord, LogChunkRecord, ResultRecord, SecretRecord, Store, StoreError, StoreResult,
    TaskRecord, TaskState, UserRecord, WorkerRecord, Write,
};
use journal::{CALL_TIMEOUT, Journal, Pending, flush, within};
use mirror::Mirror;
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
}

impl ResilientStore {
    /// Loads workers, tasks and users from `backend` and starts the flusher
    /// (on the current tokio runtime).
    pub async fn load(backend: Arc<dyn Store>) -> StoreResult<Self> {
        let mut mirror = Mirror::default();
        for worker in backend.list_workers().await? {
            mirror.workers.insert(worker.id.clone(), worker);
        }
        for task in backend.list_tasks().await? {
            mirror.tasks.insert(task.id.clone(), task);
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
                Some(current) if expected.contains(&current.state) => {}
                _ => return Ok(false),
            }
            let mut done = self.record(&mut mirror, Write::PutTask(task.clone())).1;
            for write in also {
                done = self.record(&mut mirror, write.clone()).1;
            }
            done
        };
        // The journal is ordered: once the last write is stored, all are.
        Self::settle(done).await;
        Ok(true)
    }

    async fn get_task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self.mirror().tasks.get(task_id).cloned())
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let mut tasks: Vec<TaskRecord> = self.mirror().tasks.values().cloned().collect();
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tasks)
    }

    async fn put_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        self.write(Write::PutAssignment(assignment.clone())).await;
        self.settled();
        Ok(())
    }

    async fn list_assignments(&self, task_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        self.settled();
        let unwritten: Vec<AssignmentRecord> = self
            .mirror()
            .unwritten_assignments
            .iter()
            .filter(|a| a.task_id == task_id)
            .cloned()
            .collect();
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
        self.settled();
        Ok(())
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<ResultRecord>> {
        self.settled();
        if let Some(result) = self.mirror().unwritten_results.get(task_id) {
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
        async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
            self.check()?;
            self.inner.list_tasks().await
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while store.pending_writes() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes never drained"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.health().await.unwrap();
        assert_eq!(
            inner.get_task("t-1").await.unwrap().unwrap().state,
            TaskState::Completed
        );
        assert_eq!(inner.get_result("t-1").await.unwrap(), Some(result));
        assert!(inner.log_chunks("t-1", 1, 0, 8).await.unwrap().is_empty());
    }
}
