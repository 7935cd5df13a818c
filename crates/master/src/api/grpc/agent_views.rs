//! The protobuf views the `MasterAgent` API answers with: tasks, and workers
//! with what they have free.

use crate::auth::users::Role;
use crate::core::convert;
use crate::core::events::TaskProgress;
use crate::core::registry::{WorkerEntry, WorkerState as LiveState};
use crate::store::TaskRecord;
use cloudai_proto::v1::TaskProgress as WireProgress;
use cloudai_proto::v1::{FreeResources, TaskView, WorkerInfo, WorkerState, WorkerView};
use std::collections::HashMap;

pub(super) fn millis_timestamp(millis: i64) -> cloudai_proto::Timestamp {
    cloudai_proto::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The protobuf view of a task as `role` may see it: its environment only
/// for operators and admins, its pull progress while it is assigned.
pub fn task_view_for(task: &TaskRecord, role: Role, progress: Option<&TaskProgress>) -> TaskView {
    let mut view = task_view(task);
    if role < Role::Operator
        && let Some(task) = view.task.as_mut()
    {
        task.env.clear();
    }
    let worker_id = task.worker_id.as_deref().unwrap_or_default();
    view.progress = progress.map(|p| progress_message(&task.id, worker_id, p));
    view
}

/// The protobuf form of a task's pull progress.
pub fn progress_message(task_id: &str, worker_id: &str, progress: &TaskProgress) -> WireProgress {
    WireProgress {
        task_id: task_id.to_string(),
        worker_id: worker_id.to_string(),
        attempt: progress.attempt,
        phase: progress.phase.clone(),
        layers_done: progress.layers_done,
        layers_total: progress.layers_total,
        bytes_done: progress.bytes_done,
        bytes_total: progress.bytes_total,
        message: progress.message.clone(),
    }
}

/// The protobuf view of a task, whole (callers showing it to a viewer use
/// [`task_view_for`]).
pub fn task_view(task: &TaskRecord) -> TaskView {
    TaskView {
        task: Some(convert::task_message(task)),
        status: convert::task_status(task.state) as i32,
        worker_id: task.worker_id.clone().unwrap_or_default(),
        priority: task.priority,
        waiting_reason: String::new(), // filled by callers that know the scheduler's view
        created_at: Some(millis_timestamp(task.created_at)),
        updated_at: Some(millis_timestamp(task.updated_at)),
        exit_code: task.exit_code,
        error: task.error.clone().unwrap_or_default(),
        max_retries: task.max_retries,
        progress: None,
        owner: task.owner.clone(),
        attempt: task.attempt,
        started_at: task.started_at.map(millis_timestamp),
        finished_at: task.finished_at.map(millis_timestamp),
        oom_killed: task.oom_killed,
    }
}

pub(super) fn worker_view(
    entry: &WorkerEntry,
    reserved: &HashMap<String, (i64, i64)>,
) -> WorkerView {
    let info = entry.info.clone().unwrap_or_else(|| {
        let host = entry.record.host.clone().unwrap_or_default();
        WorkerInfo {
            worker_id: entry.record.id.clone(),
            address: entry.record.address.clone(),
            hostname: host.hostname,
            os: host.os,
            arch: host.arch,
            cpu_count: host.cpu_count,
            memory_total_bytes: host.memory_total_bytes,
            ..Default::default()
        }
    });
    let (cpus, memory) = reserved.get(&entry.record.id).copied().unwrap_or_default();
    let latest = entry.latest.clone();
    let busy_gpus: Vec<String> = latest
        .iter()
        .flat_map(|hb| {
            hb.gpus
                .iter()
                .filter(|g| !g.task_id.is_empty())
                .map(|g| g.uuid.clone())
        })
        .collect();
    let free = FreeResources {
        nano_cpus: (i64::from(info.cpu_count) * 1_000_000_000 - cpus).max(0),
        memory_bytes: (info.memory_total_bytes as i64 - memory).max(0),
        gpu_uuids: info
            .gpus
            .iter()
            .map(|g| g.uuid.clone())
            .filter(|u| !busy_gpus.contains(u))
            .collect(),
    };
    WorkerView {
        state: match entry.state {
            LiveState::Pending => WorkerState::Pending,
            LiveState::Active => WorkerState::Active,
            LiveState::Inactive => WorkerState::Inactive,
        } as i32,
        running_task_ids: latest
            .as_ref()
            .map(|hb| hb.running_task_ids.clone())
            .unwrap_or_default(),
        last_heartbeat_at: latest.as_ref().and_then(|hb| hb.timestamp),
        last_seen_ms_ago: entry
            .last_seen
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        placed_tasks: 0, // filled by callers that know the lifecycle
        latest,
        free: Some(free),
        info: Some(info),
    }
}
