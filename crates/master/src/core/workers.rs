//! Worker registration on the master: pre-registering (`register`), removing,
//! inviting, accepting a worker's `RegisterWorker` (address check, tasks it no
//! longer holds, tasks to stop), and the re-invite loop.

use crate::core::disconnect::{ABSENCE_PROOF_AGE, HELD_THERE};
use crate::core::events::Event;
use crate::core::lifecycle::Lifecycle;
use crate::core::registry::{Registry, WorkerState};
use crate::core::telemetry::Telemetry;
use crate::core::worker_client::WorkerCalls;
use crate::error::{MasterError, MasterResult};
use crate::store::{TaskState, WorkerRecord, now_millis};
use cloudai_common::ids::WorkerId;
use cloudai_common::validate;
use cloudai_proto::v1::{MasterRegisterRequest, RegisterWorkerRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What `register` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The worker is new: stored, and waiting for it to join or accept an invitation.
    Added,
    /// The worker was already registered at that address, in this state.
    Existing(WorkerState),
}

/// Handle to worker membership (cheap to clone).
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    lifecycle: Lifecycle,
    telemetry: Telemetry,
    registry: Registry,
    clients: Arc<dyn WorkerCalls>,
    /// Port of the gRPC server, for invitations.
    grpc_port: u16,
}

impl Workers {
    /// Membership over the loaded registry.
    pub fn new(
        lifecycle: Lifecycle,
        telemetry: Telemetry,
        registry: Registry,
        clients: Arc<dyn WorkerCalls>,
        grpc_port: u16,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                lifecycle,
                telemetry,
                registry,
                clients,
                grpc_port,
            }),
        }
    }

    /// The live registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    fn settings(&self) -> &crate::core::runtime::Settings {
        self.lifecycle().settings()
    }

    /// Where workers reach this master: the advertised address, or `host`
    /// with the gRPC port when none is configured.
    pub fn address_for_workers(&self, host: &str) -> String {
        if self.settings().advertise_addr.is_empty() {
            format!("{host}:{}", self.inner.grpc_port)
        } else {
            self.settings().advertise_addr.clone()
        }
    }

    /// Pre-registers a worker (authorization first). It is then invited, or
    /// given a join token, by the caller.
    pub async fn register(
        &self,
        worker_id: &WorkerId,
        address: &str,
    ) -> MasterResult<Registration> {
        validate::address("address", address)?;
        if let Some(existing) = self.registry().get(worker_id) {
            if existing.record.address == address {
                return Ok(Registration::Existing(existing.state));
            }
            return Err(MasterError::FailedPrecondition(format!(
                "worker {worker_id} is already registered at {}: run `unregister {worker_id}` first",
                existing.record.address
            )));
        }
        let record = WorkerRecord::new(worker_id, address);
        self.lifecycle().store().put_worker(&record).await?;
        self.registry().insert(record);
        tracing::info!(%worker_id, address, "worker pre-registered");
        self.lifecycle().events().emit(Event::WorkerRegistered {
            worker_id: worker_id.to_string(),
            address: address.to_string(),
        });
        Ok(Registration::Added)
    }

    /// Removes a worker: it is no longer accepted and its connection is dropped.
    pub async fn unregister(&self, worker_id: &WorkerId) -> MasterResult<()> {
        let Some(entry) = self.registry().get(worker_id) else {
            return Err(MasterError::NotFound(format!(
                "no worker '{worker_id}': `workers` lists the registered ones"
            )));
        };
        self.lifecycle().store().delete_worker(worker_id).await?;
        self.registry().remove(worker_id);
        self.inner.clients.forget(&entry.record.address);
        self.inner.telemetry.stop(worker_id);
        self.lifecycle().give_up_after_window(worker_id);
        tracing::info!(%worker_id, "worker unregistered");
        self.lifecycle().events().emit(Event::WorkerUnregistered {
            worker_id: worker_id.to_string(),
        });
        Ok(())
    }

    /// Calls the worker's `MasterRegister`, asking it to register back.
    pub async fn invite(&self, worker_id: &str, address: &str) -> MasterResult<()> {
        let master_address = self.address_for_workers("");
        let request = MasterRegisterRequest {
            worker_id: worker_id.to_string(),
            master_address,
        };
        self.inner
            .clients
            .master_register(address, request)
            .await
            .map(|_| ())
            .map_err(|status| MasterError::Unavailable(status.message().to_string()))
    }

    /// Handles a worker's `RegisterWorker`: only pre-registered ids, from the
    /// registered address, are accepted.
    pub async fn accept_worker(
        &self,
        request: RegisterWorkerRequest,
        peer: Option<SocketAddr>,
    ) -> MasterResult<Vec<String>> {
        let info = request
            .info
            .ok_or_else(|| MasterError::InvalidArgument("info: missing worker info".into()))?;
        WorkerId::parse("info.worker_id", &info.worker_id)?;
        validate::address("info.address", &info.address)?;
        let worker_id = info.worker_id.clone();
        let Some(entry) = self.registry().get(&worker_id) else {
            tracing::warn!(worker_id, address = %info.address, "refused a worker that is not pre-registered");
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' is not pre-registered: run `register {worker_id} {}` on the master",
                info.address
            )));
        };
        if !address_matches(&entry.record.address, &info.address, peer) {
            let seen = peer.map_or(info.address.clone(), |p| p.ip().to_string());
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' is registered at {} but connected as {} (from {seen}): run `unregister {worker_id}` and `register {worker_id} {}` on the master",
                entry.record.address, info.address, info.address
            )));
        }
        let stop = self
            .lifecycle()
            .unwanted_tasks(&worker_id, &request.task_ids);
        self.fail_missing_tasks(&worker_id, &request.task_ids);
        let Some(record) = self
            .registry()
            .mark_registered(info, Instant::now(), now_millis())
        else {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' was unregistered"
            )));
        };
        self.lifecycle().store().put_worker(&record).await?;
        self.inner.telemetry.start(&worker_id);
        self.lifecycle().wake_scheduler();
        tracing::info!(worker_id, "worker registered");
        self.lifecycle()
            .events()
            .emit(Event::WorkerActive { worker_id });
        Ok(stop)
    }

    /// Tasks placed on a worker that (re-)registers without them were lost with
    /// its containers: they become `lost`, then are retried or failed. Except
    /// an assignment that may still have been on its way when the worker
    /// listed what it holds (sent less than `ABSENCE_PROOF_AGE` ago, not seen
    /// running yet): it becomes `unknown`, and the worker's heartbeats settle
    /// it (held there, or absent long enough to be lost), so it never runs twice.
    fn fail_missing_tasks(&self, worker_id: &str, held: &[String]) {
        let now = now_millis();
        let young = ABSENCE_PROOF_AGE.as_millis() as i64;
        let (mut lost, mut unsure) = (Vec::new(), Vec::new());
        for (task_id, task) in self.lifecycle().active_tasks().iter() {
            if task.worker_id.as_deref() != Some(worker_id)
                || !HELD_THERE.contains(&task.state)
                || held.contains(task_id)
            {
                continue;
            }
            let in_flight = now.saturating_sub(task.queued_at) < young;
            match task.state {
                TaskState::Assigned if in_flight => unsure.push(task_id.clone()),
                // Already unknown: its worker's feed is settling it.
                TaskState::Unknown if in_flight => {}
                _ => lost.push(task_id.clone()),
            }
        }
        if lost.is_empty() && unsure.is_empty() {
            return;
        }
        let (lifecycle, telemetry) = (self.lifecycle().clone(), self.inner.telemetry.clone());
        let worker_id = worker_id.to_string();
        self.lifecycle().runtime().spawn(async move {
            let why = format!("worker {worker_id} came back without this task's container");
            lifecycle.tasks_lost(&worker_id, lost, &why).await;
            let note = format!(
                "worker {worker_id} registered without this task while it was on its way there; its heartbeats settle it"
            );
            let unknown = lifecycle
                .tasks_unknown_because(&worker_id, unsure, &note)
                .await;
            telemetry.watch_unknown(&worker_id, &unknown);
        });
    }

    /// Background loop: re-invites registered workers that are not active
    /// (restart recovery without operator action), until shutdown.
    pub async fn run_reinvites(self) {
        let mut reinvite = tokio::time::interval(self.settings().reinvite_interval);
        loop {
            tokio::select! {
                _ = self.lifecycle().runtime().shutdown.cancelled() => return,
                _ = reinvite.tick() => {
                    for (worker_id, address) in self.registry().not_active() {
                        let master = self.clone();
                        self.lifecycle().runtime().spawn(async move {
                            if let Err(reason) = master.invite(&worker_id, &address).await {
                                tracing::debug!(worker_id, address, %reason, "worker not reachable yet");
                            }
                        });
                    }
                }
            }
        }
    }

    /// Whether a worker is registered and active.
    pub fn worker_state(&self, worker_id: &str) -> Option<WorkerState> {
        self.registry().get(worker_id).map(|w| w.state)
    }
}

/// Whether a worker claiming `claimed` and connecting from `peer` is the one
/// registered at `registered`: the ports must agree, and the host must be the
/// claimed host or the connection's source IP.
fn address_matches(registered: &str, claimed: &str, peer: Option<SocketAddr>) -> bool {
    if registered == claimed {
        return true;
    }
    let (Some((reg_host, reg_port)), Some((_, claimed_port))) =
        (registered.rsplit_once(':'), claimed.rsplit_once(':'))
    else {
        return false;
    };
    if reg_port != claimed_port {
        return false;
    }
    let reg_host = reg_host.trim_start_matches('[').trim_end_matches(']');
    match peer {
        Some(peer) => {
            let peer_ip = peer.ip().to_canonical();
            reg_host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical() == peer_ip)
                || (reg_host == "localhost" && peer_ip.is_loopback())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::address_matches;

    #[test]
    fn addresses_match_by_claim_or_peer_ip() {
        let peer = Some("10.0.0.7:41234".parse().unwrap());
        assert!(address_matches("10.0.0.7:50052", "10.0.0.7:50052", None));
        assert!(address_matches("10.0.0.7:50052", "gpu-3:50052", peer));
        assert!(!address_matches("10.0.0.8:50052", "gpu-3:50052", peer));
        assert!(!address_matches("10.0.0.7:50053", "10.0.0.7:50052", peer));
        assert!(address_matches(
            "localhost:50052",
            "127.0.0.1:50052",
            Some("127.0.0.1:5".parse().unwrap())
        ));
    }
}
