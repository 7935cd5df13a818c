//! Conversions between protobuf messages and stored records, in one place.

use crate::store::{
    ContainerOptions, GpuRecord, HostRecord, MountKind, MountRecord, PullPolicy, TaskRecord,
    TaskState,
};
use cloudai_common::validate::ValidationError;
use cloudai_proto::v1::PullPolicy as WirePull;
use cloudai_proto::v1::{Mount, ResourceLimits, Task, TaskStatus, WorkerInfo, mount};

/// Host facts worth persisting from a registration.
pub fn host_record(info: &WorkerInfo) -> HostRecord {
    HostRecord {
        hostname: info.hostname.clone(),
        os: info.os.clone(),
        os_version: info.os_version.clone(),
        arch: info.arch.clone(),
        cpu_model: info.cpu_model.clone(),
        cpu_count: info.cpu_count,
        memory_total_bytes: info.memory_total_bytes,
        gpus: info
            .gpus
            .iter()
            .map(|g| GpuRecord {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_total_bytes: g.memory_total_bytes,
            })
            .collect(),
        version: info.version.clone(),
    }
}

/// The task message sent to a worker.
pub fn task_message(task: &TaskRecord) -> Task {
    Task {
        task_id: task.id.clone(),
        image: task.image.clone(),
        command: task.command.clone(),
        env: task.env.clone().into_iter().collect(),
        // The scheduler's exact GPUs win over the request (the worker then
        // gives the container exactly those devices).
        limits: Some(ResourceLimits {
            nano_cpus: task.limits.nano_cpus,
            memory_bytes: task.limits.memory_bytes,
            gpu_count: if task.assigned_gpus.is_empty() {
                task.limits.gpu_count
            } else {
                task.assigned_gpus.len() as i32
            },
            gpu_device_ids: if task.assigned_gpus.is_empty() {
                task.limits.gpu_device_ids.clone()
            } else {
                task.assigned_gpus.clone()
            },
        }),
        timeout_seconds: task.timeout_seconds,
        attempt: task.attempt,
        options: (!task.options.is_default()).then(|| options_message(&task.options)),
    }
}

/// The protobuf form of a task's container options.
pub fn options_message(options: &ContainerOptions) -> cloudai_proto::v1::ContainerOptions {
    cloudai_proto::v1::ContainerOptions {
        shm_size_bytes: options.shm_size_bytes,
        user: options.user.clone(),
        workdir: options.workdir.clone(),
        mounts: options
            .mounts
            .iter()
            .map(|m| Mount {
                kind: match m.kind {
                    MountKind::Volume => mount::Kind::Volume,
                    MountKind::HostPath => mount::Kind::HostPath,
                    MountKind::Tmpfs => mount::Kind::Tmpfs,
                } as i32,
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                tmpfs_size_bytes: m.tmpfs_size_bytes,
            })
            .collect(),
        labels: options.labels.clone().into_iter().collect(),
        network: options.network.clone(),
        ipc: options.ipc.clone(),
        pull: match options.pull {
            PullPolicy::Missing => WirePull::Missing,
            PullPolicy::Always => WirePull::Always,
            PullPolicy::Never => WirePull::Never,
        } as i32,
        pull_timeout_seconds: options.pull_timeout_seconds,
        secret_env: options.secret_env.clone().into_iter().collect(),
    }
}

/// The stored form of a submitted task's container options (checked first).
pub fn options_record(
    options: Option<cloudai_proto::v1::ContainerOptions>,
) -> Result<ContainerOptions, ValidationError> {
    let options = options.unwrap_or_default();
    cloudai_common::validate::container_options(&options)?;
    let mounts = options
        .mounts
        .into_iter()
        .map(|m| MountRecord {
            kind: match mount::Kind::try_from(m.kind) {
                Ok(mount::Kind::HostPath) => MountKind::HostPath,
                Ok(mount::Kind::Tmpfs) => MountKind::Tmpfs,
                // Checked above: the rest are volumes.
                _ => MountKind::Volume,
            },
            source: m.source,
            target: m.target,
            read_only: m.read_only,
            tmpfs_size_bytes: m.tmpfs_size_bytes,
        })
        .collect();
    Ok(ContainerOptions {
        shm_size_bytes: options.shm_size_bytes,
        user: options.user,
        workdir: options.workdir,
        mounts,
        labels: options.labels.into_iter().collect(),
        network: options.network,
        ipc: options.ipc,
        pull: match WirePull::try_from(options.pull) {
            Ok(WirePull::Always) => PullPolicy::Always,
            Ok(WirePull::Never) => PullPolicy::Never,
            _ => PullPolicy::Missing,
        },
        pull_timeout_seconds: options.pull_timeout_seconds,
        secret_env: options.secret_env.into_iter().collect(),
    })
}

/// Protobuf status of a stored state.
pub fn task_status(state: TaskState) -> TaskStatus {
    match state {
        TaskState::Queued => TaskStatus::Queued,
        TaskState::Assigned => TaskStatus::Assigned,
        TaskState::Running => TaskStatus::Running,
        TaskState::Completed => TaskStatus::Completed,
        TaskState::Failed => TaskStatus::Failed,
        TaskState::Cancelled => TaskStatus::Cancelled,
        TaskState::TimedOut => TaskStatus::TimedOut,
        TaskState::Lost => TaskStatus::Lost,
        TaskState::Unknown => TaskStatus::Unknown,
    }
}

/// Stored state of a protobuf status (`None` for `UNSPECIFIED`).
pub fn task_state(status: TaskStatus) -> Option<TaskState> {
    TaskState::ALL
        .into_iter()
        .find(|state| task_status(*state) == status)
}

/// Stored state of the outcome a worker reports: a final state, or `Lost`
/// for an attempt that did not run to its end; `None` for other statuses.
pub fn reported_state(status: TaskStatus) -> Option<TaskState> {
    match status {
        TaskStatus::Completed => Some(TaskState::Completed),
        TaskStatus::Failed => Some(TaskState::Failed),
        TaskStatus::Cancelled => Some(TaskState::Cancelled),
        TaskStatus::TimedOut => Some(TaskState::TimedOut),
        TaskStatus::Lost => Some(TaskState::Lost),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_options_round_trip_and_default_to_none() {
        let options = ContainerOptions {
            shm_size_bytes: 8 << 30,
            user: "1000:1000".into(),
            workdir: "/workspace".into(),
            mounts: vec![
                MountRecord {
                    kind: MountKind::Volume,
                    source: "hf-cache".into(),
                    target: "/root/.cache".into(),
                    read_only: false,
                    tmpfs_size_bytes: 0,
                },
                MountRecord {
                    kind: MountKind::HostPath,
                    source: "/data/imagenet".into(),
                    target: "/data".into(),
                    read_only: true,
                    tmpfs_size_bytes: 0,
                },
                MountRecord {
                    kind: MountKind::Tmpfs,
                    source: String::new(),
                    target: "/scratch".into(),
                    read_only: false,
                    tmpfs_size_bytes: 1 << 30,
                },
            ],
            labels: [("team".to_string(), "vision".to_string())].into(),
            network: "none".into(),
            ipc: "host".into(),
            pull: PullPolicy::Always,
            pull_timeout_seconds: 120,
            secret_env: [("WANDB_API_KEY".to_string(), "wandb".to_string())].into(),
        };
        assert_eq!(
            options_record(Some(options_message(&options))).unwrap(),
            options
        );
        let mut task = TaskRecord::queued("t-1", "img", 0);
        assert_eq!(task_message(&task).options, None);
        task.options = options.clone();
        assert_eq!(task_message(&task).options, Some(options_message(&options)));
        assert_eq!(options_record(None).unwrap(), ContainerOptions::default());
    }
}
