//! The REPL's live and stored views of work: `monitor` (a task's output as it
//! runs, then its outcome), a finished task's stored output, and the
//! `--watch` redraw loop; all stop on Ctrl-C.

use crate::core::events::Event;
use crate::core::events::TaskProgress;
use crate::error::{MasterError, MasterResult};
use crate::services::Services;
use crate::store::{TaskRecord, TaskState};
use cloudai_common::ids::TaskId;
use cloudai_common::units::format_duration;
use futures::StreamExt;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `monitor` waits for the final report after the log stream ends.
const FINAL_STATE_WAIT: Duration = Duration::from_secs(30);

/// Prints a view once, or (with `--watch`) redraws it in place every
/// heartbeat until Ctrl-C: the cursor goes home and each line is overwritten,
/// so the screen does not flicker or fill the scrollback.
pub(super) async fn watch_or_once<F, Fut>(
    services: &Services,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
    watch: bool,
    render: F,
) -> MasterResult<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = MasterResult<String>>,
{
    if !watch {
        let _ = write!(out, "{}", render().await?);
        return Ok(());
    }
    let interval = services.settings.heartbeat_interval;
    // On a terminal any key stops the view too (raw mode while it runs).
    let keys = super::keys::KeyStop::start();
    let _ = write!(out, "\x1b[2J");
    let outcome = loop {
        let frame = match render().await {
            Ok(frame) => frame,
            Err(error) => break Err(error),
        };
        let mut screen = String::from("\x1b[H");
        for line in frame.lines() {
            screen.push_str(line);
            screen.push_str("\x1b[K\r\n");
        }
        screen.push_str(&format!(
            "(redraws every {}; any key or Ctrl-C stops)\x1b[K\r\n\x1b[J",
            format_duration(interval)
        ));
        let _ = out.write_all(screen.as_bytes());
        let _ = out.flush();
        tokio::select! {
            _ = interrupt.cancelled() => break Ok(()),
            _ = keys.pressed() => break Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    };
    keys.stop().await;
    outcome
}

/// Prints the final line of a task: state, exit code, reason.
pub(super) fn print_outcome(task: &TaskRecord, out: &mut dyn Write) -> std::io::Result<()> {
    let exit = task
        .exit_code
        .map_or(String::new(), |c| format!(" (exit code {c})"));
    let reason = task
        .error
        .as_deref()
        .map_or(String::new(), |e| format!(": {e}"));
    writeln!(out, "task {} {}{exit}{reason}", task.id, task.state)
}

pub(super) async fn print_stored_logs(
    services: &Services,
    task: &TaskRecord,
    out: &mut dyn Write,
) -> MasterResult<()> {
    if !task.state.is_terminal() {
        return Err(MasterError::FailedPrecondition(format!(
            "task '{}' is {}; its output is stored when it ends: `monitor {}` follows it live",
            task.id, task.state, task.id
        )));
    }
    let Some(output) = services.tasks.stored_output(task).await? else {
        let _ = writeln!(out, "[no output stored]");
        let _ = print_outcome(task, out);
        return Ok(());
    };
    let mut pieces = std::pin::pin!(output.pieces());
    let mut ends_in_newline = true;
    while let Some(piece) = pieces.next().await {
        let piece = piece?;
        let _ = out.write_all(&piece);
        ends_in_newline = piece.ends_with(b"\n");
    }
    if !ends_in_newline {
        let _ = writeln!(out);
    }
    let _ = print_outcome(task, out);
    Ok(())
}

pub(super) async fn monitor(
    services: &Services,
    task_id: &TaskId,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> MasterResult<()> {
    let mut events = services.events.subscribe();
    let task = services.tasks.task(task_id).await?;
    if task.state.is_terminal() {
        return print_stored_logs(services, &task, out).await;
    }
    if task.state == TaskState::Queued || task.state == TaskState::Lost {
        return Err(MasterError::FailedPrecondition(format!(
            "task '{task_id}' is {} and has no output yet; try again when it runs",
            task.state
        )));
    }
    let mut stream = services.tasks.follow_logs(&task).await?;
    let stopped = |out: &mut dyn Write| {
        let _ = writeln!(
            out,
            "[stopped following {task_id}; it keeps running: `monitor {task_id}` resumes]"
        );
    };
    // While its worker pulls the image, the pull's progress, a line per change.
    let mut shown = String::new();
    let mut show_progress = |out: &mut dyn Write, progress: &TaskProgress| {
        let line = progress.describe();
        if line != shown {
            let _ = writeln!(out, "[{line}]");
            let _ = out.flush();
            shown = line;
        }
    };
    if let Some(progress) = services.lifecycle.progress(task_id) {
        show_progress(out, &progress);
    }
    loop {
        let chunk = tokio::select! {
            _ = interrupt.cancelled() => {
                stopped(out);
                return Ok(());
            }
            event = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                    // The master is stopping.
                    stopped(out);
                    return Ok(());
                }
                if let Ok(envelope) = event
                    && let Event::TaskProgress { task_id: id, progress, .. } = &envelope.event
                    && id == task_id.as_str()
                {
                    show_progress(out, progress);
                }
                continue;
            }
            chunk = stream.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        match chunk {
            Ok(chunk) => {
                let _ = out.write_all(&chunk.data);
                let _ = out.flush();
            }
            Err(status) => {
                let _ = writeln!(out, "[log stream ended: {}]", status.message());
                break;
            }
        }
    }
    // The stream ends when the container exits; the final report follows shortly.
    let deadline = tokio::time::Instant::now() + FINAL_STATE_WAIT;
    let waited = tokio::select! {
        _ = interrupt.cancelled() => {
            stopped(out);
            return Ok(());
        }
        waited = services.lifecycle.wait_until_final(task_id, &mut events, deadline) => waited?,
    };
    match waited {
        Some(task) => {
            let _ = print_outcome(&task, out);
        }
        None => {
            let task = services.tasks.task(task_id).await?;
            let _ = writeln!(
                out,
                "task {task_id} is still {}: its worker has not reported yet",
                task.state
            );
        }
    }
    Ok(())
}
