//! Runs one task from assignment to report: get its image when needed, start,
//! read its output, wait (with timeout and cancel), and queue the result.
//! A short task costs Docker five calls: create, start, wait, one read of its
//! output, and the removal once its result is delivered.

use crate::Worker;
use crate::task::executor::{
    Collected, DockerError, ImageRequest, LogRead, PullProgress, StartError,
};
use crate::task::handle::{StopReason, TaskHandle};
use crate::task::spool::{self, Spool};
use cloudai_common::resources::GpuRequest;
use cloudai_proto::v1::{PullPolicy, RegistryCredentials, Task, TaskResult, TaskStatus};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Runs a newly assigned task to completion and queues its result; pulls
/// its image with `credentials` when the registry needs a login.
pub async fn run_new(
    worker: Worker,
    mut task: Task,
    credentials: Option<RegistryCredentials>,
    handle: Arc<TaskHandle>,
) {
    let started_at = SystemTime::now();
    // Exact devices for Docker: the task sees only its GPUs, and no two tasks share one.
    let mut limits = task.limits.clone().unwrap_or_default();
    match worker.gpu_leases().acquire(
        &task.task_id,
        &GpuRequest::of(limits.gpu_count, &limits.gpu_device_ids),
        worker.gpu_inventory(),
    ) {
        Ok(uuids) if uuids.is_empty() => {}
        Ok(uuids) => {
            tracing::info!(task_id = %task.task_id, gpus = ?uuids, "GPUs reserved");
            limits.gpu_count = uuids.len() as i32;
            limits.gpu_device_ids = uuids;
            task.limits = Some(limits);
        }
        Err(error) => {
            return fail_before_start(&worker, &task, &handle, started_at, error.to_string());
        }
    }
    let options = task.options.clone().unwrap_or_default();
    let request = ImageRequest {
        image: &task.image,
        policy: options.pull(),
        timeout: match options.pull_timeout_seconds {
            0 => worker.config().pull_timeout,
            seconds => Duration::from_secs(seconds),
        },
        credentials: credentials.as_ref(),
    };
    // `--pull always` pulls first; otherwise the create finds out whether the
    // image is here, and a missing one is got (or refused) before a second try.
    let mut fetched = request.policy == PullPolicy::Always;
    if fetched && let Err(error) = fetch_image(&worker, &task, &handle, &request).await {
        return fail_before_start(&worker, &task, &handle, started_at, error.to_string());
    }
    let name = loop {
        if handle.stop.is_cancelled() {
            let reason = handle.stop_reason();
            let error = reason.map(describe_stop).unwrap_or_default();
            handle.logs.close();
            return worker.queue_result(
                result(
                    &worker,
                    &task.task_id,
                    &handle,
                    status_for(reason),
                    None,
                    error,
                    started_at,
                ),
                None,
            );
        }
        let error = match worker.executor().start(&task, worker.id()).await {
            Ok(name) => break name,
            Err(StartError::NoImage(_)) if !fetched => {
                fetched = true;
                match fetch_image(&worker, &task, &handle, &request).await {
                    Ok(()) => continue,
                    Err(error) => error.to_string(),
                }
            }
            Err(error) => error.to_string(),
        };
        return fail_before_start(&worker, &task, &handle, started_at, error);
    };
    tracing::info!(task_id = %task.task_id, container = %name, "task container started");
    let memory_limited = task.limits.as_ref().is_some_and(|l| l.memory_bytes > 0);
    supervise(
        worker,
        task.task_id,
        name,
        task.timeout_seconds,
        handle,
        started_at,
        memory_limited,
    )
    .await;
}

/// Gets the task's image as its pull policy says, forwarding the pull's
/// progress to the master; a cancel stops the pull (the caller sees the
/// cancel, not an error).
async fn fetch_image(
    worker: &Worker,
    task: &Task,
    handle: &TaskHandle,
    request: &ImageRequest<'_>,
) -> Result<(), DockerError> {
    let (progress, watching) = watch::channel(PullProgress::default());
    let done = CancellationToken::new();
    let forwarder = worker
        .tracker()
        .spawn(crate::master_link::progress::forward(
            worker.clone(),
            task.task_id.clone(),
            handle.attempt,
            watching,
            done.clone(),
        ));
    let pulled = tokio::select! {
        pulled = worker.executor().prepare_image(request, &progress) => pulled,
        _ = handle.stop.cancelled() => Ok(()),
    };
    // Its last progress reaches the master before the task runs.
    done.cancel();
    let _ = forwarder.await;
    pulled
}

fn fail_before_start(
    worker: &Worker,
    task: &Task,
    handle: &TaskHandle,
    started_at: SystemTime,
    error: String,
) {
    tracing::warn!(task_id = %task.task_id, error, "task could not start");
    handle.logs.close();
    worker.queue_result(
        result(
            worker,
            &task.task_id,
            handle,
            TaskStatus::Failed,
            None,
            error,
            started_at,
        ),
        None,
    );
}

/// Follows a started (or adopted) container to its end and queues the result.
/// `memory_limited`: the container may be killed for its memory limit (its
/// end is then inspected for the OOM flag; pass `true` when unknown).
pub async fn supervise(
    worker: Worker,
    task_id: String,
    name: String,
    timeout_seconds: u64,
    handle: Arc<TaskHandle>,
    started_at: SystemTime,
    memory_limited: bool,
) {
    let executor = worker.executor();
    handle
        .running
        .store(true, std::sync::atomic::Ordering::SeqCst);
    worker.heartbeat_soon();
    let spool = open_spool(&worker, &task_id, handle.attempt).await;
    let stop_following = CancellationToken::new();
    let ended = CancellationToken::new();
    let logs = tokio::spawn(read_output(
        executor.clone(),
        name.clone(),
        task_id.clone(),
        handle.clone(),
        spool,
        ended.clone(),
        stop_following.clone(),
    ));
    let timeout = async {
        if timeout_seconds == 0 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_secs(timeout_seconds)).await;
    };
    let waited = tokio::select! {
        waited = executor.wait(&name) => waited,
        _ = worker.shutdown_token().cancelled() => {
            // The container keeps running; the next start of this worker adopts it.
            tracing::info!(task_id, container = %name, "worker stopping: leaving the container running");
            logs.abort();
            return;
        }
        _ = handle.stop.cancelled() => {
            executor.stop(&name, handle.grace().unwrap_or(worker.config().stop_grace)).await;
            executor.wait(&name).await
        }
        _ = timeout => {
            tracing::info!(task_id, timeout_seconds, "task timed out");
            handle.request_stop(StopReason::TimedOut);
            executor.stop(&name, worker.config().stop_grace).await;
            executor.wait(&name).await
        }
    };
    ended.cancel();
    handle
        .running
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Docker ends the log stream once it delivered all the output, which for a
    // large output can be well after the container stopped: wait while the
    // output keeps coming, not forever.
    let spool = drain_output(&worker, &task_id, &name, &handle, logs, stop_following).await;
    if let Some(spool) = spool {
        spool.finish().await;
    }
    handle.logs.close();
    let report = match executor.outcome(&name, waited, memory_limited).await {
        Ok(outcome) => {
            let (status, error) =
                match (handle.stop_reason(), outcome.oom_killed, outcome.exit_code) {
                    (Some(reason), _, _) => (status_for(Some(reason)), describe_stop(reason)),
                    (None, true, _) => (
                        TaskStatus::Failed,
                        "killed: out of memory (the container exceeded its memory limit)"
                            .to_string(),
                    ),
                    (None, false, Some(0)) => (TaskStatus::Completed, String::new()),
                    (None, false, Some(code)) => {
                        (TaskStatus::Failed, format!("exited with code {code}"))
                    }
                    (None, false, None) => (
                        TaskStatus::Failed,
                        "the container ended without an exit code".to_string(),
                    ),
                };
            let mut report = result(
                &worker,
                &task_id,
                &handle,
                status,
                outcome.exit_code,
                error,
                started_at,
            );
            report.oom_killed = outcome.oom_killed;
            report
        }
        Err(error) => result(
            &worker,
            &task_id,
            &handle,
            TaskStatus::Failed,
            None,
            error.to_string(),
            started_at,
        ),
    };
    tracing::info!(task_id, status = report.status().as_str_name(), exit_code = ?report.exit_code, "task finished");
    worker.queue_result(report, Some(name));
    worker.heartbeat_soon();
}

/// How long a container runs before its output is followed live, unless
/// someone follows it sooner. One that ends first is read once after its end:
/// one Docker call instead of a follow and a check of its last entry.
const FOLLOW_AFTER: Duration = Duration::from_millis(500);

/// How a task's output was read.
struct Output {
    collected: Collected,
    /// Read once after the container ended: complete, nothing to check.
    read_after_end: bool,
}

/// Reads a task's output into its buffer and spool: once, if the container
/// ends (`ended`) within [`FOLLOW_AFTER`] and no one follows the task before;
/// followed live otherwise, until Docker ends the stream or `stop_following`.
async fn read_output(
    executor: crate::task::executor::Executor,
    name: String,
    task_id: String,
    handle: Arc<TaskHandle>,
    spool: Option<Spool>,
    ended: CancellationToken,
    stop_following: CancellationToken,
) -> Output {
    let read_after_end = tokio::select! {
        biased;
        _ = ended.cancelled() => true,
        _ = handle.logs.followed() => false,
        _ = tokio::time::sleep(FOLLOW_AFTER) => false,
    };
    let read = match read_after_end {
        true => LogRead::After(None),
        false => LogRead::Follow(stop_following),
    };
    let collected = executor
        .collect_logs(&name, &task_id, &handle.logs, read, spool)
        .await;
    Output {
        collected,
        read_after_end,
    }
}

/// How long the followed output may pause, once the container stopped,
/// before the worker reads the rest of it without following.
const LOG_DRAIN_PATIENCE: Duration = Duration::from_secs(5);

/// Waits until the follower has all of a stopped container's output and
/// hands back the spool. Docker ends the followed stream once it delivered
/// everything, which for a large output is well after the container exited,
/// so the worker waits as long as output keeps coming. But Docker's follow
/// can also end early, or stall, at a container's end under load: unless
/// the last piece collected is the last entry of the container's log (same
/// timestamp, and not a full piece of a longer line), the rest is read
/// without following, after the mark of what was already collected.
async fn drain_output(
    worker: &Worker,
    task_id: &str,
    name: &str,
    handle: &TaskHandle,
    mut follower: tokio::task::JoinHandle<Output>,
    stop_following: CancellationToken,
) -> Option<Spool> {
    let mut seen = handle.logs.total_bytes();
    let followed = loop {
        match tokio::time::timeout(LOG_DRAIN_PATIENCE, &mut follower).await {
            Ok(done) => break done.ok(),
            Err(_) if handle.logs.total_bytes() != seen => seen = handle.logs.total_bytes(),
            Err(_) => {
                stop_following.cancel();
                break follower.await.ok();
            }
        }
    };
    let Output {
        collected: followed,
        read_after_end,
    } = followed?;
    if read_after_end {
        return followed.spool;
    }
    // Without timestamps to compare there is nothing to check.
    let Some(last) = worker.executor().last_log_time(name).await else {
        return followed.spool;
    };
    if followed
        .mark
        .is_some_and(|mark| mark.nanos == last && !mark.may_continue)
    {
        return followed.spool;
    }
    tracing::info!(
        task_id,
        collected = handle.logs.total_bytes(),
        "the followed output may have ended early; reading the rest"
    );
    let rest = LogRead::After(followed.mark);
    worker
        .executor()
        .collect_logs(name, task_id, &handle.logs, rest, followed.spool)
        .await
        .spool
}

/// The file the task's output is spooled to, for the upload (none with
/// `--max-log-upload 0`, or when it cannot be created: the result then
/// carries the tail only).
async fn open_spool(worker: &Worker, task_id: &str, attempt: u32) -> Option<Spool> {
    let limit = worker.config().max_log_upload;
    if limit == 0 {
        return None;
    }
    let path = spool::path(&worker.config().data_dir, task_id, attempt);
    match Spool::create(path.clone(), limit).await {
        Ok(spool) => Some(spool),
        Err(error) => {
            tracing::warn!(task_id, path = %path.display(), %error, "cannot spool the task's output; its result will carry the tail only");
            None
        }
    }
}

fn status_for(reason: Option<StopReason>) -> TaskStatus {
    match reason {
        Some(StopReason::TimedOut) => TaskStatus::TimedOut,
        Some(StopReason::Disconnected) => TaskStatus::Lost,
        _ => TaskStatus::Cancelled,
    }
}

fn describe_stop(reason: StopReason) -> String {
    match reason {
        StopReason::Cancelled => "cancelled".into(),
        StopReason::TimedOut => "killed: ran past its timeout".into(),
        StopReason::Disconnected => DISCONNECTED.into(),
    }
}

/// Why a task stopped by [`StopReason::Disconnected`] did not finish.
const DISCONNECTED: &str =
    "stopped by its worker, which could not reach the master within the disconnect window";

pub(super) fn result(
    worker: &Worker,
    task_id: &str,
    handle: &TaskHandle,
    status: TaskStatus,
    exit_code: Option<i32>,
    error: String,
    started_at: SystemTime,
) -> TaskResult {
    let (log_tail, log_truncated) = handle.logs.tail();
    TaskResult {
        task_id: task_id.to_string(),
        worker_id: worker.id().to_string(),
        status: status as i32,
        exit_code,
        error,
        log_tail,
        log_truncated,
        log_total_bytes: handle.logs.total_bytes(),
        started_at: Some(cloudai_proto::timestamp(started_at)),
        finished_at: Some(cloudai_proto::timestamp(SystemTime::now())),
        oom_killed: false,
        attempt: handle.attempt,
        // Set by the reporter once it uploaded the whole output.
        log_chunks: 0,
        log_uploaded_bytes: 0,
    }
}
