//! What the commands print, from the API's answers: aligned tables
//! (comfy-table), usage bars, colour on a terminal without `NO_COLOR`, and
//! the JSON documents of `-o json` (their schema is in docs/CLI.md; fields
//! are only ever added).

use cloudai_common::units::{format_bytes, format_duration, format_millis_utc};
use cloudai_proto::v1::{
    ClusterStatus, JoinToken, ListCertificatesResponse, Secret, TaskStatus, TaskView, User,
    WorkerState, WorkerView,
};
use comfy_table::{CellAlignment, Table, presets};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether to colour output: a terminal, and `NO_COLOR` unset.
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A task state's name (`queued`, `timed_out`, …).
pub fn state_name(status: i32) -> &'static str {
    match TaskStatus::try_from(status).unwrap_or(TaskStatus::Unspecified) {
        TaskStatus::Unspecified => "unspecified",
        TaskStatus::Queued => "queued",
        TaskStatus::Assigned => "assigned",
        TaskStatus::Running => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::TimedOut => "timed_out",
        TaskStatus::Lost => "lost",
        TaskStatus::Unknown => "unknown",
    }
}

/// Every task state, in lifecycle order.
pub const STATES: [TaskStatus; 9] = [
    TaskStatus::Queued,
    TaskStatus::Assigned,
    TaskStatus::Running,
    TaskStatus::Unknown,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
    TaskStatus::TimedOut,
    TaskStatus::Lost,
];

/// A task state from its name.
pub fn parse_state(name: &str) -> Option<TaskStatus> {
    STATES.into_iter().find(|s| state_name(*s as i32) == name)
}

fn worker_state_name(state: i32) -> &'static str {
    match WorkerState::try_from(state).unwrap_or(WorkerState::Unspecified) {
        WorkerState::Active => "active",
        WorkerState::Inactive => "inactive",
        WorkerState::Pending | WorkerState::Unspecified => "pending",
    }
}

/// A worker state, coloured.
fn worker_state(state: i32, colour: bool) -> String {
    let name = worker_state_name(state);
    let code = match name {
        "active" => "32",
        "inactive" => "31",
        _ => "33",
    };
    paint(name, code, colour)
}

/// A usage bar like `[#####-----]  47%`.
pub fn bar(used: f64, total: f64) -> String {
    const WIDTH: usize = 10;
    let fraction = if total > 0.0 {
        (used / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0
    )
}

fn table(headers: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(headers.to_vec());
    for index in right_aligned {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Milliseconds since the epoch of a protobuf timestamp.
pub fn millis(ts: Option<&prost_types::Timestamp>) -> Option<i64> {
    ts.and_then(cloudai_proto::timestamp_millis)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long ago a moment (ms since epoch) was: `3m12s ago`.
pub fn age(millis: i64) -> String {
    let elapsed = now_millis().saturating_sub(millis).max(0);
    format!(
        "{} ago",
        format_duration(Duration::from_millis(elapsed as u64))
    )
}

/// How long until a moment (ms since epoch): `in 29d`, or `expired`.
fn until(millis: i64) -> Option<String> {
    let left = millis.saturating_sub(now_millis());
    (left > 0).then(|| format_duration(Duration::from_millis(left as u64)))
}

/// `status`: the cluster in a few lines.
pub fn status(status: &ClusterStatus, colour: bool) -> String {
    let by_state: Vec<(&str, u64)> = STATES
        .iter()
        .map(|s| state_name(*s as i32))
        .filter_map(|name| status.tasks_by_state.get(name).map(|n| (name, *n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let tasks_line = if by_state.is_empty() {
        "none".to_string()
    } else {
        by_state
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let store = if status.store_error.is_empty() {
        format!("{} ({})", status.store, paint("healthy", "32", colour))
    } else {
        format!(
            "{} ({})",
            status.store,
            paint(
                &format!("UNREACHABLE: {}", status.store_error),
                "31",
                colour
            )
        )
    };
    format!(
        "workers: {} active, {} inactive, {} pending\ntasks:   {tasks_line}\nstore:   {store}\nuptime:  {}\n",
        paint(&status.workers_active.to_string(), "32", colour),
        paint(
            &status.workers_inactive.to_string(),
            if status.workers_inactive > 0 {
                "31"
            } else {
                "0"
            },
            colour
        ),
        status.workers_pending,
        format_duration(Duration::from_secs(status.uptime_seconds)),
    )
}

/// `workers`: the registry as a table.
pub fn workers(workers: &[WorkerView]) -> String {
    if workers.is_empty() {
        return "no workers registered: `register <id> <host:port>` adds one\n".into();
    }
    let mut table = table(
        &[
            "ID",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY",
            "GPUS",
            "TASKS",
            "LAST SEEN",
        ],
        &[3, 4, 5, 6],
    );
    for w in workers {
        let info = w.info.clone().unwrap_or_default();
        let seen = w.last_seen_ms_ago.map_or("never".to_string(), |ms| {
            format!("{} ago", format_duration(Duration::from_millis(ms)))
        });
        table.add_row(vec![
            info.worker_id.clone(),
            worker_state(w.state, false),
            info.address.clone(),
            info.cpu_count.to_string(),
            format_bytes(info.memory_total_bytes),
            info.gpus.len().to_string(),
            w.placed_tasks.to_string(),
            seen,
        ]);
    }
    format!("{table}\n")
}

/// `stats [worker]`: latest metrics with usage bars.
pub fn stats(workers: &[WorkerView], colour: bool) -> String {
    if workers.is_empty() {
        return "no workers registered\n".into();
    }
    let mut out = String::new();
    for w in workers {
        let id = w.info.as_ref().map_or("", |i| i.worker_id.as_str());
        let state = worker_state(w.state, colour);
        let Some(hb) = &w.latest else {
            out.push_str(&format!("{id} {state}: no heartbeat yet\n"));
            continue;
        };
        out.push_str(&format!(
            "{id} {state}  {} CPUs, load {:.2}, {} tasks running\n",
            hb.cpu_count,
            hb.load_average_1m,
            hb.running_task_ids.len()
        ));
        out.push_str(&format!(
            "  cpu  {}\n",
            bar(f64::from(hb.cpu_percent), 100.0)
        ));
        out.push_str(&format!(
            "  mem  {}  {} / {}\n",
            bar(hb.memory_used_bytes as f64, hb.memory_total_bytes as f64),
            format_bytes(hb.memory_used_bytes),
            format_bytes(hb.memory_total_bytes)
        ));
        if hb.disk_total_bytes > 0 {
            out.push_str(&format!(
                "  disk {}  {} / {}\n",
                bar(hb.disk_used_bytes as f64, hb.disk_total_bytes as f64),
                format_bytes(hb.disk_used_bytes),
                format_bytes(hb.disk_total_bytes)
            ));
        }
        for gpu in &hb.gpus {
            let holder = if gpu.task_id.is_empty() {
                String::new()
            } else {
                format!("  task {}", gpu.task_id)
            };
            out.push_str(&format!(
                "  gpu{} {}  mem {}  {:.0}°C {:.0} W  {}{holder}\n",
                gpu.index,
                bar(f64::from(gpu.utilization_percent), 100.0),
                bar(gpu.memory_used_bytes as f64, gpu.memory_total_bytes as f64),
                gpu.temperature_celsius,
                gpu.power_watts,
                gpu.name
            ));
        }
    }
    out
}

/// The worker a task is on (or was asked for), `-` for none.
pub fn worker_of(task: &TaskView) -> &str {
    if task.worker_id.is_empty() {
        "-"
    } else {
        &task.worker_id
    }
}

/// What the NOTE column says about a task.
fn note(task: &TaskView) -> String {
    match TaskStatus::try_from(task.status) {
        Ok(TaskStatus::Queued) if !task.waiting_reason.is_empty() => {
            format!("waiting: {}", task.waiting_reason)
        }
        Ok(TaskStatus::Assigned) if task.progress.is_some() => {
            task.progress.as_ref().map(progress).unwrap_or_default()
        }
        _ => task.error.clone(),
    }
}

/// A pull's progress in one line.
pub fn progress(progress: &cloudai_proto::v1::TaskProgress) -> String {
    cloudai_common::units::describe_pull(progress)
}

/// `tasks`: a table with waiting reasons and pull progress.
pub fn tasks(tasks: &[TaskView], next_cursor: &str) -> String {
    if tasks.is_empty() {
        return "no tasks\n".into();
    }
    let mut table = table(&["ID", "STATE", "WORKER", "EXIT", "IMAGE", "NOTE"], &[3]);
    for t in tasks {
        let task = t.task.clone().unwrap_or_default();
        table.add_row(vec![
            task.task_id.clone(),
            state_name(t.status).to_string(),
            worker_of(t).to_string(),
            t.exit_code.map_or("-".to_string(), |c| c.to_string()),
            task.image.clone(),
            note(t),
        ]);
    }
    let more = (!next_cursor.is_empty()).then(|| {
        format!(
            "({} shown; older ones: `--cursor {next_cursor}`)\n",
            tasks.len()
        )
    });
    format!("{table}\n{}", more.unwrap_or_default())
}

/// The final line of a task: state, exit code, reason.
pub fn outcome(task: &TaskView) -> String {
    let id = task.task.as_ref().map_or("", |t| t.task_id.as_str());
    let exit = task
        .exit_code
        .map_or(String::new(), |c| format!(" (exit code {c})"));
    let reason = if task.error.is_empty() {
        String::new()
    } else {
        format!(": {}", task.error)
    };
    format!("task {id} {}{exit}{reason}", state_name(task.status))
}

/// `certs`: certificates and outstanding join tokens.
pub fn certs(answer: &ListCertificatesResponse) -> String {
    if answer.insecure {
        return "this master runs with --insecure: no certificates\n".into();
    }
    let mut table = table(&["WORKER", "CERTIFICATE", "EXPIRES IN", "JOIN TOKEN"], &[]);
    for worker in &answer.workers {
        let fingerprint = if worker.fingerprint.is_empty() {
            "none".to_string()
        } else {
            let f = &worker.fingerprint;
            format!("{}…", &f[..16.min(f.len())])
        };
        let expires = millis(worker.expires_at.as_ref())
            .map_or("-".to_string(), |t| until(t).unwrap_or("expired".into()));
        let token = match millis(worker.join_token_expires_at.as_ref()) {
            Some(t) => match until(t) {
                Some(left) => format!("outstanding, expires in {left}"),
                None => "expired (`join-token <id>` makes a new one)".to_string(),
            },
            None => "-".to_string(),
        };
        table.add_row(vec![worker.worker_id.clone(), fingerprint, expires, token]);
    }
    format!("{table}\n")
}

/// `users`: one line per user, with their tokens' expiry and last use.
pub fn users(users: &[User]) -> String {
    if users.is_empty() {
        return "no users: `user add <name> <admin|operator|viewer>` adds one\n".into();
    }
    let mut out = String::new();
    for user in users {
        let tokens: Vec<String> = user
            .tokens
            .iter()
            .map(|t| {
                let expiry = match millis(t.expires_at.as_ref()) {
                    None => "no expiry".to_string(),
                    Some(at) => match until(at) {
                        Some(left) => format!("expires in {left}"),
                        None => "EXPIRED".to_string(),
                    },
                };
                let used = millis(t.last_used_at.as_ref())
                    .map_or("not used".to_string(), |at| format!("used {}", age(at)));
                format!("{} ({expiry}, {used})", t.id)
            })
            .collect();
        out.push_str(&format!(
            "{:<20} {:<9} tokens: {}\n",
            user.name,
            user.role,
            if tokens.is_empty() {
                "none".to_string()
            } else {
                tokens.join(", ")
            }
        ));
    }
    out
}

/// `secrets`: names and kinds, never values.
pub fn secrets(secrets: &[Secret]) -> String {
    if secrets.is_empty() {
        return "no secrets: `secret set <name>` adds one (`--registry HOST` for a registry login)\n"
            .into();
    }
    let mut out = String::new();
    for secret in secrets {
        let kind = if secret.registry.is_empty() {
            "env".to_string()
        } else {
            format!("registry login for {}", secret.registry)
        };
        let set = millis(secret.updated_at.as_ref()).map_or("-".into(), age);
        out.push_str(&format!("{:<24} {kind:<36} set {set}\n", secret.name));
    }
    out
}

/// What the operator needs to start a worker with its join token.
pub fn join_instructions(token: &JoinToken) -> String {
    let ttl = format_duration(Duration::from_secs(token.ttl_seconds));
    format!(
        "worker {} registered at {}\njoin token (single use, expires in {ttl}): {}\nstart the worker with: cloudai-worker --id {} --master {} --join-token {}",
        token.worker_id,
        token.worker_address,
        token.token,
        token.worker_id,
        token.master_address,
        token.token
    )
}

/// A moment for people, or `never`.
pub fn moment(ts: Option<&prost_types::Timestamp>) -> String {
    millis(ts).map_or("never".into(), format_millis_utc)
}

// The `-o json` documents: plain, stable field names (see docs/CLI.md).

/// A moment as RFC 3339-ish UTC text for JSON, or null.
fn json_moment(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    millis(ts).map(format_millis_utc)
}

/// `status -o json`.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    workers_active: u32,
    workers_inactive: u32,
    workers_pending: u32,
    tasks_by_state: std::collections::BTreeMap<String, u64>,
    store: String,
    store_healthy: bool,
    store_error: Option<String>,
    uptime_seconds: u64,
    placement_mode: String,
    version: String,
}

impl From<&ClusterStatus> for StatusJson {
    fn from(s: &ClusterStatus) -> Self {
        Self {
            workers_active: s.workers_active,
            workers_inactive: s.workers_inactive,
            workers_pending: s.workers_pending,
            tasks_by_state: s.tasks_by_state.clone().into_iter().collect(),
            store: s.store.clone(),
            store_healthy: s.store_error.is_empty(),
            store_error: (!s.store_error.is_empty()).then(|| s.store_error.clone()),
            uptime_seconds: s.uptime_seconds,
            placement_mode: s.placement_mode.clone(),
            version: s.version.clone(),
        }
    }
}

/// One worker in `workers -o json` and `stats -o json`.
#[derive(Debug, Serialize)]
pub struct WorkerJson {
    id: String,
    state: &'static str,
    address: String,
    hostname: String,
    cpus: u32,
    memory_bytes: u64,
    gpus: Vec<String>,
    placed_tasks: u32,
    running_task_ids: Vec<String>,
    last_seen_ms_ago: Option<u64>,
    cpu_percent: Option<f32>,
    memory_used_bytes: Option<u64>,
    free_nano_cpus: Option<i64>,
    free_memory_bytes: Option<i64>,
    free_gpus: Vec<String>,
}

impl From<&WorkerView> for WorkerJson {
    fn from(w: &WorkerView) -> Self {
        let info = w.info.clone().unwrap_or_default();
        Self {
            id: info.worker_id,
            state: worker_state_name(w.state),
            address: info.address,
            hostname: info.hostname,
            cpus: info.cpu_count,
            memory_bytes: info.memory_total_bytes,
            gpus: info.gpus.into_iter().map(|g| g.uuid).collect(),
            placed_tasks: w.placed_tasks,
            running_task_ids: w.running_task_ids.clone(),
            last_seen_ms_ago: w.last_seen_ms_ago,
            cpu_percent: w.latest.as_ref().map(|h| h.cpu_percent),
            memory_used_bytes: w.latest.as_ref().map(|h| h.memory_used_bytes),
            free_nano_cpus: w.free.as_ref().map(|f| f.nano_cpus),
            free_memory_bytes: w.free.as_ref().map(|f| f.memory_bytes),
            free_gpus: w.free.clone().map(|f| f.gpu_uuids).unwrap_or_default(),
        }
    }
}

/// One task in `tasks -o json` and `task … -o json`.
#[derive(Debug, Serialize)]
pub struct TaskJson {
    id: String,
    state: &'static str,
    image: String,
    command: Vec<String>,
    worker: Option<String>,
    owner: String,
    priority: i32,
    attempt: u32,
    max_retries: u32,
    exit_code: Option<i32>,
    error: Option<String>,
    waiting_reason: Option<String>,
    progress: Option<String>,
    oom_killed: bool,
    created_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
}

impl From<&TaskView> for TaskJson {
    fn from(t: &TaskView) -> Self {
        let task = t.task.clone().unwrap_or_default();
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Self {
            id: task.task_id,
            state: state_name(t.status),
            image: task.image,
            command: task.command,
            worker: text(&t.worker_id),
            owner: t.owner.clone(),
            priority: t.priority,
            attempt: t.attempt,
            max_retries: t.max_retries,
            exit_code: t.exit_code,
            error: text(&t.error),
            waiting_reason: text(&t.waiting_reason),
            progress: t.progress.as_ref().map(progress),
            oom_killed: t.oom_killed,
            created_at: json_moment(t.created_at.as_ref()),
            started_at: json_moment(t.started_at.as_ref()),
            finished_at: json_moment(t.finished_at.as_ref()),
        }
    }
}

/// One user in `users -o json`.
#[derive(Debug, Serialize)]
pub struct UserJson {
    name: String,
    role: String,
    tokens: Vec<TokenJson>,
}

/// One API token in `users -o json` (never its secret).
#[derive(Debug, Serialize)]
pub struct TokenJson {
    id: String,
    created_at: Option<String>,
    expires_at: Option<String>,
    last_used_at: Option<String>,
}

impl From<&User> for UserJson {
    fn from(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            role: u.role.clone(),
            tokens: u
                .tokens
                .iter()
                .map(|t| TokenJson {
                    id: t.id.clone(),
                    created_at: json_moment(t.created_at.as_ref()),
                    expires_at: json_moment(t.expires_at.as_ref()),
                    last_used_at: json_moment(t.last_used_at.as_ref()),
                })
                .collect(),
        }
    }
}

/// One secret in `secrets -o json` (never its value).
#[derive(Debug, Serialize)]
pub struct SecretJson {
    name: String,
    registry: Option<String>,
    updated_at: Option<String>,
}

impl From<&Secret> for SecretJson {
    fn from(s: &Secret) -> Self {
        Self {
            name: s.name.clone(),
            registry: (!s.registry.is_empty()).then(|| s.registry.clone()),
            updated_at: json_moment(s.updated_at.as_ref()),
        }
    }
}

/// One worker in `certs -o json`.
#[derive(Debug, Serialize)]
pub struct CertJson {
    worker: String,
    fingerprint: Option<String>,
    expires_at: Option<String>,
    join_token_expires_at: Option<String>,
}

impl From<&cloudai_proto::v1::WorkerCertificate> for CertJson {
    fn from(c: &cloudai_proto::v1::WorkerCertificate) -> Self {
        Self {
            worker: c.worker_id.clone(),
            fingerprint: (!c.fingerprint.is_empty()).then(|| c.fingerprint.clone()),
            expires_at: json_moment(c.expires_at.as_ref()),
            join_token_expires_at: json_moment(c.join_token_expires_at.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_bounded() {
        assert_eq!(bar(0.0, 100.0), "[----------]   0%");
        assert_eq!(bar(47.0, 100.0), "[#####-----]  47%");
        assert_eq!(bar(300.0, 100.0), "[##########] 100%");
        assert_eq!(bar(1.0, 0.0), "[----------]   0%");
    }

    #[test]
    fn paint_only_when_asked() {
        assert_eq!(paint("x", "32", false), "x");
        assert_eq!(paint("x", "32", true), "\x1b[32mx\x1b[0m");
    }

    #[test]
    fn state_names_round_trip() {
        for state in STATES {
            assert_eq!(parse_state(state_name(state as i32)), Some(state));
        }
        assert_eq!(parse_state("sleeping"), None);
    }
}
