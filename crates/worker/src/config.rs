//! Worker configuration: flags over environment variables over `.env`, with defaults.

use clap::Parser;
use std::time::Duration;

fn parse_duration(text: &str) -> Result<Duration, String> {
    cloudai_common::units::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    cloudai_common::units::parse_size(text).map_err(|e| e.to_string())
}

/// `cloudai-worker`: runs CloudAI task containers on this host with Docker.
#[derive(Debug, Clone, Parser)]
#[command(name = "cloudai-worker", version, about, long_about = None)]
pub struct WorkerConfig {
    /// Worker id (as the operator registers it). Defaults to the host name.
    #[arg(long, env = "CLOUDAI_WORKER_ID")]
    pub id: Option<String>,

    /// Port of the worker's gRPC server. Default: the first free port from 50052 up;
    /// 0 lets the OS choose.
    #[arg(long, env = "CLOUDAI_WORKER_PORT")]
    pub port: Option<u16>,

    /// Interface the gRPC server listens on.
    #[arg(long, env = "CLOUDAI_WORKER_LISTEN_HOST", default_value = "0.0.0.0")]
    pub listen_host: String,

    /// Host name or IP the master should use to reach this worker. Default: the
    /// host's first non-loopback IPv4 address (127.0.0.1 if none).
    #[arg(long, env = "CLOUDAI_WORKER_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// A host directory tasks may mount with `--volume /path:/target`
    /// (repeatable; the directory and everything under it). Host paths are
    /// root-equivalent (a task can write whatever they hold), so none is
    /// allowed unless named here.
    #[arg(long = "allow-host-path", value_name = "DIR")]
    pub allow_host_paths: Vec<String>,

    /// Let tasks use the host's network (`--network host`), as multi-node
    /// NCCL jobs need: such a task sees and can bind every interface of the
    /// host, so it is refused unless this is set.
    #[arg(long)]
    pub allow_host_network: bool,

    /// Let tasks share the host's IPC namespace (`--ipc host`), as some
    /// multi-process GPU jobs (NCCL over shared memory, CUDA IPC between
    /// containers) need: such a task can reach every shared-memory segment
    /// and IPC object of the host, so it is refused unless this is set.
    #[arg(long)]
    pub allow_host_ipc: bool,

    /// Master's gRPC address (host:port). When set, the worker registers itself
    /// at start; otherwise it waits for the master's invitation.
    #[arg(long, env = "CLOUDAI_MASTER_ADDR")]
    pub master: Option<String>,

    /// Directory for the worker's certificate and key (tls/) and the master's
    /// remembered address (master).
    #[arg(
        long,
        env = "CLOUDAI_WORKER_DATA_DIR",
        default_value = "./cloudai-worker-data"
    )]
    pub data_dir: std::path::PathBuf,

    /// Join token printed by `register <id> <host:port>` on the master; needed
    /// once (the certificate it buys is kept in --data-dir). Given again, the
    /// worker joins anew (after re-registration or with a new CA).
    #[arg(long, env = "CLOUDAI_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// File holding the join token, used only while the worker has no
    /// certificate (waited for up to 60s if it does not exist yet).
    #[arg(long, env = "CLOUDAI_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    pub join_token_file: Option<std::path::PathBuf>,

    /// Run without TLS (only with a master started with --insecure).
    #[arg(long, env = "CLOUDAI_INSECURE")]
    pub insecure: bool,

    /// Heartbeat interval until the master announces its own.
    #[arg(long, env = "CLOUDAI_WORKER_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Longest time an image pull may take, unless the task sets its own
    /// (`--pull-timeout`); retries of transient errors count within it.
    #[arg(long, env = "CLOUDAI_PULL_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub pull_timeout: Duration,

    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, env = "CLOUDAI_STOP_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub stop_grace: Duration,

    /// Most bytes of a task's output uploaded to the master when it ends
    /// (from the start; the last 256 KiB always travel with the result).
    /// 0 sends only that tail. Accepts k/m/g suffixes.
    #[arg(long, env = "CLOUDAI_MAX_LOG_UPLOAD", default_value = "64m", value_parser = parse_size)]
    pub max_log_upload: u64,

    /// Print one metrics sample as JSON and exit (checks the CPU/GPU paths without a master).
    #[arg(long)]
    pub print_metrics: bool,
}

/// Lowest port a worker tries when none is given.
pub const FIRST_WORKER_PORT: u16 = 50052;

impl WorkerConfig {
    /// Checks values clap cannot.
    pub fn validate(&self) -> Result<(), cloudai_common::validate::ConfigError> {
        if let Some(id) = &self.id {
            cloudai_common::validate::id("--id", id)?;
        }
        if let Some(master) = &self.master {
            cloudai_common::validate::address("--master", master)?;
        }
        if self.max_log_upload > crate::master_link::log_upload::MAX_UPLOAD_BYTES {
            return Err(format!(
                "--max-log-upload must be at most {} bytes (1g), the master's limit",
                crate::master_link::log_upload::MAX_UPLOAD_BYTES
            )
            .into());
        }
        for dir in &self.allow_host_paths {
            if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
                return Err(format!("--allow-host-path '{dir}' must be an absolute path").into());
            }
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err("--heartbeat-interval must be at least 50ms".into());
        }
        Ok(())
    }

    /// The worker id: `--id`, else the id a join token was made for, else the
    /// host name made into a valid id.
    pub fn worker_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        if let Some(token) = self
            .join_token
            .as_deref()
            .and_then(cloudai_common::tls::JoinToken::parse)
        {
            return token.worker_id;
        }
        let host = sysinfo::System::host_name().unwrap_or_default();
        let cleaned: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(cloudai_common::validate::MAX_ID_LEN)
            .collect();
        let cleaned = cleaned.trim_start_matches(['.', '_', '-']).to_string();
        if cleaned.is_empty() {
            "worker".into()
        } else {
            cleaned
        }
    }

    /// The host part of the address this worker advertises.
    pub fn advertise_host(&self) -> String {
        self.advertise_host.clone().unwrap_or_else(|| {
            cloudai_common::host::primary_ipv4()
                .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
        })
    }
}
