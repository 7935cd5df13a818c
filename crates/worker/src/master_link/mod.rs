//! The worker's side of `MasterService`: what it knows of its master and its
//! registration (here), the heartbeat loop (`heartbeats`), result delivery
//! (`reporter`, with whole outputs through `log_upload`), pull progress
//! (`progress`), its certificate
//! (`identity`) and the disconnect window (`disconnect`).

pub(crate) mod disconnect;
mod heartbeats;
pub(crate) mod identity;
pub(crate) mod log_upload;
pub(crate) mod progress;
mod reporter;

pub(crate) use heartbeats::run_heartbeats;
pub(crate) use reporter::{master_client, run_reporter};

use crate::Worker;
use crate::master_link::disconnect::Contact;
use cloudai_proto::v1::RegisterWorkerRequest;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tonic::Status;
use tonic::transport::Channel;

/// How long one call to the master may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

    fn client(
        &self,
    ) -> Result<Option<MasterServiceClient<Channel>>, cloudai_common::tls::TlsError> {
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
        let channel = cloudai_common::tls::lazy_channel("master", &address, tls)?;
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
    let Some(mut client) = link
        .client()
        .map_err(|e| Status::invalid_argument(e.to_string()))?
    else {
        return Err(Status::failed_precondition("no master address known yet"));
    };
    let mut info = cloudai_common::host::worker_info(worker.id(), worker.address());
    info.gpus = worker.gpu_inventory().to_vec();
    info.allowed_host_paths = worker.config().allow_host_paths.clone();
    info.allow_host_network = worker.config().allow_host_network;
    info.allow_host_ipc = worker.config().allow_host_ipc;
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
