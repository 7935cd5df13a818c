//! Private Docker registries on loopback for the image-pull tests: a real
//! one (Debian's `docker-registry`, Docker distribution) with htpasswd users,
//! and a stalled one that accepts connections and never answers. Docker
//! talks plain HTTP to registries on 127.0.0.0/8 without configuration.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{WAIT, free_port};

/// Debian's registry binary (`scripts/ensure-registry.sh` installs it).
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// Attempts at a free port before giving up (another process may take the
/// port between picking it and the registry binding it).
const START_ATTEMPTS: usize = 5;

/// A running `docker-registry` on `127.0.0.1`, requiring basic auth for every
/// request; killed on drop. Its files (config, htpasswd, blobs, log) live in
/// the directory it was started with.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub host: String,
    /// The registry's log (stderr).
    pub log_path: PathBuf,
}

/// Outcome of one attempt to start the registry on a port.
enum Started {
    Up(Child),
    PortTaken,
}

impl Registry {
    /// Starts a registry keeping everything in `dir` (a directory of its
    /// own), accepting `users` as `(name, password)` pairs. Panics when the
    /// registry does not answer within [`WAIT`].
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, htpasswd_lines(users)).unwrap();
        let config = dir.join("config.yml");
        let log_path = dir.join("registry.log");
        for _ in 0..START_ATTEMPTS {
            let host = format!("127.0.0.1:{}", free_port());
            std::fs::write(&config, config_yml(dir, &htpasswd, &host)).unwrap();
            match start_once(&config, &log_path, &host) {
                Started::Up(child) => {
                    return Registry {
                        child,
                        host,
                        log_path,
                    };
                }
                Started::PortTaken => continue,
            }
        }
        panic!(
            "docker-registry found no free port in {START_ATTEMPTS} attempts; log:\n{}",
            read(&log_path)
        );
    }

    /// [`Registry::start`] on a given port (a test that points a pull at
    /// the port before the registry is up); panics when the port is taken.
    pub fn start_on(dir: &Path, users: &[(&str, &str)], port: u16) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, htpasswd_lines(users)).unwrap();
        let (config, log_path) = (dir.join("config.yml"), dir.join("registry.log"));
        let host = format!("127.0.0.1:{port}");
        std::fs::write(&config, config_yml(dir, &htpasswd, &host)).unwrap();
        match start_once(&config, &log_path, &host) {
            Started::Up(child) => Registry {
                child,
                host,
                log_path,
            },
            Started::PortTaken => panic!("port {port} is taken; log:\n{}", read(&log_path)),
        }
    }

    /// The full reference of `repo` (`name:tag`) in this registry.
    pub fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host)
    }

    /// Pushes the local `source_image` as `repo` (`name:tag`; make it unique
    /// per test) with `user`'s credentials, then removes the local tag again
    /// so that whoever needs the image has to pull it. Returns the full
    /// reference. Panics with the CLI's output on failure.
    pub fn push(&self, source_image: &str, repo: &str, user: &str, password: &str) -> String {
        let reference = self.reference(repo);
        let config = self.login(user, password);
        let tagged = docker(None, &["tag", source_image, &reference], None);
        assert_ok(&tagged, &format!("docker tag {source_image} {reference}"));
        let pushed = docker(Some(config.path()), &["push", &reference], None);
        let untagged = docker(None, &["rmi", &reference], None);
        assert_ok(&pushed, &format!("docker push {reference}"));
        assert_ok(&untagged, &format!("docker rmi {reference}"));
        reference
    }

    /// A fresh `DOCKER_CONFIG` directory logged in to this registry as `user`
    /// with `docker login --password-stdin` (so `~/.docker` is never used);
    /// removed on drop. Panics when the login fails.
    pub fn login(&self, user: &str, password: &str) -> tempfile::TempDir {
        let config = tempfile::tempdir().unwrap();
        let login = docker(
            Some(config.path()),
            &["login", &self.host, "-u", user, "--password-stdin"],
            Some(password),
        );
        assert_ok(&login, &format!("docker login {} as {user}", self.host));
        config
    }

    /// A fresh `DOCKER_CONFIG` directory holding `user:password` for this
    /// registry as written, not checked: for pulls with wrong credentials.
    pub fn docker_config(&self, user: &str, password: &str) -> tempfile::TempDir {
        let config = tempfile::tempdir().unwrap();
        let auth = BASE64.encode(format!("{user}:{password}"));
        let json = serde_json::json!({ "auths": { &self.host: { "auth": auth } } });
        std::fs::write(config.path().join("config.json"), json.to_string()).unwrap();
        config
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        read(&self.log_path)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bcrypt lines for the registry's htpasswd file (`htpasswd -Bbn`).
fn htpasswd_lines(users: &[(&str, &str)]) -> String {
    let mut lines = String::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils; scripts/ensure-registry.sh installs it)");
        assert_ok(&out, &format!("htpasswd -Bbn {user}"));
        lines.push_str(String::from_utf8_lossy(&out.stdout).trim());
        lines.push('\n');
    }
    lines
}

/// A minimal config: filesystem storage under `dir`, basic auth, quiet logs.
fn config_yml(dir: &Path, htpasswd: &Path, host: &str) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: {host}
  secret: cloudai-e2e
auth:
  htpasswd:
    realm: cloudai-e2e
    path: {htpasswd}
",
        data = dir.join("data").display(),
        htpasswd = htpasswd.display(),
    )
}

/// Starts the registry on `host` and waits until `GET /v2/` answers 401.
fn start_once(config: &Path, log_path: &Path, host: &str) -> Started {
    let binary = if Path::new(REGISTRY_BIN).exists() {
        REGISTRY_BIN
    } else {
        "docker-registry"
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    // Earlier attempts' lines stay in the log; this attempt's start here.
    let log_start = log.metadata().unwrap().len() as usize;
    let mut child = Command::new(binary)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry (scripts/ensure-registry.sh installs it)");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = read(log_path);
            if log
                .get(log_start..)
                .unwrap_or("")
                .contains("address already in use")
            {
                return Started::PortTaken;
            }
            panic!("docker-registry exited ({status}); log:\n{log}");
        }
        if get_status(host, "/v2/") == Some(401) {
            return Started::Up(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "docker-registry did not answer on {host} within {WAIT:?}; log:\n{}",
                read(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status code of a plain `GET path` to `host`, if it answers.
fn get_status(host: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the docker CLI, with `DOCKER_CONFIG` set when `config` is given and
/// `stdin` fed to it.
fn docker(config: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new("docker");
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(config) = config {
        command.env("DOCKER_CONFIG", config);
    }
    let mut child = command.spawn().expect("the docker CLI");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A registry that never answers: it accepts connections on `127.0.0.1` and
/// holds them open without sending a byte, so a pull from it hangs until the
/// puller's timeout. Closes them all and stops on drop.
pub struct StalledRegistry {
    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub host: String,
    stopped: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StalledRegistry {
    /// Starts listening on a free port.
    pub fn start() -> StalledRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stalled registry");
        let host = listener.local_addr().unwrap().to_string();
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    held.push(conn);
                }
            }
        });
        StalledRegistry {
            host,
            stopped,
            thread: Some(thread),
        }
    }
}

impl Drop for StalledRegistry {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        if TcpStream::connect(&self.host).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}
