//! `cloudai-loadgen`: simulates many workers over real gRPC against a real
//! master (started here with `--insecure`, or given with `--master`), and
//! measures heartbeat ingest and task dispatch. No Docker: simulated workers
//! accept tasks and report them completed after `--task-delay`.
//!
//! All simulated workers share one `WorkerService` endpoint; the master tells
//! them apart by the `worker_id` it sends with each task.

use anyhow::{Context, bail};
use clap::Parser;
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use cloudai_proto::v1::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Simulated workers and tasks against a CloudAI master.
#[derive(Debug, Parser)]
#[command(name = "cloudai-loadgen", version, about)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Heartbeat interval of each simulated worker (ms).
    #[arg(long, default_value_t = 5000)]
    heartbeat_ms: u64,
    /// How long to send heartbeats (s).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Tasks to submit through the MasterAgent API (after the heartbeat phase).
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// How long a simulated task "runs" (ms).
    #[arg(long, default_value_t = 0)]
    task_delay_ms: u64,
    /// Concurrent task submitters.
    #[arg(long, default_value_t = 32)]
    submitters: usize,
    /// Use this master (started with --insecure and the workers pre-registered)
    /// instead of starting one.
    #[arg(long)]
    master: Option<String>,
    /// The cloudai-master binary to start (default: next to this binary).
    #[arg(long)]
    master_bin: Option<PathBuf>,
    /// Small and fast: 50 workers, 500 ms heartbeats, 3 s, 200 tasks (CI smoke test).
    #[arg(long)]
    quick: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Latency samples in microseconds.
#[derive(Default)]
struct Samples(Mutex<Vec<u64>>);

impl Samples {
    fn add(&self, value: Duration) {
        self.0.lock().unwrap().push(value.as_micros() as u64);
    }

    fn percentiles(&self) -> serde_json::Value {
        let mut values = self.0.lock().unwrap().clone();
        values.sort_unstable();
        let at = |p: f64| {
            values
                .get(((values.len() as f64 * p) as usize).min(values.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        serde_json::json!({ "count": values.len(), "p50_us": at(0.50), "p99_us": at(0.99), "max_us": values.last().copied().unwrap_or(0) })
    }
}

/// The shared simulated `WorkerService`.
struct SimWorkers {
    /// Set once the master's address is known (the server starts first, so
    /// the master's invitations at start-up are answered at once).
    master: Arc<std::sync::OnceLock<MasterServiceClient<Channel>>>,
    delay: Duration,
    /// When each task was submitted, to time submit → assign.
    submitted: Arc<Mutex<HashMap<String, Instant>>>,
    assign_latency: Arc<Samples>,
    completed: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl WorkerService for SimWorkers {
    async fn master_register(
        &self,
        _: Request<MasterRegisterRequest>,
    ) -> Result<Response<MasterRegisterResponse>, Status> {
        Ok(Response::new(MasterRegisterResponse {
            message: "simulated".into(),
        }))
    }

    async fn assign_task(
        &self,
        request: Request<AssignTaskRequest>,
    ) -> Result<Response<AssignTaskResponse>, Status> {
        let request = request.into_inner();
        let task = request
            .task
            .ok_or_else(|| Status::invalid_argument("task"))?;
        if let Some(at) = self.submitted.lock().unwrap().get(&task.task_id) {
            self.assign_latency.add(at.elapsed());
        }
        let mut master = self
            .master
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("not ready"))?;
        let (delay, completed) = (self.delay, self.completed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let now = Some(cloudai_proto::timestamp(SystemTime::now()));
            let result = TaskResult {
                task_id: task.task_id,
                worker_id: request.worker_id,
                status: TaskStatus::Completed as i32,
                exit_code: Some(0),
                started_at: now,
                finished_at: now,
                attempt: task.attempt,
                ..Default::default()
            };
            if master.report_task_completion(result).await.is_ok() {
                completed.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Response::new(AssignTaskResponse {
            accepted: true,
            message: String::new(),
        }))
    }

    async fn cancel_task(
        &self,
        _: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        Ok(Response::new(CancelTaskResponse { found: false }))
    }

    type StreamTaskLogsStream = tokio_stream::Empty<Result<LogChunk, Status>>;

    async fn stream_task_logs(
        &self,
        _: Request<StreamTaskLogsRequest>,
    ) -> Result<Response<Self::StreamTaskLogsStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }
}

/// CPU seconds and resident memory of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
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

struct SpawnedMaster {
    child: Child,
    grpc: String,
    _data: tempfile::TempDir,
}

impl Drop for SpawnedMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an insecure master with every simulated worker pre-registered at `sim`.
fn spawn_master(args: &Args, sim: &str) -> anyhow::Result<SpawnedMaster> {
    let binary = match &args.master_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("cloudai-master"),
    };
    let data = tempfile::tempdir()?;
    let mut command = Command::new(&binary);
    command
        .args([
            "--insecure",
            "--no-repl",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--heartbeat-interval", &format!("{}ms", args.heartbeat_ms)])
        .args([
            "--inactivity-timeout",
            &format!("{}ms", args.heartbeat_ms * 6),
        ])
        .args(["--reinvite-interval", "1h"])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for i in 0..args.workers {
        command.arg("--register").arg(format!("sim-{i:05}={sim}"));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let grpc = line
        .split("gRPC on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .context("no banner from the master")?
        .to_string();
    Ok(SpawnedMaster {
        child,
        grpc,
        _data: data,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        (args.workers, args.heartbeat_ms, args.duration, args.tasks) = (50, 500, 3, 200);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let sim = listener.local_addr()?.to_string();
    let master_client = Arc::new(std::sync::OnceLock::new());
    let submitted = Arc::new(Mutex::new(HashMap::new()));
    let assign_latency = Arc::new(Samples::default());
    let completed = Arc::new(AtomicU64::new(0));
    let service = SimWorkers {
        master: master_client.clone(),
        delay: Duration::from_millis(args.task_delay_ms),
        submitted: submitted.clone(),
        assign_latency: assign_latency.clone(),
        completed: completed.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let started = Instant::now();
    let spawned = match &args.master {
        Some(_) => None,
        None => Some(spawn_master(&args, &sim)?),
    };
    let master_addr = args
        .master
        .clone()
        .or(spawned.as_ref().map(|m| m.grpc.clone()))
        .unwrap();
    let setup = started.elapsed();
    eprintln!(
        "master at {master_addr} ({} workers pre-registered in {:.1}s)",
        args.workers,
        setup.as_secs_f64()
    );
    let channel = Channel::from_shared(format!("http://{master_addr}"))?
        .connect()
        .await
        .context("cannot reach the master")?;
    let client = MasterServiceClient::new(channel.clone());
    let _ = master_client.set(client.clone());

    // Register every simulated worker.
    let port = sim.rsplit_once(':').unwrap().1.to_string();
    for chunk in (0..args.workers).collect::<Vec<_>>().chunks(256) {
        let calls = chunk.iter().map(|i| {
            let mut client = client.clone();
            let info = WorkerInfo {
                worker_id: format!("sim-{i:05}"),
                address: format!("127.0.0.1:{port}"),
                cpu_count: 64,
                memory_total_bytes: 512 << 30,
                ..Default::default()
            };
            async move {
                client
                    .register_worker(RegisterWorkerRequest {
                        info: Some(info),
                        task_ids: vec![],
                    })
                    .await
            }
        });
        for result in futures::future::join_all(calls).await {
            result.context("registration refused")?;
        }
    }

    eprintln!(
        "{} simulated workers registered; heartbeating for {}s",
        args.workers, args.duration
    );
    // Heartbeat phase.
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let rpc_latency = Arc::new(Samples::default());
    let cpu_before = spawned.as_ref().and_then(|m| process_usage(m.child.id()));
    let phase = Duration::from_secs(args.duration);
    let phase_start = Instant::now();
    let interval = Duration::from_millis(args.heartbeat_ms);
    let beaters: Vec<_> = (0..args.workers)
        .map(|i| {
            let (mut client, sent, failed, rpc_latency) = (
                client.clone(),
                sent.clone(),
                failed.clone(),
                rpc_latency.clone(),
            );
            tokio::spawn(async move {
                // Spread the first beats over one interval.
                tokio::time::sleep(interval.mul_f64(i as f64 / 1000.0 % 1.0)).await;
                let mut tick = tokio::time::interval(interval);
                while phase_start.elapsed() < phase {
                    tick.tick().await;
                    let heartbeat = Heartbeat {
                        worker_id: format!("sim-{i:05}"),
                        timestamp: Some(cloudai_proto::timestamp(SystemTime::now())),
                        cpu_percent: (i % 100) as f32,
                        cpu_count: 64,
                        memory_used_bytes: 100 << 30,
                        memory_total_bytes: 512 << 30,
                        ..Default::default()
                    };
                    let at = Instant::now();
                    match client.send_heartbeat(heartbeat).await {
                        Ok(_) => {
                            rpc_latency.add(at.elapsed());
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    futures::future::join_all(beaters).await;
    let heartbeat_elapsed = phase_start.elapsed();
    let cpu_after = spawned.as_ref().and_then(|m| process_usage(m.child.id()));

    eprintln!("submitting {} tasks", args.tasks);
    // Dispatch phase: submit through MasterAgent, count completions.
    let agent = MasterAgentClient::new(channel);
    let dispatch_start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let submitters: Vec<_> = (0..args.submitters.max(1))
        .map(|_| {
            let (mut agent, next, submitted, total) = (
                agent.clone(),
                next.clone(),
                submitted.clone(),
                args.tasks as u64,
            );
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let task = Task {
                        image: "sim".into(),
                        ..Default::default()
                    };
                    let at = Instant::now();
                    if let Ok(response) = agent
                        .submit_task(SubmitTaskRequest {
                            task: Some(task),
                            ..Default::default()
                        })
                        .await
                    {
                        submitted
                            .lock()
                            .unwrap()
                            .insert(response.into_inner().task_id, at);
                    }
                }
            })
        })
        .collect();
    futures::future::join_all(submitters).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed.load(Ordering::Relaxed) < args.tasks as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dispatch_elapsed = dispatch_start.elapsed();
    let done = completed.load(Ordering::Relaxed);
    let usage = spawned.as_ref().and_then(|m| process_usage(m.child.id()));

    let summary = serde_json::json!({
        "workers": args.workers,
        "heartbeat_interval_ms": args.heartbeat_ms,
        "setup_seconds": setup.as_secs_f64(),
        "heartbeats": {
            "sent": sent.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed),
            "per_second": sent.load(Ordering::Relaxed) as f64 / heartbeat_elapsed.as_secs_f64(),
            "rpc_latency": rpc_latency.percentiles(),
            "master_cpu_percent_of_one_core": match (cpu_before, cpu_after) {
                (Some((a, _)), Some((b, _))) => serde_json::json!((b - a) / heartbeat_elapsed.as_secs_f64() * 100.0),
                _ => serde_json::Value::Null,
            },
        },
        "dispatch": {
            "tasks": args.tasks,
            "completed": done,
            "per_second": done as f64 / dispatch_elapsed.as_secs_f64(),
            "submit_to_assign": assign_latency.percentiles(),
        },
        "master_rss_bytes": usage.map(|(_, rss)| rss),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    if failed.load(Ordering::Relaxed) > 0 || done != args.tasks as u64 {
        bail!(
            "counts do not add up: {} heartbeats failed, {done} of {} tasks completed",
            failed.load(Ordering::Relaxed),
            args.tasks
        );
    }
    Ok(())
}
