//! Runs parsed commands against a master through a [`Client`] and writes
//! what the operator sees: the same code for the master's console and for
//! `cloudai`, so the same state prints the same way.

use crate::client::Client;
use crate::follow::{output, watch_or_once};
use crate::parse::{COMMANDS, Command, TaskFilter, usage};
use crate::views::{self, CertJson, SecretJson, StatusJson, TaskJson, UserJson, WorkerJson};
use cloudai_proto::v1::{ListTasksRequest, TaskStatus, WorkerView};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the REPL does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// Leave (at the master's console: stop the master).
    Exit,
}

/// How read commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Tables and lines for people.
    #[default]
    Text,
    /// One JSON document (schema in docs/CLI.md).
    Json,
}

/// Where commands run and how they print.
#[derive(Clone)]
pub struct Session {
    /// The master.
    pub client: Client,
    /// How read commands print.
    pub format: Format,
    /// Colour (a terminal without `NO_COLOR`).
    pub colour: bool,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The master refused or could not be reached.
    Api(tonic::Status),
    /// The command cannot run as typed.
    Usage(String),
    /// Writing the output failed.
    Io(std::io::Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Api(status)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

impl Failure {
    /// The one line that says what went wrong.
    pub fn message(&self, client: &Client) -> String {
        match self {
            Failure::Api(status) => client.explain(status),
            Failure::Usage(message) => message.clone(),
            Failure::Io(error) => error.to_string(),
        }
    }
}

/// What a command achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// What to do next.
    pub flow: Flow,
    /// The process exit code it asks for: 0, or a followed task's exit code.
    pub exit_code: i32,
}

impl Done {
    const OK: Done = Done {
        flow: Flow::Continue,
        exit_code: 0,
    };
}

/// Executes one command in the REPL: failures are written as one `error: …`
/// line and the REPL keeps going. `interrupt` is cancelled by Ctrl-C: live
/// views stop and return to the prompt.
pub async fn execute(
    session: &Session,
    command: Command,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> std::io::Result<Flow> {
    match run(session, command, out, interrupt).await {
        Ok(done) => Ok(done.flow),
        Err(Failure::Io(error)) => Err(error),
        Err(failure) => {
            writeln!(out, "error: {}", failure.message(&session.client))?;
            Ok(Flow::Continue)
        }
    }
}

fn json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Failure> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

/// A read command's answer: its items as a JSON list of `J`, or as `text`
/// renders them.
fn show<T, J>(
    out: &mut dyn Write,
    as_json: bool,
    items: &[T],
    text: impl FnOnce(&[T]) -> String,
) -> Result<(), Failure>
where
    J: for<'a> From<&'a T> + Serialize,
{
    if as_json {
        json(out, &items.iter().map(J::from).collect::<Vec<J>>())
    } else {
        Ok(write!(out, "{}", text(items))?)
    }
}

/// Runs one command; the caller reports a failure.
pub async fn run(
    session: &Session,
    command: Command,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Done, Failure> {
    let client = &session.client;
    let colour = session.colour;
    let as_json = session.format == Format::Json;
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
            if as_json {
                json(out, &StatusJson::from(&client.status().await?))?;
                return Ok(Done::OK);
            }
            let interval = watch_interval(client, watch).await?;
            // The live view adds the worker table to the summary.
            watch_or_once(out, interrupt, interval, || async move {
                let summary = views::status(&client.status().await?, colour);
                Ok(if watch {
                    format!("{summary}\n{}", views::workers(&workers(client).await?))
                } else {
                    summary
                })
            })
            .await?
        }
        Command::Workers => {
            show::<_, WorkerJson>(out, as_json, &workers(client).await?, views::workers)?
        }
        Command::Stats { worker, watch } => {
            let only = worker.as_deref();
            if as_json || !watch {
                let workers = chosen(client, only).await?;
                show::<_, WorkerJson>(out, as_json, &workers, |w| views::stats(w, colour))?;
                return Ok(Done::OK);
            }
            let interval = watch_interval(client, watch).await?;
            watch_or_once(out, interrupt, interval, || async move {
                Ok(views::stats(&chosen(client, only).await?, colour))
            })
            .await?
        }
        Command::Register { id, address } => {
            let answer = client.register(&id, &address).await?;
            let text = if answer.already_registered {
                format!(
                    "worker {id} is already registered at {address} ({})",
                    answer.state
                )
            } else if let Some(token) = &answer.join_token {
                views::join_instructions(token)
            } else if answer.invited {
                format!("worker {id} registered at {address}; it accepted the invitation")
            } else {
                format!(
                    "worker {id} registered at {address}; not reachable yet ({}); it will be accepted when it starts",
                    answer.invite_error
                )
            };
            writeln!(out, "{text}")?;
        }
        Command::Unregister { id } => {
            client.unregister(&id).await?;
            writeln!(out, "worker {id} unregistered; it is no longer accepted")?
        }
        Command::Task(submission) => {
            let submitted = client.submit(submission.request).await?;
            let id = submitted.task_id;
            // As it was when submitted (the queue may place it at once).
            match TaskStatus::try_from(submitted.status) {
                Ok(TaskStatus::Queued) => writeln!(
                    out,
                    "task {id} queued for placement (`tasks` shows why it waits; `monitor {id}` once it runs)"
                )?,
                Ok(TaskStatus::Failed) if !submission.follow => {
                    let task = client.task(&id).await?;
                    let error = if task.error.is_empty() {
                        "unknown error"
                    } else {
                        &task.error
                    };
                    writeln!(out, "task {id} failed to start: {error}")?;
                    return Ok(Done::OK);
                }
                _ => {
                    let task = client.task(&id).await?;
                    let worker = views::worker_of(&task);
                    writeln!(
                        out,
                        "task {id} {} on {worker} (follow it with `monitor {id}`)",
                        views::state_name(submitted.status)
                    )?
                }
            }
            if submission.follow {
                return Ok(match output(client, &id, true, out, interrupt).await? {
                    Some(ended) => Done {
                        flow: Flow::Continue,
                        exit_code: exit_code_of(&ended),
                    },
                    None => Done {
                        flow: Flow::Continue,
                        exit_code: 130,
                    },
                });
            }
        }
        Command::Tasks(filter) => {
            let answer = client.tasks(list_request(&filter)).await?;
            show::<_, TaskJson>(out, as_json, &answer.tasks, |tasks| {
                views::tasks(tasks, &answer.next_cursor)
            })?
        }
        Command::Monitor { task_id } => {
            output(client, &task_id, true, out, interrupt).await?;
        }
        Command::Logs { task_id, follow } => {
            output(client, &task_id, follow, out, interrupt).await?;
        }
        Command::Cancel { task_id } => {
            let answer = client.cancel(&task_id).await?;
            if answer.status == TaskStatus::Cancelled as i32 {
                writeln!(out, "task {task_id} cancelled")?;
            } else {
                let task = client.task(&task_id).await?;
                let worker = views::worker_of(&task);
                writeln!(out, "task {task_id}: stop requested from {worker}")?;
            }
        }
        Command::JoinToken { id } => match client.join_token(&id).await?.join_token {
            Some(token) => writeln!(out, "{}", views::join_instructions(&token))?,
            None => writeln!(
                out,
                "this master runs with --insecure: workers join without tokens"
            )?,
        },
        Command::Certs => {
            let answer = client.certificates().await?;
            show::<_, CertJson>(out, as_json, &answer.workers, |_| views::certs(&answer))?
        }
        Command::Users => {
            show::<_, UserJson>(out, as_json, &client.users().await?.users, views::users)?
        }
        Command::UserAdd { name, role } => {
            let role = client.add_user(&name, &role).await?.role;
            writeln!(
                out,
                "user {name} added as {role}; `token create {name}` makes an API token"
            )?
        }
        Command::UserRemove { name } => {
            client.remove_user(&name).await?;
            writeln!(out, "user {name} removed; their tokens no longer work")?
        }
        Command::TokenCreate { user, expires } => {
            // The grammar refuses less than a second; 0 means no expiry.
            let seconds = expires.map_or(0, |d| d.as_secs());
            let created = client.create_token(&user, seconds).await?;
            let until = if created.expires_at.is_some() {
                format!(
                    "\nit expires {}",
                    views::moment(created.expires_at.as_ref())
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "API token for {user} (shown once; store it safely): {}{until}",
                created.token
            )?;
        }
        Command::TokenRevoke { id } => {
            let user = client.revoke_token(&id).await?.user;
            writeln!(out, "token {id} of {user} revoked")?
        }
        Command::Secrets => show::<_, SecretJson>(
            out,
            as_json,
            &client.secrets().await?.secrets,
            views::secrets,
        )?,
        Command::SecretSet {
            name,
            registry,
            value,
        } => {
            let Some(value) = value else {
                return Err(Failure::Usage(format!(
                    "secret {name}: no value was read; nothing was set"
                )));
            };
            let replaced = client
                .set_secret(&name, &value, registry.as_deref())
                .await?
                .replaced;
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
            client.remove_secret(&name).await?;
            writeln!(out, "secret {name} removed")?
        }
        Command::Exit => {
            return Ok(Done {
                flow: Flow::Exit,
                exit_code: 0,
            });
        }
    }
    Ok(Done::OK)
}

/// The exit code `--follow` ends with: the container's, or 1 when the task
/// ended without one (failed to start, cancelled, timed out).
pub fn exit_code_of(task: &cloudai_proto::v1::TaskView) -> i32 {
    match (TaskStatus::try_from(task.status), task.exit_code) {
        (Ok(TaskStatus::Completed), Some(code)) => code,
        (_, Some(code)) if code != 0 => code,
        (Ok(TaskStatus::Completed), None) => 0,
        _ => 1,
    }
}

/// The redraw interval of `--watch`: the master's heartbeat interval.
async fn watch_interval(client: &Client, watch: bool) -> Result<Option<Duration>, Failure> {
    if !watch {
        return Ok(None);
    }
    let millis = client.status().await?.heartbeat_interval_ms.max(500);
    Ok(Some(Duration::from_millis(millis)))
}

async fn workers(client: &Client) -> Result<Vec<WorkerView>, Failure> {
    let mut workers = client.cluster_state().await?.workers;
    workers.sort_by(|a, b| worker_id(a).cmp(worker_id(b)));
    Ok(workers)
}

fn worker_id(view: &WorkerView) -> &str {
    view.info.as_ref().map_or("", |i| i.worker_id.as_str())
}

/// Every worker, or only `only` (an unknown one is an error).
async fn chosen(client: &Client, only: Option<&str>) -> Result<Vec<WorkerView>, Failure> {
    let workers: Vec<WorkerView> = workers(client)
        .await?
        .into_iter()
        .filter(|w| only.is_none_or(|id| worker_id(w) == id))
        .collect();
    if let Some(id) = only
        && workers.is_empty()
    {
        return Err(Failure::Api(tonic::Status::not_found(format!(
            "no worker '{id}': `workers` lists the registered ones"
        ))));
    }
    Ok(workers)
}

fn list_request(filter: &TaskFilter) -> ListTasksRequest {
    ListTasksRequest {
        state: filter.state.map_or(0, |s| s as i32),
        worker_id: filter.worker.clone().unwrap_or_default(),
        owner: filter.owner.clone().unwrap_or_default(),
        limit: filter.limit.unwrap_or(0),
        newest_first: filter.newest_first,
        since_seconds: filter.since.map_or(0, |d| d.as_secs().max(1)),
        image: filter.image.clone().unwrap_or_default(),
        cursor: filter.cursor.clone().unwrap_or_default(),
        until_seconds: filter.until.map_or(0, |d| d.as_secs().max(1)),
    }
}
