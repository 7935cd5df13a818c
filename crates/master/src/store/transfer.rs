//! Moving a cluster between backends: `cloudai-master export FILE` writes every
//! record of a store as JSON lines, `cloudai-master import FILE` loads them into
//! an empty store. Both go through the [`Store`] trait, so any backend can be
//! the source or the target.
//!
//! One line per record: `{"collection":"TASKS","record":{...}}`. A task's
//! stored output chunks follow its result, their bytes in base64.

use super::{
    AssignmentRecord, LogChunkRecord, ResultRecord, SecretRecord, Store, StoreError, TaskQuery,
    TaskRecord, UserRecord, WorkerRecord, Write as StoreWrite,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// Longest line `import` accepts (a task result carries a bounded log tail,
/// a log chunk at most 1 MiB in base64).
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// Log chunks read from the store at once while exporting.
const CHUNK_PAGE: usize = 16;
/// Tasks read from the store at once while exporting.
const TASK_PAGE: usize = 500;
/// Records written to the store at once while importing.
const IMPORT_BATCH: usize = 1000;

/// One exported record, tagged with its collection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "collection", content = "record")]
pub(crate) enum Line {
    #[serde(rename = "USERS")]
    User(UserRecord),
    #[serde(rename = "WORKER_REGISTRY")]
    Worker(WorkerRecord),
    #[serde(rename = "TASKS")]
    Task(TaskRecord),
    #[serde(rename = "ASSIGNMENTS")]
    Assignment(AssignmentRecord),
    #[serde(rename = "RESULTS")]
    Result(ResultRecord),
    #[serde(rename = "LOG_CHUNKS")]
    LogChunk(ChunkLine),
    /// Sealed: the export holds no secret value in the clear, and importing
    /// it needs the same key.
    #[serde(rename = "SECRETS")]
    Secret(SecretRecord),
}

/// A [`LogChunkRecord`] with its bytes in base64.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChunkLine {
    task_id: String,
    attempt: u32,
    seq: u32,
    data: String,
}

impl From<LogChunkRecord> for ChunkLine {
    fn from(chunk: LogChunkRecord) -> Self {
        Self {
            data: BASE64.encode(&chunk.data),
            task_id: chunk.task_id,
            attempt: chunk.attempt,
            seq: chunk.seq,
        }
    }
}

impl ChunkLine {
    pub(crate) fn into_record(self) -> Result<LogChunkRecord, base64::DecodeError> {
        let data = BASE64.decode(&self.data)?;
        Ok(LogChunkRecord {
            task_id: self.task_id,
            attempt: self.attempt,
            seq: self.seq,
            data,
        })
    }
}

/// Records moved, per collection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// `USERS` records.
    pub users: usize,
    /// `WORKER_REGISTRY` records.
    pub workers: usize,
    /// `TASKS` records.
    pub tasks: usize,
    /// `ASSIGNMENTS` records.
    pub assignments: usize,
    /// `RESULTS` records.
    pub results: usize,
    /// `LOG_CHUNKS` records.
    pub log_chunks: usize,
    /// `SECRETS` records (sealed).
    pub secrets: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} workers, {} tasks, {} assignments, {} results, {} log chunks, {} secrets",
            self.users,
            self.workers,
            self.tasks,
            self.assignments,
            self.results,
            self.log_chunks,
            self.secrets
        )
    }
}

/// What can go wrong moving records.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the file failed.
    #[error("export file: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the file is not a record.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The target store already holds a cluster.
    #[error(
        "the target store is not empty ({0}); import only into a new store so nothing is overwritten"
    )]
    NotEmpty(String),
}

/// Writes every record of `store` to `out`; `progress` is called every 1,000 tasks.
pub async fn export(
    store: &dyn Store,
    out: &mut impl Write,
    mut progress: impl FnMut(&Counts),
) -> Result<Counts, TransferError> {
    let mut counts = Counts::default();
    let mut write = |line: Line| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    };
    for user in store.list_users().await? {
        write(Line::User(user))?;
        counts.users += 1;
    }
    for secret in store.list_secrets().await? {
        write(Line::Secret(secret))?;
        counts.secrets += 1;
    }
    for worker in store.list_workers().await? {
        write(Line::Worker(worker))?;
        counts.workers += 1;
    }
    // History a page at a time, newest first: memory holds one page.
    let mut query = TaskQuery {
        limit: TASK_PAGE,
        ..TaskQuery::default()
    };
    loop {
        let page = store.query_tasks(&query).await?;
        for task in page.tasks {
            export_task(store, task, &mut write, &mut counts).await?;
            if counts.tasks.is_multiple_of(1000) {
                progress(&counts);
            }
        }
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    out.flush()?;
    Ok(counts)
}

/// Writes one task and what belongs to it: assignments, result, output.
async fn export_task(
    store: &dyn Store,
    task: TaskRecord,
    write: &mut impl FnMut(Line) -> std::io::Result<()>,
    counts: &mut Counts,
) -> Result<(), TransferError> {
    let assignments = store.list_assignments(&task.id).await?;
    let result = store.get_result(&task.id).await?;
    write(Line::Task(task))?;
    counts.tasks += 1;
    for assignment in assignments {
        write(Line::Assignment(assignment))?;
        counts.assignments += 1;
    }
    if let Some(result) = result {
        let (task_id, attempt, chunks) =
            (result.task_id.clone(), result.attempt, result.log_chunks);
        write(Line::Result(result))?;
        counts.results += 1;
        let mut next = 0;
        while next < chunks {
            let page = store
                .log_chunks(&task_id, attempt, next, CHUNK_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            for chunk in page {
                write(Line::LogChunk(chunk.into()))?;
                counts.log_chunks += 1;
            }
        }
    }
    Ok(())
}

/// One line of an export, or the error naming its number.
pub(crate) fn parse_line(number: usize, text: &str) -> Result<Line, TransferError> {
    serde_json::from_str(text).map_err(|e| TransferError::Malformed {
        line: number,
        message: e.to_string(),
    })
}

/// Loads records written by [`export`] into `store`, which must hold no
/// workers, tasks or users yet; `progress` is called every 1,000 tasks.
pub async fn import(
    store: &dyn Store,
    input: impl BufRead,
    mut progress: impl FnMut(&Counts),
) -> Result<Counts, TransferError> {
    let (users, workers, tasks) = (
        store.list_users().await?.len(),
        store.list_workers().await?.len(),
        store.count_tasks().await?.values().sum::<u64>(),
    );
    if users + workers > 0 || tasks > 0 {
        return Err(TransferError::NotEmpty(format!(
            "{users} users, {workers} workers, {tasks} tasks"
        )));
    }
    let mut counts = Counts::default();
    // Records are stored a batch at a time: one commit per batch on the
    // embedded store, concurrent writes on MongoDB.
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut input = input.take(u64::MAX);
    let mut buffer = String::new();
    let mut number = 0;
    loop {
        buffer.clear();
        number += 1;
        input.set_limit(MAX_LINE_BYTES as u64 + 1);
        if input.read_line(&mut buffer)? == 0 {
            break;
        }
        if buffer.len() > MAX_LINE_BYTES {
            return Err(TransferError::Malformed {
                line: number,
                message: format!("longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        if buffer.trim().is_empty() {
            continue;
        }
        let line = parse_line(number, &buffer)?;
        match line {
            Line::User(user) => {
                batch.push(StoreWrite::PutUser(user));
                counts.users += 1;
            }
            Line::Secret(secret) => {
                batch.push(StoreWrite::PutSecret(secret));
                counts.secrets += 1;
            }
            Line::Worker(worker) => {
                batch.push(StoreWrite::PutWorker(worker));
                counts.workers += 1;
            }
            Line::Task(task) => {
                batch.push(StoreWrite::PutTask(task));
                counts.tasks += 1;
                if counts.tasks.is_multiple_of(1000) {
                    progress(&counts);
                }
            }
            Line::Assignment(assignment) => {
                batch.push(StoreWrite::PutAssignment(assignment));
                counts.assignments += 1;
            }
            Line::Result(result) => {
                batch.push(StoreWrite::PutResult(result));
                counts.results += 1;
            }
            Line::LogChunk(chunk) => {
                // Chunks are not batch writes: what they belong to goes first.
                store.write_batch(&std::mem::take(&mut batch)).await?;
                let chunk = chunk
                    .into_record()
                    .map_err(|error| TransferError::Malformed {
                        line: number,
                        message: format!("log chunk data: {error}"),
                    })?;
                store.put_log_chunk(&chunk).await?;
                counts.log_chunks += 1;
            }
        }
        if batch.len() >= IMPORT_BATCH {
            store.write_batch(&std::mem::take(&mut batch)).await?;
        }
    }
    store.write_batch(&batch).await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::super::{EmbeddedStore, TaskState};
    use super::*;

    async fn filled() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .put_worker(&WorkerRecord::new("w1", "10.0.0.1:50052"))
            .await
            .unwrap();
        for i in 0..3 {
            let mut task = TaskRecord::queued(&format!("t-{i}"), "busybox", i);
            task.state = TaskState::Completed;
            store.put_task(&task).await.unwrap();
            store
                .put_assignment(&AssignmentRecord {
                    task_id: task.id.clone(),
                    attempt: 1,
                    worker_id: "w1".into(),
                    assigned_at: i,
                })
                .await
                .unwrap();
        }
        store
            .put_result(&ResultRecord {
                task_id: "t-2".into(),
                worker_id: "w1".into(),
                attempt: 1,
                state: TaskState::Completed,
                exit_code: Some(0),
                error: None,
                oom_killed: false,
                started_at: Some(1),
                finished_at: Some(2),
                log: "tail\n".into(),
                log_truncated: true,
                log_chunks: 20,
                log_chunk_bytes: 40,
                log_total_bytes: 40,
            })
            .await
            .unwrap();
        for seq in 0..20 {
            store
                .put_log_chunk(&LogChunkRecord {
                    task_id: "t-2".into(),
                    attempt: 1,
                    seq,
                    data: vec![0, 0xff],
                })
                .await
                .unwrap();
        }
        store
            .put_user(&UserRecord {
                name: "ops".into(),
                role: "operator".into(),
                created_at: 1,
                tokens: vec![],
            })
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn export_then_import_copies_every_record() {
        let (_source_dir, source) = filled().await;
        let mut file = Vec::new();
        let exported = export(&source, &mut file, |_| {}).await.unwrap();
        assert_eq!(
            exported.to_string(),
            "1 users, 1 workers, 3 tasks, 3 assignments, 1 results, 20 log chunks, 0 secrets"
        );

        let target_dir = tempfile::tempdir().unwrap();
        let target = EmbeddedStore::open(target_dir.path()).unwrap();
        let imported = import(&target, file.as_slice(), |_| {}).await.unwrap();
        assert_eq!(imported, exported);
        let everything = TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        };
        assert_eq!(
            target.query_tasks(&everything).await.unwrap(),
            source.query_tasks(&everything).await.unwrap()
        );
        assert_eq!(target.list_assignments("t-2").await.unwrap().len(), 1);
        assert_eq!(
            target.log_chunks("t-2", 1, 0, 100).await.unwrap(),
            source.log_chunks("t-2", 1, 0, 100).await.unwrap()
        );

        // A second import would overwrite a cluster: refused.
        let again = import(&target, file.as_slice(), |_| {}).await.unwrap_err();
        assert!(
            again
                .to_string()
                .contains("not empty (1 users, 1 workers, 3 tasks)"),
            "{again}"
        );
    }

    #[tokio::test]
    async fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let target = EmbeddedStore::open(dir.path()).unwrap();
        let file = "\n{\"collection\":\"TASKS\",\"record\":{\"id\":1}}\n";
        let error = import(&target, file.as_bytes(), |_| {}).await.unwrap_err();
        assert!(error.to_string().starts_with("line 2: "), "{error}");
    }
}
