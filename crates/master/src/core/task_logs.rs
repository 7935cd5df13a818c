//! Whole task outputs. A worker whose task wrote more than its result's log
//! tail uploads the output (from its start, up to the worker's limit) before
//! reporting; the master stores each part as one `LOG_CHUNKS` record. Reading
//! a finished task's output gives the chunks in order, then whatever of the
//! tail lies past them.

use crate::core::tasks::{Tasks, check_attempt, check_holder};
use crate::error::{MasterError, MasterResult};
use crate::store::{LogChunkRecord, ResultRecord, Store, TaskRecord};
use cloudai_common::ids::TaskId;

use cloudai_proto::v1::TaskLogPart;
use futures::{Stream, StreamExt, TryStreamExt};
use std::sync::Arc;

/// Largest part (and stored chunk) a worker may send.
pub const MAX_LOG_CHUNK_BYTES: usize = 1 << 20;
/// Most bytes of output the master stores for one task attempt.
pub const MAX_TASK_LOG_BYTES: u64 = 1 << 30;
/// Chunks read from the store at once.
const READ_PAGE: usize = 8;

/// What an upload stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadSummary {
    /// Chunks stored.
    pub chunks: u32,
    /// Bytes stored.
    pub bytes: u64,
}

impl Tasks {
    /// Stores an upload whose first part is `first` (its worker already
    /// authenticated) and whose other parts come from `rest`. Every part must
    /// belong to the same task attempt, held by that worker, and come in order.
    pub async fn store_task_log<S>(
        &self,
        first: TaskLogPart,
        rest: S,
    ) -> MasterResult<UploadSummary>
    where
        S: Stream<Item = Result<TaskLogPart, tonic::Status>> + Send + Unpin,
    {
        let task_id = TaskId::parse("task_id", &first.task_id)?;
        let task = self.task(&task_id).await?;
        check_holder(&task, &first.worker_id)?;
        if task.state.is_terminal() {
            return Err(MasterError::FailedPrecondition(format!(
                "task '{}' is already {}; its output is no longer taken",
                task.id, task.state
            )));
        }
        check_attempt(&task, first.attempt)?;
        let mut summary = UploadSummary::default();
        let mut parts = futures::stream::iter([Ok(first.clone())]).chain(rest);
        while let Some(part) = parts.next().await {
            let part = part.map_err(|status| {
                MasterError::InvalidArgument(format!("upload interrupted: {}", status.message()))
            })?;
            check_part(&first, &part, &summary)?;
            // Unregistering a worker ends its uploads, not only its next call.
            if !self.registry().contains(&first.worker_id) {
                return Err(MasterError::PermissionDenied(format!(
                    "worker '{}' was unregistered",
                    first.worker_id
                )));
            }
            summary.bytes += part.data.len() as u64;
            if summary.bytes > MAX_TASK_LOG_BYTES {
                return Err(MasterError::InvalidArgument(format!(
                    "the output of task '{}' is over the master's limit of {MAX_TASK_LOG_BYTES} bytes",
                    task.id
                )));
            }
            self.lifecycle()
                .store()
                .put_log_chunk(&LogChunkRecord {
                    task_id: part.task_id,
                    attempt: part.attempt,
                    seq: part.seq,
                    data: part.data,
                })
                .await?;
            summary.chunks += 1;
        }
        tracing::debug!(task_id = %task.id, chunks = summary.chunks, bytes = summary.bytes, "task output stored");
        Ok(summary)
    }

    /// Removes the stored output of attempts before `task`'s current one (their
    /// results were replaced, so nothing reads them any more). A failure is
    /// logged: it leaves unreachable chunks, never a wrong answer.
    pub(crate) async fn drop_earlier_outputs(&self, task: &TaskRecord) {
        for attempt in 1..task.attempt {
            if let Err(error) = self
                .lifecycle()
                .store()
                .delete_log_chunks(&task.id, attempt)
                .await
            {
                tracing::warn!(task_id = %task.id, attempt, %error, "cannot remove an earlier attempt's output");
            }
        }
    }

    /// The stored output of a finished task, or `None` when nothing was stored.
    pub async fn stored_output(&self, task: &TaskRecord) -> MasterResult<Option<StoredOutput>> {
        Ok(self
            .lifecycle()
            .store()
            .get_result(&task.id)
            .await?
            .map(|result| StoredOutput {
                store: self.lifecycle().store().clone(),
                result,
            }))
    }
}

/// A part must continue the upload `first` started, in order and bounded.
pub(crate) fn check_part(
    first: &TaskLogPart,
    part: &TaskLogPart,
    so_far: &UploadSummary,
) -> MasterResult<()> {
    if (&part.task_id, &part.worker_id, part.attempt)
        != (&first.task_id, &first.worker_id, first.attempt)
    {
        return Err(MasterError::InvalidArgument(format!(
            "part {} is for task '{}' attempt {} of worker {}; this upload is for task '{}' attempt {} of worker {}",
            part.seq,
            part.task_id,
            part.attempt,
            part.worker_id,
            first.task_id,
            first.attempt,
            first.worker_id
        )));
    }
    if part.seq != so_far.chunks {
        return Err(MasterError::InvalidArgument(format!(
            "parts must come in order: expected part {}, got {}",
            so_far.chunks, part.seq
        )));
    }
    if part.data.len() > MAX_LOG_CHUNK_BYTES {
        return Err(MasterError::InvalidArgument(format!(
            "part {} holds {} bytes; at most {MAX_LOG_CHUNK_BYTES}",
            part.seq,
            part.data.len()
        )));
    }
    Ok(())
}

/// Where the tail goes after the chunks of `result`.
fn tail_plan(result: &ResultRecord) -> TailPlan {
    if result.log_chunks == 0 {
        return TailPlan::After { gap: 0, from: 0 };
    }
    let missing = result
        .log_total_bytes
        .saturating_sub(result.log_chunk_bytes);
    if missing == 0 {
        return TailPlan::Skip;
    }
    let tail = result.log.len() as u64;
    match tail.checked_sub(missing) {
        // The tail reaches back into the chunks: only its newer end is new.
        Some(overlap) => TailPlan::After {
            gap: 0,
            from: overlap as usize,
        },
        None => TailPlan::After {
            gap: missing - tail,
            from: 0,
        },
    }
}

/// A finished task's stored output (see [`Tasks::stored_output`]).
pub struct StoredOutput {
    store: Arc<dyn Store>,
    result: ResultRecord,
}

/// How the stored tail relates to the stored chunks.
#[derive(Debug, PartialEq, Eq)]
enum TailPlan {
    /// The chunks hold everything; the tail adds nothing.
    Skip,
    /// Output between the chunks and the tail was not kept: a note saying how
    /// many bytes, then the tail from this byte on.
    After { gap: u64, from: usize },
}

impl StoredOutput {
    /// The output in order as byte pieces: the stored chunks (read a page at
    /// a time, when needed), then the part of the tail past them, with a note
    /// where output was not kept.
    pub fn pieces(self) -> impl Stream<Item = MasterResult<Vec<u8>>> + Send + 'static {
        let (notice, tail) = match tail_plan(&self.result) {
            TailPlan::Skip => (None, Vec::new()),
            TailPlan::After { gap, from } => {
                let notice = if self.result.log_chunks == 0 && self.result.log_truncated {
                    Some("[earlier output cut off]\n".to_string())
                } else if gap > 0 {
                    Some(format!(
                        "\n[{gap} bytes of output not kept: the worker uploads at most its --max-log-upload]\n"
                    ))
                } else {
                    None
                };
                (notice, self.result.log.as_bytes()[from..].to_vec())
            }
        };
        let Self { store, result } = self;
        let (task_id, attempt, count) = (result.task_id, result.attempt, result.log_chunks);
        let chunks = futures::stream::try_unfold(0u32, move |next| {
            let (store, task_id) = (store.clone(), task_id.clone());
            async move {
                if next >= count {
                    return Ok(None);
                }
                let page = store
                    .log_chunks(&task_id, attempt, next, READ_PAGE)
                    .await?;
                let in_order: Vec<Vec<u8>> = page
                    .into_iter()
                    .zip(next..count)
                    .take_while(|(chunk, seq)| chunk.seq == *seq)
                    .map(|(chunk, _)| chunk.data)
                    .collect();
                if in_order.is_empty() {
                    return Err(MasterError::Unavailable(format!(
                        "chunk {next} of {count} of the output of task '{task_id}' is missing from the store"
                    )));
                }
                let after = next + in_order.len() as u32;
                Ok(Some((in_order, after)))
            }
        })
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten();
        let rest = [notice.map(String::into_bytes), Some(tail)]
            .into_iter()
            .flatten()
            .filter(|piece| !piece.is_empty())
            .map(Ok);
        chunks.chain(futures::stream::iter(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TaskState;

    fn result(log: &str, chunks: u32, chunk_bytes: u64, total: u64) -> ResultRecord {
        ResultRecord {
            task_id: "t-1".into(),
            worker_id: "w".into(),
            attempt: 1,
            state: TaskState::Completed,
            exit_code: Some(0),
            error: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            log: log.into(),
            log_truncated: chunks > 0,
            log_chunks: chunks,
            log_chunk_bytes: chunk_bytes,
            log_total_bytes: total,
        }
    }

    #[test]
    fn the_tail_continues_where_the_chunks_stop() {
        // No chunks: the tail is everything there is.
        assert_eq!(
            tail_plan(&result("abc", 0, 0, 0)),
            TailPlan::After { gap: 0, from: 0 }
        );
        // Chunks hold the whole output.
        assert_eq!(tail_plan(&result("xyz", 2, 100, 100)), TailPlan::Skip);
        // 10 bytes past the chunks, a 4-byte tail: 6 bytes were not kept.
        assert_eq!(
            tail_plan(&result("wxyz", 2, 100, 110)),
            TailPlan::After { gap: 6, from: 0 }
        );
        // 3 bytes past the chunks, a 4-byte tail: its first byte is in the chunks.
        assert_eq!(
            tail_plan(&result("wxyz", 2, 100, 103)),
            TailPlan::After { gap: 0, from: 1 }
        );
    }

    #[test]
    fn parts_must_continue_their_upload() {
        let first = TaskLogPart {
            task_id: "t-1".into(),
            worker_id: "w".into(),
            attempt: 1,
            seq: 0,
            data: vec![1],
        };
        let so_far = UploadSummary {
            chunks: 1,
            bytes: 1,
        };
        let next = TaskLogPart {
            seq: 1,
            ..first.clone()
        };
        assert!(check_part(&first, &next, &so_far).is_ok());
        let skipped = TaskLogPart {
            seq: 2,
            ..first.clone()
        };
        let error = check_part(&first, &skipped, &so_far).unwrap_err();
        assert!(
            error.to_string().contains("expected part 1, got 2"),
            "{error}"
        );
        let other = TaskLogPart {
            task_id: "t-2".into(),
            ..next.clone()
        };
        assert!(check_part(&first, &other, &so_far).is_err());
        let huge = TaskLogPart {
            data: vec![0; MAX_LOG_CHUNK_BYTES + 1],
            ..next
        };
        let error = check_part(&first, &huge, &so_far).unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
    }
}
