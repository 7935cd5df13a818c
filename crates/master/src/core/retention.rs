//! History retention (`--keep-history`): a background pass that removes
//! finished tasks older than the limit, with their assignments, results and
//! output chunks, a page at a time so dispatch never waits on it.

use crate::core::lifecycle::Lifecycle;
use crate::error::MasterResult;
use crate::store::{TaskQuery, now_millis};
use std::time::Duration;

/// Tasks looked at, and removed in one store call, at a time.
const PRUNE_PAGE: usize = 500;
/// Longest pause between passes.
const MAX_PASS_INTERVAL: Duration = Duration::from_secs(600);

/// Removes every task that finished more than `keep` ago; returns how many.
/// A task is looked at once it was submitted that long ago, and removed once
/// it also finished that long ago.
pub async fn prune_history(lifecycle: &Lifecycle, keep: Duration) -> MasterResult<u64> {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_millis().saturating_sub(keep_ms);
    let mut query = TaskQuery {
        until: Some(cutoff),
        limit: PRUNE_PAGE,
        ..TaskQuery::default()
    };
    let mut removed = 0;
    loop {
        let page = lifecycle.store().query_tasks(&query).await?;
        let ids: Vec<String> = page
            .tasks
            .iter()
            .filter(|t| t.state.is_terminal() && t.finished_at.unwrap_or(t.updated_at) < cutoff)
            .map(|t| t.id.clone())
            .collect();
        if !ids.is_empty() {
            let gone = lifecycle.store().delete_finished_tasks(&ids).await?;
            for (_, state) in &gone {
                lifecycle.forget_finished(*state);
            }
            removed += gone.len() as u64;
        }
        match page.next {
            Some(next) => query.before = Some(next),
            None => return Ok(removed),
        }
        // Room for dispatch between pages.
        tokio::task::yield_now().await;
    }
}

/// Runs [`prune_history`] now and then until the master stops: every
/// `keep` (at most every 10 minutes). A failed pass is logged and retried at
/// the next one.
pub fn keep_history(lifecycle: &Lifecycle, keep: Duration) {
    let lifecycle = lifecycle.clone();
    let interval = keep.min(MAX_PASS_INTERVAL);
    let shutdown = lifecycle.runtime().shutdown.clone();
    lifecycle.runtime().clone().spawn(async move {
        loop {
            match prune_history(&lifecycle, keep).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "pruned finished tasks past --keep-history"),
                Err(error) => {
                    tracing::warn!(%error, "pruning history failed; retrying at the next pass")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{TaskRecord, TaskState};

    #[tokio::test]
    async fn old_finished_tasks_are_pruned_and_the_rest_kept() {
        let (core, _workers) = crate::core::test_cluster::cluster().await;
        let lifecycle = core.tasks.lifecycle();
        let now = now_millis();
        let hour = 3_600_000;
        let tasks = [
            (
                "t-old-done",
                now - 3 * hour,
                TaskState::Completed,
                Some(now - 2 * hour),
            ),
            ("t-old-running", now - 3 * hour, TaskState::Running, None),
            (
                "t-long-job",
                now - 3 * hour,
                TaskState::Failed,
                Some(now - 60_000),
            ),
            ("t-new-done", now - 60_000, TaskState::Completed, Some(now)),
        ];
        for (id, created_at, state, finished_at) in tasks {
            let task = TaskRecord {
                state,
                finished_at,
                updated_at: finished_at.unwrap_or(created_at),
                ..TaskRecord::queued(id, "busybox", created_at)
            };
            lifecycle.store().put_task(&task).await.unwrap();
        }
        let removed = prune_history(lifecycle, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(removed, 1);
        let store = lifecycle.store();
        assert!(store.get_task("t-old-done").await.unwrap().is_none());
        for kept in ["t-old-running", "t-long-job", "t-new-done"] {
            assert!(store.get_task(kept).await.unwrap().is_some(), "{kept}");
        }
    }
}
