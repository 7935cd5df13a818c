//! Result delivery: whole outputs uploaded first where the tail misses part,
//! then the result, retried with backoff until the master acknowledges it.

use super::request;
use crate::master_link::log_upload::{self, UploadError};
use crate::task::spool;
use crate::{PendingReport, Worker};
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Longest pause between attempts to deliver a result.
const MAX_REPORT_BACKOFF: Duration = Duration::from_secs(5);
/// How long an upload of a whole output may keep failing before the result
/// is delivered with its tail only (so a task never stays unfinished).
const UPLOAD_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// A result waiting for delivery, with its retry schedule.
struct Queued {
    report: PendingReport,
    /// Whether its whole output still has to be uploaded first.
    upload: bool,
    /// When its upload first failed.
    upload_failing_since: Option<tokio::time::Instant>,
    /// Not before this instant (after a failed try).
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
}

/// How one try at a result ended.
enum Try {
    /// The master acknowledged it.
    Delivered,
    /// The master refused it for good.
    Refused(String),
    /// The master (or its store) did not answer; try again later.
    Later(String),
}

/// Delivers results (uploading whole outputs first where the tail misses
/// part), retrying with backoff until the master acknowledges; then removes
/// the container. The result due first goes next, so one that waits for a
/// retry does not hold up the others (uploads still go one at a time). Undelivered results survive a
/// worker restart because their containers are only removed after delivery.
pub async fn run_reporter(worker: Worker, mut queue: mpsc::UnboundedReceiver<PendingReport>) {
    let mut pending: VecDeque<Queued> = VecDeque::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = worker.shutdown_token().cancelled() => return,
                next = queue.recv() => match next {
                    Some(report) => pending.push_back(queued(&worker, report)),
                    None => return,
                },
            }
        }
        while let Ok(report) = queue.try_recv() {
            pending.push_back(queued(&worker, report));
        }
        // The result due first; new ones are due at once, in arrival order.
        let now = tokio::time::Instant::now();
        let Some((index, due)) = pending
            .iter()
            .map(|item| item.retry_at.unwrap_or(now))
            .enumerate()
            .min_by_key(|&(_, due)| due)
        else {
            continue;
        };
        if due > now {
            tokio::select! {
                _ = worker.shutdown_token().cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
                next = queue.recv() => {
                    match next {
                        Some(report) => pending.push_back(queued(&worker, report)),
                        None => return,
                    }
                    continue;
                }
            }
        }
        let Some(mut item) = pending.remove(index) else {
            continue;
        };
        let outcome = tokio::select! {
            // Nothing is lost: the container stays until its result is delivered.
            _ = worker.shutdown_token().cancelled() => return,
            outcome = try_once(&worker, &mut item) => outcome,
        };
        let task_id = item.report.result.task_id.clone();
        match outcome {
            Try::Delivered => {}
            Try::Refused(reason) => {
                tracing::warn!(%task_id, %reason, "the master refused the result; dropping it");
            }
            Try::Later(problem) => {
                worker.link().report_problem(problem);
                item.retry_at = Some(tokio::time::Instant::now() + item.backoff);
                item.backoff = (item.backoff * 2).min(MAX_REPORT_BACKOFF);
                pending.push_back(item);
                continue;
            }
        }
        // Off the path of the next result: a removal under a busy dockerd
        // takes a while, and results due behind it would wait for it.
        worker
            .tracker()
            .spawn(clean_up(worker.clone(), item.report));
    }
}

/// Removes a delivered result's container and spooled output, and forgets
/// its task.
async fn clean_up(worker: Worker, report: PendingReport) {
    if let Some(container) = &report.container {
        worker.executor().remove(container).await;
    }
    let result = &report.result;
    spool::remove(&spool::path(
        &worker.config().data_dir,
        &result.task_id,
        result.attempt,
    ))
    .await;
    worker.forget(&result.task_id);
}

fn queued(worker: &Worker, report: PendingReport) -> Queued {
    Queued {
        upload: needs_upload(worker, &report),
        upload_failing_since: None,
        report,
        retry_at: None,
        backoff: Duration::from_millis(100),
    }
}

/// Uploads the whole output if it still has to be, then delivers the result.
async fn try_once(worker: &Worker, item: &mut Queued) -> Try {
    let task_id = item.report.result.task_id.clone();
    if item.upload {
        match log_upload::upload(worker, &mut item.report.result).await {
            Ok(()) => item.upload = false,
            Err(UploadError::GiveUp(reason)) => {
                tracing::warn!(%task_id, %reason, "reporting the result with the tail of its output only");
                item.upload = false;
            }
            Err(UploadError::Retry(status)) => {
                let since = *item
                    .upload_failing_since
                    .get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < UPLOAD_PATIENCE {
                    return Try::Later(format!(
                        "cannot upload the output of {task_id}: {}",
                        status.message()
                    ));
                }
                tracing::warn!(%task_id, reason = %status.message(), "the whole output could not be uploaded for {} minutes; reporting the result with the tail of its output only", UPLOAD_PATIENCE.as_secs() / 60);
                item.upload = false;
            }
        }
    }
    match deliver(worker, &item.report).await {
        Ok(()) => Try::Delivered,
        Err(status)
            if matches!(
                status.code(),
                Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument
            ) =>
        {
            Try::Refused(status.message().to_string())
        }
        Err(status) => Try::Later(format!(
            "cannot deliver the result of {task_id}: {}",
            status.message()
        )),
    }
}

/// Whether the result's tail misses part of the output (spooled while the
/// container ran).
fn needs_upload(worker: &Worker, report: &PendingReport) -> bool {
    report.result.log_truncated
        && report.result.log_chunks == 0
        && report.container.is_some()
        && worker.config().max_log_upload > 0
}

/// The master's client for result delivery: `InvalidArgument` for a bad
/// address, `Unavailable` while none is known.
pub(crate) fn master_client(worker: &Worker) -> Result<MasterServiceClient<Channel>, Status> {
    worker
        .link()
        .client()
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .ok_or_else(|| Status::unavailable("no master address known yet"))
}

async fn deliver(worker: &Worker, report: &PendingReport) -> Result<(), Status> {
    master_client(worker)?
        .report_task_completion(request(report.result.clone()))
        .await?;
    tracing::info!(task_id = %report.result.task_id, "result delivered to the master");
    Ok(())
}
