//! The heartbeat loop: registration when needed, a sample every interval (or
//! sooner), certificate renewal once due, and a last `stopping` heartbeat.

use super::{register, request};
use crate::Worker;
use cloudai_common::host::Sampler;
use cloudai_proto::v1::Heartbeat;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tonic::{Code, Status};

/// Heartbeat loop: registers when needed, sends a sample every interval (or
/// sooner when asked), and a final `stopping` heartbeat at shutdown.
pub async fn run_heartbeats(worker: Worker) {
    let mut sampler = Sampler::new();
    let data_root = worker.executor().data_root().await;
    let link = worker.link();
    loop {
        tokio::select! {
            _ = worker.shutdown_token().cancelled() => break,
            _ = tokio::time::sleep(link.interval()) => {}
            _ = worker.heartbeat_requested() => {}
        }
        if link.master().is_none() {
            continue;
        }
        if !link.registered.load(Ordering::SeqCst) {
            if let Err(status) = register(&worker).await {
                link.report_problem(format!(
                    "registration refused or failed: {}",
                    status.message()
                ));
            }
            continue;
        }
        let heartbeat = sample(&worker, &mut sampler, data_root.as_deref(), false);
        match send_heartbeat(&worker, heartbeat).await {
            Ok(()) => renew_if_due(&worker).await,
            Err(status) => {
                if status.code() == Code::PermissionDenied {
                    link.registered.store(false, Ordering::SeqCst);
                }
                link.report_problem(format!("heartbeat failed: {}", status.message()));
            }
        }
    }
    if link.registered.load(Ordering::SeqCst) {
        let last = sample(&worker, &mut sampler, data_root.as_deref(), true);
        match tokio::time::timeout(Duration::from_secs(2), send_heartbeat(&worker, last)).await {
            Ok(Ok(())) => tracing::info!("told the master this worker is stopping"),
            _ => tracing::warn!("could not tell the master this worker is stopping"),
        }
    }
}

/// Renews the worker's certificate once two thirds of its lifetime have passed.
async fn renew_if_due(worker: &Worker) {
    let Some(identity) = worker.identity() else {
        return;
    };
    if !identity.needs_renewal() {
        return;
    }
    let Ok(Some(mut client)) = worker.link().client() else {
        return;
    };
    match crate::master_link::identity::renew(&mut client, worker.id()).await {
        Ok(renewed) => {
            if let Err(error) = renewed.save(&worker.config().data_dir) {
                tracing::error!(
                    %error,
                    "cannot store the renewed certificate; keeping the old one"
                );
                return;
            }
            tracing::info!(expires_at = renewed.expires_at(), "certificate renewed");
            worker.link().set_tls(renewed.client_tls());
            worker.set_identity(renewed);
        }
        Err(error) => worker.link().report_problem(error.to_string()),
    }
}

fn sample(
    worker: &Worker,
    sampler: &mut Sampler,
    data_root: Option<&std::path::Path>,
    stopping: bool,
) -> Heartbeat {
    let sample = sampler.sample();
    let (disk_used_bytes, disk_total_bytes) = data_root
        .and_then(cloudai_common::host::disk_usage)
        .unwrap_or_default();
    Heartbeat {
        worker_id: worker.id().to_string(),
        timestamp: Some(cloudai_proto::timestamp(SystemTime::now())),
        cpu_percent: sample.cpu_percent,
        cpu_count: sample.cpu_count,
        memory_used_bytes: sample.memory_used_bytes,
        memory_total_bytes: sample.memory_total_bytes,
        gpus: worker.gpus().metrics_with_holders(worker.gpu_leases()),
        running_task_ids: worker.running_task_ids(),
        held_task_ids: worker.held_task_ids(),
        load_average_1m: sample.load_average_1m,
        disk_used_bytes,
        disk_total_bytes,
        stopping,
    }
}

async fn send_heartbeat(worker: &Worker, heartbeat: Heartbeat) -> Result<(), Status> {
    let Some(mut client) = worker
        .link()
        .client()
        .map_err(|e| Status::invalid_argument(e.to_string()))?
    else {
        return Ok(());
    };
    let (sent, sent_wall) = (std::time::Instant::now(), SystemTime::now());
    let response = client
        .send_heartbeat(request(heartbeat))
        .await?
        .into_inner();
    worker.link().contact.record(sent, sent_wall, None);
    worker.link().clear_problem();
    worker.stop_unwanted(&response.stop_task_ids);
    Ok(())
}
