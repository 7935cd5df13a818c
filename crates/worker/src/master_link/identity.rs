//! The worker's TLS identity: joining a cluster with a token, storing the
//! certificate under `<data-dir>/tls/`, renewing it, and the TLS configs built
//! from it.

use cloudai_common::tls::{self, JoinToken};
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::{CertificateResponse, JoinClusterRequest, RenewCertificateRequest};
use rcgen::{CertificateParams, KeyPair};
use std::path::{Path, PathBuf};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig,
};

/// A certificate issued by the cluster CA, its key, and the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The worker's certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM); never leaves the worker.
    pub key_pem: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
}

fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let tls = dir.join("tls");
    (
        tls.join("worker.crt"),
        tls.join("worker.key"),
        tls.join("ca.crt"),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A new key and a CSR for it: (key PEM, CSR DER).
pub fn new_key_and_csr() -> Result<(String, Vec<u8>), IdentityError> {
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| format!("cannot make a CSR: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

impl Identity {
    /// Loads the stored identity, if the worker has joined.
    pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let (cert, key, ca) = files(data_dir);
        if !cert.exists() {
            return Ok(None);
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        Ok(Some(Identity {
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            ca_pem: read(&ca)?,
        }))
    }

    /// Stores the identity (owner-only files).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let (cert, key, ca) = files(data_dir);
        tls::write_private(&key, &self.key_pem).map_err(|e| e.to_string())?;
        tls::write_private(&cert, &self.cert_pem).map_err(|e| e.to_string())?;
        tls::write_private(&ca, &self.ca_pem).map_err(|e| IdentityError(e.to_string()))
    }

    fn from_response(key_pem: String, response: CertificateResponse) -> Identity {
        Identity {
            cert_pem: response.certificate_pem,
            key_pem,
            ca_pem: response.ca_certificate_pem,
        }
    }

    fn leaf_der(&self) -> Option<Vec<u8>> {
        tls::certs_from_pem(&self.cert_pem)
            .ok()?
            .first()
            .map(|c| c.to_vec())
    }

    /// Expiry (Unix seconds).
    pub fn expires_at(&self) -> i64 {
        self.leaf_der()
            .and_then(|der| tls::not_after(&der))
            .unwrap_or(0)
    }

    /// Whether two thirds of the certificate's lifetime have passed.
    pub fn needs_renewal(&self) -> bool {
        let Some(der) = self.leaf_der() else {
            return true;
        };
        let (Some(start), Some(end)) = (tls::not_before(&der), tls::not_after(&der)) else {
            return true;
        };
        now_secs() >= start + (end - start) * 2 / 3
    }

    /// Client TLS towards the master: trust the CA, present this certificate.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// Server TLS for the worker's gRPC service: callers must present a
    /// certificate from the cluster CA (and handlers check it is the master's).
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }
}

/// A problem with the worker's key, certificate or join, said for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub String);

impl From<String> for IdentityError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The master could not be reached (worth retrying).
    Unreachable(String),
    /// The master (or this worker) refused: retrying the same token won't help.
    Refused(String),
}

/// Joins a cluster, retrying while the master is unreachable (up to `patience`).
pub async fn join_patiently(
    master: &str,
    worker_id: &str,
    token: &str,
    patience: std::time::Duration,
) -> Result<Identity, IdentityError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match join(master, worker_id, token).await {
            Ok(identity) => return Ok(identity),
            Err(JoinError::Refused(message)) => return Err(IdentityError(message)),
            Err(JoinError::Unreachable(message)) if tokio::time::Instant::now() >= deadline => {
                let message = format!("cannot reach the master at {master} to join: {message}");
                return Err(IdentityError(message));
            }
            Err(JoinError::Unreachable(message)) => {
                tracing::info!(master, reason = %message, "master not reachable yet; retrying the join");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// Joins a cluster: verifies the master by the CA fingerprint in the token,
/// sends a CSR with the token, and returns the issued identity.
pub async fn join(master: &str, worker_id: &str, token: &str) -> Result<Identity, JoinError> {
    let refused = JoinError::Refused;
    let parsed = JoinToken::parse(token).ok_or_else(|| {
        refused(
            "the join token is malformed: copy it whole from the master's `register` output".into(),
        )
    })?;
    if parsed.worker_id != worker_id {
        return Err(refused(format!(
            "the join token is for worker '{}', but this worker is '{worker_id}'",
            parsed.worker_id
        )));
    }
    let channel =
        tls::pinned_channel(master, &parsed.ca_fingerprint).map_err(|e| refused(e.to_string()))?;
    let (key_pem, csr_der) = new_key_and_csr().map_err(|e| refused(e.0))?;
    let request = JoinClusterRequest {
        worker_id: worker_id.to_string(),
        token: token.trim().to_string(),
        csr_der,
    };
    let response = MasterServiceClient::new(channel)
        .join_cluster(request)
        .await
        .map_err(|status| match status.code() {
            // Connection refused or reset: the master is not up (yet).
            tonic::Code::Unavailable => JoinError::Unreachable(status.message().to_string()),
            _ => refused(format!(
                "the master refused to let this worker join: {}",
                status.message()
            )),
        })?
        .into_inner();
    Ok(Identity::from_response(key_pem, response))
}

/// Renews the certificate over an authenticated channel.
pub async fn renew(
    client: &mut MasterServiceClient<Channel>,
    worker_id: &str,
) -> Result<Identity, IdentityError> {
    let (key_pem, csr_der) = new_key_and_csr()?;
    let response = client
        .renew_certificate(RenewCertificateRequest {
            worker_id: worker_id.to_string(),
            csr_der,
        })
        .await
        .map_err(|status| format!("certificate renewal refused: {}", status.message()))?
        .into_inner();
    Ok(Identity::from_response(key_pem, response))
}

/// Whether a caller's certificate chain identifies the master.
pub fn is_master(peer_certs: Option<&[tonic::transport::CertificateDer<'static>]>) -> bool {
    peer_certs
        .and_then(|certs| certs.first())
        .is_some_and(|leaf| {
            tls::uri_sans(leaf)
                .iter()
                .any(|uri| uri == tls::MASTER_IDENTITY)
        })
}
