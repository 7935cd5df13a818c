//! The simulated workers' side of `MasterService`: registration, the
//! measured heartbeat phase (with churn: some workers fall silent and register
//! again) and the unmeasured heartbeats that keep them alive afterwards.

use crate::Args;
use crate::master::{self, worker_id};
use crate::sim::Samples;
use anyhow::Context;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::{Heartbeat, RegisterWorkerRequest, WorkerInfo};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::Channel;

/// Whether worker `i` is among the first `--churn-percent` of the workers.
pub(crate) fn churns(args: &Args, i: usize) -> bool {
    i * 100 < args.workers * args.churn_percent
}

/// Registers simulated workers `ids` (as their worker daemons would).
pub(crate) async fn register(
    client: &MasterServiceClient<Channel>,
    ids: &[usize],
    port: &str,
) -> anyhow::Result<()> {
    let calls = ids.iter().map(|&i| {
        let mut client = client.clone();
        let info = WorkerInfo {
            worker_id: worker_id(i),
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
    Ok(())
}

/// What the heartbeat phase measured.
pub(crate) struct Beats {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Arc<Samples>,
    pub(crate) master_cpu_percent: Option<f64>,
    /// Most workers `/healthz` counted inactive during the phase.
    pub(crate) inactive_max: u64,
    /// Churned workers that registered again.
    pub(crate) came_back: u64,
}

/// A heartbeat of simulated worker `i`, with metrics like a busy 64-core host.
fn heartbeat(i: usize) -> Heartbeat {
    Heartbeat {
        worker_id: worker_id(i),
        timestamp: Some(cloudai_proto::timestamp(SystemTime::now())),
        cpu_percent: (i % 100) as f32,
        cpu_count: 64,
        memory_used_bytes: 100 << 30,
        memory_total_bytes: 512 << 30,
        ..Default::default()
    }
}

/// Every worker heartbeats for `--duration`; churning ones fall silent for
/// the middle half and register again before resuming.
pub(crate) async fn heartbeat_phase(
    args: &Args,
    client: &MasterServiceClient<Channel>,
    port: &str,
    spawned: &master::SpawnedMaster,
) -> anyhow::Result<Beats> {
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let came_back = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Samples::default());
    let cpu_before = spawned.usage();
    let phase = Duration::from_secs(args.duration);
    let start = Instant::now();
    let interval = Duration::from_millis(args.heartbeat_ms);
    let beaters: Vec<_> = (0..args.workers)
        .map(|i| {
            let churns = churns(args, i);
            let (client, sent, failed, latency, came_back, port) = (
                client.clone(),
                sent.clone(),
                failed.clone(),
                latency.clone(),
                came_back.clone(),
                port.to_string(),
            );
            tokio::spawn(async move {
                let mut client = client;
                // Spread the first beats over one interval.
                tokio::time::sleep(interval.mul_f64((i % 1000) as f64 / 1000.0)).await;
                let mut tick = tokio::time::interval(interval.max(Duration::from_micros(1)));
                let mut silent = false;
                while start.elapsed() < phase {
                    if !interval.is_zero() {
                        tick.tick().await;
                    }
                    let at = start.elapsed();
                    if churns && at > phase / 4 && at < phase * 3 / 4 {
                        silent = true;
                        if interval.is_zero() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    }
                    if silent {
                        silent = false;
                        if register(&client, &[i], &port).await.is_ok() {
                            came_back.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let heartbeat = heartbeat(i);
                    let sent_at = Instant::now();
                    match client.send_heartbeat(heartbeat).await {
                        Ok(_) => {
                            latency.add(sent_at.elapsed());
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
    // Watch the master's view of the churn meanwhile.
    let mut inactive_max = 0;
    let all = futures::future::join_all(beaters);
    tokio::pin!(all);
    loop {
        tokio::select! {
            _ = &mut all => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if args.churn_percent > 0 {
                    let (_, inactive) = master::worker_counts(&spawned.http).await?;
                    inactive_max = inactive_max.max(inactive);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let master_cpu_percent = match (cpu_before, spawned.usage()) {
        (Some((a, _)), Some((b, _))) => Some((b - a) / elapsed.as_secs_f64() * 100.0),
        _ => None,
    };
    Ok(Beats {
        sent: sent.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        latency,
        master_cpu_percent,
        inactive_max,
        came_back: came_back.load(Ordering::Relaxed),
    })
}

/// Heartbeats of every worker at `interval` until aborted (not measured).
pub(crate) async fn keep_heartbeating(
    client: MasterServiceClient<Channel>,
    workers: usize,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let beats = (0..workers).map(|i| {
            let mut client = client.clone();
            async move {
                let _ = client.send_heartbeat(heartbeat(i)).await;
            }
        });
        futures::stream::iter(beats)
            .buffer_unordered(256)
            .collect::<Vec<()>>()
            .await;
    }
}
