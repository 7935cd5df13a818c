//! The cluster PKI: a CA made on first start (or brought by the operator), the
//! master's certificate, and worker certificates signed from their CSRs.
//!
//! Files live in `<data-dir>/tls/`, keys readable by their owner only:
//! `ca.crt`, `ca.key`, `master.crt`, `master.key`. The master's certificate is
//! re-issued at every start (one year), so its addresses stay current.

use cloudai_common::tls::{self, MASTER_IDENTITY, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Where the PKI comes from and how long worker certificates last.
#[derive(Debug, Clone)]
pub struct PkiOptions {
    /// Operator-supplied CA certificate (PEM); with `ca_key`.
    pub ca_cert: Option<PathBuf>,
    /// Operator-supplied CA key (PEM).
    pub ca_key: Option<PathBuf>,
    /// Extra names or IPs for the master's certificate.
    pub extra_sans: Vec<String>,
    /// Lifetime of worker certificates.
    pub worker_cert_validity: Duration,
}

/// The loaded PKI.
pub struct Pki {
    ca_pem: String,
    ca_fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
    master_chain_pem: String,
    master_key_pem: String,
    worker_cert_validity: Duration,
}

fn err(context: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError(format!("{context}: {e}"))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path)
        .map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that disagree (at most 5 minutes, at most a
    // tenth of the lifetime so short-lived certificates renew on time).
    let slack = (lifetime.as_secs() / 10).min(300) as i64;
    params.not_before = now - time::Duration::seconds(slack);
    params.not_after = now + time::Duration::seconds(lifetime.as_secs() as i64);
}

fn san(name: &str) -> Result<SanType, TlsError> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => {
            Ok(SanType::DnsName(name.try_into().map_err(|e| {
                TlsError(format!("invalid name '{name}': {e}"))
            })?))
        }
    }
}

impl Pki {
    /// Loads the CA (the operator's, or the one in `tls/`, or a new one) and
    /// issues a fresh master certificate.
    pub fn load_or_create(data_dir: &Path, options: &PkiOptions) -> Result<Self, TlsError> {
        let dir = data_dir.join("tls");
        let (ca_pem, ca_key_pem) = match (&options.ca_cert, &options.ca_key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (read(cert)?, read(key)?);
                // Clients find the CA certificate in the usual place (the key stays where it is).
                tls::write_private(&dir.join("ca.crt"), &cert)?;
                (cert, key)
            }
            (None, None) if dir.join("ca.crt").exists() => {
                (read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?)
            }
            (None, None) => {
                let (cert, key) = new_ca()?;
                tls::write_private(&dir.join("ca.key"), &key)?;
                tls::write_private(&dir.join("ca.crt"), &cert)?;
                tracing::info!(path = %dir.display(), "created the cluster CA");
                (cert, key)
            }
            _ => {
                return Err(TlsError(
                    "--tls-ca-cert and --tls-ca-key go together".into(),
                ));
            }
        };
        let ca_der = tls::certs_from_pem(&ca_pem)?.remove(0);
        let ca_key = KeyPair::from_pem(&ca_key_pem)
            .map_err(err("invalid CA key (a PKCS#8 PEM key is needed: `openssl pkcs8 -topk8 -nocrypt` converts others)"))?;
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(err("invalid CA certificate"))?;
        let mut pki = Self {
            ca_fingerprint: tls::fingerprint(&ca_der),
            ca_pem,
            issuer,
            master_chain_pem: String::new(),
            master_key_pem: String::new(),
            worker_cert_validity: options.worker_cert_validity,
        };
        pki.issue_master(&options.extra_sans)?;
        tls::write_private(&dir.join("master.key"), &pki.master_key_pem)?;
        tls::write_private(&dir.join("master.crt"), &pki.master_chain_pem)?;
        Ok(pki)
    }

    fn issue_master(&mut self, extra_sans: &[String]) -> Result<(), TlsError> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Ok(host) = sysinfo::System::host_name() {
            names.push(host);
        }
        for interface in cloudai_common::host::network_interfaces() {
            names.extend(
                interface
                    .addresses
                    .iter()
                    .filter_map(|a| a.split('/').next().map(str::to_string)),
            );
        }
        names.extend(extra_sans.iter().cloned());
        names.sort();
        names.dedup();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "cloudai-master");
        params.subject_alt_names = names
            .iter()
            .filter(|n| !n.contains('%'))
            .map(|n| san(n))
            .collect::<Result<_, _>>()?;
        params.subject_alt_names.push(SanType::URI(
            MASTER_IDENTITY
                .try_into()
                .map_err(|e| TlsError(format!("{e}")))?,
        ));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, Duration::from_secs(365 * 86_400));
        let key = KeyPair::generate().map_err(err("cannot generate the master key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(err("cannot issue the master certificate"))?;
        self.master_chain_pem = format!("{}{}", cert.pem(), self.ca_pem);
        self.master_key_pem = key.serialize_pem();
        Ok(())
    }

    /// SHA-256 fingerprint of the CA certificate (carried by join tokens).
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs a worker's CSR. The CSR only contributes its public key: names,
    /// identity, usages and lifetime are the master's choice. Returns the
    /// certificate (PEM), its fingerprint and its expiry (Unix seconds).
    pub fn issue_worker(
        &self,
        worker_id: &str,
        host: &str,
        csr_der: &[u8],
    ) -> Result<(String, String, i64), TlsError> {
        let csr =
            CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(|e| {
                TlsError(format!(
                    "csr: not a valid certificate signing request ({e})"
                ))
            })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, worker_id);
        params.subject_alt_names = vec![
            san(host.trim_start_matches('[').trim_end_matches(']'))?,
            SanType::URI(
                tls::worker_identity(worker_id)
                    .as_str()
                    .try_into()
                    .map_err(|e| TlsError(format!("{e}")))?,
            ),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, self.worker_cert_validity);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(err("cannot sign the worker certificate"))?;
        let expires = tls::not_after(cert.der()).unwrap_or(0);
        Ok((cert.pem(), tls::fingerprint(cert.der()), expires))
    }

    /// TLS for the master's gRPC server: client certificates from the cluster CA
    /// are verified when presented (joining workers have none yet).
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &self.master_chain_pem,
                &self.master_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// TLS for the master's calls to workers: trusts the cluster CA and
    /// presents the master's certificate.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(
                &self.master_chain_pem,
                &self.master_key_pem,
            ))
    }

    /// rustls config for the HTTPS/WSS server (no client certificates).
    pub fn https_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        tls::install_crypto_provider();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                tls::certs_from_pem(&self.master_chain_pem)?,
                tls::key_from_pem(&self.master_key_pem)?,
            )
            .map_err(|e| TlsError(format!("HTTPS certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A new self-signed cluster CA (10 years): (certificate PEM, key PEM).
fn new_ca() -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "CloudAI cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, Duration::from_secs(10 * 365 * 86_400));
    let key = KeyPair::generate().map_err(err("cannot generate the CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(err("cannot create the CA"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> PkiOptions {
        PkiOptions {
            ca_cert: None,
            ca_key: None,
            extra_sans: vec!["master.example".into()],
            worker_cert_validity: Duration::from_secs(3600),
        }
    }

    #[test]
    fn ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &options()).unwrap();
        let second = Pki::load_or_create(dir.path(), &options()).unwrap();
        assert_eq!(first.ca_fingerprint(), second.ca_fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let master = tls::certs_from_pem(&first.master_chain_pem).unwrap();
        assert!(tls::uri_sans(&master[0]).contains(&MASTER_IDENTITY.to_string()));
    }

    #[test]
    fn worker_certificates_carry_the_worker_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &options()).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let (pem, fingerprint, expires) = pki.issue_worker("gpu-3", "10.0.0.7", csr.der()).unwrap();
        let der = tls::certs_from_pem(&pem).unwrap().remove(0);
        assert_eq!(tls::fingerprint(&der), fingerprint);
        assert_eq!(tls::uri_sans(&der), vec![tls::worker_identity("gpu-3")]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((expires - now - 3600).abs() < 10);
        assert!(pki.issue_worker("gpu-3", "10.0.0.7", b"garbage").is_err());
    }

    #[test]
    fn an_operator_supplied_ca_signs_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, ca_key) = new_ca().unwrap();
        let (cert_path, key_path) = (dir.path().join("my-ca.crt"), dir.path().join("my-ca.key"));
        std::fs::write(&cert_path, &ca_pem).unwrap();
        std::fs::write(&key_path, &ca_key).unwrap();
        let options = PkiOptions {
            ca_cert: Some(cert_path),
            ca_key: Some(key_path),
            ..options()
        };
        let pki = Pki::load_or_create(&dir.path().join("data"), &options).unwrap();
        let ca_der = tls::certs_from_pem(&ca_pem).unwrap().remove(0);
        assert_eq!(pki.ca_fingerprint(), tls::fingerprint(&ca_der));
        // Clients find the operator's CA where they always look.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data/tls/ca.crt")).unwrap(),
            ca_pem
        );
        assert!(
            !dir.path().join("data/tls/ca.key").exists(),
            "the operator's key stays where it is"
        );
        // The master's chain ends in the operator's CA.
        let chain = tls::certs_from_pem(&pki.master_chain_pem).unwrap();
        assert_eq!(
            tls::fingerprint(chain.last().unwrap()),
            pki.ca_fingerprint()
        );
    }

    #[test]
    fn operator_ca_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let half = PkiOptions {
            ca_cert: Some(dir.path().join("x")),
            ..options()
        };
        assert!(Pki::load_or_create(dir.path(), &half).is_err());
    }
}
