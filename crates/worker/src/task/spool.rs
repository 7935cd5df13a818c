//! A task's output on the worker's disk, from its start up to
//! `--max-log-upload` bytes, written while the worker follows the container
//! and kept until the task's result is delivered: what the worker uploads when
//! the result's tail does not hold the whole output.
//!
//! Files live in `<data-dir>/output/<task_id>.<attempt>.log`. A worker that
//! restarts and adopts a container follows its output again from the start,
//! so the file is written anew.

use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Write buffer in front of the file.
const BUFFER_BYTES: usize = 256 * 1024;

/// The directory holding spooled outputs.
pub fn directory(data_dir: &Path) -> PathBuf {
    data_dir.join("output")
}

/// Where the output of a task attempt is spooled.
pub fn path(data_dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    directory(data_dir).join(format!("{task_id}.{attempt}.log"))
}

/// An output being written.
pub struct Spool {
    path: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    /// Bytes that may still be written.
    room: u64,
}

impl Spool {
    /// Creates (or empties) the file at `path`, to hold at most `limit` bytes.
    pub async fn create(path: PathBuf, limit: u64) -> std::io::Result<Spool> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let file = tokio::fs::File::create(&path).await?;
        Ok(Spool {
            path,
            file: Some(tokio::io::BufWriter::with_capacity(BUFFER_BYTES, file)),
            room: limit,
        })
    }

    /// Appends what fits. A write error removes the file (the result then
    /// carries its tail only) and is logged once.
    pub async fn write(&mut self, data: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let take = data
            .len()
            .min(usize::try_from(self.room).unwrap_or(usize::MAX));
        if take == 0 {
            return;
        }
        match file.write_all(&data[..take]).await {
            Ok(()) => self.room -= take as u64,
            Err(error) => self.fail(error).await,
        }
    }

    /// Flushes the file; it stays for the upload.
    pub async fn finish(mut self) {
        if let Some(file) = self.file.as_mut()
            && let Err(error) = file.flush().await
        {
            self.fail(error).await;
        }
    }

    async fn fail(&mut self, error: std::io::Error) {
        tracing::warn!(path = %self.path.display(), %error, "cannot spool the task's output; its result will carry the tail only");
        self.file = None;
        remove(&self.path).await;
    }
}

/// Removes a spooled output (missing is fine).
pub async fn remove(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "cannot remove a spooled output");
    }
}

/// Removes spooled outputs of tasks this worker no longer holds (left by a
/// crash between delivery and clean-up).
pub async fn remove_stale(data_dir: &Path, held: &[String]) {
    let Ok(mut entries) = tokio::fs::read_dir(directory(data_dir)).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        // `<task_id>.<attempt>.log`; ids may contain dots themselves.
        let name = entry.file_name().to_string_lossy().into_owned();
        let task_id = name.rsplitn(3, '.').nth(2).unwrap_or_default();
        if !held.iter().any(|id| id == task_id) {
            remove(&entry.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_start_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path(), "t-1", 2);
        let mut spool = Spool::create(path.clone(), 10).await.unwrap();
        spool.write(b"0123456").await;
        spool.write(b"789abc").await;
        spool.write(b"def").await;
        spool.finish().await;
        assert_eq!(tokio::fs::read(&path).await.unwrap(), b"0123456789");
        assert!(path.ends_with("output/t-1.2.log"), "{}", path.display());
    }

    #[tokio::test]
    async fn stale_outputs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for task in ["t-held", "t-gone", "t.dotted"] {
            Spool::create(path(dir.path(), task, 1), 10)
                .await
                .unwrap()
                .finish()
                .await;
        }
        remove_stale(dir.path(), &["t-held".to_string(), "t.dotted".to_string()]).await;
        assert!(path(dir.path(), "t-held", 1).exists());
        assert!(path(dir.path(), "t.dotted", 1).exists());
        assert!(!path(dir.path(), "t-gone", 1).exists());
    }
}
