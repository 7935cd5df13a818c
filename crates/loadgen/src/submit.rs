//! Task dispatch load: `--tasks` submissions through the `MasterAgent` API
//! from `--submitters` concurrent clients, in a burst or at `--task-rate`.

use crate::Args;
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::{SubmitTaskRequest, Task};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Submits `total` tasks (each with `max_retries`) from `--submitters`
/// concurrent clients.
pub(crate) async fn submit_tasks(
    args: &Args,
    total: u64,
    max_retries: u32,
    agent: &MasterAgentClient<Channel>,
    submitted: &Arc<Mutex<HashMap<String, Instant>>>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let count = args.submitters.max(1);
    // Paced: each submitter sends every `count / rate` seconds, staggered.
    let pace =
        (args.task_rate > 0).then(|| Duration::from_secs_f64(count as f64 / args.task_rate as f64));
    let submitters: Vec<_> = (0..count)
        .map(|k| {
            let (mut agent, next, submitted, total) =
                (agent.clone(), next.clone(), submitted.clone(), total);
            tokio::spawn(async move {
                let mut tick = pace.map(|every| {
                    let start =
                        tokio::time::Instant::now() + every.mul_f64(k as f64 / count as f64);
                    let mut tick = tokio::time::interval_at(start, every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick
                });
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    if let Some(tick) = tick.as_mut() {
                        tick.tick().await;
                    }
                    let task = Task {
                        image: "sim".into(),
                        ..Default::default()
                    };
                    let at = Instant::now();
                    if let Ok(response) = agent
                        .submit_task(SubmitTaskRequest {
                            task: Some(task),
                            max_retries,
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
}
