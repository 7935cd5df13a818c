//! Container runtime over bollard: pull, create with limits, start, logs, wait,
//! inspect, stop, remove, and finding this worker's own containers.

use crate::task::logs::LogBuffer;
use crate::task::spool::Spool;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use cloudai_common::resources::GpuRequest;
use cloudai_proto::v1::{LogChunk, LogStream, Task};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Label holding the task id on every CloudAI container.
pub const LABEL_TASK: &str = "cloudai.task_id";
/// Label holding the worker id.
pub const LABEL_WORKER: &str = "cloudai.worker_id";
/// Label holding the attempt number.
pub const LABEL_ATTEMPT: &str = "cloudai.attempt";
/// Label holding the task timeout in seconds.
pub const LABEL_TIMEOUT: &str = "cloudai.timeout_seconds";

/// How [`Executor::collect_logs`] reads a container's output.
#[derive(Debug, Clone)]
pub enum LogRead {
    /// From the start, following until Docker ends the stream (after the
    /// container stopped and all its output was delivered) or the token is
    /// cancelled.
    Follow(CancellationToken),
    /// What Docker holds now after `mark` (from the start when `None`), without following.
    After(Option<LogMark>),
}

/// Size of the pieces Docker cuts a line into when it has no newline within
/// them; every piece but a line's last is exactly this long, and they all
/// carry the line's timestamp.
pub const DOCKER_PIECE_BYTES: usize = 16 * 1024;

/// Where a read of a container's output stopped: Docker's timestamp of the
/// last piece and how many bytes carried that same timestamp (the pieces of
/// a line longer than [`DOCKER_PIECE_BYTES`] share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMark {
    /// Nanoseconds since the epoch.
    pub nanos: i128,
    /// Bytes read with exactly that timestamp.
    pub bytes_at: u64,
    /// The last piece may be followed by more of its line: a full piece
    /// without a newline.
    pub may_continue: bool,
}

impl LogMark {
    /// Advances the mark over a piece read with `nanos`.
    fn passed(mark: Option<LogMark>, nanos: i128, piece: &[u8]) -> LogMark {
        let before = mark.filter(|m| m.nanos == nanos).map_or(0, |m| m.bytes_at);
        LogMark {
            nanos,
            bytes_at: before + piece.len() as u64,
            may_continue: piece.len() >= DOCKER_PIECE_BYTES && !piece.ends_with(b"\n"),
        }
    }
}

/// What [`Executor::collect_logs`] hands back.
pub struct Collected {
    /// The spool it wrote to.
    pub spool: Option<Spool>,
    /// Where the read stopped (`None`: nothing with a timestamp was read).
    pub mark: Option<LogMark>,
}

/// Splits Docker's RFC 3339 timestamp prefix (`2026-11-27T12:00:00.123456789Z `,
/// or with an offset for log drivers that keep local time; logs read with
/// `timestamps`) from a piece of output, as nanoseconds since the epoch.
fn split_timestamp(message: &[u8]) -> (Option<i128>, &[u8]) {
    let prefix = &message[..message.len().min(48)];
    let Some(space) = prefix.iter().position(|&b| b == b' ') else {
        return (None, message);
    };
    let parsed = std::str::from_utf8(&message[..space])
        .ok()
        .and_then(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        });
    match parsed {
        Some(at) => (Some(at.unix_timestamp_nanos()), &message[space + 1..]),
        None => (None, message),
    }
}

/// A container's final state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, when the container ran.
    pub exit_code: Option<i32>,
    /// Killed by the kernel for exceeding its memory limit.
    pub oom_killed: bool,
}

/// One of this worker's containers found on the Docker host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnContainer {
    /// Task id from its label.
    pub task_id: String,
    /// Container name.
    pub name: String,
    /// Whether it is still running.
    pub running: bool,
    /// Whether it was ever started (a container the worker created but did
    /// not start before it stopped is `created`: it never ran).
    pub started: bool,
    /// Attempt number from its label.
    pub attempt: u32,
    /// Timeout from its label (0 = none).
    pub timeout_seconds: u64,
}

/// A Docker operation that failed, said for the task's error or the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DockerError(pub String);

impl From<String> for DockerError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// Docker access for the worker.
#[derive(Clone)]
pub struct Executor {
    docker: Docker,
}

/// Name of a task's container.
pub fn container_name(task_id: &str, attempt: u32) -> String {
    // The attempt keeps names unique when a retried task lands on a host where
    // its earlier attempt's container still exists (workers sharing a Docker host).
    format!("cloudai-{task_id}-{attempt}")
}

fn docker_message(error: bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

impl Executor {
    /// Connects to the local Docker daemon (`DOCKER_HOST` or the unix socket) and
    /// agrees on an API version.
    pub async fn connect() -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot reach Docker: {e}"))?
            .negotiate_version()
            .await
            .map_err(|e| format!("cannot reach Docker (is dockerd running?): {e}"))?;
        Ok(Self { docker })
    }

    /// Docker's data directory (`DockerRootDir`), for disk metrics.
    pub async fn data_root(&self) -> Option<std::path::PathBuf> {
        match self.docker.info().await {
            Ok(info) => info.docker_root_dir.map(Into::into),
            Err(error) => {
                tracing::warn!(error = %docker_message(error), "cannot read Docker's data root; disk metrics will be 0");
                None
            }
        }
    }

    /// Pulls `image` unless it is already present.
    pub async fn ensure_image(&self, image: &str, timeout: Duration) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                let message = format!("cannot inspect image '{image}': {}", docker_message(e));
                return Err(DockerError(message));
            }
        }
        tracing::info!(image, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let pull = async {
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step.map_err(docker_message)?;
            }
            Ok::<(), String>(())
        };
        let failure = match tokio::time::timeout(timeout, pull).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(message)) => {
                format!("image '{image}' is not on this worker and could not be pulled: {message}")
            }
            Err(_) => format!(
                "pulling image '{image}' took longer than {}s",
                timeout.as_secs()
            ),
        };
        Err(DockerError(failure))
    }

    /// Creates and starts the task's container with its limits and labels.
    pub async fn start(&self, task: &Task, worker_id: &str) -> Result<String, DockerError> {
        let name = container_name(&task.task_id, task.attempt.max(1));
        let limits = task.limits.clone().unwrap_or_default();
        let device_requests =
            gpu_requests(&GpuRequest::of(limits.gpu_count, &limits.gpu_device_ids));
        let labels = HashMap::from([
            (LABEL_TASK.to_string(), task.task_id.clone()),
            (LABEL_WORKER.to_string(), worker_id.to_string()),
            (LABEL_ATTEMPT.to_string(), task.attempt.to_string()),
            (LABEL_TIMEOUT.to_string(), task.timeout_seconds.to_string()),
        ]);
        let mut env: Vec<String> = task.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.sort();
        let body = ContainerCreateBody {
            image: Some(task.image.clone()),
            cmd: (!task.command.is_empty()).then(|| task.command.clone()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(HostConfig {
                memory: (limits.memory_bytes > 0).then_some(limits.memory_bytes),
                // Equal swap and memory limits: the container cannot swap past its limit.
                memory_swap: (limits.memory_bytes > 0).then_some(limits.memory_bytes),
                nano_cpus: (limits.nano_cpus > 0).then_some(limits.nano_cpus),
                device_requests,
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("cannot create the container: {}", docker_message(e)))?;
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove(&name).await;
            let message = format!("cannot start the container: {}", docker_message(e));
            return Err(DockerError(message));
        }
        Ok(name)
    }

    /// Copies the container's output into `buffer` (and `spool`, when given)
    /// as `read` says. Hands the spool back, for more output or for
    /// [`Spool::finish`], with the mark of the last piece read.
    pub async fn collect_logs(
        &self,
        name: &str,
        task_id: &str,
        buffer: &LogBuffer,
        read: LogRead,
        mut spool: Option<Spool>,
    ) -> Collected {
        let (follow, after, stop) = match read {
            LogRead::Follow(stop) => (true, None, stop),
            LogRead::After(mark) => (false, mark, CancellationToken::new()),
        };
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            // Docker's `since` is in whole seconds; the mark sorts out the rest.
            since: after.map_or(0, |m| {
                i32::try_from(m.nanos.div_euclid(1_000_000_000)).unwrap_or(0)
            }),
            ..Default::default()
        };
        let mut logs = self.docker.logs(name, Some(options));
        let mut mark = None;
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break,
                item = logs.next() => item,
            };
            let Some(item) = item else { break };
            let (stream, message) = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    (LogStream::Stdout, message)
                }
                Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
                Ok(LogOutput::StdIn { .. }) => continue,
                Err(error) => {
                    tracing::warn!(task_id, %error, "log stream from Docker ended with an error");
                    break;
                }
            };
            let (nanos, message) = split_timestamp(&message);
            let seen = nanos.map(|n| LogMark::passed(mark, n, message));
            mark = seen.or(mark);
            let data = match (after, seen) {
                // Read before: older than the mark, or within its bytes.
                (Some(after), Some(seen)) if seen.nanos < after.nanos => continue,
                (Some(after), Some(seen)) if seen.nanos == after.nanos => {
                    let new = seen.bytes_at.saturating_sub(after.bytes_at);
                    &message[message.len() - (new as usize).min(message.len())..]
                }
                _ => message,
            };
            if data.is_empty() {
                continue;
            }
            if let Some(spool) = spool.as_mut() {
                spool.write(data).await;
            }
            buffer.push(LogChunk {
                task_id: task_id.to_string(),
                stream: stream as i32,
                data: data.to_vec(),
                timestamp: Some(cloudai_proto::timestamp(SystemTime::now())),
            });
        }
        Collected { spool, mark }
    }

    /// Docker's timestamp of the last piece of a container's output, in
    /// nanoseconds since the epoch (read from the end of its log: cheap
    /// whatever the output's size).
    pub async fn last_log_time(&self, name: &str) -> Option<i128> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: "1".into(),
            ..Default::default()
        };
        let mut logs = self.docker.logs(name, Some(options));
        let mut last = None;
        while let Some(Ok(item)) = logs.next().await {
            if let LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } = item
            {
                last = split_timestamp(&message).0;
            }
        }
        last
    }

    /// Waits for the container to stop.
    pub async fn wait(&self, name: &str) {
        let mut wait = self.docker.wait_container(name, None);
        // A non-zero exit arrives as `Err(DockerContainerWaitError)`: either way it stopped;
        // `outcome` reads the real exit code.
        let _ = wait.next().await;
    }

    /// Exit code and OOM flag of a stopped container.
    pub async fn outcome(&self, name: &str) -> Result<Outcome, DockerError> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| format!("cannot inspect the container: {}", docker_message(e)))?;
        let state = info.state.unwrap_or_default();
        Ok(Outcome {
            exit_code: state.exit_code.map(|c| c as i32),
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, name: &str, grace: Duration) {
        let options = StopContainerOptions {
            t: Some(grace.as_secs() as i32),
            signal: None,
        };
        if let Err(error) = self.docker.stop_container(name, Some(options)).await {
            tracing::debug!(container = name, error = %docker_message(error), "stop failed (already stopped?)");
        }
    }

    /// Removes a container (forcefully); a missing container is not an error.
    pub async fn remove(&self, name: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => {
                tracing::warn!(container = name, error = %docker_message(error), "cannot remove container")
            }
        }
    }

    /// This worker's containers, running or stopped.
    pub async fn own_containers(&self, worker_id: &str) -> Result<Vec<OwnContainer>, DockerError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_WORKER}={worker_id}")],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("cannot list containers: {}", docker_message(e)))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let task_id = labels.get(LABEL_TASK)?.clone();
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()?
                    .trim_start_matches('/')
                    .to_string();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some(OwnContainer {
                    name,
                    running: state == "running",
                    started: state != "created",
                    attempt: labels
                        .get(LABEL_ATTEMPT)
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(1),
                    timeout_seconds: labels
                        .get(LABEL_TIMEOUT)
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(0),
                    task_id,
                })
            })
            .collect())
    }
}

/// Docker device requests for a GPU limit: exact devices win over a count.
fn gpu_requests(request: &GpuRequest) -> Option<Vec<DeviceRequest>> {
    let (device_ids, count) = match request {
        GpuRequest::None => return None,
        GpuRequest::Exact(ids) => (Some(ids.clone()), None),
        // Docker's own "all": -1.
        GpuRequest::All => (None, Some(-1)),
        GpuRequest::Count(n) => (None, Some(i64::from(*n))),
    };
    Some(vec![DeviceRequest {
        driver: Some("nvidia".into()),
        device_ids,
        count,
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        ..Default::default()
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_are_split_from_the_output() {
        let (nanos, data) = split_timestamp(b"2026-11-27T12:00:00.123456789Z hello world\n");
        assert_eq!(nanos, Some(1_795_780_800_123_456_789));
        assert_eq!(data, b"hello world\n");
        // Log drivers that keep local time: the same instant.
        let (local, _) = split_timestamp(b"2026-11-27T13:00:00.123456789+01:00 x");
        assert_eq!(local, nanos);
        // Output that merely contains a space is left whole.
        assert_eq!(
            split_timestamp(b"no stamp here"),
            (None, &b"no stamp here"[..])
        );
        assert_eq!(split_timestamp(b""), (None, &b""[..]));
    }

    #[test]
    fn a_mark_counts_the_bytes_of_its_timestamp() {
        let full_piece = vec![b'x'; DOCKER_PIECE_BYTES];
        let first = LogMark::passed(None, 5, &full_piece);
        assert_eq!((first.bytes_at, first.may_continue), (16_384, true));
        let same = LogMark::passed(Some(first), 5, b"45\n");
        assert_eq!(
            (same.nanos, same.bytes_at, same.may_continue),
            (5, 16_387, false)
        );
        // A short piece without a newline is the last of its line.
        let next = LogMark::passed(Some(same), 6, b"x");
        assert_eq!(
            (next.nanos, next.bytes_at, next.may_continue),
            (6, 1, false)
        );
    }

    #[test]
    fn gpu_requests_prefer_exact_devices() {
        assert!(gpu_requests(&GpuRequest::None).is_none());
        let all = gpu_requests(&GpuRequest::All).unwrap();
        assert_eq!(all[0].count, Some(-1));
        let two = gpu_requests(&GpuRequest::Count(2)).unwrap();
        assert_eq!((two[0].count, two[0].device_ids.as_ref()), (Some(2), None));
        let exact = gpu_requests(&GpuRequest::Exact(vec!["GPU-1".into()])).unwrap();
        assert_eq!(
            exact[0].device_ids.as_deref(),
            Some(&["GPU-1".to_string()][..])
        );
        assert_eq!(exact[0].count, None);
    }
}
