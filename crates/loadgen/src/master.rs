//! The master under test: started here (`--insecure`, every simulated worker
//! pre-registered), its CPU and memory read from /proc, its HTTP port read.

use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A master this run started; killed on drop.
pub struct SpawnedMaster {
    child: Child,
    /// gRPC address.
    pub grpc: String,
    /// HTTP address.
    pub http: String,
    /// The command line it was started with (kept for a restart).
    command: Vec<std::ffi::OsString>,
    binary: PathBuf,
    _data: tempfile::TempDir,
}

impl Drop for SpawnedMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SpawnedMaster {
    /// CPU seconds and resident bytes so far.
    pub fn usage(&self) -> Option<(f64, u64)> {
        process_usage(self.child.id())
    }

    /// The process id of the master running now.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the master with SIGKILL and starts it again on the same data
    /// directory and ports; returns once it serves (its banner).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut args = self.command.clone();
        for (flag, address) in [("--grpc-addr", &self.grpc), ("--http-addr", &self.http)] {
            let at = args
                .iter()
                .position(|a| a == flag)
                .context("no address flag")?;
            args[at + 1] = address.into();
        }
        let (child, _, _) = launch(&self.binary, &args)?;
        self.child = child;
        Ok(())
    }
}

/// Starts the binary and reads its banner: the child and its gRPC and HTTP addresses.
fn launch(
    binary: &std::path::Path,
    args: &[std::ffi::OsString],
) -> anyhow::Result<(Child, String, String)> {
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("the master's stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let after = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_string)
            .with_context(|| format!("no '{marker}' in the master's banner: {line}"))
    };
    Ok((child, after("gRPC on ")?, after("HTTP on ")?))
}

/// How to start the master.
pub struct MasterSpec<'a> {
    /// The binary.
    pub binary: PathBuf,
    /// Simulated workers to pre-register at `sim`.
    pub workers: usize,
    /// Their endpoint.
    pub sim: &'a str,
    /// Heartbeat interval (ms); 0 means as fast as they can.
    pub heartbeat_ms: u64,
    /// Extra flags (for example `--mongodb-uri …`).
    pub extra: &'a [String],
}

/// Starts an insecure master with every simulated worker pre-registered.
pub fn spawn(spec: &MasterSpec<'_>) -> anyhow::Result<SpawnedMaster> {
    let data = tempfile::tempdir()?;
    // Peak runs send back to back; the master still needs an interval to
    // expect, and a timeout no busy moment of the run can reach.
    let interval = spec.heartbeat_ms.max(100);
    let inactivity = (interval * 3).max(3000);
    let mut command: Vec<std::ffi::OsString> = [
        "--insecure",
        "--no-repl",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--heartbeat-interval",
        &format!("{interval}ms"),
        "--inactivity-timeout",
        &format!("{inactivity}ms"),
        "--reinvite-interval",
        "1h",
        // Every simulated worker and WebSocket client comes from loopback.
        "--max-connections-per-ip",
        "65536",
        "--data-dir",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    command.push(data.path().into());
    command.extend(spec.extra.iter().map(Into::into));
    for i in 0..spec.workers {
        command.push("--register".into());
        command.push(format!("{}={}", worker_id(i), spec.sim).into());
    }
    let (child, grpc, http) = launch(&spec.binary, &command)?;
    Ok(SpawnedMaster {
        grpc,
        http,
        child,
        command,
        binary: spec.binary.clone(),
        _data: data,
    })
}

/// The id of simulated worker `i`.
pub fn worker_id(i: usize) -> String {
    format!("sim-{i:05}")
}

/// CPU seconds and resident memory of a process, from /proc.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kb * 1024))
}

/// `GET path` on the master's plain-HTTP port; the body.
pub async fn http_get(http: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(http).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {http}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    Ok(body.to_string())
}

/// Workers active and inactive according to `/healthz`.
pub async fn worker_counts(http: &str) -> anyhow::Result<(u64, u64)> {
    let health: serde_json::Value = serde_json::from_str(&http_get(http, "/healthz").await?)?;
    let count = |state: &str| health["workers"][state].as_u64().unwrap_or(0);
    Ok((count("active"), count("inactive")))
}

/// `cloudai_telemetry_dropped_total` from `/metrics`.
pub async fn telemetry_dropped(http: &str) -> anyhow::Result<u64> {
    let metrics = http_get(http, "/metrics").await?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("cloudai_telemetry_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .context("no cloudai_telemetry_dropped_total in /metrics")
}
