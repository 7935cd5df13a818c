//! Worker registration on the master: pre-registering (`register`), removing,
//! inviting, accepting a worker's `RegisterWorker` (address check, tasks it no
//! longer holds, tasks to stop), and the re-invite loop.

use crate::core::cluster::Master;
use crate::core::events::Event;
use crate::core::registry::WorkerState;
use crate::error::{MasterError, MasterResult};
use crate::store::{WorkerRecord, now_millis};
use cloudai_common::validate;
use cloudai_proto::v1::{MasterRegisterRequest, RegisterWorkerRequest};
use std::net::SocketAddr;
use std::time::Instant;

impl Master {
    /// Pre-registers a worker (authorization first) and invites it. Returns what
    /// the invitation achieved, for the operator.
    pub async fn register_worker(&self, worker_id: &str, address: &str) -> MasterResult<String> {
        validate::id("worker id", worker_id)?;
        validate::address("address", address)?;
        if let Some(existing) = self.registry().get(worker_id) {
            if existing.record.address == address {
                return Ok(format!(
                    "worker {worker_id} is already registered at {address} ({})",
                    existing.state.as_str()
                ));
            }
            return Err(MasterError::FailedPrecondition(format!(
                "worker {worker_id} is already registered at {}: run `unregister {worker_id}` first",
                existing.record.address
            )));
        }
        let record = WorkerRecord::new(worker_id, address);
        self.store().put_worker(&record).await?;
        self.registry().insert(record);
        tracing::info!(worker_id, address, "worker pre-registered");
        self.emit(Event::WorkerRegistered {
            worker_id: worker_id.to_string(),
            address: address.to_string(),
        });
        if let Some(token) = self.issue_join_token(worker_id).await? {
            return Ok(self.join_instructions(worker_id, address, &token));
        }
        Ok(match self.invite(worker_id, address).await {
            Ok(()) => {
                format!("worker {worker_id} registered at {address}; it accepted the invitation")
            }
            Err(reason) => format!(
                "worker {worker_id} registered at {address}; not reachable yet ({reason}); it will be accepted when it starts"
            ),
        })
    }

    /// What the operator needs to start a worker with its join token.
    pub fn join_instructions(&self, worker_id: &str, address: &str, token: &str) -> String {
        let ttl = cloudai_common::units::format_duration(self.settings().join_token_ttl);
        let master = if self.settings().advertise_addr.is_empty() {
            format!("<this-master-host>:{}", self.grpc_port())
        } else {
            self.settings().advertise_addr.clone()
        };
        format!(
            "worker {worker_id} registered at {address}\njoin token (single use, expires in {ttl}): {token}\nstart the worker with: cloudai-worker --id {worker_id} --master {master} --join-token {token}"
        )
    }

    /// Removes a worker: it is no longer accepted and its connection is dropped.
    pub async fn unregister_worker(&self, worker_id: &str) -> MasterResult<String> {
        let Some(entry) = self.registry().get(worker_id) else {
            return Err(MasterError::NotFound(format!(
                "no worker '{worker_id}': `workers` lists the registered ones"
            )));
        };
        self.store().delete_worker(worker_id).await?;
        self.registry().remove(worker_id);
        self.clients().forget(&entry.record.address);
        self.stop_telemetry(worker_id);
        self.give_up_after_window(worker_id);
        tracing::info!(worker_id, "worker unregistered");
        self.emit(Event::WorkerUnregistered {
            worker_id: worker_id.to_string(),
        });
        Ok(format!(
            "worker {worker_id} unregistered; it is no longer accepted"
        ))
    }

    /// Calls the worker's `MasterRegister`, asking it to register back.
    pub async fn invite(&self, worker_id: &str, address: &str) -> Result<(), String> {
        let master_address = if self.settings().advertise_addr.is_empty() {
            format!(":{}", self.grpc_port())
        } else {
            self.settings().advertise_addr.clone()
        };
        let request = MasterRegisterRequest {
            worker_id: worker_id.to_string(),
            master_address,
        };
        self.clients()
            .master_register(address, request)
            .await
            .map(|_| ())
            .map_err(|status| status.message().to_string())
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
        validate::id("info.worker_id", &info.worker_id)?;
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
        let stop = self.unwanted_tasks(&worker_id, &request.task_ids);
        self.fail_missing_tasks(&worker_id, &request.task_ids);
        let Some(record) = self
            .registry()
            .mark_registered(info, Instant::now(), now_millis())
        else {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' was unregistered"
            )));
        };
        self.store().put_worker(&record).await?;
        self.start_telemetry(&worker_id);
        self.wake_scheduler();
        tracing::info!(worker_id, "worker registered");
        self.emit(Event::WorkerActive { worker_id });
        Ok(stop)
    }

    /// Tasks placed on a worker that (re-)registers without them were lost with
    /// its containers: they become `lost`, then are retried or failed.
    fn fail_missing_tasks(&self, worker_id: &str, held: &[String]) {
        let mut missing = self.tasks_on(worker_id, &crate::core::disconnect::HELD_THERE);
        missing.retain(|id| !held.contains(id));
        if missing.is_empty() {
            return;
        }
        let master = self.clone();
        let worker_id = worker_id.to_string();
        self.tracker().spawn(async move {
            let why = format!("worker {worker_id} came back without this task's container");
            master.tasks_lost(&worker_id, missing, &why).await;
        });
    }

    /// Of the tasks a worker holds, those the master does not want on it.
    pub(crate) fn unwanted_tasks(&self, worker_id: &str, held: &[String]) -> Vec<String> {
        let active = self.active_tasks();
        held.iter()
            .filter(|id| {
                active
                    .get(*id)
                    .is_none_or(|t| t.worker_id.as_deref() != Some(worker_id))
            })
            .cloned()
            .collect()
    }

    /// Background loop: re-invites registered workers that are not active
    /// (restart recovery without operator action), until shutdown.
    pub async fn run_reinvites(self) {
        let mut reinvite = tokio::time::interval(self.settings().reinvite_interval);
        loop {
            tokio::select! {
                _ = self.shutdown_token().cancelled() => return,
                _ = reinvite.tick() => {
                    for (worker_id, address) in self.registry().not_active() {
                        let master = self.clone();
                        self.tracker().spawn(async move {
                            if let Err(reason) = master.invite(&worker_id, &address).await {
                                tracing::debug!(worker_id, address, reason, "worker not reachable yet");
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
