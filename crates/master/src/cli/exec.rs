//! Runs parsed REPL commands against the master and writes what the operator sees.

use super::parse::{COMMANDS, Command, usage};
use super::views;
use crate::core::workers::Registration;
use crate::error::{MasterError, MasterResult};
use crate::services::Services;
use crate::store::{TaskRecord, TaskState};
use cloudai_common::ids::{TaskId, WorkerId};
use cloudai_common::units::format_duration;
use futures::StreamExt;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the REPL does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// Stop the master.
    Exit,
}

/// How long `monitor` waits for the final report after the log stream ends.
const FINAL_STATE_WAIT: Duration = Duration::from_secs(30);

/// Executes one command. Failures are written as one `error: …` line; the REPL
/// keeps going. `interrupt` is cancelled by Ctrl-C: live views stop and return
/// to the prompt.
pub async fn execute(
    services: &Services,
    command: Command,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> std::io::Result<Flow> {
    match run(services, command, out, interrupt).await {
        Ok(flow) => Ok(flow),
        Err(Failure::Master(error)) => {
            writeln!(out, "error: {error}")?;
            Ok(Flow::Continue)
        }
        Err(Failure::Io(error)) => Err(error),
    }
}

enum Failure {
    Master(MasterError),
    Io(std::io::Error),
}

impl From<MasterError> for Failure {
    fn from(error: MasterError) -> Self {
        Failure::Master(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

async fn run(
    services: &Services,
    command: Command,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Flow, Failure> {
    match command {
        Command::Empty => {}
        Command::Help(None) => {
            writeln!(out, "commands:")?;
            for (name, _, about) in COMMANDS {
                writeln!(out, "  {name:<11} {about}")?;
            }
            writeln!(out, "`help <command>` shows its usage")?;
        }
        Command::Help(Some(topic)) => {
            let about = COMMANDS
                .iter()
                .find(|(n, _, _)| *n == topic)
                .map_or("", |(_, _, a)| *a);
            writeln!(
                out,
                "usage: {}\n  {about}",
                usage(&topic).unwrap_or_default()
            )?;
        }
        Command::Status { watch } => {
            let colour = views::colour_enabled();
            // The live view adds the worker table to the summary.
            watch_or_once(services, out, interrupt, watch, || async move {
                let summary = views::status(services, colour).await?;
                Ok(if watch {
                    format!("{summary}\n{}", views::workers(services, colour))
                } else {
                    summary
                })
            })
            .await?
        }
        Command::Workers => write!(out, "{}", views::workers(services, views::colour_enabled()))?,
        Command::Stats { worker, watch } => {
            let colour = views::colour_enabled();
            let worker = worker.as_deref();
            watch_or_once(services, out, interrupt, watch, || async move {
                views::stats(services, worker, colour)
            })
            .await?
        }
        Command::Register { id, address } => {
            writeln!(out, "{}", register(services, &id, &address).await?)?
        }
        Command::Unregister { id } => {
            services.workers.unregister(&id).await?;
            writeln!(out, "worker {id} unregistered; it is no longer accepted")?
        }
        Command::Task(request) => {
            let task = services.tasks.submit_task(request).await?;
            match task.state {
                TaskState::Failed => writeln!(
                    out,
                    "task {} failed to start: {}",
                    task.id,
                    task.error.as_deref().unwrap_or("unknown error")
                )?,
                TaskState::Queued => writeln!(
                    out,
                    "task {} queued for placement (`tasks` shows why it waits; `monitor {}` once it runs)",
                    task.id, task.id
                )?,
                state => writeln!(
                    out,
                    "task {} {state} on {} (follow it with `monitor {}`)",
                    task.id,
                    task.worker_id.as_deref().unwrap_or("-"),
                    task.id
                )?,
            }
        }
        Command::Tasks { state } => {
            let tasks: Vec<TaskRecord> = services
                .store
                .list_tasks()
                .await
                .map_err(MasterError::from)?
                .into_iter()
                .filter(|t| state.is_none_or(|s| t.state == s))
                .collect();
            write!(out, "{}", views::tasks(services, &tasks))?;
        }
        Command::Monitor { task_id } => monitor(services, &task_id, out, interrupt).await?,
        Command::Logs { task_id } => {
            let task = services.tasks.task(&task_id).await?;
            print_stored_logs(services, &task, out).await?;
        }
        Command::Cancel { task_id } => {
            let task = services.tasks.cancel_task(&task_id).await?;
            if task.state == TaskState::Cancelled {
                writeln!(out, "task {task_id} cancelled")?;
            } else {
                writeln!(
                    out,
                    "task {task_id}: stop requested from {}",
                    task.worker_id.as_deref().unwrap_or("-")
                )?;
            }
        }
        Command::JoinToken { id } => match services.auth.issue_join_token(&id).await? {
            Some(token) => {
                let address = services
                    .workers
                    .registry()
                    .get(&id)
                    .map(|w| w.record.address)
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}",
                    join_instructions(services, &id, &address, &token)
                )?;
            }
            None => writeln!(
                out,
                "this master runs with --insecure: workers join without tokens"
            )?,
        },
        Command::Certs => write!(out, "{}", views::certs(services))?,
        Command::Users => {
            let users = services.auth.users().await?;
            if users.is_empty() {
                writeln!(
                    out,
                    "no users: `user add <name> <admin|operator|viewer>` adds one"
                )?;
            }
            for user in users {
                let ids: Vec<&str> = user.tokens.iter().map(|t| t.id.as_str()).collect();
                writeln!(
                    out,
                    "{:<20} {:<9} tokens: {}",
                    user.name,
                    user.role,
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.join(", ")
                    }
                )?;
            }
        }
        Command::UserAdd { name, role } => {
            let role = services.auth.add_user(&name, &role).await?;
            writeln!(
                out,
                "user {name} added as {}; `token create {name}` makes an API token",
                role.as_str()
            )?
        }
        Command::UserRemove { name } => {
            services.auth.remove_user(&name).await?;
            writeln!(out, "user {name} removed; their tokens no longer work")?
        }
        Command::TokenCreate { user } => {
            let token = services.auth.create_token(&user).await?;
            writeln!(
                out,
                "API token for {user} (shown once; store it safely): {token}"
            )?;
        }
        Command::TokenRevoke { id } => {
            let user = services.auth.revoke_token(&id).await?;
            writeln!(out, "token {id} of {user} revoked")?
        }
        Command::Exit => return Ok(Flow::Exit),
    }
    Ok(Flow::Continue)
}

/// Pre-registers a worker, then gives it a join token (with TLS) or invites
/// it; says what that achieved.
async fn register(services: &Services, id: &WorkerId, address: &str) -> MasterResult<String> {
    match services.workers.register(id, address).await? {
        Registration::Existing(state) => Ok(format!(
            "worker {id} is already registered at {address} ({})",
            state.as_str()
        )),
        Registration::Added => {
            if let Some(token) = services.auth.issue_join_token(id).await? {
                return Ok(join_instructions(services, id, address, &token));
            }
            Ok(match services.workers.invite(id, address).await {
                Ok(()) => {
                    format!("worker {id} registered at {address}; it accepted the invitation")
                }
                Err(reason) => format!(
                    "worker {id} registered at {address}; not reachable yet ({reason}); it will be accepted when it starts"
                ),
            })
        }
    }
}

/// What the operator needs to start a worker with its join token.
fn join_instructions(services: &Services, id: &str, address: &str, token: &str) -> String {
    let ttl = cloudai_common::units::format_duration(services.auth.join_token_ttl());
    let master = services.workers.address_for_workers("<this-master-host>");
    format!(
        "worker {id} registered at {address}\njoin token (single use, expires in {ttl}): {token}\nstart the worker with: cloudai-worker --id {id} --master {master} --join-token {token}"
    )
}

/// Prints a view once, or (with `--watch`) redraws it in place every
/// heartbeat until Ctrl-C: the cursor goes home and each line is overwritten,
/// so the screen does not flicker or fill the scrollback.
async fn watch_or_once<F, Fut>(
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
fn print_outcome(task: &TaskRecord, out: &mut dyn Write) -> std::io::Result<()> {
    let exit = task
        .exit_code
        .map_or(String::new(), |c| format!(" (exit code {c})"));
    let reason = task
        .error
        .as_deref()
        .map_or(String::new(), |e| format!(": {e}"));
    writeln!(out, "task {} {}{exit}{reason}", task.id, task.state)
}

async fn print_stored_logs(
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

async fn monitor(
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
    loop {
        let chunk = tokio::select! {
            _ = interrupt.cancelled() => {
                stopped(out);
                return Ok(());
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
