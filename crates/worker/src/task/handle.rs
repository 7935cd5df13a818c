//! A task the worker holds, from assignment until its result is acknowledged
//! ([`TaskHandle`]: its output, whether it runs, the request to stop it), and
//! why it is stopped early ([`StopReason`]).

use crate::task::logs::LogBuffer;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a task is being stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Operator or master cancelled it.
    Cancelled,
    /// It ran past its timeout.
    TimedOut,
    /// The worker lost the master for longer than the disconnect window.
    Disconnected,
}

/// A task the worker holds, from assignment until its result is acknowledged.
pub struct TaskHandle {
    /// Its output.
    pub logs: Arc<LogBuffer>,
    /// Cancelled to stop the container early.
    pub stop: CancellationToken,
    /// Why it was stopped, if it was.
    pub reason: Mutex<Option<StopReason>>,
    /// Whether its container is running (reported in heartbeats).
    pub running: std::sync::atomic::AtomicBool,
    /// Attempt number.
    pub attempt: u32,
    /// Its result is queued for delivery: nothing left to stop.
    pub done: std::sync::atomic::AtomicBool,
    /// Grace period asked for by the master's cancel, if any.
    grace: Mutex<Option<Duration>>,
}

impl TaskHandle {
    /// A handle for a new task.
    pub fn new(attempt: u32) -> Self {
        Self {
            logs: Arc::new(LogBuffer::new()),
            stop: CancellationToken::new(),
            reason: Mutex::new(None),
            running: false.into(),
            attempt,
            done: false.into(),
            grace: Mutex::new(None),
        }
    }

    /// Asks the task to stop for `reason` (the first reason wins).
    pub fn request_stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        self.stop.cancel();
    }

    /// Asks the task to stop with a specific SIGTERM-to-SIGKILL grace period.
    pub fn request_stop_with_grace(&self, reason: StopReason, grace: Duration) {
        *self.grace.lock().unwrap_or_else(|p| p.into_inner()) = Some(grace);
        self.request_stop(reason);
    }

    pub(super) fn grace(&self) -> Option<Duration> {
        *self.grace.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}
