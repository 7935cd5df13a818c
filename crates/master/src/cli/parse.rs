//! The REPL's command parser: a pure function from a line to a [`Command`].

use crate::core::tasks::{Placement, TaskRequest};
use crate::store::{Limits, TaskState};
use cloudai_common::units::{parse_duration, parse_size};
use std::collections::BTreeMap;

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
        id: String,
        /// Worker address.
        address: String,
    },
    /// `unregister <id>`.
    Unregister {
        /// Worker id.
        id: String,
    },
    /// `task <worker|auto> <image> [options] [--] [command…]`.
    Task(TaskRequest),
    /// `tasks [--state S]`.
    Tasks {
        /// Only tasks in this state.
        state: Option<TaskState>,
    },
    /// `monitor <task>`: follow a running task's logs, or print a finished one's.
    Monitor {
        /// Task id.
        task_id: String,
    },
    /// `logs <task>`: stored logs of a task.
    Logs {
        /// Task id.
        task_id: String,
    },
    /// `cancel <task>`.
    Cancel {
        /// Task id.
        task_id: String,
    },
    /// `join-token <id>`: a new join token for a registered worker.
    JoinToken {
        /// Worker id.
        id: String,
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
    /// `token create <user>`.
    TokenCreate {
        /// User name.
        user: String,
    },
    /// `token revoke <token-id>`.
    TokenRevoke {
        /// Token id.
        id: String,
    },
    /// `exit`: stop the master.
    Exit,
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
        "task <worker|auto> <image> [--cpus N] [--memory SIZE] [--gpus N|all|UUID,...] [--env K=V]... [--timeout DUR] [--priority N] [--retries N] [--] [command...]",
        "run a container task on a worker (or let the master pick one with auto)",
    ),
    (
        "tasks",
        "tasks [--state STATE]",
        "list tasks, newest last (states: queued assigned running completed failed cancelled timed_out lost)",
    ),
    (
        "monitor",
        "monitor <task>",
        "follow a running task's output until it ends; print a finished task's stored output",
    ),
    (
        "logs",
        "logs <task>",
        "print a finished task's whole stored output",
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
        "token create <user> | token revoke <token-id>",
        "create an API token (shown once) or revoke one",
    ),
    ("exit", "exit", "stop the master (Ctrl-D does the same)"),
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

/// Parses one REPL line. Errors are one line saying what was wrong and what to type.
pub fn parse(line: &str) -> Result<Command, String> {
    let words =
        shlex::split(line).ok_or_else(|| "unbalanced quotes: close every ' and \"".to_string())?;
    let Some((name, args)) = words.split_first() else {
        return Ok(Command::Empty);
    };
    let name = name.as_str();
    let exact = |count: usize| -> Result<&[String], String> {
        if args.len() == count {
            Ok(args)
        } else {
            Err(usage_error(
                name,
                &format!(
                    "{name} takes {count} argument{}",
                    if count == 1 { "" } else { "s" }
                ),
            ))
        }
    };
    let at_most_one = || -> Result<Option<String>, String> {
        match args {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(usage_error(name, "too many arguments")),
        }
    };
    match name {
        "help" | "?" => {
            let topic = at_most_one()?;
            if let Some(topic) = &topic
                && usage(topic).is_none()
            {
                return Err(unknown_command(topic));
            }
            Ok(Command::Help(topic))
        }
        "status" => match args {
            [] => Ok(Command::Status { watch: false }),
            [flag] if flag == "--watch" || flag == "-w" => Ok(Command::Status { watch: true }),
            _ => Err(usage_error("status", "unexpected arguments")),
        },
        "workers" => exact(0).map(|_| Command::Workers),
        "stats" => {
            let watch = args.iter().any(|a| a == "--watch" || a == "-w");
            let rest: Vec<&String> = args
                .iter()
                .filter(|a| *a != "--watch" && *a != "-w")
                .collect();
            match rest.as_slice() {
                [] => Ok(Command::Stats {
                    worker: None,
                    watch,
                }),
                [worker] if !worker.starts_with('-') => Ok(Command::Stats {
                    worker: Some((*worker).clone()),
                    watch,
                }),
                _ => Err(usage_error("stats", "unexpected arguments")),
            }
        }
        "register" => {
            let args = exact(2)?;
            Ok(Command::Register {
                id: args[0].clone(),
                address: args[1].clone(),
            })
        }
        "unregister" => Ok(Command::Unregister {
            id: exact(1)?[0].clone(),
        }),
        "task" => parse_task(args).map(Command::Task),
        "tasks" => parse_tasks(args),
        "monitor" => Ok(Command::Monitor {
            task_id: exact(1)?[0].clone(),
        }),
        "logs" => Ok(Command::Logs {
            task_id: exact(1)?[0].clone(),
        }),
        "cancel" => Ok(Command::Cancel {
            task_id: exact(1)?[0].clone(),
        }),
        "join-token" => Ok(Command::JoinToken {
            id: exact(1)?[0].clone(),
        }),
        "certs" => exact(0).map(|_| Command::Certs),
        "users" => exact(0).map(|_| Command::Users),
        "user" => match args {
            [sub, name, role] if sub == "add" => Ok(Command::UserAdd {
                name: name.clone(),
                role: role.clone(),
            }),
            [sub, name] if sub == "remove" => Ok(Command::UserRemove { name: name.clone() }),
            _ => Err(usage_error(
                "user",
                "expected `user add <name> <role>` or `user remove <name>`",
            )),
        },
        "token" => match args {
            [sub, user] if sub == "create" => Ok(Command::TokenCreate { user: user.clone() }),
            [sub, id] if sub == "revoke" => Ok(Command::TokenRevoke { id: id.clone() }),
            _ => Err(usage_error(
                "token",
                "expected `token create <user>` or `token revoke <token-id>`",
            )),
        },
        "exit" | "quit" => exact(0).map(|_| Command::Exit),
        other => Err(unknown_command(other)),
    }
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

fn parse_tasks(args: &[String]) -> Result<Command, String> {
    match args {
        [] => Ok(Command::Tasks { state: None }),
        [flag, state] if flag == "--state" => TaskState::parse(state)
            .map(|state| Command::Tasks { state: Some(state) })
            .ok_or_else(|| usage_error("tasks", &format!("unknown state '{state}'"))),
        _ => Err(usage_error("tasks", "unexpected arguments")),
    }
}

fn parse_task(args: &[String]) -> Result<TaskRequest, String> {
    let [target, image, rest @ ..] = args else {
        return Err(usage_error(
            "task",
            "task needs a worker (or auto) and an image",
        ));
    };
    let placement = if target == "auto" {
        Placement::Auto
    } else {
        Placement::Worker(target.clone())
    };
    let mut request = TaskRequest {
        placement,
        image: image.clone(),
        command: Vec::new(),
        env: BTreeMap::new(),
        limits: Limits::default(),
        timeout_seconds: 0,
        priority: 0,
        max_retries: 0,
    };
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| usage_error("task", &format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--" => {
                request.command.extend(rest.by_ref().cloned());
                break;
            }
            "--cpus" => request.limits.nano_cpus = parse_cpus(&value("--cpus")?)?,
            "--memory" | "-m" => {
                let text = value("--memory")?;
                let bytes = parse_size(&text).map_err(|e| format!("--memory: {e}"))?;
                request.limits.memory_bytes =
                    i64::try_from(bytes).map_err(|_| format!("--memory: '{text}' is too large"))?;
            }
            "--gpus" => parse_gpus(&value("--gpus")?, &mut request.limits)?,
            "--env" | "-e" => {
                let pair = value("--env")?;
                let (key, val) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--env: '{pair}' should be KEY=VALUE"))?;
                request.env.insert(key.to_string(), val.to_string());
            }
            "--priority" => {
                let text = value("--priority")?;
                request.priority = text.parse().map_err(|_| {
                    format!("--priority: '{text}' is not a whole number (higher runs first)")
                })?;
            }
            "--retries" => {
                let text = value("--retries")?;
                request.max_retries = text
                    .parse()
                    .ok()
                    .filter(|n| *n <= crate::core::tasks::MAX_RETRIES)
                    .ok_or_else(|| {
                        format!(
                            "--retries: '{text}' is not a count from 0 to {}",
                            crate::core::tasks::MAX_RETRIES
                        )
                    })?;
            }
            "--timeout" => {
                let text = value("--timeout")?;
                let timeout = parse_duration(&text).map_err(|e| format!("--timeout: {e}"))?;
                if timeout < std::time::Duration::from_secs(1) {
                    return Err(format!(
                        "--timeout: '{text}' is shorter than the 1s minimum"
                    ));
                }
                request.timeout_seconds = timeout.as_secs();
            }
            flag if flag.starts_with("--") => {
                return Err(usage_error(
                    "task",
                    &format!("unknown option '{flag}' (put the container command after --)"),
                ));
            }
            _ => {
                request.command.push(arg.clone());
                request.command.extend(rest.by_ref().cloned());
                break;
            }
        }
    }
    Ok(request)
}

fn parse_cpus(text: &str) -> Result<i64, String> {
    let cpus: f64 = text
        .parse()
        .map_err(|_| format!("--cpus: '{text}' is not a number (e.g. 0.5 or 2)"))?;
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 1024.0 {
        return Err(format!(
            "--cpus: {text} is out of range: use a number between 0.01 and 1024"
        ));
    }
    Ok((cpus * 1e9).round() as i64)
}

fn parse_gpus(text: &str, limits: &mut Limits) -> Result<(), String> {
    if text == "all" {
        limits.gpu_count = -1;
    } else if let Ok(count) = text.parse::<i32>() {
        if !(0..=64).contains(&count) {
            return Err(format!(
                "--gpus: {count} is out of range: use 0 to 64, 'all', or GPU UUIDs"
            ));
        }
        limits.gpu_count = count;
    } else {
        limits.gpu_device_ids = text.split(',').map(str::to_string).collect();
        limits.gpu_count = limits.gpu_device_ids.len() as i32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(line: &str) -> TaskRequest {
        match parse(line).unwrap() {
            Command::Task(request) => request,
            other => panic!("expected a task, got {other:?}"),
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
                id: "w1".into(),
                address: "10.0.0.7:50052".into()
            }
        );
        assert_eq!(
            parse("unregister w1").unwrap(),
            Command::Unregister { id: "w1".into() }
        );
        assert_eq!(
            parse("monitor t-1").unwrap(),
            Command::Monitor {
                task_id: "t-1".into()
            }
        );
        assert_eq!(
            parse("logs t-1").unwrap(),
            Command::Logs {
                task_id: "t-1".into()
            }
        );
        assert_eq!(
            parse("cancel t-1").unwrap(),
            Command::Cancel {
                task_id: "t-1".into()
            }
        );
        assert_eq!(parse("tasks").unwrap(), Command::Tasks { state: None });
        assert_eq!(
            parse("tasks --state failed").unwrap(),
            Command::Tasks {
                state: Some(TaskState::Failed)
            }
        );
        assert_eq!(parse("exit").unwrap(), Command::Exit);
        assert_eq!(
            parse("join-token w1").unwrap(),
            Command::JoinToken { id: "w1".into() }
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
            Command::TokenCreate { user: "ana".into() }
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
        assert_eq!(request.placement, Placement::Worker("w1".into()));
        assert_eq!(request.image, "busybox");
        assert_eq!(request.limits.nano_cpus, 1_500_000_000);
        assert_eq!(request.limits.memory_bytes, 512 << 20);
        assert_eq!(request.limits.gpu_count, 2);
        assert_eq!(request.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(request.timeout_seconds, 90);
        assert_eq!(request.command, vec!["sh", "-c", "echo hi; exit 3"]);
    }

    #[test]
    fn task_command_without_separator_and_gpu_forms() {
        let request = task("task auto busybox echo --not-an-option");
        assert_eq!(request.placement, Placement::Auto);
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
    fn every_command_has_usage() {
        for (name, usage_text, about) in COMMANDS {
            assert!(usage_text.starts_with(name));
            assert!(!about.is_empty());
        }
    }
}
