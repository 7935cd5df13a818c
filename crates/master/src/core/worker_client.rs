//! The master's side of `WorkerService`: one lazily connected channel per worker address.

use cloudai_proto::v1::worker_service_client::WorkerServiceClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How long the master waits to connect to a worker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a unary call to a worker may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cache of gRPC clients keyed by worker address. Channels reconnect by themselves.
#[derive(Clone, Default)]
pub struct WorkerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS towards workers; `None` with `--insecure`.
    tls: Option<ClientTlsConfig>,
}

impl WorkerClients {
    /// A client cache; `tls` is the master's client TLS, `None` for plaintext.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// A client for the worker at `address` (`host:port`).
    pub fn client(&self, address: &str) -> Result<WorkerServiceClient<Channel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(WorkerServiceClient::new(channel.clone()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("invalid worker address '{address}': {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS set-up for '{address}': {e}"))?;
        }
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
