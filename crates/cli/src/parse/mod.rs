//! The REPL's command parser: a pure function from a line to a [`Command`].
//! shlex splits the line into words, clap parses them (the grammar in
//! `grammar.rs`, `task`'s options in `task.rs`), and every error becomes one
//! line ending in the command's usage.

mod grammar;
mod task;

pub use task::TaskSubmission;

use cloudai_common::ids::{TaskId, WorkerId};
use cloudai_proto::v1::TaskStatus;

/// One parsed REPL command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Blank line.
    Empty,
    /// `help [command]`.
    Help(Option<String>),
    /// `status [--watch]`: cluster summary.
    Status {
        /// Redraw every heartbeat until Ctrl-C.
        watch: bool,
    },
    /// `workers`: registered workers.
    Workers,
    /// `stats [worker] [--watch]`: latest metrics.
    Stats {
        /// Only this worker.
        worker: Option<String>,
        /// Redraw every heartbeat until Ctrl-C.
        watch: bool,
    },
    /// `register <id> <host:port>`.
    Register {
        /// Worker id.
        id: WorkerId,
        /// Worker address.
        address: String,
    },
    /// `unregister <id>`.
    Unregister {
        /// Worker id.
        id: WorkerId,
    },
    /// `task <worker|auto> <image> [options] [--] [command…]`.
    Task(Box<TaskSubmission>),
    /// `tasks [--state S] [--worker W] [--owner U] [--newest] [--limit N]`.
    Tasks(TaskFilter),
    /// `monitor <task>`: follow a running task's logs, or print a finished one's.
    Monitor {
        /// Task id.
        task_id: TaskId,
    },
    /// `logs <task> [-f]`: stored logs of a task, or (`-f`) its live output.
    Logs {
        /// Task id.
        task_id: TaskId,
        /// Follow it live until it ends.
        follow: bool,
    },
    /// `cancel <task>`.
    Cancel {
        /// Task id.
        task_id: TaskId,
    },
    /// `join-token <id>`: a new join token for a registered worker.
    JoinToken {
        /// Worker id.
        id: WorkerId,
    },
    /// `certs`: worker certificates and outstanding join tokens.
    Certs,
    /// `users`: API users and their token ids.
    Users,
    /// `user add <name> <role>`.
    UserAdd {
        /// User name.
        name: String,
        /// Role name.
        role: String,
    },
    /// `user remove <name>`.
    UserRemove {
        /// User name.
        name: String,
    },
    /// `token create <user> [--expires DUR]`.
    TokenCreate {
        /// User name.
        user: String,
        /// How long the token works (`None`: until revoked).
        expires: Option<std::time::Duration>,
    },
    /// `token revoke <token-id>`.
    TokenRevoke {
        /// Token id.
        id: String,
    },
    /// `secrets`: secret names (never values).
    Secrets,
    /// `secret set <name> [--registry HOST]`: the value is read next,
    /// without echo on a terminal (the REPL fills `value` before running it).
    SecretSet {
        /// Secret name.
        name: String,
        /// Registry host the secret logs in to (value `USER:PASSWORD`).
        registry: Option<String>,
        /// The value, once read.
        value: Option<String>,
    },
    /// `secret remove <name>`.
    SecretRemove {
        /// Secret name.
        name: String,
    },
    /// `exit`: stop the master.
    Exit,
}

/// Which tasks `tasks` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskStatus>,
    /// Only tasks of this worker.
    pub worker: Option<String>,
    /// Only tasks this user submitted.
    pub owner: Option<String>,
    /// Only tasks of this image.
    pub image: Option<String>,
    /// Newest first (default: the page oldest first).
    pub newest_first: bool,
    /// At most this many.
    pub limit: Option<u32>,
    /// Only tasks submitted this recently.
    pub since: Option<std::time::Duration>,
    /// Only tasks submitted longer ago than this.
    pub until: Option<std::time::Duration>,
    /// Only tasks older than this position (a listing's `--cursor` hint).
    pub cursor: Option<String>,
}

/// Name, usage and one-line description of every command.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "help",
        "help [command]",
        "list commands, or show one command's usage",
    ),
    (
        "status",
        "status [--watch]",
        "cluster summary: workers and tasks by state, store, uptime (--watch: live, with the worker table)",
    ),
    (
        "workers",
        "workers",
        "registered workers with state, address, resources and running tasks",
    ),
    (
        "stats",
        "stats [worker] [--watch]",
        "CPU, memory, disk and GPU bars of every worker, or of one (--watch: live until a key or Ctrl-C)",
    ),
    (
        "register",
        "register <id> <host:port>",
        "pre-register a worker and invite it to join",
    ),
    (
        "unregister",
        "unregister <id>",
        "remove a worker; it is no longer accepted",
    ),
    (
        "task",
        "task <worker|auto> <image> [--follow] [--cpus N] [--memory SIZE] [--gpus N|all|UUID,...] [--env K=V]... [--secret ENV=NAME]... [--timeout DUR] [--priority N] [--retries N] [--shm-size SIZE] [--user USER] [--workdir PATH] [--volume NAME|/HOST:/PATH[:ro]]... [--tmpfs /PATH[:SIZE]]... [--label K=V]... [--network bridge|none|host] [--ipc private|host] [--pull missing|always|never] [--pull-timeout DUR] [--] [command...]",
        "run a container task on a worker (or let the master pick one with auto); --follow streams its output and ends with its exit code",
    ),
    (
        "tasks",
        "tasks [--state STATE] [--worker ID] [--owner USER] [--image IMAGE] [--since DUR] [--until DUR] [--cursor C] [--newest] [--limit N]",
        "list the newest tasks, newest last; --cursor pages to older ones (states: queued assigned running completed failed cancelled timed_out lost unknown)",
    ),
    (
        "monitor",
        "monitor <task>",
        "follow a running task's output until it ends; print a finished task's stored output",
    ),
    (
        "logs",
        "logs <task> [-f]",
        "print a finished task's whole stored output (-f: follow a running one live, like monitor)",
    ),
    (
        "cancel",
        "cancel <task>",
        "stop a task (its container gets SIGTERM, then SIGKILL)",
    ),
    (
        "join-token",
        "join-token <id>",
        "issue a new single-use join token for a registered worker",
    ),
    (
        "certs",
        "certs",
        "worker certificates (fingerprint, expiry) and outstanding join tokens",
    ),
    ("users", "users", "API users with their roles and token ids"),
    (
        "user",
        "user add <name> <admin|operator|viewer> | user remove <name>",
        "manage API users",
    ),
    (
        "token",
        "token create <user> [--expires DUR] | token revoke <token-id>",
        "create an API token (shown once) or revoke one",
    ),
    (
        "secrets",
        "secrets",
        "secret names, registry logins and when they were set (never values)",
    ),
    (
        "secret",
        "secret set <name> [--registry HOST] | secret remove <name>",
        "set a secret (the value is read next, not echoed; with --registry it is USER:PASSWORD for that registry) or remove one",
    ),
    (
        "exit",
        "exit",
        "leave the REPL; at the master's own console this stops the master (Ctrl-D does the same)",
    ),
];

/// Usage line of a command.
pub fn usage(name: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, usage, _)| *usage)
}

fn usage_error(name: &str, problem: &str) -> String {
    format!("{problem}; usage: {}", usage(name).unwrap_or(name))
}

/// A worker id typed on the line, checked here once.
fn worker_id(text: &str) -> Result<WorkerId, String> {
    WorkerId::parse("worker id", text).map_err(|e| e.to_string())
}

fn task_id(text: &str) -> Result<TaskId, String> {
    TaskId::parse("task id", text).map_err(|e| e.to_string())
}

/// Why a REPL line is not a command: one line saying what was wrong and what
/// to type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl std::ops::Deref for ParseError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for ParseError {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for ParseError {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

/// The grammar as a clap command (for completion scripts).
pub fn grammar_command() -> clap::Command {
    use clap::CommandFactory;
    grammar::Repl::command()
}

/// Parses one REPL line.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let words = shlex::split(line)
        .ok_or_else(|| ParseError("unbalanced quotes: close every ' and \"".to_string()))?;
    if words.is_empty() {
        return Ok(Command::Empty);
    }
    grammar::parse(&words).map_err(ParseError)
}

fn unknown_command(name: &str) -> String {
    let closest = COMMANDS
        .iter()
        .map(|(n, _, _)| (edit_distance(name, n), n.len().abs_diff(name.len()), *n))
        .min()
        .filter(|(distance, _, _)| *distance <= 2);
    match closest {
        Some((_, _, suggestion)) => format!(
            "unknown command '{name}': did you mean `{suggestion}`? (`help` lists commands)"
        ),
        None => format!("unknown command '{name}': `help` lists commands"),
    }
}

/// Edit distance between two short words, counting a swap of neighbours as one
/// edit (optimal string alignment), so `stauts` is one edit from `status`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The message of a value parser's error: it names the option and says why.
fn validation_message(error: &clap::Error) -> String {
    std::error::Error::source(error).map_or_else(|| first_line(error), ToString::to_string)
}

/// The first line of clap's own rendering, without its `error: ` prefix: the
/// fallback for errors the grammar does not expect.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str) -> WorkerId {
        WorkerId::parse("worker", id).unwrap()
    }
    use cloudai_proto::v1::{ContainerOptions, ResourceLimits};

    /// A parsed `task` line, flattened for the assertions.
    struct Flat {
        placement: String,
        image: String,
        command: Vec<String>,
        env: std::collections::HashMap<String, String>,
        limits: ResourceLimits,
        timeout_seconds: u64,
        priority: i32,
        max_retries: u32,
        options: ContainerOptions,
        follow: bool,
    }

    fn task(line: &str) -> Flat {
        let submission = match parse(line).unwrap() {
            Command::Task(submission) => *submission,
            other => panic!("expected a task, got {other:?}"),
        };
        let request = submission.request;
        let task = request.task.unwrap();
        Flat {
            placement: request.worker_id,
            image: task.image,
            command: task.command,
            env: task.env,
            limits: task.limits.unwrap_or_default(),
            timeout_seconds: task.timeout_seconds,
            priority: request.priority,
            max_retries: request.max_retries,
            options: task.options.unwrap_or_default(),
            follow: submission.follow,
        }
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("").unwrap(), Command::Empty);
        assert_eq!(parse("   ").unwrap(), Command::Empty);
        assert_eq!(parse("help").unwrap(), Command::Help(None));
        assert_eq!(
            parse("help task").unwrap(),
            Command::Help(Some("task".into()))
        );
        assert_eq!(parse("status").unwrap(), Command::Status { watch: false });
        assert_eq!(
            parse("status --watch").unwrap(),
            Command::Status { watch: true }
        );
        assert_eq!(
            parse("stats w1 --watch").unwrap(),
            Command::Stats {
                worker: Some("w1".into()),
                watch: true
            }
        );
        assert_eq!(parse("workers").unwrap(), Command::Workers);
        assert_eq!(
            parse("stats").unwrap(),
            Command::Stats {
                worker: None,
                watch: false
            }
        );
        assert_eq!(
            parse("stats w1").unwrap(),
            Command::Stats {
                worker: Some("w1".into()),
                watch: false
            }
        );
        assert_eq!(
            parse("register w1 10.0.0.7:50052").unwrap(),
            Command::Register {
                id: worker("w1"),
                address: "10.0.0.7:50052".into()
            }
        );
        assert_eq!(
            parse("unregister w1").unwrap(),
            Command::Unregister { id: worker("w1") }
        );
        assert_eq!(
            parse("monitor t-1").unwrap(),
            Command::Monitor {
                task_id: TaskId::parse("t", "t-1").unwrap()
            }
        );
        assert_eq!(
            parse("logs t-1").unwrap(),
            Command::Logs {
                task_id: TaskId::parse("t", "t-1").unwrap(),
                follow: false
            }
        );
        assert_eq!(
            parse("logs -f t-1").unwrap(),
            Command::Logs {
                task_id: TaskId::parse("t", "t-1").unwrap(),
                follow: true
            }
        );
        assert_eq!(
            parse("cancel t-1").unwrap(),
            Command::Cancel {
                task_id: TaskId::parse("t", "t-1").unwrap()
            }
        );
        assert_eq!(
            parse("tasks").unwrap(),
            Command::Tasks(TaskFilter::default())
        );
        assert_eq!(
            parse("tasks --state failed").unwrap(),
            Command::Tasks(TaskFilter {
                state: Some(TaskStatus::Failed),
                ..TaskFilter::default()
            })
        );
        assert_eq!(
            parse("tasks --worker w1 --owner ana --newest --limit 5 --since 1h").unwrap(),
            Command::Tasks(TaskFilter {
                worker: Some("w1".into()),
                owner: Some("ana".into()),
                newest_first: true,
                limit: Some(5),
                since: Some(std::time::Duration::from_secs(3600)),
                ..TaskFilter::default()
            })
        );
        assert_eq!(parse("exit").unwrap(), Command::Exit);
        assert_eq!(
            parse("join-token w1").unwrap(),
            Command::JoinToken { id: worker("w1") }
        );
        assert_eq!(parse("certs").unwrap(), Command::Certs);
        assert_eq!(parse("users").unwrap(), Command::Users);
        assert_eq!(
            parse("user add ana viewer").unwrap(),
            Command::UserAdd {
                name: "ana".into(),
                role: "viewer".into()
            }
        );
        assert_eq!(
            parse("user remove ana").unwrap(),
            Command::UserRemove { name: "ana".into() }
        );
        assert_eq!(
            parse("token create ana").unwrap(),
            Command::TokenCreate {
                user: "ana".into(),
                expires: None
            }
        );
        assert_eq!(
            parse("token create ana --expires 30d").unwrap(),
            Command::TokenCreate {
                user: "ana".into(),
                expires: Some(std::time::Duration::from_secs(30 * 86_400))
            }
        );
        assert!(
            parse("token create ana --expires soon")
                .unwrap_err()
                .starts_with("--expires:")
        );
        assert_eq!(
            parse("token revoke ab12cd34").unwrap(),
            Command::TokenRevoke {
                id: "ab12cd34".into()
            }
        );
    }

    #[test]
    fn task_with_everything() {
        let request = task(
            "task w1 busybox --cpus 1.5 --memory 512m --gpus 2 --env A=1 --env B=x=y --timeout 90s --priority 5 --retries 2 -- sh -c 'echo hi; exit 3'",
        );
        assert_eq!((request.priority, request.max_retries), (5, 2));
        assert_eq!(request.placement, "w1");
        assert_eq!(request.image, "busybox");
        assert_eq!(request.limits.nano_cpus, 1_500_000_000);
        assert_eq!(request.limits.memory_bytes, 512 << 20);
        assert_eq!(request.limits.gpu_count, 2);
        assert_eq!(request.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(request.timeout_seconds, 90);
        assert_eq!(request.command, vec!["sh", "-c", "echo hi; exit 3"]);
    }

    #[test]
    fn task_with_container_options() {
        let request =
            task("task auto img --shm-size 8g --user 1000:1000 --workdir /ws -- python train.py");
        assert_eq!(request.options.shm_size_bytes, 8 << 30);
        assert_eq!(request.options.user, "1000:1000");
        assert_eq!(request.options.workdir, "/ws");
        assert_eq!(task("task auto img").options, ContainerOptions::default());
        assert!(task("task auto img --follow").follow);
        assert!(task("run auto img -f -- true").follow);
        assert!(!task("task auto img -- -f").follow);
        assert!(
            parse("task auto img --shm-size lots")
                .unwrap_err()
                .contains("--shm-size")
        );
    }

    #[test]
    fn task_command_without_separator_and_gpu_forms() {
        let request = task("task auto busybox echo --not-an-option");
        assert_eq!(request.placement, "");
        assert_eq!(request.command, vec!["echo", "--not-an-option"]);
        assert_eq!(task("task auto img --gpus all").limits.gpu_count, -1);
        let by_uuid = task("task auto img --gpus GPU-a,GPU-b");
        assert_eq!(by_uuid.limits.gpu_device_ids, vec!["GPU-a", "GPU-b"]);
        assert!(task("task auto img").command.is_empty());
    }

    #[test]
    fn errors_are_one_clear_line() {
        for (line, needle) in [
            ("stauts", "did you mean `status`"),
            ("frobnicate", "`help` lists commands"),
            ("register w1", "usage: register <id> <host:port>"),
            ("unregister", "usage: unregister <id>"),
            ("task", "needs a worker"),
            ("task w1", "needs a worker"),
            ("task w1 img --cpus", "--cpus needs a value"),
            ("task w1 img --cpus -1", "out of range"),
            ("task w1 img --cpus lots", "not a number"),
            ("task w1 img --memory -5m", "invalid size"),
            ("task w1 img --memory 12q", "invalid size"),
            ("task w1 img --gpus 99", "out of range"),
            ("task w1 img --env NOVALUE", "KEY=VALUE"),
            ("task w1 img --timeout soon", "invalid duration"),
            ("task w1 img --timeout 200ms", "1s minimum"),
            ("task w1 img --priority high", "not a whole number"),
            ("task w1 img --retries -1", "not a count"),
            ("task w1 img --retries 1000", "not a count"),
            ("task w1 img --bogus 1", "unknown option"),
            ("tasks --state sleeping", "unknown state"),
            ("tasks --limit 0", "--limit"),
            ("tasks --since soon", "--since"),
            ("monitor", "usage: monitor <task>"),
            ("help nope", "unknown command"),
            ("status now", "usage: status"),
            ("user add ana", "usage: user add"),
            ("token delete x", "usage: token create"),
            ("join-token", "usage: join-token <id>"),
            ("echo 'unterminated", "unbalanced quotes"),
        ] {
            let error = parse(line).expect_err(line);
            assert!(
                error.contains(needle),
                "{line:?} gave {error:?}, expected {needle:?}"
            );
            assert!(!error.contains('\n'), "{line:?} gave a multi-line error");
        }
    }

    #[test]
    fn options_go_anywhere_before_the_command() {
        let request = task("task --cpus 2 w1 img -m 1g echo --cpus 3 -e A=1");
        assert_eq!(request.placement, "w1");
        assert_eq!(request.image, "img");
        assert_eq!(request.limits.nano_cpus, 2_000_000_000);
        assert_eq!(request.limits.memory_bytes, 1 << 30);
        assert_eq!(request.command, vec!["echo", "--cpus", "3", "-e", "A=1"]);
        assert!(request.env.is_empty());
        // A repeated option: the last one wins; `--opt=value` works too.
        assert_eq!(task("task w1 img --priority 1 --priority=7").priority, 7);
    }

    #[test]
    fn double_dash_and_dashed_command_words() {
        let request = task("task w1 img --retries 1 -- --cpus 2 -- x");
        assert_eq!(request.max_retries, 1);
        assert_eq!(request.command, vec!["--cpus", "2", "--", "x"]);
        assert!(task("task w1 img --").command.is_empty());
        assert_eq!(task("task w1 -- img --x").command, vec!["--x"]);
        // An unknown short option starts the command, as it always did.
        assert_eq!(task("task w1 img -it sh").command, vec!["-it", "sh"]);
        assert_eq!(task("task w1 img -h").command, vec!["-h"]);
    }

    #[test]
    fn watch_flag_short_and_long_in_any_order() {
        assert_eq!(parse("status -w").unwrap(), Command::Status { watch: true });
        for line in ["stats -w w1", "stats w1 -w", "stats --watch w1"] {
            assert_eq!(
                parse(line).unwrap(),
                Command::Stats {
                    worker: Some("w1".into()),
                    watch: true
                },
                "{line}"
            );
        }
        assert_eq!(
            parse("stats -w").unwrap(),
            Command::Stats {
                worker: None,
                watch: true
            }
        );
    }

    #[test]
    fn aliases() {
        assert_eq!(parse("?").unwrap(), Command::Help(None));
        assert_eq!(parse("? task").unwrap(), Command::Help(Some("task".into())));
        assert_eq!(parse("quit").unwrap(), Command::Exit);
        assert_eq!(
            parse("quit now").unwrap_err(),
            "quit takes 0 arguments; usage: exit"
        );
    }

    #[test]
    fn clap_errors_become_one_line_with_usage() {
        let task_usage = usage("task").unwrap();
        for (line, problem) in [
            (
                "task w1 img --bogus",
                "unknown option '--bogus' (put the container command after --)",
            ),
            (
                "task w1 img --help",
                "unknown option '--help' (put the container command after --)",
            ),
            (
                "task -x w1 img",
                "unknown option '-x' (put the container command after --)",
            ),
            ("task w1 img -m", "--memory needs a value"),
        ] {
            assert_eq!(
                parse(line).unwrap_err(),
                format!("{problem}; usage: {task_usage}")
            );
        }
        for (line, expected) in [
            (
                "status --help",
                "unexpected arguments; usage: status [--watch]",
            ),
            (
                "stats w1 w2",
                "unexpected arguments; usage: stats [worker] [--watch]",
            ),
            (
                "tasks --state",
                "unexpected arguments; usage: tasks [--state STATE] [--worker ID] [--owner USER] [--image IMAGE] [--since DUR] [--until DUR] [--cursor C] [--newest] [--limit N]",
            ),
            ("workers -h", "workers takes 0 arguments; usage: workers"),
            ("help a b", "too many arguments; usage: help [command]"),
            (
                "--help",
                "unknown command '--help': did you mean `help`? (`help` lists commands)",
            ),
            (
                "task w1 img --cpus lots",
                "--cpus: 'lots' is not a number (e.g. 0.5 or 2)",
            ),
        ] {
            assert_eq!(parse(line).unwrap_err(), expected, "{line}");
        }
    }

    #[test]
    fn grammar_matches_the_command_table() {
        use clap::CommandFactory;
        let grammar = grammar::Repl::command();
        grammar.clone().debug_assert();
        let names: Vec<&str> = grammar.get_subcommands().map(|c| c.get_name()).collect();
        let table: Vec<&str> = COMMANDS.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, table);
    }

    #[test]
    fn every_command_has_usage() {
        for (name, usage_text, about) in COMMANDS {
            assert!(usage_text.starts_with(name));
            assert!(!about.is_empty());
        }
    }
}
