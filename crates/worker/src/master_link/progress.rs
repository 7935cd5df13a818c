//! Pull progress to the master: the latest state of a preparing attempt,
//! sent when it changes but at most once a second. Best effort: a report
//! that does not arrive only leaves an older line on the master.

use super::request;
use crate::Worker;
use crate::task::executor::PullProgress;
use cloudai_proto::v1::TaskProgress;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Least time between two reports about one attempt.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Longest the last report of a pull may hold up the container's start.
const LAST_REPORT_PATIENCE: Duration = Duration::from_secs(2);

/// Forwards `progress` of one attempt until `pulled` is cancelled, then
/// sends its last state if that was not sent yet (so even a pull shorter
/// than the interval is seen whole). The caller keeps the sender alive
/// until this returns.
pub async fn forward(
    worker: Worker,
    task_id: String,
    attempt: u32,
    mut progress: watch::Receiver<PullProgress>,
    pulled: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = pulled.cancelled() => break,
            changed = progress.changed() => if changed.is_err() { return },
        }
        let now = progress.borrow_and_update().clone();
        send(&worker, &task_id, attempt, now).await;
        tokio::select! {
            _ = worker.shutdown_token().cancelled() => return,
            _ = pulled.cancelled() => break,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
    }
    if progress.has_changed().unwrap_or(false) {
        let last = progress.borrow_and_update().clone();
        let _ = tokio::time::timeout(LAST_REPORT_PATIENCE, send(&worker, &task_id, attempt, last))
            .await;
    }
}

async fn send(worker: &Worker, task_id: &str, attempt: u32, progress: PullProgress) {
    let Ok(Some(mut client)) = worker.link().client() else {
        return;
    };
    let report = TaskProgress {
        task_id: task_id.to_string(),
        worker_id: worker.id().to_string(),
        attempt,
        phase: "pulling".into(),
        layers_done: progress.layers_done,
        layers_total: progress.layers_total,
        bytes_done: progress.bytes_done,
        bytes_total: progress.bytes_total,
        message: progress.message,
    };
    if let Err(status) = client.report_task_progress(request(report)).await {
        tracing::debug!(task_id, error = %status.message(), "pull progress not delivered");
    }
}
