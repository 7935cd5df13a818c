//! The REPL's grammar as clap subcommands, and the step from what clap parsed
//! (or the error it gave) to a [`Command`] (or a one-line message).

use super::task::{self, TaskArgs};
use super::{Command, TaskFilter, task_id, unknown_command, usage, usage_error, worker_id};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cloudai_proto::v1::TaskStatus;

/// One REPL line, without a binary name. Help and version flags are off: `help`
/// is a command, and a word like `--help` is an argument like any other.
/// Words that name something (ids, names, roles) may start with `-`.
#[derive(Debug, Parser)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    args_override_self = true
)]
pub(super) enum Repl {
    #[command(alias = "?")]
    Help {
        #[arg(allow_hyphen_values = true)]
        topic: Option<String>,
    },
    Status {
        #[arg(short, long)]
        watch: bool,
    },
    Workers,
    Stats {
        worker: Option<String>,
        #[arg(short, long)]
        watch: bool,
    },
    Register {
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(allow_hyphen_values = true)]
        address: String,
    },
    Unregister {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    #[command(alias = "run")]
    Task(Box<TaskArgs>),
    Tasks {
        #[arg(long, allow_hyphen_values = true, value_parser = parse_state)]
        state: Option<TaskStatus>,
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        worker: Option<String>,
        #[arg(long, value_name = "USER", allow_hyphen_values = true)]
        owner: Option<String>,
        #[arg(long, value_name = "IMAGE", allow_hyphen_values = true)]
        image: Option<String>,
        #[arg(long, value_name = "DUR", value_parser = parse_since)]
        since: Option<std::time::Duration>,
        #[arg(long, value_name = "DUR", value_parser = parse_until)]
        until: Option<std::time::Duration>,
        #[arg(long, value_name = "CURSOR", allow_hyphen_values = true)]
        cursor: Option<String>,
        #[arg(long)]
        newest: bool,
        #[arg(long, value_name = "N", value_parser = parse_limit)]
        limit: Option<u32>,
    },
    Monitor {
        #[arg(allow_hyphen_values = true)]
        task: String,
    },
    Logs {
        #[arg(allow_hyphen_values = true)]
        task: String,
        #[arg(short, long)]
        follow: bool,
    },
    Cancel {
        #[arg(allow_hyphen_values = true)]
        task: String,
    },
    JoinToken {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    Certs,
    Users,
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    Secrets,
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    #[command(alias = "quit")]
    Exit,
}

/// `user add|remove`.
#[derive(Debug, Subcommand)]
pub(super) enum UserAction {
    Add {
        #[arg(allow_hyphen_values = true)]
        name: String,
        #[arg(allow_hyphen_values = true)]
        role: String,
    },
    Remove {
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
}

/// `token create|revoke`.
#[derive(Debug, Subcommand)]
pub(super) enum TokenAction {
    Create {
        #[arg(allow_hyphen_values = true)]
        user: String,
        #[arg(long, value_name = "DUR", value_parser = parse_expires)]
        expires: Option<std::time::Duration>,
    },
    Revoke {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

/// `secret set|remove`.
#[derive(Debug, Subcommand)]
pub(super) enum SecretAction {
    Set {
        #[arg(allow_hyphen_values = true)]
        name: String,
        #[arg(long, value_name = "HOST")]
        registry: Option<String>,
    },
    Remove {
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
}

/// Parses the words of a non-blank line; `words[0]` is the command name.
pub(super) fn parse(words: &[String]) -> Result<Command, String> {
    let mut grammar = Repl::command();
    let typed = words.first().map_or("", String::as_str);
    // Unknown names get the edit-distance suggestion rather than clap's.
    let Some(name) = grammar
        .find_subcommand(typed)
        .map(|sub| sub.get_name().to_string())
    else {
        return Err(unknown_command(typed));
    };
    let parsed = grammar
        .try_get_matches_from_mut(words)
        .and_then(|matches| Repl::from_arg_matches(&matches));
    match parsed {
        Ok(repl) => repl.into_command(words),
        Err(error) => {
            let positionals = grammar
                .find_subcommand(&name)
                .map_or(0, |sub| sub.get_positionals().count());
            Err(message(&name, typed, positionals, &error))
        }
    }
}

impl Repl {
    fn into_command(self, words: &[String]) -> Result<Command, String> {
        Ok(match self {
            Repl::Help { topic } => {
                if let Some(topic) = &topic
                    && usage(topic).is_none()
                {
                    return Err(unknown_command(topic));
                }
                Command::Help(topic)
            }
            Repl::Status { watch } => Command::Status { watch },
            Repl::Workers => Command::Workers,
            Repl::Stats { worker, watch } => Command::Stats { worker, watch },
            Repl::Register { id, address } => Command::Register {
                id: worker_id(&id)?,
                address,
            },
            Repl::Unregister { id } => Command::Unregister {
                id: worker_id(&id)?,
            },
            Repl::Task(args) => Command::Task(Box::new(args.into_submission(words)?)),
            Repl::Tasks {
                state,
                worker,
                owner,
                image,
                since,
                until,
                cursor,
                newest,
                limit,
            } => Command::Tasks(TaskFilter {
                state,
                worker,
                owner,
                image,
                newest_first: newest,
                limit,
                since,
                until,
                cursor,
            }),
            Repl::Monitor { task } => Command::Monitor {
                task_id: task_id(&task)?,
            },
            Repl::Logs { task, follow } => Command::Logs {
                task_id: task_id(&task)?,
                follow,
            },
            Repl::Cancel { task } => Command::Cancel {
                task_id: task_id(&task)?,
            },
            Repl::JoinToken { id } => Command::JoinToken {
                id: worker_id(&id)?,
            },
            Repl::Certs => Command::Certs,
            Repl::Users => Command::Users,
            Repl::User {
                action: UserAction::Add { name, role },
            } => Command::UserAdd { name, role },
            Repl::User {
                action: UserAction::Remove { name },
            } => Command::UserRemove { name },
            Repl::Token {
                action: TokenAction::Create { user, expires },
            } => Command::TokenCreate { user, expires },
            Repl::Token {
                action: TokenAction::Revoke { id },
            } => Command::TokenRevoke { id },
            Repl::Secrets => Command::Secrets,
            Repl::Secret {
                action: SecretAction::Set { name, registry },
            } => Command::SecretSet {
                name,
                registry,
                value: None,
            },
            Repl::Secret {
                action: SecretAction::Remove { name },
            } => Command::SecretRemove { name },
            Repl::Exit => Command::Exit,
        })
    }
}

/// The one-line message for a clap error in command `name` (typed as `typed`,
/// which may be an alias), in the "<problem>; usage: <usage>" form.
fn message(name: &str, typed: &str, positionals: usize, error: &clap::Error) -> String {
    let problem = match name {
        "task" => return task::message(error),
        "tasks" | "logs" if error.kind() == ErrorKind::ValueValidation => {
            super::validation_message(error)
        }
        "help" => "too many arguments".to_string(),
        "status" | "stats" | "tasks" => "unexpected arguments".to_string(),
        "user" => "expected `user add <name> <role>` or `user remove <name>`".to_string(),
        "token" if error.kind() == ErrorKind::ValueValidation => super::validation_message(error),
        "token" => "expected `token create <user> [--expires DUR]` or `token revoke <token-id>`"
            .to_string(),
        "secret" => {
            "expected `secret set <name> [--registry HOST]` or `secret remove <name>`".to_string()
        }
        "secrets" => "unexpected arguments".to_string(),
        // The rest take only a fixed number of words.
        _ => format!(
            "{typed} takes {positionals} argument{}",
            if positionals == 1 { "" } else { "s" }
        ),
    };
    usage_error(name, &problem)
}

fn parse_expires(text: &str) -> Result<std::time::Duration, String> {
    let lifetime =
        cloudai_common::units::parse_duration(text).map_err(|e| format!("--expires: {e}"))?;
    if lifetime < std::time::Duration::from_secs(1) {
        return Err(format!(
            "--expires: '{text}' is shorter than the 1s minimum"
        ));
    }
    Ok(lifetime)
}

fn parse_state(text: &str) -> Result<TaskStatus, String> {
    crate::views::parse_state(text).ok_or_else(|| format!("unknown state '{text}'"))
}

fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    cloudai_common::units::parse_duration(text).map_err(|e| format!("--since: {e}"))
}

fn parse_until(text: &str) -> Result<std::time::Duration, String> {
    cloudai_common::units::parse_duration(text).map_err(|e| format!("--until: {e}"))
}

fn parse_limit(text: &str) -> Result<u32, String> {
    text.parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| format!("--limit: '{text}' is not a count from 1 to 10000"))
}
