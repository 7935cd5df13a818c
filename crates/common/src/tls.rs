//! TLS helpers shared by the master and workers: identities, fingerprints,
//! PEM handling, file permissions, the gRPC channel each side opens to the
//! other ([`lazy_channel`]), and the pinned-CA client used to join.
//!
//! Identities are URI subject alternative names in certificates the cluster CA
//! issues: [`MASTER_IDENTITY`] for the master, [`worker_identity`] for workers.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

/// URI SAN carried by the master's certificate.
pub const MASTER_IDENTITY: &str = "spiffe://cloudai/master";

/// URI SAN carried by a worker's certificate.
pub fn worker_identity(worker_id: &str) -> String {
    format!("spiffe://cloudai/worker/{worker_id}")
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Fingerprint of the CA the worker must see on the master.
    pub ca_fingerprint: String,
    /// The secret (hex).
    pub secret: String,
    /// The worker id the token admits.
    pub worker_id: String,
}

impl JoinToken {
    /// Parses `caj1.<ca>.<secret>.<worker-id>`.
    pub fn parse(text: &str) -> Option<JoinToken> {
        let mut parts = text.trim().splitn(4, '.');
        if parts.next()? != "caj1" {
            return None;
        }
        let (ca, secret, worker) = (parts.next()?, parts.next()?, parts.next()?);
        let hex64 = |s: &str| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
        (hex64(ca) && hex64(secret) && !worker.is_empty()).then(|| JoinToken {
            ca_fingerprint: ca.to_string(),
            secret: secret.to_string(),
            worker_id: worker.to_string(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "caj1.{}.{}.{}",
            self.ca_fingerprint, self.secret, self.worker_id
        )
    }
}

/// A TLS set-up problem, with a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// Selects rustls' ring provider for the whole process (idempotent).
pub fn install_crypto_provider() {
    // Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SHA-256 of DER bytes as lower-case hex: how certificates are pinned and revoked.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// URI subject alternative names of a DER certificate (empty if unparsable).
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// Start of validity of a DER certificate, in seconds since the Unix epoch.
pub fn not_before(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_before.timestamp())
}

/// Expiry of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Certificates from PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("invalid certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// The private key from PEM text.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError(format!("invalid private key PEM: {e}")))
}

/// Writes a file readable by its owner only (0600), creating its directory (0700).
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    let fail = |e: std::io::Error| TlsError(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
        restrict(dir, 0o700).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(fail)?;
    restrict(&tmp, 0o600).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// What a [`CaVerifier`] does with the chain a server presents.
#[derive(Debug)]
enum CaCheck {
    /// Trust a server whose chain includes a CA certificate with this
    /// fingerprint (from a join token), then verify it normally against that CA.
    Pinned(String),
    /// Accept any server and keep its chain: only to show an operator the CA's
    /// fingerprint before they decide to trust it.
    Record(std::sync::Mutex<Vec<CertificateDer<'static>>>),
}

#[derive(Debug)]
struct CaVerifier {
    check: CaCheck,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = match &self.check {
            CaCheck::Pinned(fingerprint) => fingerprint,
            CaCheck::Record(seen) => {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.push(end_entity.clone().into_owned());
                seen.extend(intermediates.iter().map(|c| c.clone().into_owned()));
                return Ok(ServerCertVerified::assertion());
            }
        };
        let ca = intermediates
            .iter()
            .find(|cert| fingerprint(cert) == *pinned)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the master's CA does not match the join token's fingerprint".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate chain a TLS server at `address` (`host:port`) presents,
/// leaf first, unverified: what `cloudai login` shows before trusting a CA.
pub async fn presented_chain(address: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(CaVerifier {
        check: CaCheck::Record(std::sync::Mutex::default()),
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server_name = server_name(address)?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| {
            TlsError(format!(
                "no answer from {address} within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| TlsError(format!("cannot connect to {address}: {e}")))?;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
    )
    .await
    .map_err(|_| {
        TlsError(format!(
            "no TLS handshake with {address} within {CONNECT_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| {
        TlsError(format!(
            "no TLS from {address} (is it a CloudAI master with TLS?): {e}"
        ))
    })?;
    match &verifier.check {
        CaCheck::Record(seen) => Ok(seen.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        CaCheck::Pinned(_) => Ok(Vec::new()),
    }
}

/// A certificate as PEM.
pub fn pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The TLS server name of `host:port` (brackets of an IPv6 host removed).
fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    if !address.contains(':') {
        return Err(TlsError(format!("'{address}' is not host:port")));
    }
    let host = host_of(address);
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError(format!("'{host}' is not a valid server name: {e}")))
}

/// The host of `host:port`, without the brackets of an IPv6 host: the name a
/// server's certificate must carry.
pub fn host_of(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// How long a connection to the peer may take to open.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A lazily connected gRPC channel to a peer at `address` (`host:port`):
/// mutual TLS with `tls`, plaintext without (`--insecure`). It reconnects by
/// itself; the error names the peer (`what`).
pub fn lazy_channel(
    what: &str,
    address: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, TlsError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| TlsError(format!("invalid {what} address '{address}': {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| TlsError(format!("TLS set-up for the {what} at '{address}': {e}")))?;
    }
    Ok(endpoint.connect_lazy())
}

/// A lazily connected gRPC channel to `address` (host:port) that trusts only a
/// master whose CA has the given fingerprint. Used once, to join a cluster.
pub fn pinned_channel(address: &str, ca_fingerprint: &str) -> Result<Channel, TlsError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = CaVerifier {
        check: CaCheck::Pinned(ca_fingerprint.to_string()),
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = server_name(address)?;
    let target = address.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| TlsError(format!("invalid address '{address}': {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, server_name, target) =
                (connector.clone(), server_name.clone(), target.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_hex() {
        assert_eq!(fingerprint(b"").len(), 64);
        assert_eq!(&fingerprint(b"abc")[..8], "ba7816bf");
    }

    #[test]
    fn join_tokens_parse() {
        let token = format!("caj1.{}.{}.gpu.3", "a".repeat(64), "b".repeat(64));
        let parsed = JoinToken::parse(&token).unwrap();
        assert_eq!(parsed.worker_id, "gpu.3");
        assert_eq!(parsed.to_string(), token);
        assert_eq!(JoinToken::parse("caj1.x.y.z"), None);
    }

    #[test]
    fn identities() {
        assert_eq!(worker_identity("gpu-3"), "spiffe://cloudai/worker/gpu-3");
        assert!(uri_sans(b"not a certificate").is_empty());
    }

    #[test]
    fn private_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls/key.pem");
        write_private(&path, "secret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                std::fs::metadata(path.parent().unwrap())
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o700
            );
        }
        assert_eq!(std::fs::read_to_string(path).unwrap(), "secret");
    }
}
