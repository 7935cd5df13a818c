//! Container runtime over bollard: create with limits, start, logs, wait,
//! inspect, stop, remove, and finding this worker's own containers. Reading a
//! container's output is in `output`, getting its image in `pull`.

mod output;
mod pull;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use cloudai_common::resources::GpuRequest;
use cloudai_proto::v1::Task;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

pub use output::{Collected, LogRead};
pub use pull::{ImageRequest, PullProgress};

/// Label holding the task id on every CloudAI container.
pub const LABEL_TASK: &str = "cloudai.task_id";
/// Label holding the worker id.
pub const LABEL_WORKER: &str = "cloudai.worker_id";
/// Label holding the attempt number.
pub const LABEL_ATTEMPT: &str = "cloudai.attempt";
/// Label holding the task timeout in seconds.
pub const LABEL_TIMEOUT: &str = "cloudai.timeout_seconds";

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

/// Why a task's container could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Its image is not on this host (Docker answered the create with
    /// "no such image"): get it and start again.
    #[error("image '{0}' is not on this worker")]
    NoImage(String),
    /// Any other failure, said for the task's error.
    #[error(transparent)]
    Docker(#[from] DockerError),
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

    /// Creates and starts the task's container with its limits and labels.
    /// The image is not looked up first: a create that finds none says so
    /// with [`StartError::NoImage`] (one Docker call less per task).
    pub async fn start(&self, task: &Task, worker_id: &str) -> Result<String, StartError> {
        let name = container_name(&task.task_id, task.attempt.max(1));
        let limits = task.limits.clone().unwrap_or_default();
        let device_requests =
            gpu_requests(&GpuRequest::of(limits.gpu_count, &limits.gpu_device_ids));
        let options = task.options.clone().unwrap_or_default();
        // The task's own labels first: the system's always win.
        let mut labels: HashMap<String, String> = options.labels.clone();
        labels.extend([
            (LABEL_TASK.to_string(), task.task_id.clone()),
            (LABEL_WORKER.to_string(), worker_id.to_string()),
            (LABEL_ATTEMPT.to_string(), task.attempt.to_string()),
            (LABEL_TIMEOUT.to_string(), task.timeout_seconds.to_string()),
        ]);
        let mut env: Vec<String> = task.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.sort();
        let given = |text: String| (!text.is_empty()).then_some(text);
        let body = ContainerCreateBody {
            image: Some(task.image.clone()),
            cmd: (!task.command.is_empty()).then(|| task.command.clone()),
            env: Some(env),
            labels: Some(labels),
            user: given(options.user),
            working_dir: given(options.workdir),
            host_config: Some(HostConfig {
                shm_size: (options.shm_size_bytes > 0)
                    .then(|| i64::try_from(options.shm_size_bytes).unwrap_or(i64::MAX)),
                mounts: (!options.mounts.is_empty()).then(|| mounts(&options.mounts)),
                network_mode: given(options.network.clone()),
                ipc_mode: given(options.ipc.clone()),
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
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // Docker says 404 for a missing image, and for a missing network too.
            Err(
                e @ bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                },
            ) if !self.has_image(&task.image).await? => {
                tracing::debug!(image = task.image, error = %docker_message(e), "image not here");
                return Err(StartError::NoImage(task.image.clone()));
            }
            Err(e) => {
                let message = format!("cannot create the container: {}", docker_message(e));
                return Err(DockerError(message).into());
            }
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove(&name).await;
            let message = format!("cannot start the container: {}", docker_message(e));
            return Err(DockerError(message).into());
        }
        Ok(name)
    }

    /// Whether `image` is on this host.
    pub async fn has_image(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(DockerError(format!(
                "cannot inspect image '{image}': {}",
                docker_message(e)
            ))),
        }
    }

    /// Waits for the container to stop; returns its exit code when Docker
    /// gave one with the wait (a non-zero one arrives as an error).
    pub async fn wait(&self, name: &str) -> Option<i32> {
        let mut wait = self.docker.wait_container(name, None);
        let code = match wait.next().await {
            Some(Ok(response)) => Some(response.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            _ => None,
        };
        code.and_then(|c| i32::try_from(c).ok())
    }

    /// Exit code and OOM flag of a stopped container. With the exit code from
    /// the wait and no memory limit (nothing to be killed for exceeding) that
    /// is the outcome; otherwise Docker is asked (one inspect).
    pub async fn outcome(
        &self,
        name: &str,
        waited: Option<i32>,
        memory_limited: bool,
    ) -> Result<Outcome, DockerError> {
        if let Some(code) = waited
            && !memory_limited
        {
            return Ok(Outcome {
                exit_code: Some(code),
                oom_killed: false,
            });
        }
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

/// Docker's form of a task's mounts: named volumes (created on first use),
/// bind mounts of host paths (allowed by the server before this), tmpfs.
fn mounts(mounts: &[cloudai_proto::v1::Mount]) -> Vec<bollard::models::Mount> {
    use bollard::models::{Mount, MountTmpfsOptions, MountType};
    use cloudai_proto::v1::mount::Kind;
    mounts
        .iter()
        .map(|m| {
            let kind = Kind::try_from(m.kind).unwrap_or(Kind::Unspecified);
            Mount {
                target: Some(m.target.clone()),
                source: (kind != Kind::Tmpfs).then(|| m.source.clone()),
                typ: Some(match kind {
                    Kind::HostPath => MountType::BIND,
                    Kind::Tmpfs => MountType::TMPFS,
                    _ => MountType::VOLUME,
                }),
                read_only: Some(m.read_only),
                tmpfs_options: (kind == Kind::Tmpfs && m.tmpfs_size_bytes > 0).then(|| {
                    MountTmpfsOptions {
                        size_bytes: Some(i64::try_from(m.tmpfs_size_bytes).unwrap_or(i64::MAX)),
                        ..Default::default()
                    }
                }),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
