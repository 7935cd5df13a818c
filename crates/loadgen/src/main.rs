//! `cloudai-loadgen`: simulates many workers over real gRPC against a real
//! master (started here with `--insecure`), with optional WebSocket clients,
//! and measures heartbeat ingest, telemetry fan-out, worker churn and task
//! dispatch. No Docker: simulated workers accept tasks and report them
//! completed after `--task-delay-ms`.
//!
//! All simulated workers share one `WorkerService` endpoint; the master tells
//! them apart by the `worker_id` it sends with each task.

mod heartbeats;
mod master;
mod progress;
mod restart;
mod sim;
mod submit;
mod watchers;

use anyhow::{Context, bail};
use clap::Parser;
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::worker_service_server::WorkerServiceServer;
use heartbeats::{churns, heartbeat_phase, keep_heartbeating, register};
use serde_json::json;
use sim::{Samples, SimWorkers};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use submit::submit_tasks;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

/// Simulated workers, WebSocket clients and tasks against a CloudAI master
/// this tool starts. Prints a JSON summary; exits non-zero when the counts do
/// not add up (a failed heartbeat, a task not completed, a telemetry event a
/// reading client did not get, a churned worker that did not come back).
#[derive(Debug, Parser)]
#[command(name = "cloudai-loadgen", version, about, long_about = None)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Heartbeat interval of each simulated worker (ms); 0 sends back to back
    /// (peak ingest).
    #[arg(long, default_value_t = 5000)]
    heartbeat_ms: u64,
    /// How long to send heartbeats (s).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// WebSocket clients following every worker during the heartbeat phase.
    #[arg(long, default_value_t = 0)]
    ws_clients: usize,
    /// Extra WebSocket clients that connect and never read.
    #[arg(long, default_value_t = 0)]
    stalled_clients: usize,
    /// Percent of the workers (the first ones) that go silent for the middle
    /// half of the heartbeat phase, then register again and resume.
    #[arg(long, default_value_t = 0)]
    churn_percent: usize,
    /// Tasks to submit through the MasterAgent API (after the heartbeat phase).
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// How long a simulated task "runs" (ms).
    #[arg(long, default_value_t = 0)]
    task_delay_ms: u64,
    /// Concurrent task submitters.
    #[arg(long, default_value_t = 32)]
    submitters: usize,
    /// Submit at this many tasks per second in total (0: as fast as the
    /// submitters can, a burst).
    #[arg(long, default_value_t = 0)]
    task_rate: u64,
    /// The cloudai-master binary to start (default: next to this binary).
    #[arg(long)]
    master_bin: Option<PathBuf>,
    /// Extra flag for the master (repeatable), e.g. `--master-arg=--mongodb-uri=mongodb://…`.
    #[arg(long = "master-arg", value_name = "FLAG", allow_hyphen_values = true)]
    master_args: Vec<String>,
    /// Small and fast (CI smoke test): 50 workers at 500 ms for 10 s, 4 WebSocket
    /// clients and 1 stalled one, 10 % churn, 200 tasks.
    #[arg(long)]
    quick: bool,
    /// After the dispatch phase: silence the workers, queue `--queued` tasks,
    /// kill the master and start it again on its data directory; measures the
    /// time until it serves and places the first queued task.
    #[arg(long)]
    restart: bool,
    /// Tasks queued before the restart (with `--restart`).
    #[arg(long, default_value_t = 1000)]
    queued: usize,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        (args.workers, args.heartbeat_ms, args.duration, args.tasks) = (50, 500, 10, 200);
        (args.ws_clients, args.stalled_clients, args.churn_percent) = (4, 1, 10);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let sim = listener.local_addr()?.to_string();
    let master_client = Arc::new(std::sync::OnceLock::new());
    let submitted = Arc::new(Mutex::new(HashMap::new()));
    let assigned = Arc::new(Mutex::new(HashMap::new()));
    let completed = Arc::new(AtomicU64::new(0));
    let service = SimWorkers {
        master: master_client.clone(),
        delay: Duration::from_millis(args.task_delay_ms),
        assigned: assigned.clone(),
        completed: completed.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let started = Instant::now();
    let binary = match &args.master_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("cloudai-master"),
    };
    let mut spawned = master::spawn(&master::MasterSpec {
        binary,
        workers: args.workers,
        sim: &sim,
        heartbeat_ms: args.heartbeat_ms,
        extra: &args.master_args,
    })?;
    let setup = started.elapsed();
    eprintln!(
        "master at {} ({} workers pre-registered in {:.1}s)",
        spawned.grpc,
        args.workers,
        setup.as_secs_f64()
    );
    let channel = Channel::from_shared(format!("http://{}", spawned.grpc))?
        .connect()
        .await
        .context("cannot reach the master")?;
    let client = MasterServiceClient::new(channel.clone());
    let _ = master_client.set(client.clone());
    let port = sim.rsplit_once(':').unwrap().1.to_string();
    let ids: Vec<usize> = (0..args.workers).collect();
    for chunk in ids.chunks(256) {
        register(&client, chunk, &port).await?;
    }

    let watchers =
        watchers::Watchers::connect(&spawned.http, args.ws_clients, args.stalled_clients)
            .await
            .context("WebSocket clients")?;
    let churned: Vec<usize> = (0..args.workers).filter(|&i| churns(&args, i)).collect();
    eprintln!(
        "{} simulated workers registered, {} WebSocket clients ({} stalled), {} churning; heartbeating for {}s",
        args.workers,
        args.ws_clients,
        args.stalled_clients,
        churned.len(),
        args.duration
    );
    let beats = heartbeat_phase(&args, &client, &port, &spawned).await?;
    let dropped = master::telemetry_dropped(&spawned.http).await?;
    watchers.settle(Duration::from_millis(500)).await;
    let (received_min, received_max) = watchers.received();
    // From here on workers only stay alive: they keep heartbeating, unmeasured.
    let keepalive = tokio::spawn(keep_heartbeating(
        client.clone(),
        args.workers,
        Duration::from_millis(args.heartbeat_ms.max(100)),
    ));
    // Churned workers are back once the master counts all of them active again.
    let back_by = Instant::now() + Duration::from_secs(30);
    let mut active_at_end = 0;
    while Instant::now() < back_by {
        active_at_end = master::worker_counts(&spawned.http).await?.0;
        if active_at_end == args.workers as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("submitting {} tasks", args.tasks);
    let agent = MasterAgentClient::new(channel);
    let dispatch_start = Instant::now();
    let watch = progress::Watch::start(spawned.pid(), completed.clone());
    submit_tasks(&args, args.tasks as u64, 0, &agent, &submitted).await;
    // Two minutes, or more for runs that need more at 500 tasks/s.
    let limit = Duration::from_secs(120.max(args.tasks as u64 / 500));
    let deadline = Instant::now() + limit;
    while completed.load(Ordering::Relaxed) < args.tasks as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dispatch_elapsed = dispatch_start.elapsed();
    let watched = watch.stop(args.tasks as u64);
    keepalive.abort();
    let done = completed.load(Ordering::Relaxed);
    let assign_latency = Samples::default();
    {
        let assigned = assigned.lock().unwrap();
        for (task_id, at) in submitted.lock().unwrap().iter() {
            if let Some(reached) = assigned.get(task_id) {
                assign_latency.add(reached.saturating_duration_since(*at));
            }
        }
    }
    let usage = spawned.usage();
    let restarted = if args.restart {
        let cluster = restart::Cluster {
            client: &client,
            agent: &agent,
            port: &port,
            assigned: &assigned,
            completed: &completed,
        };
        Some(restart::restart_phase(&args, &mut spawned, cluster).await?)
    } else {
        None
    };

    let summary = json!({
        "workers": args.workers,
        "heartbeat_interval_ms": args.heartbeat_ms,
        "setup_seconds": setup.as_secs_f64(),
        "heartbeats": {
            "sent": beats.sent,
            "failed": beats.failed,
            "per_second": beats.sent as f64 / beats.elapsed.as_secs_f64(),
            "rpc_latency": beats.latency.percentiles(),
            "master_cpu_percent_of_one_core": beats.master_cpu_percent,
            "telemetry_dropped_by_master": dropped,
        },
        "websocket": {
            "clients": args.ws_clients,
            "stalled_clients": args.stalled_clients,
            "telemetry_received_min": received_min,
            "telemetry_received_max": received_max,
            "missed": watchers.missed(),
            "delivery_latency": watchers.latency.percentiles(),
        },
        "churn": {
            "workers": churned.len(),
            "seen_inactive_max": beats.inactive_max,
            "came_back": beats.came_back,
            "active_at_end": active_at_end,
        },
        "dispatch": {
            "tasks": args.tasks,
            "completed": done,
            "per_second": done as f64 / dispatch_elapsed.as_secs_f64(),
            "last_tenth_per_second": watched["last_tenth_per_second"],
            "submit_to_assign": assign_latency.percentiles(),
            "master_rss_bytes": watched["master_rss_bytes"],
        },
        "master_rss_bytes": usage.map(|(_, rss)| rss),
        "restart": restarted,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    let mut wrong = Vec::new();
    if beats.failed > 0 {
        wrong.push(format!("{} heartbeats failed", beats.failed));
    }
    if done != args.tasks as u64 {
        wrong.push(format!("{done} of {} tasks completed", args.tasks));
    }
    let expected = beats.sent - dropped;
    if args.ws_clients > 0 && (received_min != expected || received_max != expected) {
        wrong.push(format!(
            "WebSocket clients got {received_min}..{received_max} telemetry events, not {expected}"
        ));
    }
    if beats.came_back != churned.len() as u64 || active_at_end != args.workers as u64 {
        wrong.push(format!(
            "{} of {} churned workers registered again, {active_at_end} of {} active at the end",
            beats.came_back,
            churned.len(),
            args.workers
        ));
    }
    if !churned.is_empty() && beats.inactive_max < churned.len() as u64 {
        wrong.push(format!(
            "the master saw at most {} of {} silent workers inactive",
            beats.inactive_max,
            churned.len()
        ));
    }
    if !wrong.is_empty() {
        bail!("counts do not add up: {}", wrong.join("; "));
    }
    Ok(())
}
