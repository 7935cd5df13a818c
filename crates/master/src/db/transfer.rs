//! Moving a cluster between backends: `cloudai-master export FILE` writes every
//! record of a store as JSON lines, `cloudai-master import FILE` loads them into
//! an empty store. Both go through the [`Store`] trait, so any backend can be
//! the source or the target.
//!
//! One line per record: `{"collection":"TASKS","record":{...}}`.

use super::{
    AssignmentRecord, ResultRecord, Store, StoreError, TaskRecord, UserRecord, WorkerRecord,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// Longest line `import` accepts (a task result carries a bounded log tail).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// One exported record, tagged with its collection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "collection", content = "record")]
enum Line {
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
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} workers, {} tasks, {} assignments, {} results",
            self.users, self.workers, self.tasks, self.assignments, self.results
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
    for worker in store.list_workers().await? {
        write(Line::Worker(worker))?;
        counts.workers += 1;
    }
    for task in store.list_tasks().await? {
        let assignments = store.list_assignments(&task.id).await?;
        let result = store.get_result(&task.id).await?;
        write(Line::Task(task))?;
        counts.tasks += 1;
        for assignment in assignments {
            write(Line::Assignment(assignment))?;
            counts.assignments += 1;
        }
        if let Some(result) = result {
            write(Line::Result(result))?;
            counts.results += 1;
        }
        if counts.tasks % 1000 == 0 {
            progress(&counts);
        }
    }
    out.flush()?;
    Ok(counts)
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
        store.list_tasks().await?.len(),
    );
    if users + workers + tasks > 0 {
        return Err(TransferError::NotEmpty(format!(
            "{users} users, {workers} workers, {tasks} tasks"
        )));
    }
    let mut counts = Counts::default();
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
        let line: Line = serde_json::from_str(&buffer).map_err(|e| TransferError::Malformed {
            line: number,
            message: e.to_string(),
        })?;
        match line {
            Line::User(user) => {
                store.put_user(&user).await?;
                counts.users += 1;
            }
            Line::Worker(worker) => {
                store.put_worker(&worker).await?;
                counts.workers += 1;
            }
            Line::Task(task) => {
                store.put_task(&task).await?;
                counts.tasks += 1;
                if counts.tasks % 1000 == 0 {
                    progress(&counts);
                }
            }
            Line::Assignment(assignment) => {
                store.put_assignment(&assignment).await?;
                counts.assignments += 1;
            }
            Line::Result(result) => {
                store.put_result(&result).await?;
                counts.results += 1;
            }
        }
    }
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
            "1 users, 1 workers, 3 tasks, 3 assignments, 0 results"
        );

        let target_dir = tempfile::tempdir().unwrap();
        let target = EmbeddedStore::open(target_dir.path()).unwrap();
        let imported = import(&target, file.as_slice(), |_| {}).await.unwrap();
        assert_eq!(imported, exported);
        assert_eq!(
            target.list_tasks().await.unwrap(),
            source.list_tasks().await.unwrap()
        );
        assert_eq!(target.list_assignments("t-2").await.unwrap().len(), 1);

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
