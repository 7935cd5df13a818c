//! Master configuration: flags over environment variables over `.env`, with defaults.

use clap::Parser;
use cloudai_common::ids::WorkerId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn parse_duration(text: &str) -> Result<Duration, String> {
    cloudai_common::units::parse_duration(text).map_err(|e| e.to_string())
}

/// `cloudai-master`: admits workers, places tasks, keeps history, and runs the operator REPL.
#[derive(Debug, Clone, Parser)]
#[command(name = "cloudai-master", version, about, long_about = None)]
pub struct MasterConfig {
    /// Address of the gRPC server (workers and agents connect here).
    #[arg(long, env = "CLOUDAI_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP/WebSocket server (dashboards, metrics, health).
    #[arg(long, env = "CLOUDAI_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address workers should use to reach this master, sent when the master
    /// invites a worker. Empty: the worker uses the address the invitation came
    /// from, with the gRPC port.
    #[arg(long, env = "CLOUDAI_ADVERTISE_ADDR", default_value = "")]
    pub advertise_addr: String,

    /// Directory for the embedded store, the REPL history, the cluster PKI
    /// (tls/) and join tokens of --register workers (join-tokens/).
    #[arg(long, env = "CLOUDAI_DATA_DIR", default_value = "./cloudai-data")]
    pub data_dir: PathBuf,

    /// MongoDB connection string; when set the master keeps its state there
    /// instead of the embedded store (its password never appears in logs).
    #[arg(long, env = "CLOUDAI_MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,

    /// MongoDB database name (with --mongodb-uri).
    #[arg(long, env = "CLOUDAI_MONGODB_DATABASE", default_value = "cloudai")]
    pub mongodb_database: String,

    /// Remove finished tasks (with their results and output) once they
    /// finished this long ago, in the background (e.g. 90d). Unset: keep all.
    #[arg(long, env = "CLOUDAI_KEEP_HISTORY", value_name = "DUR", value_parser = parse_duration)]
    pub keep_history: Option<Duration>,

    /// Interval workers send heartbeats at (e.g. 5s, 500ms).
    #[arg(long, env = "CLOUDAI_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Silence after which a worker is marked inactive.
    #[arg(long, env = "CLOUDAI_INACTIVITY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub inactivity_timeout: Duration,

    /// How long a worker may lose the master before it stops its tasks'
    /// containers (their output is kept and uploaded later). A silent worker's
    /// tasks are `unknown` meanwhile and are rerun elsewhere only after this
    /// window and a margin for the stop (10s) have passed, so a running worker
    /// and the master never run one task twice at once (docs/SETUP.md). Longer: tasks ride out longer network cuts;
    /// shorter: tasks of a dead worker are rerun sooner. Workers also stop their
    /// tasks when the master itself is away this long.
    #[arg(long, env = "CLOUDAI_DISCONNECT_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub disconnect_window: Duration,

    /// Most open connections on the gRPC and HTTP ports together; lowered to
    /// three quarters of the open-file limit when that is smaller.
    #[arg(long, env = "CLOUDAI_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,

    /// Most open connections from one IP address (workers behind one NAT
    /// address share it).
    #[arg(long, env = "CLOUDAI_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,

    /// A connection with no traffic either way for this long is closed (TLS
    /// handshakes, idle HTTP keep-alive; gRPC and WebSocket peers are pinged
    /// well within it).
    #[arg(long, env = "CLOUDAI_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How often the master re-invites registered workers it has not heard from.
    #[arg(long, env = "CLOUDAI_REINVITE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub reinvite_interval: Duration,

    /// Pre-register a worker at start, as ID=HOST:PORT (repeatable). Same as
    /// typing `register ID HOST:PORT` in the REPL.
    #[arg(long = "register", value_name = "ID=HOST:PORT")]
    pub preregister: Vec<String>,

    /// Placement policy of the built-in scheduler.
    #[arg(
        long,
        env = "CLOUDAI_PLACEMENT_POLICY",
        value_enum,
        default_value = "binpack"
    )]
    pub placement_policy: crate::core::placement::Policy,

    /// Who places queued tasks: the built-in scheduler, or an external agent
    /// over the MasterAgent API (with the built-in scheduler as fallback).
    #[arg(
        long,
        env = "CLOUDAI_PLACEMENT_MODE",
        value_enum,
        default_value = "builtin"
    )]
    pub placement_mode: crate::core::placement::PlacementMode,

    /// In agent mode, how long a queued task waits for the agent before the
    /// built-in scheduler places it.
    #[arg(long, env = "CLOUDAI_AGENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub agent_timeout: Duration,

    /// Run without TLS or worker authentication (local experiments only; never
    /// on a network you do not trust). Workers must use --insecure too.
    #[arg(long, env = "CLOUDAI_INSECURE")]
    pub insecure: bool,

    /// Your own CA certificate (PEM) instead of the one made on first start.
    #[arg(long, env = "CLOUDAI_TLS_CA_CERT", requires = "tls_ca_key")]
    pub tls_ca_cert: Option<PathBuf>,

    /// Key (PEM) of --tls-ca-cert.
    #[arg(long, env = "CLOUDAI_TLS_CA_KEY", requires = "tls_ca_cert")]
    pub tls_ca_key: Option<PathBuf>,

    /// Extra host name or IP for the master's certificate (repeatable); local
    /// names and addresses are always included.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,

    /// How long a join token printed by `register` stays valid.
    #[arg(long, env = "CLOUDAI_JOIN_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub join_token_ttl: Duration,

    /// Lifetime of worker certificates (workers renew after two thirds of it).
    #[arg(long, env = "CLOUDAI_WORKER_CERT_VALIDITY", default_value = "30d", value_parser = parse_duration)]
    pub worker_cert_validity: Duration,

    /// File holding the key that seals secrets at rest (base64 of 32 bytes;
    /// created with a new random key, mode 0600, when missing). Keep it apart
    /// from the store and its backups: without it the secrets cannot be read.
    /// Unset: secrets are off.
    #[arg(long, env = "CLOUDAI_SECRETS_KEY_FILE", value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// Run without the interactive REPL (as a service); stop with SIGTERM or Ctrl-C.
    #[arg(long, env = "CLOUDAI_NO_REPL")]
    pub no_repl: bool,

    /// Instead of serving: copy the cluster's records out of, or into, the
    /// store selected by --data-dir or --mongodb-uri.
    #[command(subcommand)]
    pub command: Option<StoreCommand>,
}

/// One-off store commands (moving a cluster from one backend to another).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Write every record of the store to FILE as JSON lines (stop the master
    /// first when the store is embedded: its file is locked while it runs).
    Export {
        /// File to write ("-" for standard output).
        file: PathBuf,
    },
    /// Load a file written by `export` into the store, which must be empty.
    Import {
        /// File to read ("-" for standard input).
        file: PathBuf,
    },
}

impl MasterConfig {
    /// Checks values that clap cannot: relations between options.
    pub fn validate(&self) -> Result<(), cloudai_common::validate::ConfigError> {
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err("--heartbeat-interval must be at least 50ms".into());
        }
        if self.inactivity_timeout <= self.heartbeat_interval {
            return Err("--inactivity-timeout must be longer than --heartbeat-interval".into());
        }
        if self.worker_cert_validity < Duration::from_secs(10) {
            return Err("--worker-cert-validity must be at least 10s".into());
        }
        if self.disconnect_window < self.inactivity_timeout {
            return Err(
                "--disconnect-window must be at least --inactivity-timeout (a worker is inactive first, then its tasks are given up)"
                    .into(),
            );
        }
        if self.disconnect_window > MAX_DISCONNECT_WINDOW {
            return Err("--disconnect-window must be at most 7d".into());
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("--max-connections and --max-connections-per-ip must be at least 1".into());
        }
        if self
            .keep_history
            .is_some_and(|keep| keep < Duration::from_secs(1))
        {
            return Err("--keep-history must be at least 1s".into());
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err("--idle-timeout must be at least 1s".into());
        }
        if self.reinvite_interval < Duration::from_millis(50) {
            return Err("--reinvite-interval must be at least 50ms".into());
        }
        if !self.advertise_addr.is_empty() {
            cloudai_common::validate::address("--advertise-addr", &self.advertise_addr)?;
        }
        for entry in &self.preregister {
            parse_preregistration(entry)?;
        }
        Ok(())
    }

    /// Pre-registrations from `--register ID=HOST:PORT`.
    pub fn preregistrations(&self) -> Vec<(WorkerId, String)> {
        self.preregister
            .iter()
            .filter_map(|entry| parse_preregistration(entry).ok())
            .collect()
    }
}

/// Longest `--disconnect-window`.
const MAX_DISCONNECT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

fn parse_preregistration(
    entry: &str,
) -> Result<(WorkerId, String), cloudai_common::validate::ConfigError> {
    let (id, address) = entry
        .split_once('=')
        .ok_or_else(|| format!("--register '{entry}': expected ID=HOST:PORT"))?;
    let id = WorkerId::parse("--register id", id)?;
    cloudai_common::validate::address("--register address", address)?;
    Ok((id, address.to_string()))
}
