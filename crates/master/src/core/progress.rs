//! Pull progress of assigned tasks, as their workers report it: kept in
//! memory by the lifecycle while a task is `assigned` (dropped when it
//! leaves that state), and sent to every listener as a `task_progress` event.

use crate::core::events::{Event, TaskProgress};
use crate::core::lifecycle::Lifecycle;
use crate::error::{MasterError, MasterResult};
use crate::store::{TaskState, now_millis};

/// Longest note kept from a report.
const MAX_MESSAGE: usize = 512;

impl TaskProgress {
    /// One line for people: `pulling 43% (1.2 of 2.8 GiB)`, or the layer
    /// count while no size is known yet.
    pub fn describe(&self) -> String {
        cloudai_common::units::describe_pull(&cloudai_proto::v1::TaskProgress {
            phase: self.phase.clone(),
            layers_done: self.layers_done,
            layers_total: self.layers_total,
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total,
            message: self.message.clone(),
            ..Default::default()
        })
    }
}

impl Lifecycle {
    /// Takes a worker's progress report for a task it holds as `assigned`;
    /// a report about any other task (ended, started, moved) is dropped.
    /// Returns whether it was kept.
    pub fn record_progress(&self, report: &cloudai_proto::v1::TaskProgress) -> MasterResult<bool> {
        if report.phase != "pulling" {
            return Err(MasterError::InvalidArgument(format!(
                "phase: '{}' is not one of: pulling",
                report.phase.escape_debug()
            )));
        }
        let mut message = report.message.clone();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let progress = TaskProgress {
            attempt: report.attempt,
            phase: report.phase.clone(),
            layers_done: report.layers_done.min(report.layers_total),
            layers_total: report.layers_total,
            bytes_done: report.bytes_done.min(report.bytes_total),
            bytes_total: report.bytes_total,
            message,
            updated_at: now_millis(),
        };
        {
            // The index's lock first, as `index_task` takes them: no report
            // lands after the task left `assigned`.
            let active = self.active_tasks();
            let held = active.get(&report.task_id).is_some_and(|t| {
                t.state == TaskState::Assigned
                    && t.worker_id.as_deref() == Some(report.worker_id.as_str())
            });
            if !held {
                return Ok(false);
            }
            let mut map = self.progress_map();
            if map
                .get(&report.task_id)
                .is_some_and(|p| p.attempt > progress.attempt)
            {
                return Ok(false);
            }
            map.insert(report.task_id.clone(), progress.clone());
        }
        self.events().emit(Event::TaskProgress {
            task_id: report.task_id.clone(),
            worker_id: report.worker_id.clone(),
            text: progress.describe(),
            progress,
        });
        Ok(true)
    }

    /// The latest progress of an assigned task, if its worker reported any.
    pub fn progress(&self, task_id: &str) -> Option<TaskProgress> {
        self.progress_map().get(task_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(done: u64, total: u64, layers: (u32, u32), message: &str) -> TaskProgress {
        TaskProgress {
            attempt: 1,
            phase: "pulling".into(),
            layers_done: layers.0,
            layers_total: layers.1,
            bytes_done: done,
            bytes_total: total,
            message: message.into(),
            updated_at: 0,
        }
    }

    #[test]
    fn progress_reads_like_a_person_would_say_it() {
        let gib = 1u64 << 30;
        let big = progress(gib * 12 / 10, gib * 28 / 10, (1, 5), "");
        assert_eq!(big.describe(), "pulling 42% (1.2 of 2.8 GiB)");
        let mixed = progress(512 << 20, 2 * gib, (0, 2), "");
        assert_eq!(mixed.describe(), "pulling 25% (512.0 MiB of 2.0 GiB)");
        assert_eq!(
            progress(0, 0, (0, 3), "").describe(),
            "pulling (0 of 3 layers)"
        );
        assert_eq!(progress(0, 0, (0, 0), "").describe(), "pulling");
        let retrying = progress(0, 0, (0, 0), "retrying in 2s: connection refused");
        assert_eq!(
            retrying.describe(),
            "pulling: retrying in 2s: connection refused"
        );
    }
}
