//! The master's secrets: values an admin sets (`secret set`), sealed with the
//! operator's key before they reach the store, listed by name only, and opened
//! only to fill the copy of a task sent to the worker that runs it: into its
//! environment (`--secret ENV=NAME`), or as the login for its image's registry
//! (a secret set with `--registry HOST`, value `USER:PASSWORD`).

use crate::core::sealing::SealingKey;
use crate::error::{MasterError, MasterResult};
use crate::store::{ContainerOptions, SecretRecord, Store, now_millis};
use cloudai_common::validate;
use cloudai_proto::v1::{RegistryCredentials, Task};
use std::sync::Arc;

/// Largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 << 10;
/// Most secrets the master keeps.
pub const MAX_SECRETS: usize = 10_000;

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// The registry host it logs in to, for registry credentials.
    pub registry: Option<String>,
    /// When first set (ms since epoch).
    pub created_at: i64,
    /// When last set (ms since epoch).
    pub updated_at: i64,
}

/// Handle to the secrets (cheap to clone).
#[derive(Clone)]
pub struct Secrets {
    store: Arc<dyn Store>,
    key: Option<Arc<SealingKey>>,
}

impl Secrets {
    /// Secrets in `store`, sealed with `key` (`None`: secrets are off, and
    /// every use says how to turn them on).
    pub fn new(store: Arc<dyn Store>, key: Option<Arc<SealingKey>>) -> Self {
        Self { store, key }
    }

    fn key(&self) -> MasterResult<&SealingKey> {
        self.key.as_deref().ok_or_else(|| {
            MasterError::FailedPrecondition(
                "secrets are off: start the master with --secrets-key-file FILE (a new key is created there when the file is missing; keep it apart from the store and its backups)".into(),
            )
        })
    }

    /// Sets (or replaces) a secret; with `registry` it is the login
    /// (`USER:PASSWORD`) for that registry host. Returns whether it replaced one.
    pub async fn set(&self, name: &str, value: &str, registry: Option<&str>) -> MasterResult<bool> {
        validate::secret_name(name)?;
        let key = self.key()?;
        if value.is_empty() {
            return Err(MasterError::InvalidArgument(
                "secret value: empty (nothing was set)".into(),
            ));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(MasterError::InvalidArgument(format!(
                "secret value: {} bytes; at most {MAX_SECRET_BYTES}",
                value.len()
            )));
        }
        if value.contains('\0') {
            return Err(MasterError::InvalidArgument(
                "secret value: contains a NUL byte".into(),
            ));
        }
        let registry = registry.map(registry_name).transpose()?;
        if registry.is_some()
            && !value
                .split_once(':')
                .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty())
        {
            return Err(MasterError::InvalidArgument(
                "registry credentials: the value must be USER:PASSWORD (or USER:TOKEN)".into(),
            ));
        }
        let all = self.store.list_secrets().await?;
        let existing = all.iter().find(|s| s.name == name);
        if existing.is_none() && all.len() >= MAX_SECRETS {
            return Err(MasterError::ResourceExhausted(format!(
                "at most {MAX_SECRETS} secrets: remove some first"
            )));
        }
        if let Some(host) = &registry
            && let Some(other) = all
                .iter()
                .find(|s| s.name != name && s.registry.as_ref() == Some(host))
        {
            return Err(MasterError::FailedPrecondition(format!(
                "secret '{}' already holds the login for registry {host}: remove it or set that one",
                other.name
            )));
        }
        let now = now_millis();
        let record = SecretRecord {
            name: name.to_string(),
            registry,
            sealed: key.seal(name, value.as_bytes()),
            key_id: key.id().to_string(),
            created_at: existing.map_or(now, |s| s.created_at),
            updated_at: now,
        };
        self.store.put_secret(&record).await?;
        tracing::info!(secret = name, registry = ?record.registry, "secret set");
        Ok(existing.is_some())
    }

    /// Every secret, by name, without values.
    pub async fn list(&self) -> MasterResult<Vec<SecretInfo>> {
        Ok(self
            .store
            .list_secrets()
            .await?
            .into_iter()
            .map(|s| SecretInfo {
                name: s.name,
                registry: s.registry,
                created_at: s.created_at,
                updated_at: s.updated_at,
            })
            .collect())
    }

    /// Removes a secret (tasks already sent keep what they got).
    pub async fn remove(&self, name: &str) -> MasterResult<()> {
        validate::secret_name(name)?;
        if !self.store.delete_secret(name).await? {
            return Err(MasterError::NotFound(format!(
                "no secret '{name}': `secrets` lists them"
            )));
        }
        tracing::info!(secret = name, "secret removed");
        Ok(())
    }

    /// Checks at submission that every secret a task names exists.
    pub async fn check_task(&self, options: &ContainerOptions) -> MasterResult<()> {
        if options.secret_env.is_empty() {
            return Ok(());
        }
        self.key()?;
        let all = self.store.list_secrets().await?;
        for name in options.secret_env.values() {
            match all.iter().find(|s| &s.name == name) {
                None => {
                    return Err(MasterError::NotFound(format!(
                        "no secret '{name}': set it with `secret set {name}` first"
                    )));
                }
                Some(s) if s.registry.is_some() => {
                    return Err(MasterError::InvalidArgument(format!(
                        "secret '{name}' is a registry login; it is used for pulls, not put in a task's environment"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Fills the copy of a task meant for its worker: the secrets it names
    /// into its environment, and the login for its image's registry when
    /// there is one. Fails (naming the secret) when one is gone or does not open.
    pub async fn fill(&self, message: &mut Task) -> MasterResult<Option<RegistryCredentials>> {
        let host = registry_host(&message.image);
        let wanted = message
            .options
            .as_ref()
            .map(|o| o.secret_env.clone())
            .unwrap_or_default();
        if wanted.is_empty() && self.key.is_none() {
            return Ok(None);
        }
        let all = self.store.list_secrets().await?;
        for (variable, name) in &wanted {
            let record = all
                .iter()
                .find(|s| &s.name == name && s.registry.is_none())
                .ok_or_else(|| {
                    MasterError::FailedPrecondition(format!("secret '{name}' no longer exists"))
                })?;
            message.env.insert(variable.clone(), self.open(record)?);
        }
        if let Some(options) = message.options.as_mut() {
            // The worker gets values, never the names.
            options.secret_env.clear();
        }
        let Some(login) = all.iter().find(|s| s.registry.as_deref() == Some(&host)) else {
            return Ok(None);
        };
        let value = self.open(login)?;
        let (username, password) = value.split_once(':').unwrap_or((&value, ""));
        Ok(Some(RegistryCredentials {
            server: host,
            username: username.to_string(),
            password: password.to_string(),
        }))
    }

    fn open(&self, record: &SecretRecord) -> MasterResult<String> {
        let key = self.key()?;
        let plain = key
            .open(&record.name, &record.sealed)
            .map_err(|e| MasterError::FailedPrecondition(e.to_string()))?;
        String::from_utf8(plain).map_err(|_| {
            MasterError::FailedPrecondition(format!("secret '{}' is not text", record.name))
        })
    }

    /// How many stored secrets this master's key cannot open (sealed with
    /// another key), for a warning at start.
    pub async fn sealed_with_other_keys(&self) -> MasterResult<usize> {
        let Some(key) = &self.key else { return Ok(0) };
        Ok(self
            .store
            .list_secrets()
            .await?
            .iter()
            .filter(|s| s.key_id != key.id())
            .count())
    }
}

/// Docker Hub's registry host, as image references without a host mean it.
const DOCKER_HUB: &str = "docker.io";

/// The registry host of an image reference: its first component when that
/// looks like a host (has a `.` or `:`, or is `localhost`), Docker Hub otherwise.
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            canonical_host(first)
        }
        _ => DOCKER_HUB.to_string(),
    }
}

fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    }
}

/// Checks a `--registry HOST[:PORT]` and gives its canonical form.
fn registry_name(host: &str) -> MasterResult<String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !ok {
        return Err(MasterError::InvalidArgument(format!(
            "registry: '{}' is not a host[:port] (e.g. registry.example.com:5000, docker.io)",
            host.escape_debug()
        )));
    }
    Ok(canonical_host(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn secrets() -> Secrets {
        let key = SealingKey::from_bytes(&[3; 32]);
        Secrets::new(Arc::new(MemoryStore::default()), Some(Arc::new(key)))
    }

    #[test]
    fn registry_hosts_come_from_the_image_reference() {
        for (image, host) in [
            ("busybox", "docker.io"),
            ("library/busybox:1", "docker.io"),
            ("pytorch/pytorch:2.4", "docker.io"),
            ("localhost/app", "localhost"),
            ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000"),
            (
                "Registry.Example.com/app@sha256:abc",
                "registry.example.com",
            ),
            ("index.docker.io/library/busybox", "docker.io"),
        ] {
            assert_eq!(registry_host(image), host, "{image}");
        }
    }

    #[tokio::test]
    async fn values_are_sealed_and_reach_only_the_worker_copy() {
        let secrets = secrets();
        assert!(!secrets.set("wandb", "k-123", None).await.unwrap());
        assert!(secrets.set("wandb", "k-456", None).await.unwrap());
        secrets
            .set("hub", "alice:pw", Some("127.0.0.1:5000"))
            .await
            .unwrap();
        let stored = secrets.store.list_secrets().await.unwrap();
        assert!(stored.iter().all(|s| !s.sealed.contains("k-456")));
        let listed = secrets.list().await.unwrap();
        assert_eq!(listed.len(), 2);

        let mut options = ContainerOptions::default();
        options
            .secret_env
            .insert("WANDB_KEY".into(), "wandb".into());
        secrets.check_task(&options).await.unwrap();
        let mut message = Task {
            image: "127.0.0.1:5000/team/app:v1".into(),
            options: Some(crate::core::convert::options_message(&options)),
            ..Default::default()
        };
        let login = secrets.fill(&mut message).await.unwrap().unwrap();
        assert_eq!(message.env["WANDB_KEY"], "k-456");
        assert!(message.options.unwrap().secret_env.is_empty());
        assert_eq!(
            (
                login.server.as_str(),
                login.username.as_str(),
                login.password.as_str()
            ),
            ("127.0.0.1:5000", "alice", "pw")
        );

        options.secret_env.insert("X".into(), "missing".into());
        let error = secrets.check_task(&options).await.unwrap_err().to_string();
        assert!(error.contains("no secret 'missing'"), "{error}");
        secrets.remove("wandb").await.unwrap();
        assert!(secrets.remove("wandb").await.is_err());
    }

    #[tokio::test]
    async fn bad_secrets_are_refused() {
        let secrets = secrets();
        for (name, value, registry) in [
            ("bad name", "v", None),
            ("ok", "", None),
            ("ok", "v\0", None),
            ("login", "no-colon", Some("r.example")),
            ("login", "u:p", Some("bad host/")),
        ] {
            assert!(
                secrets.set(name, value, registry).await.is_err(),
                "{name} {value:?}"
            );
        }
        let big = "x".repeat(MAX_SECRET_BYTES + 1);
        assert!(secrets.set("big", &big, None).await.is_err());
        secrets.set("a", "u:p", Some("r.example")).await.unwrap();
        let error = secrets
            .set("b", "u:p", Some("R.example"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("already holds the login"),
            "{error}"
        );
        let off = Secrets::new(Arc::new(MemoryStore::default()), None);
        let error = off.set("a", "v", None).await.unwrap_err().to_string();
        assert!(error.contains("--secrets-key-file"), "{error}");
    }
}
