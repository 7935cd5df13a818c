//! The operator's key that seals secrets at rest: AES-256-GCM with a random
//! nonce per value, the secret's name bound in as associated data (a sealed
//! value copied under another name does not open). The key lives in a file
//! the operator controls (`--secrets-key-file`), never in the store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::path::Path;

/// Bytes of a key.
const KEY_LEN: usize = 32;

/// What can go wrong with the key or a sealed value.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// The key file cannot be read, written or parsed.
    #[error("secrets key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A sealed value does not open with this key (another key sealed it, or
    /// it was altered).
    #[error(
        "secret '{0}' does not open with this master's key (sealed with another key, or altered)"
    )]
    Open(String),
}

/// The key, loaded once at start.
pub struct SealingKey {
    key: LessSafeKey,
    id: String,
    random: SystemRandom,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({})", self.id)
    }
}

impl SealingKey {
    /// Reads the key at `path` (base64 of 32 bytes), or creates the file
    /// with a new random key (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SealingError> {
        let fail = |message: String| SealingError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = BASE64
                    .decode(text.trim())
                    .map_err(|e| fail(format!("not base64: {e}")))?;
                let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                    fail(format!("holds {} bytes, a key is {KEY_LEN}", b.len()))
                })?;
                warn_if_readable_by_others(path);
                Ok(Self::from_bytes(&bytes))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| fail("no randomness for a new key".into()))?;
                write_new_key(path, &BASE64.encode(bytes)).map_err(|e| fail(e.to_string()))?;
                let key = Self::from_bytes(&bytes);
                tracing::warn!(path = %path.display(), key_id = key.id(),
                    "created a new secrets key: back it up apart from the store; without it the secrets cannot be read");
                Ok(key)
            }
            Err(error) => Err(fail(error.to_string())),
        }
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        Self {
            key: LessSafeKey::new(unbound),
            id,
            random: SystemRandom::new(),
        }
    }

    /// The key's fingerprint (first 8 bytes of its SHA-256, hex), stored with
    /// each value it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `value` for the secret `name`: base64 of nonce, ciphertext, tag.
    pub fn seal(&self, name: &str, value: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the system's random number generator");
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .expect("a value within AES-GCM's limits");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        BASE64.encode(out)
    }

    /// Opens what [`Self::seal`] sealed for `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, SealingError> {
        let failed = || SealingError::Open(name.to_string());
        let mut bytes = BASE64.decode(sealed).map_err(|_| failed())?;
        if bytes.len() < NONCE_LEN {
            return Err(failed());
        }
        let mut body = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| failed())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .map_err(|_| failed())?;
        Ok(plain.to_vec())
    }
}

fn write_new_key(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the secrets key file is readable by other users: chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_name() {
        let key = SealingKey::from_bytes(&[7; KEY_LEN]);
        let sealed = key.seal("wandb", b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            key.seal("wandb", b"hunter2"),
            "a fresh nonce each time"
        );
        assert_eq!(key.open("wandb", &sealed).unwrap(), b"hunter2");
        assert!(key.open("other", &sealed).is_err(), "bound to its name");
        let other = SealingKey::from_bytes(&[8; KEY_LEN]);
        assert!(other.open("wandb", &sealed).is_err());
        assert_ne!(key.id(), other.id());
        let mut altered = BASE64.decode(&sealed).unwrap();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open("wandb", &BASE64.encode(altered)).is_err());
        assert!(key.open("wandb", "AAAA").is_err());
        assert!(key.open("wandb", "not base64!").is_err());
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secrets.key");
        let created = SealingKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = SealingKey::load_or_create(&path).unwrap();
        assert_eq!(created.id(), loaded.id());
        let sealed = created.seal("s", b"v");
        assert_eq!(loaded.open("s", &sealed).unwrap(), b"v");
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        let error = SealingKey::load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("holds 5 bytes"), "{error}");
    }
}
