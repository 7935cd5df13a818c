//! Runs parsed REPL commands against the master and writes what the operator sees.

use super::follow::{monitor, print_stored_logs, watch_or_once};
use super::parse::{COMMANDS, Command, usage};
use super::views;
use crate::core::workers::Registration;
use crate::error::{MasterError, MasterResult};
use crate::services::Services;
use crate::store::{TaskRecord, TaskState};
use cloudai_common::ids::WorkerId;
use std::io::Write;
use tokio_util::sync::CancellationToken;

/// What the REPL does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// Stop the master.
    Exit,
}

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
            let task = services.tasks.submit_task(*request).await?;
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
        Command::Secrets => {
            let secrets = services.secrets.list().await?;
            if secrets.is_empty() {
                writeln!(
                    out,
                    "no secrets: `secret set <name>` adds one (`--registry HOST` for a registry login)"
                )?;
            }
            for secret in secrets {
                let kind = match &secret.registry {
                    Some(host) => format!("registry login for {host}"),
                    None => "env".to_string(),
                };
                writeln!(
                    out,
                    "{:<24} {:<36} set {}",
                    secret.name,
                    kind,
                    views::age(secret.updated_at)
                )?;
            }
        }
        Command::SecretSet {
            name,
            registry,
            value,
        } => {
            let Some(value) = value else {
                writeln!(
                    out,
                    "error: secret {name}: no value was read; nothing was set"
                )?;
                return Ok(Flow::Continue);
            };
            let replaced = services
                .secrets
                .set(&name, &value, registry.as_deref())
                .await?;
            let what = if replaced { "replaced" } else { "set" };
            match registry {
                Some(host) => writeln!(
                    out,
                    "secret {name} {what}: the login for registry {host} (used for pulls of its images)"
                )?,
                None => writeln!(
                    out,
                    "secret {name} {what}; tasks use it with --secret ENV={name}"
                )?,
            }
        }
        Command::SecretRemove { name } => {
            services.secrets.remove(&name).await?;
            writeln!(out, "secret {name} removed")?
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
