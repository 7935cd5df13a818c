//! Helpers for the end-to-end suite: start the real `cloudai-master` and
//! `cloudai-worker` binaries, drive the master's REPL through a pipe, wait on
//! output with timeouts, and clean up processes and containers.

pub mod history;
pub mod netns;
pub mod proxy;
pub mod registry;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The offline test image (busybox) the suite runs tasks in.
pub const TEST_IMAGE: &str = "cloudai-test/busybox:latest";
/// Default time to wait for an expected line.
pub const WAIT: Duration = Duration::from_secs(30);

/// Directory holding the built binaries: `CLOUDAI_BIN_DIR`, or the cargo
/// target directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLOUDAI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`) or set CLOUDAI_BIN_DIR",
        path.display()
    );
    path
}

/// A unique name for this test process (worker ids, containers).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A port that was free a moment ago (for components that must keep their
/// port across a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes sure the offline busybox test image exists (imports it if not).
pub fn ensure_test_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh");
        let status = Command::new("bash")
            .arg(script)
            .status()
            .expect("run build-test-image.sh");
        assert!(
            status.success(),
            "could not build the test image {TEST_IMAGE}"
        );
    }
}

/// Lines printed so far, and whether the stream has ended.
type Printed = (Vec<String>, bool);

/// Lines a child process printed on stdout, shared with a reader thread.
#[derive(Clone, Default)]
struct Lines {
    inner: Arc<(Mutex<Printed>, Condvar)>,
}

impl Lines {
    fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lock, cvar) = &*lines.inner;
                lock.lock().unwrap().0.push(line);
                cvar.notify_all();
            }
            let (lock, cvar) = &*lines.inner;
            lock.lock().unwrap().1 = true;
            cvar.notify_all();
        });
    }

    fn len(&self) -> usize {
        self.inner.0.lock().unwrap().0.len()
    }

    fn all(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().0.clone()
    }

    /// Waits for a line at index >= `from` containing `needle`.
    fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.inner;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(line) = state.0.iter().skip(from).find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            let now = Instant::now();
            if now >= deadline || state.1 {
                return Err(format!(
                    "no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                    state.0.join("\n")
                ));
            }
            state = cvar.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// A running `cloudai-master` with its REPL on a pipe.
pub struct Master {
    child: Child,
    stdin: ChildStdin,
    out: Lines,
    /// gRPC address (127.0.0.1:port).
    pub grpc_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Captured stderr (logs).
    pub log_path: PathBuf,
    /// Whether it runs with `--insecure`.
    pub insecure: bool,
    /// An admin API token made at start (`None` with `--insecure`).
    pub token: Option<String>,
    /// The MongoDB server this master uses when the suite runs with
    /// `CLOUDAI_TEST_STORE=mongodb` (stopped after the master).
    _mongo: Option<MongoServer>,
}

/// An `nx-27017` MongoDB wire-protocol server keeping its data in one file,
/// so it can be stopped and started again on the same port; killed on drop.
pub struct MongoServer {
    child: Option<Child>,
    file: PathBuf,
    port: u16,
    /// Connection string (`mongodb://127.0.0.1:PORT/?directConnection=true`).
    pub uri: String,
    /// The directory of a [`MongoServer::temporary`] server, removed after it.
    _dir: Option<tempfile::TempDir>,
    /// The network namespace it runs in, if any.
    host: Option<netns::Host>,
}

impl MongoServer {
    /// Starts a server with its data in a directory of its own, removed
    /// when the server is dropped.
    pub fn temporary() -> MongoServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = MongoServer::start(dir.path());
        server._dir = Some(dir);
        server
    }

    /// Starts a server with its data in `dir/nx-27017.db`.
    pub fn start(dir: &Path) -> MongoServer {
        Self::start_on(dir, None)
    }

    /// [`MongoServer::start`] in `host`'s network namespace, on its address.
    pub fn start_on(dir: &Path, host: Option<&netns::Host>) -> MongoServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let ip = host.map_or("127.0.0.1", |h| h.ip.as_str());
        let mut server = MongoServer {
            child: None,
            file: dir.join("nx-27017.db"),
            port,
            uri: format!("mongodb://{ip}:{port}/?directConnection=true"),
            _dir: None,
            host: host.cloned(),
        };
        server.resume();
        server
    }

    /// Starts the server again on the same file and port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let ip = self
            .host
            .as_ref()
            .map_or("127.0.0.1", |h| h.ip.as_str())
            .to_string();
        let child = netns::command_in(self.host.as_ref().map(|h| h.ns.as_str()), "nx-27017")
            .arg("--db")
            .arg(&self.file)
            .args(["--host", &ip, "-p", &self.port.to_string()])
            .arg("--pid-file")
            .arg(self.file.with_extension("pid"))
            .arg("--log-file")
            .arg(self.file.with_extension("log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nx-27017 (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect((ip.as_str(), self.port)).is_err() {
            assert!(Instant::now() < deadline, "nx-27017 did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL); its data stays in the file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the suite runs its masters on MongoDB (`CLOUDAI_TEST_STORE=mongodb`).
pub fn store_is_mongodb() -> bool {
    std::env::var("CLOUDAI_TEST_STORE").as_deref() == Ok("mongodb")
}

/// Options for starting a master.
#[derive(Clone, Debug)]
pub struct MasterOptions {
    /// gRPC port (0: any).
    pub grpc_port: u16,
    /// HTTP port (0: any; fix it to restart a master on the same URL).
    pub http_port: u16,
    /// Heartbeat interval.
    pub heartbeat: &'static str,
    /// Inactivity timeout.
    pub inactivity: &'static str,
    /// Re-invitation interval.
    pub reinvite: &'static str,
    /// Disconnect window (`--disconnect-window`).
    pub disconnect: &'static str,
    /// Run without TLS (`--insecure`).
    pub insecure: bool,
    /// Open-file limit of the master process (soft and hard), when set.
    pub open_files: Option<u64>,
    /// Further flags.
    pub extra: Vec<&'static str>,
    /// Run in this network namespace, listening on its address.
    pub netns: Option<netns::Host>,
    /// Use this MongoDB server (`--mongodb-uri`).
    pub mongodb_uri: Option<String>,
}

impl Default for MasterOptions {
    fn default() -> Self {
        Self {
            grpc_port: 0,
            http_port: 0,
            heartbeat: "500ms",
            inactivity: "3s",
            reinvite: "1s",
            disconnect: "8s",
            insecure: false,
            open_files: None,
            extra: Vec::new(),
            netns: None,
            mongodb_uri: None,
        }
    }
}

impl Master {
    /// Starts a master on `data_dir` with test-friendly intervals.
    pub fn start(data_dir: &Path, options: &MasterOptions) -> Master {
        let log_path = data_dir.join(format!("master-{}.log", unique("run")));
        std::fs::create_dir_all(data_dir).unwrap();
        let ns = options.netns.as_ref().map(|h| h.ns.as_str());
        let mut command = match options.open_files {
            // util-linux's prlimit runs the master under that limit.
            Some(limit) => {
                let mut command = netns::command_in(ns, "prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg(binary("cloudai-master"));
                command
            }
            None => netns::command_in(ns, binary("cloudai-master")),
        };
        let host = options
            .netns
            .as_ref()
            .map_or("127.0.0.1", |h| h.ip.as_str());
        if let Some(ip) = options.netns.as_ref().map(|h| &h.ip) {
            command.args(["--tls-san", ip]);
        }
        if let Some(uri) = &options.mongodb_uri {
            command.args(["--mongodb-uri", uri]);
        }
        if options.insecure {
            command.arg("--insecure");
        }
        // With CLOUDAI_TEST_STORE=mongodb every master gets its own MongoDB
        // server whose file lives in the data directory, so a restarted master
        // finds its state again.
        let mongo = (store_is_mongodb()
            && !options.extra.contains(&"--mongodb-uri")
            && options.mongodb_uri.is_none())
        .then(|| MongoServer::start(data_dir));
        if let Some(mongo) = &mongo {
            command.args(["--mongodb-uri", &mongo.uri]);
        }
        let mut child = command
            .args(["--grpc-addr", &format!("{host}:{}", options.grpc_port)])
            .args(["--http-addr", &format!("{host}:{}", options.http_port)])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--heartbeat-interval", options.heartbeat])
            .args(["--inactivity-timeout", options.inactivity])
            .args(["--reinvite-interval", options.reinvite])
            .args(["--disconnect-window", options.disconnect])
            // Beside the data directory, not in it: like an operator's key,
            // apart from the store (and the same across restarts).
            .arg("--secrets-key-file")
            .arg(data_dir.with_extension("secrets.key"))
            .args(&options.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start cloudai-master");
        let stdin = child.stdin.take().unwrap();
        let out = Lines::default();
        out.follow(child.stdout.take().unwrap());
        let banner = out.wait_for(0, "gRPC on", WAIT).unwrap_or_else(|e| {
            panic!(
                "master did not start: {e}\nlog:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
        if mongo.is_some() {
            assert!(banner.contains("store: MongoDB"), "{banner}");
        }
        let grpc_addr = word_after(&banner, "gRPC on ")
            .trim_end_matches(',')
            .to_string();
        let http_addr = word_after(&banner, "HTTP on ")
            .trim_end_matches(',')
            .to_string();
        let mut master = Master {
            child,
            stdin,
            out,
            grpc_addr,
            http_addr,
            data_dir: data_dir.to_path_buf(),
            log_path,
            insecure: options.insecure,
            token: None,
            _mongo: mongo,
        };
        if !master.insecure {
            master.token = Some(master.api_token("admin"));
        }
        master
    }

    /// Pre-registers a worker; returns its join token (`None` with `--insecure`).
    pub fn register(&mut self, id: &str, address: &str) -> Option<String> {
        let from = self.send(&format!("register {id} {address}"));
        self.wait_from(from, &format!("worker {id} registered"), WAIT);
        if self.insecure {
            return None;
        }
        let line = self.wait_from(from, "join token", WAIT);
        Some(
            line.split_whitespace()
                .find(|w| w.starts_with("caj1."))
                .expect("a token")
                .to_string(),
        )
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("tls/ca.crt")).expect("the master's CA")
    }

    /// Types a command into the REPL; returns the output index to wait from.
    pub fn send(&mut self, command: &str) -> usize {
        let from = self.out.len();
        writeln!(self.stdin, "{command}").expect("write to the master's REPL");
        self.stdin.flush().unwrap();
        from
    }

    /// Runs a command and waits for a line containing `needle` in its output.
    pub fn expect(&mut self, command: &str, needle: &str) -> String {
        let from = self.send(command);
        self.wait_from(from, needle, WAIT)
    }

    /// Waits for a line containing `needle` printed at or after `from`.
    pub fn wait_from(&self, from: usize, needle: &str, timeout: Duration) -> String {
        self.out
            .wait_for(from, needle, timeout)
            .unwrap_or_else(|e| panic!("{e}\nmaster log:\n{}", self.log()))
    }

    /// Repeats `command` until its output has a line containing every needle.
    pub fn poll(&mut self, command: &str, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let from = self.send(command);
            // Polling interval: the REPL has no end-of-output marker.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(line) = self
                .out
                .all()
                .into_iter()
                .skip(from)
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "`{command}` never printed a line with {needles:?}\nmaster log:\n{}",
                self.log()
            );
        }
    }

    /// Everything the REPL printed so far.
    pub fn output(&self) -> Vec<String> {
        self.out.all()
    }

    /// The process id (for its memory, or a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the master with SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Submits a task line and returns its id.
    pub fn submit(&mut self, task_line: &str) -> String {
        let line = self.expect(task_line, "task t-");
        assert!(
            !line.contains("failed to start"),
            "task did not start: {line}"
        );
        word_after(&line, "task ").to_string()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start a worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerOptions {
    /// Port (0: any).
    pub port: u16,
    /// The master's gRPC address (`--master`).
    pub master: Option<String>,
    /// Join token (first start in secure mode).
    pub token: Option<String>,
    /// `--insecure`.
    pub insecure: bool,
    /// Further flags.
    pub extra: Vec<String>,
    /// Run in this network namespace, advertising its address.
    pub netns: Option<netns::Host>,
}

/// A running `cloudai-worker`.
pub struct Worker {
    child: Child,
    out: Lines,
    /// Worker id.
    pub id: String,
    /// Advertised address.
    pub address: String,
    /// Its data directory (certificate, key, remembered master).
    pub data_dir: PathBuf,
    log_path: PathBuf,
    netns: Option<netns::Host>,
}

impl Worker {
    /// Starts a worker; its data directory is `<dir>/wdata-<id>`, so a restart
    /// with the same id finds its certificate.
    pub fn start(id: &str, dir: &Path, options: &WorkerOptions) -> Worker {
        ensure_test_image();
        let log_path = dir.join(format!("worker-{}.log", unique(id)));
        let data_dir = dir.join(format!("wdata-{id}"));
        let mut command = Self::command(id, dir, options);
        command
            .args(["--heartbeat-interval", "500ms", "--stop-grace", "2s"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap());
        let mut child = command.spawn().expect("start cloudai-worker");
        let out = Lines::default();
        out.follow(child.stdout.take().unwrap());
        let line = out.wait_for(0, " listening on ", WAIT).unwrap_or_else(|e| {
            panic!(
                "worker did not start: {e}\nlog:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
        let address = line.split_whitespace().last().unwrap().to_string();
        Worker {
            child,
            out,
            id: id.to_string(),
            address,
            data_dir,
            log_path,
            netns: options.netns.clone(),
        }
    }

    /// The worker command line for `options`, data in `<dir>/wdata-<id>`.
    fn command(id: &str, dir: &Path, options: &WorkerOptions) -> Command {
        let ns = options.netns.as_ref().map(|h| h.ns.as_str());
        let host = options
            .netns
            .as_ref()
            .map_or("127.0.0.1", |h| h.ip.as_str());
        let mut command = netns::command_in(ns, binary("cloudai-worker"));
        command
            .args([
                "--id",
                id,
                "--port",
                &options.port.to_string(),
                "--advertise-host",
                host,
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("wdata-{id}")))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(master) = &options.master {
            command.args(["--master", master]);
        }
        if let Some(token) = &options.token {
            command.args(["--join-token", token]);
        }
        if options.insecure {
            command.arg("--insecure");
        }
        command.args(&options.extra);
        command
    }

    /// Starts a worker expected to fail at start-up; returns what it printed
    /// and logged once it has exited.
    pub fn start_failing(id: &str, dir: &Path, options: &WorkerOptions) -> String {
        let log_path = dir.join(format!("worker-{}.log", unique(id)));
        let output = Self::command(id, dir, options)
            .output()
            .expect("run cloudai-worker");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&log_path, &text).unwrap();
        assert!(
            !output.status.success(),
            "the worker should have refused to start:\n{text}"
        );
        text
    }

    /// Registers a new worker on `master` and starts it with its join token
    /// (or plainly with `--insecure`), waiting until the master sees it active.
    pub fn join(master: &mut Master, prefix: &str, dir: &Path) -> Worker {
        Self::join_with(master, prefix, dir, &[])
    }

    /// [`Worker::join`] with further flags.
    pub fn join_with(master: &mut Master, prefix: &str, dir: &Path, extra: &[&str]) -> Worker {
        Self::join_on(master, prefix, dir, extra, None)
    }

    /// [`Worker::join_with`], the worker running in `host`'s network namespace.
    pub fn join_on(
        master: &mut Master,
        prefix: &str,
        dir: &Path,
        extra: &[&str],
        host: Option<&netns::Host>,
    ) -> Worker {
        let id = unique(prefix);
        let port = free_port();
        let ip = host.map_or("127.0.0.1", |h| h.ip.as_str());
        let token = master.register(&id, &format!("{ip}:{port}"));
        let options = WorkerOptions {
            port,
            master: Some(master.grpc_addr.clone()),
            insecure: token.is_none(),
            token,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: host.cloned(),
        };
        let worker = Worker::start(&id, dir, &options);
        master.poll("workers", &[&id, "active"], WAIT);
        worker
    }

    /// Restarts a killed worker with the same id, port and data directory.
    pub fn restart(&self, dir: &Path, insecure: bool) -> Worker {
        let port: u16 = self.address.rsplit_once(':').unwrap().1.parse().unwrap();
        Worker::start(
            &self.id,
            dir,
            &WorkerOptions {
                port,
                insecure,
                netns: self.netns.clone(),
                ..WorkerOptions::default()
            },
        )
    }

    /// The process id (for its memory, or a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the worker's log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "worker log never contained {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the worker printed on stdout.
    pub fn output(&self) -> Vec<String> {
        self.out.all()
    }

    /// Kills the worker with SIGKILL, leaving its containers (as a crash would).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
        remove_containers(&self.id);
    }
}

/// Removes every container labelled with this worker id.
pub fn remove_containers(worker_id: &str) {
    let listed = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=cloudai.worker_id={worker_id}"),
        ])
        .output();
    if let Ok(listed) = listed {
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// The whitespace-delimited word right after `marker` in `line`.
pub fn word_after<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split_once(marker)
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{marker:?} not found in {line:?}"))
}

/// Any client connection (plain TCP or TLS) a WebSocket can run over.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket to the master.
pub type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// A connection to a master's HTTP port at `addr`: TLS trusting `ca_pem`
/// when given, plain TCP otherwise.
pub async fn connect_http(addr: &str, ca_pem: Option<&str>) -> std::io::Result<Box<dyn Io>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let Some(ca) = ca_pem else {
        return Ok(Box::new(tcp));
    };
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// The upgrade request for a WebSocket on `path` (`wss://` when `secure`),
/// with the token as a bearer when given.
pub fn websocket_request(
    addr: &str,
    path: &str,
    secure: bool,
    token: Option<&str>,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::client::Request,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let scheme = if secure { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{addr}{path}").into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    Ok(request)
}

/// rustls client config trusting only the master's CA.
pub fn tls_client_config(ca_pem: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// `message` as a gRPC request carrying `token` as its bearer.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A named Docker volume with a unique name, removed when dropped (even if
/// the test fails).
pub struct Volume(pub String);

impl Volume {
    /// A new name from `prefix` (Docker creates the volume on first use).
    pub fn new(prefix: &str) -> Volume {
        Volume(unique(prefix).replace('-', "_"))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

impl Master {
    /// A TLS channel to the master's gRPC port trusting its CA, optionally
    /// with a client identity (a worker's certificate).
    pub async fn grpc_channel(
        &self,
        identity: Option<tonic::transport::Identity>,
    ) -> tonic::transport::Channel {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()))
            .domain_name("127.0.0.1");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        Channel::from_shared(format!("https://{}", self.grpc_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("TLS connection to the master")
    }

    /// Creates a user with `role` and returns an API token for it.
    pub fn api_token(&mut self, role: &str) -> String {
        let user = unique(role);
        self.expect(
            &format!("user add {user} {role}"),
            &format!("user {user} added"),
        );
        let line = self.expect(&format!("token create {user}"), "API token for");
        line.split_whitespace()
            .find(|w| w.starts_with("cat1."))
            .expect("a token")
            .to_string()
    }

    /// Opens a connection to the HTTP port: TLS (trusting the cluster CA) unless `--insecure`.
    pub async fn http_connection(&self) -> Box<dyn Io> {
        let ca = (!self.insecure).then(|| self.ca_pem());
        connect_http(&self.http_addr, ca.as_deref())
            .await
            .expect("connect (and TLS handshake) to the master's HTTP port")
    }

    /// Opens a WebSocket (`wss://` unless `--insecure`), with an optional token.
    pub async fn websocket(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let request = websocket_request(&self.http_addr, path, !self.insecure, token)?;
        let io = self.http_connection().await;
        Ok(tokio_tungstenite::client_async(request, io).await?.0)
    }

    /// `GET path` over HTTP(S); returns the status code and body.
    pub async fn http_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let (status, _head, body) = self.http_response(path, token).await;
        (status, body)
    }

    /// `GET path` over HTTP(S); returns the status code, the head (status line
    /// and headers) and the body.
    pub async fn http_response(&self, path: &str, token: Option<&str>) -> (u16, String, String) {
        self.http_request("GET", path, token, None).await
    }

    /// `method path` over HTTP(S), with a JSON body when given; returns the
    /// status code, the head and the body.
    pub async fn http_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        json: Option<&str>,
    ) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut io = self.http_connection().await;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = json.map_or(String::new(), |json| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )
        });
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\n{auth}{}",
            self.http_addr,
            if body.is_empty() { "\r\n" } else { &body }
        );
        io.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        // A TLS peer may close without close_notify; what was read is complete (HTTP/1.0).
        let _ = io.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        (status, head.to_string(), body.to_string())
    }
}
