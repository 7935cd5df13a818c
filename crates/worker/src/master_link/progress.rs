//! Pull progress to the master: the latest state of a preparing attempt,
//! sent when it changes but at most once a second. Best effort: a report
//! that does not arrive only leaves an older line on the master.

use super::request;
use crate::Worker;
use crate::task::executor::PullProgress;
use cloudai_proto::v1::TaskProgress;
use std::time::Duration;
use tokio::sync::watch;

/// Least time between two reports about one attempt.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Forwards `progress` of one attempt until its sender is dropped (the
/// pull ended).
pub async fn forward(
    worker: Worker,
    task_id: String,
    attempt: u32,
    mut progress: watch::Receiver<PullProgress>,
) {
    while progress.changed().await.is_ok() {
        let now = progress.borrow_and_update().clone();
        send(&worker, &task_id, attempt, now).await;
        tokio::select! {
            _ = worker.shutdown_token().cancelled() => return,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
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
