//! A worker's report of a task attempt (`ReportTaskCompletion`): applied to the
//! current attempt, taken late by a task the master had given up as lost, or
//! kept as a late result of an attempt that was already run again.
//!
//! The rule: a result comes only from a container that ran, and a real result
//! is never thrown away. The master's own guess (a lost task failed without
//! retries) gives way to the real outcome when it arrives; once a later
//! attempt has started, an earlier attempt's result is recorded beside the task
//! and changes nothing.

use crate::core::convert;
use crate::core::tasks::{MAX_STORED_LOG_BYTES, Tasks, check_attempt, check_holder};
use crate::error::{MasterError, MasterResult};
use crate::store::{LateResult, MAX_LATE_RESULTS, ResultRecord, TaskRecord, TaskState, now_millis};
use cloudai_common::validate;
use cloudai_proto::v1::{TaskResult, TaskStatus};

impl Tasks {
    /// Stores a worker's report. Idempotent: a repeated report of an attempt
    /// already decided by a result is acknowledged and changes nothing.
    pub async fn complete_task(&self, result: TaskResult) -> MasterResult<TaskRecord> {
        validate::id("task_id", &result.task_id)?;
        validate::id("worker_id", &result.worker_id)?;
        let status = TaskStatus::try_from(result.status).map_err(|_| {
            MasterError::InvalidArgument(format!("status: unknown value {}", result.status))
        })?;
        let state = convert::reported_state(status).ok_or_else(|| {
            MasterError::InvalidArgument(format!(
                "status: {} is not an outcome a worker reports",
                status.as_str_name()
            ))
        })?;
        let Some(task) = self.lifecycle().store().get_task(&result.task_id).await? else {
            return Err(MasterError::NotFound(format!(
                "no task '{}'",
                result.task_id
            )));
        };
        // 0: a worker that does not say which attempt it ran.
        let attempt = if result.attempt == 0 {
            task.attempt
        } else {
            result.attempt
        };
        if attempt != task.attempt {
            return self.record_late_result(task, &result, state, attempt).await;
        }
        check_holder(&task, &result.worker_id)?;
        let record = result_record(&task, &result, state);
        if task.state.is_terminal() {
            return self.take_real_outcome(task, record).await;
        }
        self.lifecycle().store().put_result(&record).await?;
        self.drop_earlier_outputs(&task).await;
        if state == TaskState::Lost {
            let why = record.error.clone().unwrap_or_else(|| "lost".into());
            return self
                .lifecycle()
                .attempt_lost(&task.id, &why)
                .await
                .map(|t| t.unwrap_or(task));
        }
        if state == TaskState::Failed && task.attempt <= task.max_retries {
            let why = record.error.clone().unwrap_or_else(|| "failed".into());
            if let Some(requeued) = self.lifecycle().retry_or_fail(&task.id, &why).await? {
                return Ok(requeued);
            }
        }
        let updated = self
            .lifecycle()
            .transition(&task.id, state, |t| apply_outcome(t, &record))
            .await?;
        match updated {
            Some(task) => Ok(task),
            None => Ok(self
                .lifecycle()
                .store()
                .get_task(&task.id)
                .await?
                .unwrap_or(task)),
        }
    }

    /// A report for the current attempt of a task that already ended. When the
    /// master ended it on its own (a lost task failed without retries: no
    /// result was stored for this attempt), the real outcome replaces the
    /// guess; otherwise the report is a repeat and changes nothing.
    async fn take_real_outcome(
        &self,
        task: TaskRecord,
        record: ResultRecord,
    ) -> MasterResult<TaskRecord> {
        let decided_by_result = self
            .lifecycle()
            .store()
            .get_result(&task.id)
            .await?
            .is_some_and(|stored| stored.attempt == task.attempt);
        if decided_by_result || task.state != TaskState::Failed {
            return Ok(task);
        }
        self.lifecycle().store().put_result(&record).await?;
        if record.state == TaskState::Lost || record.state == TaskState::Failed {
            // The stored output is the real one now; the state stays failed.
            return Ok(task);
        }
        let mut corrected = task.clone();
        corrected.state = record.state;
        corrected.updated_at = now_millis();
        apply_outcome(&mut corrected, &record);
        if !self
            .lifecycle()
            .store()
            .update_task_if(&corrected, &[TaskState::Failed])
            .await?
        {
            return Ok(self
                .lifecycle()
                .store()
                .get_task(&task.id)
                .await?
                .unwrap_or(task));
        }
        tracing::warn!(task_id = %task.id, worker_id = %record.worker_id, state = %record.state,
            "late result accepted: the task had been given up as lost and no other attempt ran");
        self.lifecycle()
            .changed_state(TaskState::Failed, &corrected);
        Ok(corrected)
    }

    /// A result for an earlier attempt, which the master gave up on and ran
    /// again: kept beside the task (when that worker really had the attempt),
    /// acknowledged, and otherwise ignored.
    async fn record_late_result(
        &self,
        task: TaskRecord,
        result: &TaskResult,
        state: TaskState,
        attempt: u32,
    ) -> MasterResult<TaskRecord> {
        let placed_there = self
            .lifecycle()
            .store()
            .list_assignments(&task.id)
            .await?
            .iter()
            .any(|a| a.attempt == attempt && a.worker_id == result.worker_id);
        if !placed_there || attempt > task.attempt {
            check_attempt(&task, attempt)?;
        }
        let late = LateResult {
            attempt,
            worker_id: result.worker_id.clone(),
            state,
            exit_code: result.exit_code,
            reported_at: now_millis(),
        };
        let mut current = task;
        for _ in 0..8 {
            if current
                .late_results
                .iter()
                .any(|l| l.attempt == attempt && l.worker_id == late.worker_id)
            {
                return Ok(current);
            }
            let mut updated = current.clone();
            updated.late_results.push(late.clone());
            let excess = updated.late_results.len().saturating_sub(MAX_LATE_RESULTS);
            updated.late_results.drain(..excess);
            if self
                .lifecycle()
                .store()
                .update_task_if(&updated, &[current.state])
                .await?
            {
                tracing::warn!(task_id = %updated.id, attempt, worker_id = %late.worker_id, state = %state,
                    current_attempt = updated.attempt, "late result of an attempt that was run again: recorded");
                self.lifecycle().index_task(&updated);
                return Ok(updated);
            }
            current = self.lifecycle().task(&current.id).await?;
        }
        Err(MasterError::FailedPrecondition(format!(
            "task '{}' is changing too fast to record a late result; try again",
            current.id
        )))
    }
}

/// The stored form of a worker's report for `task`'s current attempt.
pub(crate) fn result_record(
    task: &TaskRecord,
    result: &TaskResult,
    state: TaskState,
) -> ResultRecord {
    let (log, cut) = bounded_log(&result.log_tail);
    ResultRecord {
        task_id: task.id.clone(),
        worker_id: result.worker_id.clone(),
        attempt: task.attempt,
        state,
        exit_code: result.exit_code,
        error: (!result.error.is_empty()).then(|| result.error.clone()),
        oom_killed: result.oom_killed,
        started_at: result
            .started_at
            .as_ref()
            .and_then(cloudai_proto::timestamp_millis),
        finished_at: result
            .finished_at
            .as_ref()
            .and_then(cloudai_proto::timestamp_millis),
        log,
        log_truncated: cut || result.log_truncated,
        log_chunks: result.log_chunks,
        log_chunk_bytes: result.log_uploaded_bytes,
        log_total_bytes: result.log_total_bytes,
    }
}

/// Copies a result's outcome onto its task.
fn apply_outcome(task: &mut TaskRecord, record: &ResultRecord) {
    task.exit_code = record.exit_code;
    task.error = record.error.clone();
    task.oom_killed = record.oom_killed;
    if task.started_at.is_none() {
        task.started_at = record.started_at;
    }
    task.finished_at = record.finished_at.or(task.finished_at);
}

/// The last `MAX_STORED_LOG_BYTES` of a log as text, and whether it was cut.
fn bounded_log(bytes: &[u8]) -> (String, bool) {
    let start = bytes.len().saturating_sub(MAX_STORED_LOG_BYTES);
    (
        String::from_utf8_lossy(&bytes[start..]).into_owned(),
        start > 0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_bounded_from_the_end() {
        let (log, cut) = bounded_log(b"hello\n");
        assert_eq!((log.as_str(), cut), ("hello\n", false));
        let big = vec![b'a'; MAX_STORED_LOG_BYTES + 10];
        let (log, cut) = bounded_log(&big);
        assert_eq!(log.len(), MAX_STORED_LOG_BYTES);
        assert!(cut);
    }
}
