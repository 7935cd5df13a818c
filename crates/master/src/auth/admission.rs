//! Worker admission with mutual TLS: join tokens, certificate issue and
//! renewal, per-call identity checks, and rate limiting of failed attempts.
//!
//! A join token is `caj1.<ca-fingerprint>.<secret>.<worker-id>`: single use,
//! expiring, scoped to one worker id. Only its SHA-256 is stored. A worker's
//! certificate is bound to its registration by fingerprint, so `unregister`
//! revokes it at once.

use crate::auth::Auth;
use crate::error::{MasterError, MasterResult};
use crate::store::now_millis;
use cloudai_common::ids::WorkerId;
use cloudai_common::tls::{self, JoinToken};
use cloudai_proto::v1::CertificateResponse;
use ring::rand::SecureRandom;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::CertificateDer;

/// Failed authentications allowed per source address per window.
pub const MAX_FAILURES: u32 = 10;
/// The rate-limiting window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// 32 random bytes as hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts failed authentications per source address.
#[derive(Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthLimiter {
    /// Refuses an address that failed too often within the window.
    pub fn check(&self, peer: Option<SocketAddr>) -> MasterResult<()> {
        let Some(peer) = peer else { return Ok(()) };
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&peer.ip()) {
            Some((count, since)) if *count >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW => {
                Err(MasterError::ResourceExhausted(format!(
                    "too many failed authentications from {}: wait {}s",
                    peer.ip(),
                    (FAILURE_WINDOW - since.elapsed()).as_secs().max(1)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records a failure from an address.
    pub fn fail(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(peer.ip()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        // Bound memory under a flood of sources.
        if failures.len() > 10_000 {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
    }
}

fn hash(secret: &str) -> String {
    tls::fingerprint(secret.as_bytes())
}

impl Auth {
    /// Issues a fresh join token for a registered worker (replacing any unused one).
    pub async fn issue_join_token(&self, worker_id: &WorkerId) -> MasterResult<Option<String>> {
        let Some(pki) = self.pki() else {
            return Ok(None);
        };
        let Some(mut record) = self.registry().get(worker_id).map(|w| w.record) else {
            return Err(MasterError::NotFound(format!(
                "no worker '{worker_id}': register it first"
            )));
        };
        let token = JoinToken {
            ca_fingerprint: pki.ca_fingerprint().to_string(),
            secret: random_secret(),
            worker_id: worker_id.to_string(),
        };
        record.join_token_hash = Some(hash(&token.secret));
        record.join_token_expires_at =
            Some(now_millis() + self.join_token_ttl().as_millis() as i64);
        self.store().put_worker(&record).await?;
        self.registry().update_record(record);
        Ok(Some(token.to_string()))
    }

    /// `JoinCluster`: trades a valid join token and a CSR for a certificate.
    pub async fn join_cluster(
        &self,
        worker_id: &WorkerId,
        token: &str,
        csr_der: &[u8],
        peer: Option<SocketAddr>,
    ) -> MasterResult<CertificateResponse> {
        let worker_id = worker_id.as_str();
        let pki = self.pki().ok_or_else(|| {
            MasterError::FailedPrecondition(
                "this master runs with --insecure: workers need no join token".into(),
            )
        })?;
        self.limiter().check(peer)?;
        let refuse = |message: String| {
            self.limiter().fail(peer);
            tracing::warn!(worker_id, peer = ?peer, reason = %message, "join refused");
            Err(MasterError::PermissionDenied(message))
        };
        let new_token = format!("run `join-token {worker_id}` on the master for a new token");
        let Some(parsed) = JoinToken::parse(token) else {
            return refuse(format!("malformed join token: {new_token}"));
        };
        if parsed.worker_id != worker_id {
            return refuse(format!(
                "the join token is for worker '{}', not '{worker_id}'",
                parsed.worker_id
            ));
        }
        let Some(mut record) = self.registry().get(worker_id).map(|w| w.record) else {
            return refuse(format!(
                "worker '{worker_id}' is not pre-registered: run `register {worker_id} <host:port>` on the master"
            ));
        };
        let valid = record.join_token_hash.as_deref() == Some(hash(&parsed.secret).as_str());
        if !valid {
            return refuse(format!(
                "the join token is not valid or was already used: {new_token}"
            ));
        }
        if record
            .join_token_expires_at
            .is_none_or(|t| t < now_millis())
        {
            return refuse(format!("the join token has expired: {new_token}"));
        }
        record.join_token_hash = None;
        record.join_token_expires_at = None;
        let response = self.issue_certificate(pki, record, csr_der).await?;
        tracing::info!(
            worker_id,
            expires_at = response.expires_at,
            "worker joined: certificate issued"
        );
        Ok(response)
    }

    /// Signs a worker's CSR for the host of its registered address, binds the
    /// certificate to the registration (fingerprint, expiry) and persists it.
    async fn issue_certificate(
        &self,
        pki: &crate::auth::pki::Pki,
        mut record: crate::store::WorkerRecord,
        csr_der: &[u8],
    ) -> MasterResult<CertificateResponse> {
        let host = record
            .address
            .rsplit_once(':')
            .map_or(record.address.as_str(), |(h, _)| h)
            .to_string();
        let (certificate_pem, fingerprint, expires_at) = pki
            .issue_worker(&record.id, &host, csr_der)
            .map_err(|e| MasterError::InvalidArgument(e.to_string()))?;
        record.cert_fingerprint = Some(fingerprint);
        record.cert_expires_at = Some(expires_at);
        self.store().put_worker(&record).await?;
        self.registry().update_record(record);
        Ok(CertificateResponse {
            certificate_pem,
            ca_certificate_pem: pki.ca_pem().to_string(),
            expires_at,
        })
    }

    /// `RenewCertificate`: a worker with a valid certificate gets a new one.
    pub async fn renew_certificate(
        &self,
        worker_id: &WorkerId,
        csr_der: &[u8],
    ) -> MasterResult<CertificateResponse> {
        let worker_id = worker_id.as_str();
        let pki = self.pki().ok_or_else(|| {
            MasterError::FailedPrecondition("this master runs with --insecure".into())
        })?;
        let Some(record) = self.registry().get(worker_id).map(|w| w.record) else {
            return Err(MasterError::PermissionDenied(format!(
                "worker '{worker_id}' is not registered"
            )));
        };
        let response = self.issue_certificate(pki, record, csr_der).await?;
        tracing::info!(
            worker_id,
            expires_at = response.expires_at,
            "worker certificate renewed"
        );
        Ok(response)
    }

    /// Checks that a call claiming to come from `worker_id` presents that
    /// worker's current certificate. Always passes with `--insecure`.
    pub fn authenticate_worker(
        &self,
        worker_id: &str,
        peer_certs: Option<&[CertificateDer<'static>]>,
        peer: Option<SocketAddr>,
    ) -> MasterResult<()> {
        if self.pki().is_none() {
            return Ok(());
        }
        // Valid credentials always pass; only failures are rate limited, so a
        // misbehaving client on the same address cannot lock a worker out.
        let Some(leaf) = peer_certs.and_then(|certs| certs.first()) else {
            self.limiter().check(peer)?;
            self.limiter().fail(peer);
            return Err(MasterError::Unauthenticated(
                "a client certificate is required: start the worker with --join-token from `register <id> <host:port>`".into(),
            ));
        };
        if self
            .registry()
            .certificate_matches(worker_id, &tls::fingerprint(leaf))
        {
            return Ok(());
        }
        self.limiter().check(peer)?;
        self.limiter().fail(peer);
        tracing::warn!(worker_id, peer = ?peer, "refused a call with a certificate that is not this worker's");
        Err(MasterError::PermissionDenied(format!(
            "this certificate does not belong to worker '{worker_id}' (revoked, renewed, or another worker's): re-register the worker"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = JoinToken {
            ca_fingerprint: "a".repeat(64),
            secret: random_secret(),
            worker_id: "gpu.3".into(),
        };
        assert_eq!(JoinToken::parse(&token.to_string()), Some(token.clone()));
        assert_ne!(random_secret(), token.secret);
        for bad in [
            "",
            "caj1",
            "caj2.x.y.z",
            &format!("caj1.{}.short.w", "a".repeat(64)),
            &format!("caj1.{}.{}.", "a".repeat(64), "b".repeat(64)),
        ] {
            assert_eq!(JoinToken::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn limiter_blocks_after_repeated_failures() {
        let limiter = AuthLimiter::default();
        let peer = Some("10.0.0.9:1234".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(peer).is_ok());
            limiter.fail(peer);
        }
        assert!(matches!(
            limiter.check(peer),
            Err(MasterError::ResourceExhausted(_))
        ));
        assert!(limiter.check(Some("10.0.0.10:1".parse().unwrap())).is_ok());
    }
}
