//! The master's side of `WorkerService`: one lazily connected channel per worker address.

use cloudai_proto::v1::worker_service_client::WorkerServiceClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long the master waits to connect to a worker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a unary call to a worker may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cache of gRPC clients keyed by worker address. Channels reconnect by themselves.
#[derive(Clone, Default)]
pub struct WorkerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl WorkerClients {
    /// A client for the worker at `address` (`host:port`).
    pub fn client(&self, address: &str) -> Result<WorkerServiceClient<Channel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(WorkerServiceClient::new(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("invalid worker address '{address}': {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(WorkerServiceClient::new(channel))
    }

    /// Forgets the channel to `address` (after unregister).
    pub fn forget(&self, address: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }
}
