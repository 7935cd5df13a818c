//! Retries: a failed or lost attempt goes back to the queue, held for a
//! backoff, while the task has retries left; otherwise the task fails.

use crate::core::lifecycle::Lifecycle;
use crate::error::MasterResult;
use crate::store::{TaskRecord, TaskState};
use std::time::Duration;

/// Backoff before retry `attempt` + 1: 1s, 2s, 4s … capped at 60s.
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

impl Lifecycle {
    /// After a failed attempt: back to the queue with backoff while retries
    /// remain, otherwise `failed`.
    pub(crate) async fn retry_or_fail(
        &self,
        task_id: &str,
        error: &str,
    ) -> MasterResult<Option<TaskRecord>> {
        let task = self.task(task_id).await?;
        // Only a placed (or lost) attempt is retried or failed here: a task
        // someone else already requeued or ended stays as it is.
        if !matches!(
            task.state,
            TaskState::Assigned | TaskState::Running | TaskState::Unknown | TaskState::Lost
        ) {
            return Ok(None);
        }
        if task.attempt <= task.max_retries {
            let backoff = retry_backoff(task.attempt);
            let note = format!(
                "attempt {} failed ({error}); retrying in {}s",
                task.attempt,
                backoff.as_secs()
            );
            let requeued = self
                .transition(task_id, TaskState::Queued, |t| {
                    t.attempt += 1;
                    t.worker_id = None;
                    t.assigned_gpus.clear();
                    t.error = Some(note.clone());
                })
                .await?;
            if requeued.is_some() {
                tracing::info!(
                    task_id,
                    attempt = task.attempt + 1,
                    backoff_s = backoff.as_secs(),
                    "task requeued for a retry"
                );
                self.holds()
                    .insert(task_id.to_string(), tokio::time::Instant::now() + backoff);
                self.wake_scheduler();
                return Ok(requeued);
            }
        }
        let message = error.to_string();
        self.transition(task_id, TaskState::Failed, |t| {
            t.error = Some(message.clone())
        })
        .await
    }

    /// An attempt ended without running to its end (never started, or stopped
    /// by its worker after losing the master): `lost`, then retried or failed.
    /// `None` when the task was no longer placed (someone else decided first).
    pub(crate) async fn attempt_lost(
        &self,
        task_id: &str,
        why: &str,
    ) -> MasterResult<Option<TaskRecord>> {
        let error = format!("lost: {why}");
        let lost = self
            .transition(task_id, TaskState::Lost, |t| t.error = Some(error.clone()))
            .await?;
        if lost.is_none() {
            return Ok(None);
        }
        self.retry_or_fail(task_id, &error).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(1), Duration::from_secs(1));
        assert_eq!(retry_backoff(2), Duration::from_secs(2));
        assert_eq!(retry_backoff(4), Duration::from_secs(8));
        assert_eq!(retry_backoff(50), Duration::from_secs(60));
    }
}
