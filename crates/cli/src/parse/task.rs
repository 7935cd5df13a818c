//! The `task` command: its clap arguments, the value parsers that check each
//! option, and the step from the parsed words to a [`TaskSubmission`].

use super::usage_error;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use cloudai_common::units::{parse_duration, parse_size};
use cloudai_common::validate::MAX_RETRIES;
use cloudai_proto::v1::mount::Kind as MountKind;
use cloudai_proto::v1::{
    ContainerOptions, Mount as MountRecord, PullPolicy, ResourceLimits as Limits,
    SubmitTaskRequest, Task,
};

/// A task to submit, and whether to follow it until it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSubmission {
    /// What goes to `SubmitTask`.
    pub request: SubmitTaskRequest,
    /// `--follow`: stream its output, then end with its exit code.
    pub follow: bool,
}

/// `task <worker|auto> <image> [options] [--] [command…]`. Option values may
/// start with `-` (`--cpus -1` is out of range, not a missing value); the
/// container command starts at the first word that is not a known option and
/// takes every word after it, options included.
#[derive(Debug, clap::Args)]
pub(super) struct TaskArgs {
    /// Worker id, or `auto` to let the master pick one.
    target: String,
    /// Follow the task's output until it ends (exit with its exit code).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Container image.
    image: String,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_cpus)]
    cpus: Option<i64>,
    #[arg(short = 'm', long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_memory)]
    memory: Option<i64>,
    #[arg(long, value_name = "N|all|UUID,...", allow_hyphen_values = true, value_parser = parse_gpus)]
    gpus: Option<Gpus>,
    #[arg(short = 'e', long, value_name = "K=V", allow_hyphen_values = true, value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[arg(long, value_name = "DUR", allow_hyphen_values = true, value_parser = parse_timeout)]
    timeout: Option<u64>,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_priority)]
    priority: Option<i32>,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_retries)]
    retries: Option<u32>,
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_shm_size)]
    shm_size: Option<u64>,
    #[arg(long, value_name = "USER", allow_hyphen_values = true)]
    user: Option<String>,
    #[arg(long, value_name = "PATH", allow_hyphen_values = true)]
    workdir: Option<String>,
    #[arg(long = "volume", value_name = "NAME|/HOST:/PATH[:ro]", allow_hyphen_values = true, value_parser = parse_volume)]
    volumes: Vec<MountRecord>,
    #[arg(long = "tmpfs", value_name = "/PATH[:SIZE]", allow_hyphen_values = true, value_parser = parse_tmpfs)]
    tmpfs: Vec<MountRecord>,
    #[arg(long = "label", value_name = "K=V", allow_hyphen_values = true, value_parser = parse_label)]
    labels: Vec<(String, String)>,
    #[arg(long, value_name = "bridge|none|host", allow_hyphen_values = true)]
    network: Option<String>,
    #[arg(long, value_name = "private|host", allow_hyphen_values = true)]
    ipc: Option<String>,
    #[arg(long, value_name = "missing|always|never", allow_hyphen_values = true, value_parser = parse_pull)]
    pull: Option<PullPolicy>,
    #[arg(long, value_name = "DUR", allow_hyphen_values = true, value_parser = parse_pull_timeout)]
    pull_timeout: Option<u64>,
    #[arg(long = "secret", value_name = "ENV=NAME", allow_hyphen_values = true, value_parser = parse_secret)]
    secrets: Vec<(String, String)>,
    /// The container command and its arguments (empty: the image's default).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// What `--gpus` asked for.
#[derive(Debug, Clone, PartialEq)]
enum Gpus {
    All,
    Count(i32),
    Devices(Vec<String>),
}

impl TaskArgs {
    /// The request these arguments describe. `words` is the whole line, which
    /// tells whether the command came after `--`: a command that starts with
    /// `--` without one is a mistyped option.
    pub(super) fn into_submission(self, words: &[String]) -> Result<TaskSubmission, String> {
        if let Some(first) = self.command.first()
            && first.starts_with("--")
        {
            let start = words.len().saturating_sub(self.command.len());
            let escaped = words
                .get(..start)
                .is_some_and(|before| before.iter().skip(1).any(|word| word == "--"));
            if !escaped {
                return Err(unknown_option(first));
            }
        }
        let mut limits = Limits {
            nano_cpus: self.cpus.unwrap_or(0),
            memory_bytes: self.memory.unwrap_or(0),
            ..Limits::default()
        };
        match self.gpus {
            None => {}
            Some(Gpus::All) => limits.gpu_count = -1,
            Some(Gpus::Count(count)) => limits.gpu_count = count,
            Some(Gpus::Devices(ids)) => {
                limits.gpu_count = i32::try_from(ids.len()).unwrap_or(i32::MAX);
                limits.gpu_device_ids = ids;
            }
        }
        let worker_id = if self.target == "auto" {
            String::new()
        } else {
            super::worker_id(&self.target)?.to_string()
        };
        let options = ContainerOptions {
            shm_size_bytes: self.shm_size.unwrap_or(0),
            user: self.user.unwrap_or_default(),
            workdir: self.workdir.unwrap_or_default(),
            mounts: self.volumes.into_iter().chain(self.tmpfs).collect(),
            labels: self.labels.into_iter().collect(),
            network: self.network.unwrap_or_default(),
            ipc: self.ipc.unwrap_or_default(),
            pull: self.pull.unwrap_or(PullPolicy::Missing) as i32,
            pull_timeout_seconds: self.pull_timeout.unwrap_or(0),
            secret_env: self.secrets.into_iter().collect(),
        };
        let task = Task {
            image: self.image,
            command: self.command,
            env: self.env.into_iter().collect(),
            limits: Some(limits),
            timeout_seconds: self.timeout.unwrap_or(0),
            options: (options != ContainerOptions::default()).then_some(options),
            ..Task::default()
        };
        Ok(TaskSubmission {
            request: SubmitTaskRequest {
                task: Some(task),
                worker_id,
                priority: self.priority.unwrap_or(0),
                max_retries: self.retries.unwrap_or(0),
            },
            follow: self.follow,
        })
    }
}

/// The one-line message for a clap error in `task`'s arguments.
pub(super) fn message(error: &clap::Error) -> String {
    let arg = || match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or(arg).to_string(),
        _ => "an option".to_string(),
    };
    match error.kind() {
        // A value parser's own message says which option and why.
        ErrorKind::ValueValidation => super::validation_message(error),
        ErrorKind::MissingRequiredArgument => {
            usage_error("task", "task needs a worker (or auto) and an image")
        }
        ErrorKind::InvalidValue => usage_error("task", &format!("{} needs a value", arg())),
        ErrorKind::UnknownArgument => unknown_option(&arg()),
        _ => usage_error("task", &super::first_line(error)),
    }
}

fn unknown_option(flag: &str) -> String {
    usage_error(
        "task",
        &format!("unknown option '{flag}' (put the container command after --)"),
    )
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

fn parse_memory(text: &str) -> Result<i64, String> {
    let bytes = parse_size(text).map_err(|e| format!("--memory: {e}"))?;
    i64::try_from(bytes).map_err(|_| format!("--memory: '{text}' is too large"))
}

/// `NAME:/path[:ro]` (a named volume) or `/host/path:/path[:ro]`.
fn parse_volume(text: &str) -> Result<MountRecord, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, true),
        [source, target, "rw"] => (*source, *target, false),
        _ => {
            return Err(format!(
                "--volume: '{text}' is not NAME:/path or /host/path:/path, optionally with :ro"
            ));
        }
    };
    Ok(MountRecord {
        kind: if source.starts_with('/') {
            MountKind::HostPath as i32
        } else {
            MountKind::Volume as i32
        },
        source: source.to_string(),
        target: target.to_string(),
        read_only,
        tmpfs_size_bytes: 0,
    })
}

/// `/path` or `/path:SIZE`.
fn parse_tmpfs(text: &str) -> Result<MountRecord, String> {
    let (target, size) = match text.split_once(':') {
        Some((target, size)) => (
            target,
            parse_size(size).map_err(|e| format!("--tmpfs: {e}"))?,
        ),
        None => (text, 0),
    };
    Ok(MountRecord {
        kind: MountKind::Tmpfs as i32,
        source: String::new(),
        target: target.to_string(),
        read_only: false,
        tmpfs_size_bytes: size,
    })
}

fn parse_label(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("--label: expected KEY=VALUE, got '{pair}'"))
}

fn parse_pull(text: &str) -> Result<PullPolicy, String> {
    match text {
        "missing" => Ok(PullPolicy::Missing),
        "always" => Ok(PullPolicy::Always),
        "never" => Ok(PullPolicy::Never),
        _ => Err(format!(
            "--pull: '{text}' is not one of missing (the default), always, never"
        )),
    }
}

fn parse_pull_timeout(text: &str) -> Result<u64, String> {
    let timeout = parse_duration(text).map_err(|e| format!("--pull-timeout: {e}"))?;
    if timeout < std::time::Duration::from_secs(1) {
        return Err(format!(
            "--pull-timeout: '{text}' is shorter than the 1s minimum"
        ));
    }
    Ok(timeout.as_secs())
}

/// `ENV=NAME`: the variable ENV gets the value of secret NAME.
fn parse_secret(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .filter(|(variable, name)| !variable.is_empty() && !name.is_empty())
        .map(|(variable, name)| (variable.to_string(), name.to_string()))
        .ok_or_else(|| {
            format!("--secret: '{pair}' should be ENV=NAME (the variable, then the secret's name)")
        })
}

fn parse_shm_size(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| format!("--shm-size: {e}"))
}

fn parse_gpus(text: &str) -> Result<Gpus, String> {
    if text == "all" {
        return Ok(Gpus::All);
    }
    match text.parse::<i32>() {
        Ok(count) if (0..=64).contains(&count) => Ok(Gpus::Count(count)),
        Ok(count) => Err(format!(
            "--gpus: {count} is out of range: use 0 to 64, 'all', or GPU UUIDs"
        )),
        Err(_) => Ok(Gpus::Devices(text.split(',').map(str::to_string).collect())),
    }
}

fn parse_env(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("--env: '{pair}' should be KEY=VALUE"))
}

fn parse_timeout(text: &str) -> Result<u64, String> {
    let timeout = parse_duration(text).map_err(|e| format!("--timeout: {e}"))?;
    if timeout < std::time::Duration::from_secs(1) {
        return Err(format!(
            "--timeout: '{text}' is shorter than the 1s minimum"
        ));
    }
    Ok(timeout.as_secs())
}

fn parse_priority(text: &str) -> Result<i32, String> {
    text.parse()
        .map_err(|_| format!("--priority: '{text}' is not a whole number (higher runs first)"))
}

fn parse_retries(text: &str) -> Result<u32, String> {
    text.parse()
        .ok()
        .filter(|n| *n <= MAX_RETRIES)
        .ok_or_else(|| format!("--retries: '{text}' is not a count from 0 to {MAX_RETRIES}"))
}
