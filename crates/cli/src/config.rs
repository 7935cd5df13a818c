//! Where `cloudai` connects: named contexts (a master address, the cluster
//! CA it trusts, an API token) in a config file only its owner may read,
//! chosen like kubectl's: `--context`, then the current one; `--master`,
//! `--token`, `--ca` and `CLOUDAI_MASTER`, `CLOUDAI_TOKEN`, `CLOUDAI_CA`
//! override what the context says.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The context used without `--context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One cluster, as one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// `host:port` of the master's gRPC port.
    pub master: String,
    /// The cluster CA (PEM) the master's certificate must chain to; `None`:
    /// plaintext (a master run with `--insecure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The API token (`cat1.…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who the token belongs to, as the master said at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Why the config could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The config file: `$CLOUDAI_CONFIG`, else `cloudai/config.json` in
/// `$XDG_CONFIG_HOME` or `~/.config`.
pub fn path() -> Result<PathBuf, ConfigError> {
    if let Some(path) = std::env::var_os("CLOUDAI_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .ok_or_else(|| {
            ConfigError("no HOME or XDG_CONFIG_HOME: set CLOUDAI_CONFIG to a file path".into())
        })?;
    Ok(base.join("cloudai").join("config.json"))
}

impl Config {
    /// Reads the config at `path` (an absent file is an empty config).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                ConfigError(format!(
                    "{} is not a valid cloudai config ({e}): fix it or remove it and `cloudai login` again",
                    path.display()
                ))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(error) => Err(ConfigError(format!(
                "cannot read {}: {error}",
                path.display()
            ))),
        }
    }

    /// Writes the config to `path`, readable by its owner only (it holds
    /// tokens), replacing the old file in one step. A directory it creates
    /// for it is the owner's only too; an existing one is left as it is.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let fail = |what: &str, e: std::io::Error| {
            ConfigError(format!("cannot {what} {}: {e}", path.display()))
        };
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ConfigError(format!("cannot encode the config: {e}")))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail("create the directory of", e))?;
        }
        let name = path
            .file_name()
            .ok_or_else(|| ConfigError(format!("{} is not a file path", path.display())))?;
        let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("write", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| fail("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("write", e))
    }

    /// The context named `name`, or the current one.
    pub fn context(&self, name: Option<&str>) -> Result<Option<(&str, &Context)>, ConfigError> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get_key_value(name) {
            Some((name, context)) => Ok(Some((name.as_str(), context))),
            None => Err(ConfigError(format!(
                "no context '{name}': `cloudai context list` shows them, `cloudai login` adds one"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_through_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloudai/config.json");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let mut config = Config::default();
        config.contexts.insert(
            "prod".into(),
            Context {
                master: "10.0.0.5:50051".into(),
                ca_pem: Some("PEM".into()),
                token: Some("cat1.a.b".into()),
                user: Some("ana".into()),
            },
        );
        config.current = Some("prod".into());
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // An existing directory keeps its mode.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        config.save(&shared.join("c.json")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
            assert_ne!(mode & 0o777, 0o700);
        }
        let (name, context) = config.context(None).unwrap().unwrap();
        assert_eq!((name, context.master.as_str()), ("prod", "10.0.0.5:50051"));
        assert!(config.context(Some("dev")).is_err());
        std::fs::write(&path, "{nope").unwrap();
        assert!(Config::load(&path).unwrap_err().0.contains("not a valid"));
    }
}
