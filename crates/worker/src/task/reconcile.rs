//! Adopting the containers an earlier run of this worker left behind, at
//! start: running ones are supervised again, stopped ones are reported, and
//! ones that never started are reported as not run.

use crate::Worker;
use crate::task::executor::DockerError;
use crate::task::handle::TaskHandle;
use crate::task::runner::{result, supervise};
use crate::task::spool;
use cloudai_proto::v1::TaskStatus;
use std::sync::Arc;
use std::time::SystemTime;

/// Why a container found created but not started is reported as not run.
const NEVER_STARTED: &str =
    "never started: the worker stopped between creating the container and starting it";

/// Adopts containers left by an earlier run of this worker: running ones are
/// supervised again, stopped ones are reported, and ones that never started
/// are reported as not run (`lost`).
pub async fn reconcile(worker: &Worker) -> Result<usize, DockerError> {
    let containers = worker.executor().own_containers(worker.id()).await?;
    let count = containers.len();
    let kept: Vec<String> = containers.iter().map(|c| c.task_id.clone()).collect();
    spool::remove_stale(&worker.config().data_dir, &kept).await;
    for container in containers {
        let handle = Arc::new(TaskHandle::new(container.attempt));
        if !worker.adopt(&container.task_id, handle.clone()) {
            continue;
        }
        if !container.started {
            // Docker's wait returns at once for a container that never ran and
            // inspect says exit code 0: that is no result. The master retries
            // the attempt by policy.
            tracing::warn!(task_id = %container.task_id, container = %container.name, "a container from an earlier run was created but never started: reporting the attempt as not run");
            handle.logs.close();
            let report = result(
                worker,
                &container.task_id,
                &handle,
                TaskStatus::Lost,
                None,
                NEVER_STARTED.into(),
                SystemTime::now(),
            );
            worker.queue_result(report, Some(container.name));
            continue;
        }
        tracing::info!(task_id = %container.task_id, running = container.running, "adopting a container from an earlier run");
        worker.tracker().spawn(supervise(
            worker.clone(),
            container.task_id,
            container.name,
            container.timeout_seconds,
            handle,
            SystemTime::now(),
            // Its limits are not known here: inspect its end.
            true,
        ));
    }
    Ok(count)
}
