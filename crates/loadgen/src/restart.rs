//! `--restart`: the master killed with history in its store and tasks in its
//! queue, then started again on the same data directory. Measures how long
//! until it serves, until it places the first queued task once its workers
//! are back, and its memory then (compare with the fresh master's).

use crate::Args;
use crate::heartbeats::{keep_heartbeating, register};
use crate::master::{self, SpawnedMaster};
use crate::submit::submit_tasks;
use anyhow::bail;
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The clients and counters the restart phase shares with the rest of the run.
pub(crate) struct Cluster<'a> {
    pub(crate) client: &'a MasterServiceClient<Channel>,
    pub(crate) agent: &'a MasterAgentClient<Channel>,
    pub(crate) port: &'a str,
    pub(crate) assigned: &'a Arc<Mutex<HashMap<String, Instant>>>,
    pub(crate) completed: &'a Arc<AtomicU64>,
}

/// Waits for `done` to hold, for at most `limit`.
async fn until(
    limit: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await? {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(false)
}

/// Queues `--queued` tasks while every worker is silent, restarts the master
/// and measures it; the summary as JSON.
pub(crate) async fn restart_phase(
    args: &Args,
    spawned: &mut SpawnedMaster,
    cluster: Cluster<'_>,
) -> anyhow::Result<serde_json::Value> {
    // Silent workers go inactive; tasks submitted then stay queued.
    let http = spawned.http.clone();
    let silent = until(Duration::from_secs(120), async || {
        Ok(master::worker_counts(&http).await?.0 == 0)
    });
    if !silent.await? {
        bail!("the simulated workers never went inactive");
    }
    let before = cluster.completed.load(Ordering::Relaxed);
    let submitted = Arc::new(Mutex::new(HashMap::new()));
    // Retries: an assignment that meets the restarted master's first rush
    // of calls on the one endpoint all simulated workers share may get no
    // answer, and is then lost and run again (at most once at a time).
    submit_tasks(args, args.queued as u64, 2, cluster.agent, &submitted).await;
    let queued = submitted.lock().unwrap().len();
    let placed_before = cluster.assigned.lock().unwrap().len();

    let start = Instant::now();
    spawned.restart()?;
    let serving = start.elapsed();
    let rss_serving = spawned.usage().map(|(_, rss)| rss);
    // The workers come back as their daemons would, while placement starts.
    let (client, port, workers) = (
        cluster.client.clone(),
        cluster.port.to_string(),
        args.workers,
    );
    let interval = Duration::from_millis(args.heartbeat_ms.max(100));
    let comeback = tokio::spawn(async move {
        let ids: Vec<usize> = (0..workers).collect();
        for chunk in ids.chunks(256) {
            register(&client, chunk, &port).await?;
        }
        keep_heartbeating(client, workers, interval).await;
        anyhow::Ok(())
    });
    let placed = until(Duration::from_secs(120), async || {
        Ok(cluster.assigned.lock().unwrap().len() > placed_before)
    });
    let first_placement = placed.await?.then(|| start.elapsed());
    let all_done = until(Duration::from_secs(180), async || {
        Ok(cluster.completed.load(Ordering::Relaxed) >= before + queued as u64)
    });
    let finished = all_done.await?;
    let drained = start.elapsed();
    let rss_end = spawned.usage().map(|(_, rss)| rss);
    comeback.abort();
    if !finished {
        bail!("the queued tasks did not all complete after the restart");
    }
    Ok(serde_json::json!({
        "queued": queued,
        "serving_seconds": serving.as_secs_f64(),
        "first_placement_seconds": first_placement.map(|d| d.as_secs_f64()),
        "queue_drained_seconds": drained.as_secs_f64(),
        "master_rss_bytes": { "serving": rss_serving, "after_queue": rss_end },
    }))
}
