//! Typed documents stored by every backend (serde, one JSON/BSON shape).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A worker the operator pre-registered (`WORKER_REGISTRY`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Worker id, unique.
    pub id: String,
    /// `host:port` of the worker's gRPC service.
    pub address: String,
    /// When the operator registered it (ms since epoch).
    pub registered_at: i64,
    /// Host facts from its last `RegisterWorker`, if it ever connected.
    pub host: Option<HostRecord>,
    /// Last time the master heard from it (ms since epoch).
    pub last_seen_at: Option<i64>,
    /// SHA-256 of its current certificate; calls with any other are refused.
    #[serde(default)]
    pub cert_fingerprint: Option<String>,
    /// Expiry of its current certificate (Unix seconds).
    #[serde(default)]
    pub cert_expires_at: Option<i64>,
    /// SHA-256 of its unused join token, if one is outstanding.
    #[serde(default)]
    pub join_token_hash: Option<String>,
    /// Expiry of that token (ms since epoch).
    #[serde(default)]
    pub join_token_expires_at: Option<i64>,
}

impl WorkerRecord {
    /// A freshly pre-registered worker.
    pub fn new(id: &str, address: &str) -> Self {
        Self {
            id: id.to_string(),
            address: address.to_string(),
            registered_at: now_millis(),
            host: None,
            last_seen_at: None,
            cert_fingerprint: None,
            cert_expires_at: None,
            join_token_hash: None,
            join_token_expires_at: None,
        }
    }
}

/// Static host facts a worker sent when registering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Host name.
    pub hostname: String,
    /// Operating system name.
    pub os: String,
    /// Operating system version.
    pub os_version: String,
    /// CPU architecture.
    pub arch: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_count: u32,
    /// Physical memory in bytes.
    pub memory_total_bytes: u64,
    /// GPUs on the host.
    pub gpus: Vec<GpuRecord>,
    /// Worker binary version.
    pub version: String,
}

/// One GPU of a worker host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// NVML index.
    pub index: u32,
    /// GPU UUID.
    pub uuid: String,
    /// Model name.
    pub name: String,
    /// Memory in bytes.
    pub memory_total_bytes: u64,
}

/// Lifecycle state of a task (DESIGN.md: queued → assigned → running →
/// completed | failed | cancelled | timed_out; unknown while its worker is
/// silent, lost once the worker has surely stopped it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for placement.
    Queued,
    /// Handed to a worker, container not yet running.
    Assigned,
    /// Container running.
    Running,
    /// Its worker went silent while it was placed there: it may still run.
    /// Nothing else runs it until the disconnect window has surely passed.
    Unknown,
    /// Exited with code 0.
    Completed,
    /// Exited non-zero, or could not run.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
    /// Killed for exceeding its timeout.
    TimedOut,
    /// Its attempt ended without a result: the worker came back without it,
    /// stopped it after losing the master, or was silent past the window.
    Lost,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 9] = [
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Unknown,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
        TaskState::Lost,
    ];

    /// Lower-case name, as shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Unknown => "unknown",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::TimedOut => "timed_out",
            TaskState::Lost => "lost",
        }
    }

    /// Parses an operator-facing name.
    pub fn parse(name: &str) -> Option<TaskState> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// A final state: nothing moves a task out of it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }

    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        match self {
            Queued => matches!(next, Assigned | Failed | Cancelled),
            Assigned => matches!(
                next,
                Running | Unknown | Completed | Failed | Cancelled | TimedOut | Lost | Queued
            ),
            // Running -> Queued: a failed attempt retried (max_retries).
            Running => matches!(
                next,
                Unknown | Completed | Failed | Cancelled | TimedOut | Lost | Queued
            ),
            // The worker is back (the task still runs there, or its result
            // arrives), or it stays silent past the window (lost).
            Unknown => matches!(
                next,
                Assigned | Running | Completed | Failed | Cancelled | TimedOut | Lost | Queued
            ),
            Lost => matches!(next, Queued | Failed | Completed | Cancelled | TimedOut),
            Completed | Failed | Cancelled | TimedOut => false,
        }
    }

    /// States from which `next` may be reached.
    pub fn predecessors(next: TaskState) -> Vec<TaskState> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_become(next))
            .collect()
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resource limits of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU limit in billionths of a CPU; 0 = none.
    pub nano_cpus: i64,
    /// Memory limit in bytes; 0 = none.
    pub memory_bytes: i64,
    /// GPUs by count (-1 = all); 0 = none.
    pub gpu_count: i32,
    /// Exact GPU UUIDs or indexes.
    pub gpu_device_ids: Vec<String>,
}

impl Limits {
    /// The GPU request these limits carry (stored as count and ids).
    pub fn gpus(&self) -> cloudai_common::resources::GpuRequest {
        cloudai_common::resources::GpuRequest::of(self.gpu_count, &self.gpu_device_ids)
    }
}

/// A submitted task and its current state (`TASKS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id, unique.
    pub id: String,
    /// Container image.
    pub image: String,
    /// Command and arguments (empty: the image's default).
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Wall-clock limit in seconds (0 = none).
    pub timeout_seconds: u64,
    /// Queue priority (higher first).
    pub priority: i32,
    /// Retries allowed after a lost or failed placement.
    pub max_retries: u32,
    /// Current attempt, starting at 1.
    pub attempt: u32,
    /// Current lifecycle state.
    pub state: TaskState,
    /// Worker it was requested on or placed on.
    pub worker_id: Option<String>,
    /// When it was submitted (ms since epoch).
    pub created_at: i64,
    /// Last state change (ms since epoch).
    pub updated_at: i64,
    /// When its container started.
    pub started_at: Option<i64>,
    /// When it reached a final state.
    pub finished_at: Option<i64>,
    /// Container exit code, once known.
    pub exit_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// GPUs (UUIDs) the scheduler gave the current attempt.
    #[serde(default)]
    pub assigned_gpus: Vec<String>,
    /// Results of earlier attempts that arrived after a later attempt had
    /// started (kept for the record; they do not change the task).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_results: Vec<LateResult>,
    /// How the container runs (shared memory, user, working directory).
    #[serde(default, skip_serializing_if = "ContainerOptions::is_default")]
    pub options: ContainerOptions,
    /// Who submitted it: the API token's user, `console` for the master's
    /// own REPL (empty for tasks stored before owners were kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// How a task's container runs, beyond its command and limits (empty: as the
/// image says).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOptions {
    /// Size of `/dev/shm` in bytes (0: Docker's 64 MiB).
    #[serde(default)]
    pub shm_size_bytes: u64,
    /// User the command runs as (`name`, `uid` or `uid:gid`).
    #[serde(default)]
    pub user: String,
    /// Working directory.
    #[serde(default)]
    pub workdir: String,
    /// Filesystems mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountRecord>,
    /// Labels on the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network mode (empty: Docker's bridge).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// IPC namespace (empty: Docker's default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipc: String,
    /// When the worker pulls the image.
    #[serde(default, skip_serializing_if = "PullPolicy::is_missing")]
    pub pull: PullPolicy,
    /// Longest the pull may take (0: the worker's default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pull_timeout_seconds: u64,
    /// Environment variables filled from secrets: variable -> secret name
    /// (names only; values never reach the task record).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// When a worker pulls a task's image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Only when the image is not on the worker.
    #[default]
    Missing,
    /// Before every attempt.
    Always,
    /// Never: the image must be on the worker.
    Never,
}

impl PullPolicy {
    fn is_missing(&self) -> bool {
        *self == PullPolicy::Missing
    }

    /// The flag's word: `missing`, `always`, `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

/// One filesystem mounted into a task's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// What is mounted.
    pub kind: MountKind,
    /// The volume's name or the host path (empty for a tmpfs).
    #[serde(default)]
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Size of a tmpfs in bytes (0: Docker's default).
    #[serde(default)]
    pub tmpfs_size_bytes: u64,
}

/// The kinds of [`MountRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A named Docker volume, kept between tasks.
    Volume,
    /// A directory of the worker host.
    HostPath,
    /// A tmpfs.
    Tmpfs,
}

impl ContainerOptions {
    /// Whether the task asks for the host's network.
    pub fn host_network(&self) -> bool {
        self.network == "host"
    }

    /// Whether the task asks for the host's IPC namespace.
    pub fn host_ipc(&self) -> bool {
        self.ipc == "host"
    }

    /// The host paths the task mounts (placement needs a worker allowing each).
    pub fn host_paths(&self) -> Vec<String> {
        self.mounts
            .iter()
            .filter(|m| m.kind == MountKind::HostPath)
            .map(|m| m.source.clone())
            .collect()
    }
}

impl ContainerOptions {
    /// Whether nothing is asked beyond the image's defaults.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A worker's result for an attempt the master had already given up on and
/// run again (`TaskRecord::late_results`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateResult {
    /// The attempt it belongs to.
    pub attempt: u32,
    /// Worker that ran it.
    pub worker_id: String,
    /// The outcome it reports.
    pub state: TaskState,
    /// Container exit code, when it ran.
    pub exit_code: Option<i32>,
    /// When it arrived (ms since epoch).
    pub reported_at: i64,
}

/// Most late results kept per task (the oldest go first).
pub const MAX_LATE_RESULTS: usize = 8;

impl TaskRecord {
    /// A newly submitted task in the queue: first attempt, no limits, no
    /// worker, nothing run yet. Callers override what they know.
    pub fn queued(id: &str, image: &str, now_millis: i64) -> Self {
        Self {
            id: id.to_string(),
            image: image.to_string(),
            command: Vec::new(),
            env: BTreeMap::new(),
            limits: Limits::default(),
            timeout_seconds: 0,
            priority: 0,
            max_retries: 0,
            attempt: 1,
            state: TaskState::Queued,
            worker_id: None,
            created_at: now_millis,
            updated_at: now_millis,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            oom_killed: false,
            assigned_gpus: Vec::new(),
            late_results: Vec::new(),
            options: ContainerOptions::default(),
            owner: String::new(),
        }
    }
}

/// One placement of a task attempt on a worker (`ASSIGNMENTS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// Task placed.
    pub task_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Worker it went to.
    pub worker_id: String,
    /// When (ms since epoch).
    pub assigned_at: i64,
}

/// Outcome of a task as reported by its worker (`RESULTS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Task the result belongs to.
    pub task_id: String,
    /// Worker that ran it.
    pub worker_id: String,
    /// Attempt that produced it.
    pub attempt: u32,
    /// Final state.
    pub state: TaskState,
    /// Container exit code, when it ran.
    pub exit_code: Option<i32>,
    /// Failure reason, empty on success.
    pub error: Option<String>,
    /// Killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// When the container started (ms since epoch).
    pub started_at: Option<i64>,
    /// When it finished (ms since epoch).
    pub finished_at: Option<i64>,
    /// The tail of its combined output (bounded).
    pub log: String,
    /// Whether output older than `log` was cut off from it.
    pub log_truncated: bool,
    /// Chunks in `LOG_CHUNKS` holding the output from its start (0: none,
    /// `log` is all there is).
    #[serde(default)]
    pub log_chunks: u32,
    /// Bytes in those chunks.
    #[serde(default)]
    pub log_chunk_bytes: u64,
    /// Bytes of output the task wrote in all (known when chunks were stored).
    #[serde(default)]
    pub log_total_bytes: u64,
}

/// One piece of a task attempt's whole output (`LOG_CHUNKS`), numbered from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunkRecord {
    /// Task it belongs to.
    pub task_id: String,
    /// Attempt that wrote it.
    pub attempt: u32,
    /// Position in the output, from 0.
    pub seq: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

/// An API user (`USERS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// User name, unique.
    pub name: String,
    /// Role: `admin`, `operator` or `viewer`.
    pub role: String,
    /// When created (ms since epoch).
    pub created_at: i64,
    /// The user's API tokens (hashes only).
    #[serde(default)]
    pub tokens: Vec<ApiTokenRecord>,
}

/// One API token of a user; the secret itself is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    /// Public token id (the `<id>` in `cat1.<id>.<secret>`).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When created (ms since epoch).
    pub created_at: i64,
    /// When it stops working (ms since epoch); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A secret (`SECRETS`): its value only sealed with the operator's key,
/// which is never in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Secret name, unique.
    pub name: String,
    /// For registry credentials: the registry host[:port] they log in to
    /// (the value is then `USER:PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The value sealed with AES-256-GCM: base64 of nonce, ciphertext and tag.
    pub sealed: String,
    /// Fingerprint of the key that sealed it (hex, not the key).
    pub key_id: String,
    /// When first set (ms since epoch).
    pub created_at: i64,
    /// When last set (ms since epoch).
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be refused");
            }
        }
        assert!(TaskState::Queued.can_become(TaskState::Assigned));
        assert!(TaskState::Running.can_become(TaskState::Completed));
        assert!(
            TaskState::Running.can_become(TaskState::Queued),
            "a retried attempt"
        );
        assert!(!TaskState::Completed.can_become(TaskState::Queued));
        // A silent worker's task is unknown first, never requeued straight away.
        assert!(TaskState::Running.can_become(TaskState::Unknown));
        assert!(!TaskState::Unknown.can_become(TaskState::Unknown));
        assert!(TaskState::Unknown.can_become(TaskState::Running));
        assert!(TaskState::Unknown.can_become(TaskState::Completed));
        assert!(TaskState::Unknown.can_become(TaskState::Lost));
        assert!(!TaskState::Queued.can_become(TaskState::Unknown));
        assert!(!TaskState::Lost.can_become(TaskState::Unknown));
    }

    #[test]
    fn names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(TaskState::parse("bogus"), None);
    }
}
