//! The Python agentic scheduler placing real tasks through a real master, and
//! the built-in scheduler taking over when the agent is gone.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, with_token, word_after};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Generates the Python stubs once per test binary.
fn ensure_stubs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !repo()
            .join("agentic_scheduler/cloudai_proto/master_agent_pb2_grpc.py")
            .exists()
        {
            let status = Command::new("bash")
                .arg(repo().join("proto/generate.sh"))
                .status()
                .expect("run generate.sh");
            assert!(status.success(), "proto/generate.sh failed");
        }
    });
}

/// The agent process with its stdout lines on a channel; killed on drop.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(master: &Master, token: &str) -> Agent {
        ensure_stubs();
        let ca = master.data_dir.join("tls/ca.crt");
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "agentic_scheduler",
                "--master",
                &master.grpc_addr,
                "--token",
                token,
                "--interval",
                "0.3",
            ])
            .arg("--ca")
            .arg(&ca)
            .current_dir(repo().join("agentic_scheduler"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Python agent");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Agent { child, lines }
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the agent never printed {needle:?}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_places_tasks_and_the_builtin_scheduler_covers_for_a_dead_agent() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        extra: vec!["--placement-mode", "agent", "--agent-timeout", "3s"],
        ..MasterOptions::default()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let worker = Worker::join(&mut master, "ag", dir.path());
    let token = master.api_token("operator");
    let agent = Agent::start(&master, &token);
    agent.wait_for("agentic scheduler placing tasks");

    let line = master.expect(
        &format!("task auto {TEST_IMAGE} --memory 64m -- echo by-agent"),
        "queued for placement",
    );
    let first = word_after(&line, "task ").to_string();
    let placed = agent.wait_for(&first);
    assert!(placed.contains(&format!("on {}", worker.id)), "{placed}");
    master.poll("tasks", &[&first, "completed"], WAIT);
    assert!(
        master.log().contains("placed by the agent"),
        "the master records who placed it"
    );

    // The agent dies: a new task waits for it, then the built-in scheduler takes over.
    drop(agent);
    let line = master.expect(
        &format!("task auto {TEST_IMAGE} -- echo by-fallback"),
        "queued for placement",
    );
    let second = word_after(&line, "task ").to_string();
    master.poll("tasks", &[&second, "queued", "waiting for agent"], WAIT);
    master.poll("tasks", &[&second, "completed"], Duration::from_secs(60));
    assert!(master.log().contains("placed by the built-in scheduler"));
}

#[test]
fn the_agent_needs_an_operator_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let viewer = master.api_token("viewer");
    ensure_stubs();
    // A bad token stops the agent with a clear error; a viewer's token can read
    // the (empty) queue. Placing needs an operator (tests/tests/security.rs).
    let output = agent_once(&master, "cat1.00000000.bad");
    assert_eq!(output.status.code(), Some(2), "a bad token stops the agent");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid"));
    let output = agent_once(&master, &viewer);
    assert!(
        output.status.success(),
        "a viewer can read the (empty) queue: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_events_reports_task_transitions() {
    use cloudai_proto::v1::cluster_event::Event as Wire;
    use cloudai_proto::v1::master_agent_client::MasterAgentClient;
    use cloudai_proto::v1::{
        ContainerOptions, StreamEventsRequest, SubmitTaskRequest, Task, TaskStatus,
    };

    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let _worker = Worker::join(&mut master, "ev", dir.path());
    let viewer = master.api_token("viewer");
    let operator = master.api_token("operator");
    let mut agent = MasterAgentClient::new(master.grpc_channel(None).await);

    let mut events = agent
        .stream_events(with_token(
            StreamEventsRequest {
                include_telemetry: false,
            },
            &viewer,
        ))
        .await
        .unwrap()
        .into_inner();
    // Container options go through the agent API like the REPL's.
    let options = ContainerOptions {
        shm_size_bytes: 128 << 20,
        user: "1000:1000".into(),
        workdir: "/tmp".into(),
        mounts: vec![cloudai_proto::v1::Mount {
            kind: cloudai_proto::v1::mount::Kind::Tmpfs as i32,
            target: "/scratch".into(),
            tmpfs_size_bytes: 16 << 20,
            ..Default::default()
        }],
        labels: [("team".to_string(), "vision".to_string())].into(),
        network: "none".into(),
        ..Default::default()
    };
    // An environment is for operators: the viewer's stream must not carry it.
    let task = Task {
        image: TEST_IMAGE.into(),
        command: vec!["true".into()],
        env: [("DB_PASSWORD".to_string(), "env-for-operators".to_string())].into(),
        options: Some(options.clone()),
        ..Default::default()
    };
    let submitted = agent
        .submit_task(with_token(
            SubmitTaskRequest {
                task: Some(task),
                ..Default::default()
            },
            &operator,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut last_sequence = 0;
    while !seen.contains(&TaskStatus::Completed) {
        let event = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("stream open");
        assert!(event.sequence > last_sequence, "sequence numbers increase");
        last_sequence = event.sequence;
        if let Some(Wire::TaskState(view)) = event.event
            && view
                .task
                .as_ref()
                .is_some_and(|t| t.task_id == submitted.task_id)
        {
            let task = view.task.unwrap();
            assert_eq!(task.options, Some(options.clone()));
            assert!(task.env.is_empty(), "a viewer sees no env: {:?}", task.env);
            seen.push(TaskStatus::try_from(view.status).unwrap());
        }
    }
    assert_eq!(seen.first(), Some(&TaskStatus::Queued), "{seen:?}");
    assert!(seen.contains(&TaskStatus::Assigned), "{seen:?}");

    // GetTask: the environment for an operator, none for a viewer.
    let get = |token: &str| {
        with_token(
            cloudai_proto::v1::GetTaskRequest {
                task_id: submitted.task_id.clone(),
            },
            token,
        )
    };
    let seen_by_operator = agent.get_task(get(&operator)).await.unwrap().into_inner();
    let env = seen_by_operator.task.unwrap().env;
    assert_eq!(
        env.get("DB_PASSWORD").map(String::as_str),
        Some("env-for-operators")
    );
    let seen_by_viewer = agent.get_task(get(&viewer)).await.unwrap().into_inner();
    assert!(seen_by_viewer.task.unwrap().env.is_empty());
}

/// One pass of the agent (`--once`) with `token`.
fn agent_once(master: &Master, token: &str) -> std::process::Output {
    Command::new("python3")
        .args([
            "-m",
            "agentic_scheduler",
            "--master",
            &master.grpc_addr,
            "--token",
            token,
            "--once",
        ])
        .arg("--ca")
        .arg(master.data_dir.join("tls/ca.crt"))
        .current_dir(repo().join("agentic_scheduler"))
        .output()
        .expect("run the agent")
}
