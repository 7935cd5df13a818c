//! Validation of everything a client or operator sends, in one place.
//!
//! Each check returns a [`ValidationError`] naming the field and what is
//! accepted, so gRPC handlers and the REPL can show it as it is.

use cloudai_proto::v1::{ContainerOptions, Mount, ResourceLimits, Task, mount};
use std::collections::HashMap;

/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 100;

/// Longest accepted worker or task id.
pub const MAX_ID_LEN: usize = 64;
/// Longest accepted image reference.
pub const MAX_IMAGE_LEN: usize = 255;
/// Most environment variables on one task.
pub const MAX_ENV_VARS: usize = 256;
/// Largest total size of a task's environment (keys and values).
pub const MAX_ENV_BYTES: usize = 256 * 1024;
/// Most command arguments on one task.
pub const MAX_COMMAND_ARGS: usize = 1024;
/// Largest total size of a task's command line.
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;
/// Smallest memory limit Docker accepts (6 MiB).
pub const MIN_MEMORY_BYTES: i64 = 6 << 20;
/// Largest memory limit accepted (16 TiB).
pub const MAX_MEMORY_BYTES: i64 = 16 << 40;
/// Largest CPU limit accepted (1024 CPUs).
pub const MAX_NANO_CPUS: i64 = 1024 * 1_000_000_000;
/// Most GPUs one task may ask for.
pub const MAX_GPUS: i32 = 64;
/// Longest task timeout accepted (30 days).
pub const MAX_TIMEOUT_SECONDS: u64 = 30 * 86_400;

/// A rejected field, with a message meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, e.g. `image` or `limits.memory`.
    pub field: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// A configuration that cannot run (options that contradict each other or are
/// out of range), with a message naming the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<ValidationError> for ConfigError {
    fn from(error: ValidationError) -> Self {
        ConfigError(error.to_string())
    }
}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError(message.to_string())
    }
}

fn err(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        message: message.into(),
    }
}

/// Checks a worker or task id: 1–64 characters of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit.
pub fn id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(err(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(err(
            field,
            format!("is longer than {MAX_ID_LEN} characters"),
        ));
    }
    let first_ok = value.starts_with(|c: char| c.is_ascii_alphanumeric());
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !chars_ok {
        return Err(err(
            field,
            format!(
                "'{value}' is not a valid id: use letters, digits, '.', '_' and '-', starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Checks a `host:port` address (host name, IPv4, or `[IPv6]`).
pub fn address(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let bad = || {
        err(
            field,
            format!("'{value}' is not a valid address: expected host:port, like 10.0.0.7:50052"),
        )
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        return Ok(());
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !host_ok || host.starts_with(['-', '.']) {
        return Err(bad());
    }
    Ok(())
}

/// Checks a Docker image reference such as `busybox`, `ghcr.io/org/app:1.2`
/// or `repo@sha256:…`.
pub fn image(value: &str) -> Result<(), ValidationError> {
    const FIELD: &str = "image";
    if value.is_empty() {
        return Err(err(FIELD, "must not be empty"));
    }
    if value.len() > MAX_IMAGE_LEN {
        return Err(err(
            FIELD,
            format!("is longer than {MAX_IMAGE_LEN} characters"),
        ));
    }
    let bad = |why: &str| {
        err(
            FIELD,
            format!(
                "'{value}' is not a valid image reference ({why}); expected something like busybox:latest or registry.example.com/team/app:1.0"
            ),
        )
    };
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if !chars_ok {
        return Err(bad("unexpected character"));
    }
    let (name, digest) = match value.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (value, None),
    };
    if let Some(digest) = digest {
        let (algo, hex) = digest
            .split_once(':')
            .ok_or_else(|| bad("malformed digest"))?;
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("malformed digest"));
        }
    }
    // A tag is the part after the last ':' that has no '/' after it.
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (name, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || tag.starts_with(['.', '-'])
            || tag.contains(['@', ':']))
    {
        return Err(bad("malformed tag"));
    }
    if repo.is_empty() || repo.split('/').any(|part| part.is_empty()) {
        return Err(bad("empty path component"));
    }
    let path_start = usize::from(
        repo.contains('/') && {
            let first = repo.split('/').next().unwrap_or_default();
            first.contains(['.', ':']) || first == "localhost"
        },
    );
    for part in repo.split('/').skip(path_start) {
        if part.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names must be lowercase"));
        }
        if part.starts_with(['.', '_', '-'])
            || part.ends_with(['.', '_', '-'])
            || part.contains(':')
        {
            return Err(bad("malformed path component"));
        }
    }
    Ok(())
}

/// Checks a task's environment: POSIX-style names, bounded count and size.
pub fn env(vars: &HashMap<String, String>) -> Result<(), ValidationError> {
    const FIELD: &str = "env";
    if vars.len() > MAX_ENV_VARS {
        return Err(err(
            FIELD,
            format!(
                "has {} variables; at most {MAX_ENV_VARS} are allowed",
                vars.len()
            ),
        ));
    }
    let mut total = 0;
    for (key, value) in vars {
        env_name(FIELD, key)?;
        if value.contains('\0') {
            return Err(err(FIELD, format!("value of '{key}' contains a NUL byte")));
        }
        total += key.len() + value.len();
    }
    if total > MAX_ENV_BYTES {
        return Err(err(
            FIELD,
            format!("is {total} bytes; at most {MAX_ENV_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// Checks an environment variable's name: letters, digits and `_`, not
/// starting with a digit.
fn env_name(field: &'static str, key: &str) -> Result<(), ValidationError> {
    let ok = key.len() <= 256
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        return Ok(());
    }
    Err(err(
        field,
        format!(
            "'{}' is not a valid variable name: use letters, digits and '_', not starting with a digit",
            key.escape_debug()
        ),
    ))
}

/// Checks a task's command line: bounded count and size, no NUL bytes.
pub fn command(args: &[String]) -> Result<(), ValidationError> {
    const FIELD: &str = "command";
    if args.len() > MAX_COMMAND_ARGS {
        return Err(err(
            FIELD,
            format!(
                "has {} arguments; at most {MAX_COMMAND_ARGS} are allowed",
                args.len()
            ),
        ));
    }
    let total: usize = args.iter().map(String::len).sum();
    if total > MAX_COMMAND_BYTES {
        return Err(err(
            FIELD,
            format!("is {total} bytes; at most {MAX_COMMAND_BYTES} are allowed"),
        ));
    }
    if args.iter().any(|arg| arg.contains('\0')) {
        return Err(err(FIELD, "contains a NUL byte"));
    }
    Ok(())
}

/// Checks resource limits: no negatives, nothing absurd.
pub fn limits(limits: &ResourceLimits) -> Result<(), ValidationError> {
    if limits.nano_cpus < 0 || limits.nano_cpus > MAX_NANO_CPUS {
        return Err(err(
            "limits.cpus",
            format!(
                "{} CPUs is out of range: use a number between 0.01 and 1024",
                limits.nano_cpus as f64 / 1e9
            ),
        ));
    }
    if limits.nano_cpus > 0 && limits.nano_cpus < 10_000_000 {
        return Err(err("limits.cpus", "must be at least 0.01 CPUs"));
    }
    if limits.memory_bytes < 0 || limits.memory_bytes > MAX_MEMORY_BYTES {
        return Err(err(
            "limits.memory",
            "is out of range: use a size between 6m and 16t",
        ));
    }
    if limits.memory_bytes > 0 && limits.memory_bytes < MIN_MEMORY_BYTES {
        return Err(err(
            "limits.memory",
            "must be at least 6m (Docker's minimum)",
        ));
    }
    if limits.gpu_count < -1 || limits.gpu_count > MAX_GPUS {
        return Err(err(
            "limits.gpus",
            format!("must be a count between 0 and {MAX_GPUS}, or 'all'"),
        ));
    }
    if limits.gpu_device_ids.len() > MAX_GPUS as usize {
        return Err(err(
            "limits.gpus",
            format!("lists more than {MAX_GPUS} devices"),
        ));
    }
    for device in &limits.gpu_device_ids {
        let ok = !device.is_empty()
            && device.len() <= 128
            && device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(err(
                "limits.gpus",
                format!("'{device}' is not a GPU UUID or index"),
            ));
        }
    }
    Ok(())
}

/// Checks a whole task specification (the task id itself is set by the master).
pub fn task(task: &Task) -> Result<(), ValidationError> {
    image(&task.image)?;
    command(&task.command)?;
    env(&task.env)?;
    limits(&task.limits.clone().unwrap_or_default())?;
    if task.timeout_seconds > MAX_TIMEOUT_SECONDS {
        return Err(err("timeout", "is longer than 30 days"));
    }
    if let Some(options) = &task.options {
        container_options(options)?;
        if let Some(variable) = options
            .secret_env
            .keys()
            .find(|v| task.env.contains_key(*v))
        {
            return Err(err(
                "secret",
                format!("'{variable}' is set by both --env and --secret: keep one"),
            ));
        }
    }
    Ok(())
}

/// Largest `/dev/shm` a task may ask for (1 TiB).
pub const MAX_SHM_BYTES: u64 = 1 << 40;

/// Checks how a container is asked to run: a bounded `/dev/shm`, a user as
/// `name`, `uid` or `uid:gid`, an absolute working directory.
pub fn container_options(options: &ContainerOptions) -> Result<(), ValidationError> {
    if options.shm_size_bytes > MAX_SHM_BYTES {
        return Err(err("shm-size", "is larger than 1 TiB"));
    }
    if !options.user.is_empty() {
        let name_ok = |part: &str| {
            !part.is_empty()
                && part.len() <= 32
                && part
                    .starts_with(|c: char| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        };
        let ok = match options.user.split_once(':') {
            Some((user, group)) => name_ok(user) && name_ok(group),
            None => name_ok(&options.user),
        };
        if !ok {
            return Err(err(
                "user",
                format!(
                    "'{}' is not a user: give a name, a uid or uid:gid (e.g. 1000:1000)",
                    options.user
                ),
            ));
        }
    }
    if !options.workdir.is_empty() && !absolute_path(&options.workdir) {
        return Err(err(
            "workdir",
            format!(
                "'{}' is not an absolute path (e.g. /workspace)",
                options.workdir
            ),
        ));
    }
    mounts(&options.mounts)?;
    labels(&options.labels)?;
    if !matches!(options.network.as_str(), "" | "bridge" | "none" | "host") {
        return Err(err(
            "network",
            format!("'{}' is not one of bridge, none, host", options.network),
        ));
    }
    if !matches!(options.ipc.as_str(), "" | "private" | "host") {
        return Err(err(
            "ipc",
            format!("'{}' is not one of private, host", options.ipc),
        ));
    }
    if cloudai_proto::v1::PullPolicy::try_from(options.pull).is_err() {
        return Err(err("pull", "is not one of missing, always, never"));
    }
    if options.pull_timeout_seconds > MAX_TIMEOUT_SECONDS {
        return Err(err("pull-timeout", "is longer than 30 days"));
    }
    secret_env(&options.secret_env)?;
    Ok(())
}

/// Most secrets one task may use.
pub const MAX_TASK_SECRETS: usize = 64;

/// Checks a task's `--secret ENV=NAME` pairs: bounded, environment variable
/// names, secret names.
pub fn secret_env(pairs: &HashMap<String, String>) -> Result<(), ValidationError> {
    if pairs.len() > MAX_TASK_SECRETS {
        return Err(err("secret", format!("at most {MAX_TASK_SECRETS}")));
    }
    for (variable, name) in pairs {
        env_name("secret", variable)?;
        secret_name(name).map_err(|e| err("secret", e.message))?;
    }
    Ok(())
}

/// Longest secret name.
pub const MAX_SECRET_NAME: usize = 128;

/// Checks a secret's name: letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit.
pub fn secret_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(err(
            "secret name",
            format!(
                "'{}' must be 1-{MAX_SECRET_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit",
                name.escape_debug()
            ),
        ))
    }
}

/// Most labels one task may set.
pub const MAX_LABELS: usize = 64;

/// Checks a task's container labels: bounded, keys of lower-case letters,
/// digits, `.`, `_`, `-`, none under the system's `cloudai.` prefix.
pub fn labels(labels: &HashMap<String, String>) -> Result<(), ValidationError> {
    if labels.len() > MAX_LABELS {
        return Err(err("label", format!("at most {MAX_LABELS}")));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= 128
            && key.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && key.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !key_ok {
            return Err(err(
                "label",
                format!("'{key}' is not a label key: lower-case letters, digits, '.', '_', '-'"),
            ));
        }
        if key.starts_with("cloudai.") {
            return Err(err(
                "label",
                format!("'{key}': cloudai.* labels are the system's"),
            ));
        }
        if value.len() > 1024 || value.contains('\0') {
            return Err(err(
                "label",
                format!("the value of '{key}' is longer than 1 KiB"),
            ));
        }
    }
    Ok(())
}

/// Most mounts one task may ask for.
pub const MAX_MOUNTS: usize = 32;

/// An absolute path without `.`, `..` or empty components (a trailing `/`
/// aside), NUL or more than 4096 bytes.
fn absolute_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    path.len() <= 4096
        && !path.contains('\0')
        && rest
            .trim_end_matches('/')
            .split('/')
            .all(|part| !matches!(part, "." | ".."))
        && !rest.trim_end_matches('/').contains("//")
}

/// Whether `path` is one of `prefixes` or inside one (`/data` allows
/// `/data` and `/data/x`, not `/database`).
pub fn host_path_allowed(path: &str, prefixes: &[String]) -> bool {
    let path = path.trim_end_matches('/');
    prefixes.iter().any(|prefix| {
        let prefix = prefix.trim_end_matches('/');
        path == prefix || path.starts_with(&format!("{prefix}/")) || prefix.is_empty()
    })
}

/// Checks a task's mounts: known kinds, absolute distinct targets, volume
/// names Docker accepts, absolute host paths, bounded tmpfs sizes.
pub fn mounts(mounts: &[Mount]) -> Result<(), ValidationError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(err("mounts", format!("at most {MAX_MOUNTS}")));
    }
    let mut targets = std::collections::HashSet::new();
    for mount in mounts {
        let target = mount.target.trim_end_matches('/');
        if !absolute_path(&mount.target) || target.is_empty() {
            return Err(err(
                "mount",
                format!(
                    "target '{}' is not an absolute path in the container (e.g. /data)",
                    mount.target
                ),
            ));
        }
        if !targets.insert(target.to_string()) {
            return Err(err("mount", format!("'{target}' is mounted twice")));
        }
        match mount::Kind::try_from(mount.kind) {
            Ok(mount::Kind::Volume) => {
                let name = &mount.source;
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !ok {
                    return Err(err(
                        "volume",
                        format!(
                            "'{name}' is not a volume name: letters, digits, '_', '.', '-', starting with a letter or digit"
                        ),
                    ));
                }
            }
            Ok(mount::Kind::HostPath) => {
                if !absolute_path(&mount.source) {
                    return Err(err(
                        "volume",
                        format!("host path '{}' is not an absolute path", mount.source),
                    ));
                }
            }
            Ok(mount::Kind::Tmpfs) => {
                if !mount.source.is_empty() {
                    return Err(err("tmpfs", "takes no source"));
                }
                if mount.tmpfs_size_bytes > MAX_SHM_BYTES {
                    return Err(err("tmpfs", "is larger than 1 TiB"));
                }
            }
            _ => return Err(err("mount", format!("unknown kind {}", mount.kind))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_options_are_bounded() {
        let options = |shm, user: &str, workdir: &str| ContainerOptions {
            shm_size_bytes: shm,
            user: user.into(),
            workdir: workdir.into(),
            mounts: Vec::new(),
            ..Default::default()
        };
        assert!(container_options(&options(8 << 30, "1000:1000", "/workspace")).is_ok());
        assert!(container_options(&options(0, "trainer", "")).is_ok());
        assert!(container_options(&options(0, "", "")).is_ok());
        assert!(container_options(&options(MAX_SHM_BYTES + 1, "", "")).is_err());
        for user in ["root:", ":0", "a b", "Admin", "x;rm", &"u".repeat(33)] {
            assert!(container_options(&options(0, user, "")).is_err(), "{user}");
        }
        for workdir in ["rel/path", "", "/ok"] {
            let ok = container_options(&options(0, "", workdir)).is_ok();
            assert_eq!(ok, workdir != "rel/path", "{workdir}");
        }
        assert!(container_options(&options(0, "", "/a\0b")).is_err());
    }

    #[test]
    fn mounts_are_checked() {
        let mount = |kind: mount::Kind, source: &str, target: &str| Mount {
            kind: kind as i32,
            source: source.into(),
            target: target.into(),
            read_only: false,
            tmpfs_size_bytes: 0,
        };
        use mount::Kind::{HostPath, Tmpfs, Unspecified, Volume};
        let good = [
            mount(Volume, "hf-cache", "/root/.cache/huggingface"),
            mount(HostPath, "/data/imagenet", "/data"),
            mount(Tmpfs, "", "/scratch"),
        ];
        assert!(mounts(&good).is_ok());
        for bad in [
            vec![mount(Volume, "bad name", "/x")],
            vec![mount(Volume, "", "/x")],
            vec![mount(HostPath, "relative", "/x")],
            vec![mount(HostPath, "/data/../etc", "/x")],
            vec![mount(Volume, "v", "relative")],
            vec![mount(Volume, "v", "/")],
            vec![mount(Tmpfs, "src", "/x")],
            vec![mount(Unspecified, "v", "/x")],
            vec![mount(Volume, "a", "/x"), mount(Volume, "b", "/x/")],
            vec![mount(Volume, "v", "/x"); MAX_MOUNTS + 1],
        ] {
            assert!(mounts(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_paths_are_allowed_by_prefix() {
        let allowed = vec!["/data".to_string(), "/models/".to_string()];
        assert!(host_path_allowed("/data", &allowed));
        assert!(host_path_allowed("/data/imagenet", &allowed));
        assert!(host_path_allowed("/models/llama", &allowed));
        assert!(!host_path_allowed("/database", &allowed));
        assert!(!host_path_allowed("/etc", &allowed));
        assert!(!host_path_allowed("/data", &[]));
    }

    #[test]
    fn ids() {
        assert!(id("worker_id", "gpu-3").is_ok());
        assert!(id("worker_id", "node.1_a").is_ok());
        assert!(id("worker_id", "").is_err());
        assert!(id("worker_id", "-x").is_err());
        assert!(id("worker_id", "a b").is_err());
        assert!(id("worker_id", &"a".repeat(65)).is_err());
    }

    #[test]
    fn addresses() {
        assert!(address("address", "10.0.0.7:50052").is_ok());
        assert!(address("address", "gpu-host.lan:1").is_ok());
        assert!(address("address", "[::1]:50052").is_ok());
        assert!(address("address", "10.0.0.7").is_err());
        assert!(address("address", ":50052").is_err());
        assert!(address("address", "host:0").is_err());
        assert!(address("address", "host:99999").is_err());
        assert!(address("address", "bad host:1").is_err());
    }

    #[test]
    fn images() {
        for ok in [
            "busybox",
            "busybox:latest",
            "cloudai-test/busybox:latest",
            "ghcr.io/org/app:1.2",
            "localhost:5000/app",
            "Registry.Example.com/team/app:V1",
            "repo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(image(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "Busybox",
            "a b",
            "repo:",
            ":tag",
            "repo//x",
            "repo@sha256:zz",
            "-repo",
            "img;rm",
        ] {
            assert!(image(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn envs() {
        let mut vars = HashMap::new();
        vars.insert("GOOD_1".to_string(), "x".to_string());
        assert!(env(&vars).is_ok());
        vars.insert("1BAD".to_string(), "x".to_string());
        assert!(env(&vars).is_err());
        let big: HashMap<_, _> = (0..300).map(|i| (format!("K{i}"), String::new())).collect();
        assert!(env(&big).is_err());
    }

    #[test]
    fn limit_ranges() {
        let ok = ResourceLimits {
            nano_cpus: 1_500_000_000,
            memory_bytes: 64 << 20,
            gpu_count: 1,
            gpu_device_ids: vec![],
        };
        assert!(limits(&ok).is_ok());
        assert!(
            limits(&ResourceLimits {
                nano_cpus: -1,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            limits(&ResourceLimits {
                memory_bytes: -5,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            limits(&ResourceLimits {
                memory_bytes: 1024,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            limits(&ResourceLimits {
                memory_bytes: i64::MAX,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            limits(&ResourceLimits {
                gpu_count: -2,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            limits(&ResourceLimits {
                nano_cpus: MAX_NANO_CPUS + 1,
                ..ok.clone()
            })
            .is_err()
        );
    }
}
