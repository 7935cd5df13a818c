//! The `cloudai` binary against a real TLS master and worker: login and
//! contexts, every command, `--follow` exit codes, `-o json`, roles, expired
//! and revoked tokens, a master that is down, a wrong CA, and the remote REPL
//! in a pseudo-terminal. Output must match the master's own console.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, free_port, word_after};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cloudai` with its own config file and no ambient CLOUDAI_* settings.
struct Cloudai {
    config: PathBuf,
}

impl Cloudai {
    fn new(dir: &Path) -> Cloudai {
        Cloudai {
            config: dir.join("cloudai-home/config.json"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(cloudai_e2e::bin_dir().join("cloudai"));
        command
            .args(args)
            .env("CLOUDAI_CONFIG", &self.config)
            .env("NO_COLOR", "1")
            .env_remove("CLOUDAI_MASTER")
            .env_remove("CLOUDAI_TOKEN")
            .env_remove("CLOUDAI_CA")
            .env_remove("CLOUDAI_CONTEXT");
        command
    }

    /// Runs it to the end (killed after 2×WAIT), `stdin` as its input.
    fn run_with(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cloudai");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let deadline = Instant::now() + 2 * WAIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cloudai {args:?} did not end within {:?}", 2 * WAIT);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, "")
    }

    /// Runs it and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "cloudai {args:?} failed: {}{}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    /// Runs it and expects exit code `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "cloudai {args:?}: {}{}",
            stdout(&output),
            stderr(&output)
        );
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "one line: {error}");
        error
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn an_operator_runs_the_cluster_from_their_own_machine() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "cli", dir.path());
    let admin = master.api_token("admin");
    let cli = Cloudai::new(dir.path());
    let addr = master.grpc_addr.clone();

    // Login: the CA is shown and must be trusted; a wrong fingerprint saves nothing.
    let refused = cli.fails(
        &[
            "login",
            &addr,
            "--token",
            &admin,
            "--ca-fingerprint",
            &"0".repeat(64),
        ],
        1,
    );
    assert!(refused.contains("nothing was saved"), "{refused}");
    // Without a terminal to ask, the fingerprint is shown and nothing trusted.
    let asked = cli.run(&["login", &addr, "--token", &admin]);
    assert_eq!(asked.status.code(), Some(1));
    let asked = stderr(&asked);
    assert!(asked.contains("SHA-256 fingerprint"), "{asked}");
    assert!(asked.contains("--yes or --ca-fingerprint"), "{asked}");
    assert!(!cli.config.exists());
    let said = cli.ok(&["login", &addr, "--token", &admin, "--yes", "--name", "lab"]);
    assert!(
        said.contains("as admin-") && said.contains("context 'lab'"),
        "{said}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cli.config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the config holds a token");
    }
    assert!(cli.ok(&["whoami"]).contains("(admin) on the master at"));
    assert!(cli.ok(&["context", "list"]).contains("* lab"));

    // Reads, as text and as JSON.
    let status = cli.ok(&["status"]);
    assert!(status.contains("workers: 1 active"), "{status}");
    let workers = json(&cli.ok(&["workers", "-o", "json"]));
    assert_eq!(workers[0]["id"], worker.id.as_str());
    assert_eq!(workers[0]["state"], "active");
    assert!(cli.ok(&["stats", &worker.id]).contains("cpu  ["));
    assert_eq!(
        json(&cli.ok(&["status", "-o", "json"]))["workers_active"],
        1
    );

    // --follow streams the output and ends with the container's exit code.
    let run = cli.run(&[
        "task",
        &worker.id,
        TEST_IMAGE,
        "--follow",
        "--",
        "sh",
        "-c",
        "echo from-the-laptop; exit 3",
    ]);
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(3), "{out}{}", stderr(&run));
    assert!(out.contains("from-the-laptop"), "{out}");
    let task = word_after(&out, "task ").to_string();
    assert!(
        out.contains(&format!("task {task} failed (exit code 3)")),
        "{out}"
    );
    let run = cli.run(&[
        "run",
        "auto",
        TEST_IMAGE,
        "-f",
        "--",
        "echo",
        "queued-then-run",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(stdout(&run).contains("queued-then-run"));

    // Queued, then placed: the output is followed live, not printed at the end.
    let mut live = cli
        .command(&[
            "run",
            "auto",
            TEST_IMAGE,
            "-f",
            "--",
            "sh",
            "-c",
            "echo early; sleep 4; echo late",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(live.stdout.take().unwrap()).lines();
    use std::io::BufRead;
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l == "early"));
    let early = Instant::now();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l == "late"));
    assert!(
        early.elapsed() > Duration::from_secs(2),
        "`early` came live, before the end"
    );
    assert!(live.wait().unwrap().success());
    // A container command's own flags stay its own, without `--`.
    let own = cli.ok(&["run", "auto", TEST_IMAGE, "-f", "echo", "-o", "json", "-h"]);
    assert!(own.contains("-o json -h"), "{own}");

    // The stored output, the task list and its filters.
    let logs = cli.ok(&["logs", &task]);
    assert!(logs.contains("from-the-laptop"), "{logs}");
    let tasks = json(&cli.ok(&["tasks", "--newest", "-o", "json"]));
    let listed = tasks.as_array().unwrap();
    assert_eq!(listed.len(), 4, "{tasks}");
    assert_eq!(listed[3]["id"], task.as_str(), "newest first");
    assert_eq!(listed[3]["exit_code"], 3);
    assert!(listed[3]["owner"].as_str().unwrap().starts_with("admin-"));
    let newest = json(&cli.ok(&["tasks", "--limit", "1", "-o", "json"]));
    assert_eq!(newest[0]["id"], listed[0]["id"], "a limit keeps the newest");
    assert!(cli.ok(&["tasks", "--owner", "nobody"]).contains("no tasks"));
    assert!(cli.ok(&["tasks", "--worker", &worker.id]).contains(&task));

    // The same state prints the same at the master's console.
    let remote = cli.ok(&["tasks", "--state", "failed"]);
    let from = master.send("tasks --state failed");
    master.wait_from(from, &task, WAIT);
    let console: Vec<String> = master.output()[from..].to_vec();
    for line in remote.lines() {
        assert!(
            console.iter().any(|l| l.trim_end() == line.trim_end()),
            "`{line}` is not in the console's answer {console:?}"
        );
    }

    // Errors: one line, exit 1; usage: exit 2.
    assert!(
        cli.fails(&["cancel", "t-000000000000"], 1)
            .contains("no task")
    );
    assert!(cli.fails(&["tasks", "--bogus"], 2).contains("usage: tasks"));
    assert!(cli.fails(&["frobnicate"], 2).contains("unknown command"));
    let help = cli.ok(&["tasks", "--help"]);
    assert!(
        help.contains("usage: cloudai tasks") && help.contains("examples:"),
        "{help}"
    );
    assert!(cli.ok(&["--help"]).contains("exit codes"));
    let completion = cli.ok(&["completion", "bash"]);
    assert!(completion.contains("cloudai") && completion.contains("join-token"));

    // A running task followed live, watched, then cancelled.
    let long = cli.ok(&[
        "task",
        &worker.id,
        TEST_IMAGE,
        "--",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    let long = word_after(&long, "task ").to_string();
    let mut follow = cli
        .command(&["logs", "-f", &long])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = cli
        .command(&["status", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let first_line = |child: &mut std::process::Child, needle: &str| {
        use std::io::BufRead;
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let found = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains(needle));
        assert!(found, "no `{needle}`");
        lines
    };
    let _follow_rest = first_line(&mut follow, "started");
    let _watch_rest = first_line(&mut watch, "redraws every");
    // Ctrl-C stops a live view; the task keeps running.
    let interrupted = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let watched = watch.wait().unwrap();
    assert_eq!(watched.code(), Some(0), "Ctrl-C ends --watch cleanly");
    // The console follows it too, unmoved by token changes elsewhere.
    let from = master.send(&format!("monitor {long}"));
    master.wait_from(from, "started", WAIT);
    cli.ok(&["user", "add", "cli-bystander", "viewer"]);
    cli.ok(&["token", "create", "cli-bystander"]);
    assert!(cli.ok(&["cancel", &long]).contains("stop requested from"));
    master.wait_from(from, &format!("task {long} cancelled"), WAIT);
    assert!(
        !master.output()[from..]
            .iter()
            .any(|l| l.contains("revoked")),
        "the console's view ended with a token change"
    );
    let followed = follow.wait().unwrap();
    assert!(followed.success(), "logs -f ends when the task does");
    assert!(
        cli.ok(&["monitor", &long])
            .contains(&format!("task {long} cancelled"))
    );

    // Workers and certificates.
    let registered = cli.ok(&["register", "cli-extra", "127.0.0.1:1"]);
    assert!(
        registered.contains("join token (single use"),
        "{registered}"
    );
    assert!(cli.ok(&["certs"]).contains("cli-extra"));
    assert!(
        cli.ok(&["join-token", "cli-extra"])
            .contains("--join-token caj1.")
    );
    assert!(
        cli.ok(&["unregister", "cli-extra"])
            .contains("unregistered")
    );

    // Secrets: the value from stdin, never shown.
    let set = cli.run_with(&["secret", "set", "cli-secret"], "s3cr3t-value\n");
    assert!(set.status.success(), "{}", stderr(&set));
    let secrets = cli.ok(&["secrets", "-o", "json"]);
    assert!(secrets.contains("cli-secret") && !secrets.contains("s3cr3t-value"));
    assert!(
        cli.ok(&["secret", "remove", "cli-secret"])
            .contains("removed")
    );

    // Users and tokens: roles, expiry, revocation.
    assert!(
        cli.ok(&["user", "add", "cli-viewer", "viewer"])
            .contains("added as viewer")
    );
    let made = cli.ok(&["token", "create", "cli-viewer"]);
    let viewer = made
        .split_whitespace()
        .find(|w| w.starts_with("cat1."))
        .unwrap();
    let as_viewer = |args: &[&str]| {
        let mut all = vec!["--token", viewer];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = as_viewer(&["status"]);
    cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = as_viewer(&["users"]);
    let denied = cli.fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    assert!(denied.contains("this needs the admin role"), "{denied}");
    let args = as_viewer(&["run", "auto", TEST_IMAGE, "--", "true"]);
    let denied = cli.fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    assert!(denied.contains("this needs the operator role"), "{denied}");
    let users = cli.ok(&["users"]);
    assert!(
        users.contains("cli-viewer") && users.contains("no expiry, used"),
        "{users}"
    );
    let short = cli.ok(&["token", "create", "cli-viewer", "--expires", "1s"]);
    assert!(short.contains("it expires"), "{short}");
    let short = short
        .split_whitespace()
        .find(|w| w.starts_with("cat1."))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cli.ok(&["tasks", "--since", "1s"]).contains("no tasks"));
    assert!(cli.ok(&["tasks", "--since", "1h"]).contains(&task));
    let expired = cli.fails(&["--token", short, "status"], 1);
    assert!(expired.contains("the API token expired"), "{expired}");
    // A stream opened with a token ends when the token expires.
    let made = cli.ok(&["token", "create", "cli-viewer", "--expires", "3s"]);
    let brief = made
        .split_whitespace()
        .find(|w| w.starts_with("cat1."))
        .unwrap();
    let sleeper = cli.ok(&["task", &worker.id, TEST_IMAGE, "--", "sleep", "60"]);
    let sleeper = word_after(&sleeper, "task ").to_string();
    let ended = cli.run(&["--token", brief, "logs", "-f", &sleeper]);
    assert_eq!(ended.status.code(), Some(1), "{}", stderr(&ended));
    assert!(stderr(&ended).contains("revoked"), "{}", stderr(&ended));
    cli.ok(&["cancel", &sleeper]);
    let token_id = viewer.split('.').nth(1).unwrap();
    assert!(cli.ok(&["token", "revoke", token_id]).contains("revoked"));
    let args = as_viewer(&["status"]);
    let revoked = cli.fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    assert!(
        revoked.contains("not valid (revoked or mistyped)"),
        "{revoked}"
    );
    assert!(
        cli.ok(&["user", "remove", "cli-viewer"])
            .contains("removed")
    );

    // Contexts: a second one, switching, removing.
    cli.ok(&[
        "login", &addr, "--token", &admin, "--yes", "--name", "other",
    ]);
    assert!(cli.ok(&["context", "list"]).contains("* other"));
    assert!(
        cli.ok(&["context", "use", "lab"])
            .contains("'lab' is current")
    );
    assert!(cli.ok(&["context", "remove", "other"]).contains("removed"));
    assert!(
        cli.fails(&["context", "use", "other"], 1)
            .contains("no context 'other'")
    );
    assert!(cli.ok(&["--context", "lab", "whoami"]).contains("(admin)"));
}

#[test]
fn it_says_what_to_do_when_the_master_is_unreachable_or_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cloudai::new(dir.path());
    let nowhere = format!("127.0.0.1:{}", free_port());
    let none = cli.fails(&["status"], 1);
    assert!(none.contains("cloudai login"), "{none}");
    // Help needs no master; a token is never sent without a CA.
    assert!(cli.ok(&["help", "task"]).contains("usage: cloudai task"));
    let clear = cli.fails(
        &["--master", "127.0.0.1:1", "--token", "cat1.a.b", "status"],
        1,
    );
    assert!(clear.contains("no CA to check the master"), "{clear}");
    let down = cli.fails(&["--master", &nowhere, "status"], 1);
    assert!(
        down.contains(&format!("cannot reach the master at {nowhere}")),
        "{down}"
    );

    // A CA that did not sign the master's certificate: a public root.
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let admin = master.api_token("admin");
    let bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
        .expect("the system's CA bundle");
    let end = "-----END CERTIFICATE-----";
    let other = &bundle[..bundle.find(end).unwrap() + end.len()];
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, other).unwrap();
    let untrusted = cli.fails(
        &[
            "--master",
            &master.grpc_addr,
            "--ca",
            wrong.to_str().unwrap(),
            "--token",
            &admin,
            "status",
        ],
        1,
    );
    assert!(
        untrusted.contains("the trusted CA did not sign"),
        "{untrusted}"
    );
    // The right CA from a file, no login needed.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, master.ca_pem()).unwrap();
    let args = [
        "--master",
        &master.grpc_addr,
        "--ca",
        ca.to_str().unwrap(),
        "--token",
        &admin,
        "status",
    ];
    assert!(cli.ok(&args).contains("workers: 0 active"));
    let bad = cli.fails(
        &[
            "--master",
            &master.grpc_addr,
            "--ca",
            ca.to_str().unwrap(),
            "--token",
            "cat1.nope.nope",
            "status",
        ],
        1,
    );
    assert!(bad.contains("not valid"), "{bad}");
}

#[test]
fn the_remote_repl_completes_runs_and_leaves() {
    use rexpect::reader::Options;
    use rexpect::session::spawn_with_options;
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "clirepl", dir.path());
    let admin = master.api_token("admin");
    let cli = Cloudai::new(dir.path());
    cli.ok(&["login", &master.grpc_addr, "--token", &admin, "--yes"]);
    let mut command = cli.command(&["repl"]);
    command.env("TERM", "xterm");
    let options = Options::new()
        .timeout_ms(Some(20_000))
        .strip_ansi_escape_codes(false);
    let mut repl = spawn_with_options(command, options).expect("cloudai repl in a pty");
    repl.exp_string("(admin) on the master at").unwrap();
    repl.exp_string("cloudai> ").unwrap();
    // Tab completes worker ids fetched from the remote master.
    let prefix = &worker.id[..worker.id.len() - 1];
    repl.send(&format!("stats {prefix}\t\r")).unwrap();
    repl.flush().unwrap();
    repl.exp_string("cpu  [")
        .expect("stats of the completed worker id");
    repl.exp_string("cloudai> ").unwrap();
    repl.send_line(&format!(
        "task {} {TEST_IMAGE} -f -- echo repl-remote",
        worker.id
    ))
    .unwrap();
    repl.exp_string("repl-remote").unwrap();
    repl.exp_string("completed (exit code 0)").unwrap();
    repl.exp_string("cloudai> ").unwrap();
    repl.send_line("users").unwrap();
    repl.exp_string("admin-").unwrap();
    repl.send_line("exit").unwrap();
    repl.exp_eof().expect("exit leaves the REPL");
    // The master keeps running.
    master.expect("status", "workers: 1 active");
}
