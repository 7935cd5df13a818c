//! The worker's side of `MasterService`: registration, heartbeats and result delivery.

use crate::disconnect::Contact;
use crate::log_upload::{self, UploadError};
use crate::{PendingReport, Worker, spool};
use cloudai_common::host::Sampler;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::{Heartbeat, RegisterWorkerRequest};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long one call to the master may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between attempts to deliver a result.
const MAX_REPORT_BACKOFF: Duration = Duration::from_secs(5);
/// How long an upload of a whole output may keep failing before the result
/// is delivered with its tail only (so a task never stays unfinished).
const UPLOAD_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// What the worker knows about its master.
pub struct LinkState {
    master: Mutex<Option<String>>,
    /// Mutual TLS towards the master; `None` with --insecure.
    tls: Mutex<Option<tonic::transport::ClientTlsConfig>>,
    /// Where the master's address is remembered across restarts.
    memory: Option<std::path::PathBuf>,
    client: Mutex<Option<(String, MasterServiceClient<Channel>)>>,
    registered: AtomicBool,
    interval_ms: AtomicU64,
    registering: tokio::sync::Mutex<()>,
    last_problem: Mutex<String>,
    contact: Contact,
}

impl LinkState {
    /// Link state with an optional known master and a starting heartbeat interval.
    pub fn new(
        master: Option<String>,
        interval: Duration,
        tls: Option<tonic::transport::ClientTlsConfig>,
        memory: Option<std::path::PathBuf>,
        contact_file: Option<std::path::PathBuf>,
    ) -> Self {
        let remembered = memory
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty());
        let master = master.or(remembered);
        if let (Some(path), Some(address)) = (&memory, &master) {
            remember(path, address);
        }
        Self {
            master: Mutex::new(master),
            tls: Mutex::new(tls),
            memory,
            client: Mutex::new(None),
            registered: AtomicBool::new(false),
            interval_ms: AtomicU64::new(interval.as_millis() as u64),
            registering: tokio::sync::Mutex::new(()),
            last_problem: Mutex::new(String::new()),
            contact: Contact::load(contact_file),
        }
    }

    /// When the master last acknowledged this worker (the disconnect window).
    pub fn contact(&self) -> &Contact {
        &self.contact
    }

    /// The master's address, if known.
    pub fn master(&self) -> Option<String> {
        self.master
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Points the worker at a (new) master, remembered across restarts.
    pub fn set_master(&self, address: String) {
        if let Some(path) = &self.memory {
            remember(path, &address);
        }
        *self.master.lock().unwrap_or_else(|p| p.into_inner()) = Some(address);
        self.registered.store(false, Ordering::SeqCst);
    }

    /// Switches to a new client certificate (after renewal).
    pub fn set_tls(&self, tls: tonic::transport::ClientTlsConfig) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(tls);
        self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::SeqCst).max(50))
    }

    fn client(&self) -> Result<Option<MasterServiceClient<Channel>>, String> {
        let Some(address) = self.master() else {
            return Ok(None);
        };
        let mut cached = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_address, client)) = cached.as_ref()
            && *cached_address == address
        {
            return Ok(Some(client.clone()));
        }
        let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("invalid master address '{address}': {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS set-up for the master: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        let client = MasterServiceClient::new(channel);
        *cached = Some((address, client.clone()));
        Ok(Some(client))
    }

    /// Logs a problem talking to the master once, not on every retry.
    fn report_problem(&self, message: String) {
        let mut last = self.last_problem.lock().unwrap_or_else(|p| p.into_inner());
        if *last != message {
            tracing::warn!(problem = %message, "master link");
            *last = message;
        }
    }

    fn clear_problem(&self) {
        self.last_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn remember(path: &std::path::Path, address: &str) {
    if let Err(error) = std::fs::write(path, address) {
        tracing::warn!(path = %path.display(), %error, "cannot remember the master's address");
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Registers with the master (`RegisterWorker`). On success the worker is
/// accepted and learns the heartbeat interval and tasks to stop.
pub async fn register(worker: &Worker) -> Result<(), Status> {
    let link = worker.link();
    let _one_at_a_time = link.registering.lock().await;
    let Some(mut client) = link.client().map_err(Status::invalid_argument)? else {
        return Err(Status::failed_precondition("no master address known yet"));
    };
    let mut info = cloudai_common::host::worker_info(worker.id(), worker.address());
    info.gpus = worker.gpu_inventory().to_vec();
    let (sent, sent_wall) = (std::time::Instant::now(), SystemTime::now());
    let call = client.register_worker(request(RegisterWorkerRequest {
        info: Some(info),
        task_ids: worker.held_task_ids(),
    }));
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => {
            let response = response.into_inner();
            if response.heartbeat_interval_ms > 0 {
                link.interval_ms
                    .store(response.heartbeat_interval_ms, Ordering::SeqCst);
            }
            let window = (response.disconnect_window_ms > 0)
                .then(|| Duration::from_millis(response.disconnect_window_ms));
            link.contact.record(sent, sent_wall, window);
            link.registered.store(true, Ordering::SeqCst);
            link.clear_problem();
            tracing::info!(master = ?link.master(), worker_id = worker.id(), "registered with the master");
            worker.stop_unwanted(&response.stop_task_ids);
            worker.heartbeat_soon();
            Ok(())
        }
        Ok(Err(status)) => {
            link.registered.store(false, Ordering::SeqCst);
            Err(status)
        }
        Err(_) => Err(Status::deadline_exceeded(
            "the master did not answer within 10s",
        )),
    }
}

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
    match crate::identity::renew(&mut client, worker.id()).await {
        Ok(renewed) => {
            if let Err(error) = renewed.save(&worker.config().data_dir) {
                tracing::error!(
                    error,
                    "cannot store the renewed certificate; keeping the old one"
                );
                return;
            }
            tracing::info!(expires_at = renewed.expires_at(), "certificate renewed");
            worker.link().set_tls(renewed.client_tls());
            worker.set_identity(renewed);
        }
        Err(error) => worker.link().report_problem(error),
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
    let Some(mut client) = worker.link().client().map_err(Status::invalid_argument)? else {
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

/// A result waiting for delivery, with its retry schedule.
struct Queued {
    report: PendingReport,
    /// Whether its whole output still has to be uploaded first.
    upload: bool,
    /// When its upload first failed.
    upload_failing_since: Option<tokio::time::Instant>,
    /// Not before this instant (after a failed try).
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
}

/// How one try at a result ended.
enum Try {
    /// The master acknowledged it.
    Delivered,
    /// The master refused it for good.
    Refused(String),
    /// The master (or its store) did not answer; try again later.
    Later(String),
}

/// Delivers results (uploading whole outputs first where the tail misses
/// part), retrying with backoff until the master acknowledges; then removes
/// the container. The result due first goes next, so one that waits for a
/// retry does not hold up the others (uploads still go one at a time). Undelivered results survive a
/// worker restart because their containers are only removed after delivery.
pub async fn run_reporter(worker: Worker, mut queue: mpsc::UnboundedReceiver<PendingReport>) {
    let mut pending: VecDeque<Queued> = VecDeque::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = worker.shutdown_token().cancelled() => return,
                next = queue.recv() => match next {
                    Some(report) => pending.push_back(queued(&worker, report)),
                    None => return,
                },
            }
        }
        while let Ok(report) = queue.try_recv() {
            pending.push_back(queued(&worker, report));
        }
        // The result due first; new ones are due at once, in arrival order.
        let now = tokio::time::Instant::now();
        let Some((index, due)) = pending
            .iter()
            .map(|item| item.retry_at.unwrap_or(now))
            .enumerate()
            .min_by_key(|&(_, due)| due)
        else {
            continue;
        };
        if due > now {
            tokio::select! {
                _ = worker.shutdown_token().cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
                next = queue.recv() => {
                    match next {
                        Some(report) => pending.push_back(queued(&worker, report)),
                        None => return,
                    }
                    continue;
                }
            }
        }
        let Some(mut item) = pending.remove(index) else {
            continue;
        };
        let outcome = tokio::select! {
            // Nothing is lost: the container stays until its result is delivered.
            _ = worker.shutdown_token().cancelled() => return,
            outcome = try_once(&worker, &mut item) => outcome,
        };
        let task_id = item.report.result.task_id.clone();
        match outcome {
            Try::Delivered => {}
            Try::Refused(reason) => {
                tracing::warn!(%task_id, %reason, "the master refused the result; dropping it");
            }
            Try::Later(problem) => {
                worker.link().report_problem(problem);
                item.retry_at = Some(tokio::time::Instant::now() + item.backoff);
                item.backoff = (item.backoff * 2).min(MAX_REPORT_BACKOFF);
                pending.push_back(item);
                continue;
            }
        }
        if let Some(container) = &item.report.container {
            worker.executor().remove(container).await;
        }
        let result = &item.report.result;
        spool::remove(&spool::path(
            &worker.config().data_dir,
            &task_id,
            result.attempt,
        ))
        .await;
        worker.forget(&task_id);
    }
}

fn queued(worker: &Worker, report: PendingReport) -> Queued {
    Queued {
        upload: needs_upload(worker, &report),
        upload_failing_since: None,
        report,
        retry_at: None,
        backoff: Duration::from_millis(100),
    }
}

/// Uploads the whole output if it still has to be, then delivers the result.
async fn try_once(worker: &Worker, item: &mut Queued) -> Try {
    let task_id = item.report.result.task_id.clone();
    if item.upload {
        match log_upload::upload(worker, &mut item.report.result).await {
            Ok(()) => item.upload = false,
            Err(UploadError::GiveUp(reason)) => {
                tracing::warn!(%task_id, %reason, "reporting the result with the tail of its output only");
                item.upload = false;
            }
            Err(UploadError::Retry(status)) => {
                let since = *item
                    .upload_failing_since
                    .get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < UPLOAD_PATIENCE {
                    return Try::Later(format!(
                        "cannot upload the output of {task_id}: {}",
                        status.message()
                    ));
                }
                tracing::warn!(%task_id, reason = %status.message(), "the whole output could not be uploaded for {} minutes; reporting the result with the tail of its output only", UPLOAD_PATIENCE.as_secs() / 60);
                item.upload = false;
            }
        }
    }
    match deliver(worker, &item.report).await {
        Ok(()) => Try::Delivered,
        Err(status)
            if matches!(
                status.code(),
                Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument
            ) =>
        {
            Try::Refused(status.message().to_string())
        }
        Err(status) => Try::Later(format!(
            "cannot deliver the result of {task_id}: {}",
            status.message()
        )),
    }
}

/// Whether the result's tail misses part of the output (spooled while the
/// container ran).
fn needs_upload(worker: &Worker, report: &PendingReport) -> bool {
    report.result.log_truncated
        && report.result.log_chunks == 0
        && report.container.is_some()
        && worker.config().max_log_upload > 0
}

/// The master's client for result delivery: `InvalidArgument` for a bad
/// address, `Unavailable` while none is known.
pub(crate) fn master_client(worker: &Worker) -> Result<MasterServiceClient<Channel>, Status> {
    worker
        .link()
        .client()
        .map_err(Status::invalid_argument)?
        .ok_or_else(|| Status::unavailable("no master address known yet"))
}

async fn deliver(worker: &Worker, report: &PendingReport) -> Result<(), Status> {
    master_client(worker)?
        .report_task_completion(request(report.result.clone()))
        .await?;
    tracing::info!(task_id = %report.result.task_id, "result delivered to the master");
    Ok(())
}
