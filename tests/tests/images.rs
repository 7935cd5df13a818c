//! Private images and secrets end to end: a real registry on loopback
//! (Debian's `docker-registry`) with htpasswd auth, images pushed to it and
//! pulled by tasks through the master's registry logins; pull progress seen
//! live; pull policies, the pull timeout and retries of transient errors;
//! and secret values found nowhere but in the container that asked for them.

use cloudai_e2e::registry::{Registry, StalledRegistry};
use cloudai_e2e::{
    Master, MasterOptions, TEST_IMAGE, Volume, WAIT, Worker, free_port, unique, with_token,
};
use cloudai_proto::v1::cluster_event::Event as Wire;
use cloudai_proto::v1::master_agent_client::MasterAgentClient;
use cloudai_proto::v1::{ClusterEvent, StreamEventsRequest};
use futures::StreamExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::Message;

/// A local image with a fresh random 4 MB layer on the test image (so a
/// pull of it downloads bytes), removed on drop.
struct FreshImage(String);

impl FreshImage {
    fn build() -> FreshImage {
        let name = unique("cloudai-fresh");
        let tag = format!("cloudai-test/{name}:v1");
        let run = Command::new("docker")
            .args(["run", "--name", &name, TEST_IMAGE, "sh", "-c"])
            .arg("head -c 4000000 /dev/urandom > /blob")
            .output()
            .unwrap();
        assert!(run.status.success(), "{run:?}");
        let commit = Command::new("docker")
            .args(["commit", &name, &tag])
            .output()
            .unwrap();
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        assert!(commit.status.success(), "{commit:?}");
        FreshImage(tag)
    }
}

impl Drop for FreshImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// Removes the images a test pulled, even when it fails.
struct Pulled(Vec<String>);

impl Drop for Pulled {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// Every text frame of a WebSocket, collected in the background.
fn collect(mut socket: cloudai_e2e::Socket) -> Arc<Mutex<Vec<String>>> {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let sink = frames.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                sink.lock().unwrap().push(text.to_string());
            }
        }
    });
    frames
}

/// Every event of a gRPC `StreamEvents` stream, collected in the background.
async fn collect_grpc(master: &Master, token: &str) -> Arc<Mutex<Vec<ClusterEvent>>> {
    let mut agent = MasterAgentClient::new(master.grpc_channel(None).await);
    let request = StreamEventsRequest {
        include_telemetry: false,
    };
    let mut stream = agent
        .stream_events(with_token(request, token))
        .await
        .unwrap()
        .into_inner();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            sink.lock().unwrap().push(event);
        }
    });
    events
}

/// Waits until `task` ended (its `tasks` row shows a final state) and
/// returns the outcome line `monitor` prints for it.
fn finished(master: &mut Master, task: &str) -> String {
    let deadline = std::time::Instant::now() + 2 * WAIT;
    loop {
        let from = master.send("tasks");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let done = master.output().iter().skip(from).any(|line| {
            line.contains(task)
                && ["completed", "failed", "timed_out", "cancelled"]
                    .iter()
                    .any(|state| line.contains(state))
        });
        if done {
            let from = master.send(&format!("monitor {task}"));
            return master.wait_from(from, &format!("task {task} "), WAIT);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {task} did not end\n{}",
            master.log()
        );
    }
}

/// Sets a secret from the REPL (the value on the next line, as piped input gives it).
fn set_secret(master: &mut Master, name: &str, registry: Option<&str>, value: &str) -> String {
    let command = match registry {
        Some(host) => format!("secret set {name} --registry {host}\n{value}"),
        None => format!("secret set {name}\n{value}"),
    };
    master.expect(&command, &format!("secret {name} "))
}

/// Every file under `dir`, as bytes (the store, logs, keys, anything).
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                stack.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_pulls_with_its_registry_login_and_secrets_leak_nowhere() {
    let password = unique("reg-pw");
    let api_key = unique("wandb-key");
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), &[("alice", &password)]);
    let fresh = FreshImage::build();
    let image = registry.push(
        &fresh.0,
        &format!("team/{}:v1", unique("app")),
        "alice",
        &password,
    );
    drop(fresh);
    let _pulled = Pulled(vec![image.clone()]);

    let data = dir.path().join("master");
    let mut master = Master::start(&data, &MasterOptions::default());
    let worker = Worker::join(&mut master, "img", dir.path());
    let viewer = master.api_token("viewer");
    let admin = master.api_token("admin");
    let operator = master.api_token("operator");
    let frames = collect(
        master
            .websocket("/ws/telemetry", Some(&viewer))
            .await
            .unwrap(),
    );
    let grpc_events = collect_grpc(&master, &viewer).await;
    let run = |master: &mut Master, extra: &str| {
        master.submit(&format!(
            "task {} {image} {extra} -- sh -c 'echo key=$(echo $WANDB_KEY | sed s/./\\&./g); wc -c < /blob'",
            worker.id
        ))
    };

    // No login: refused by the registry, said clearly, no retry.
    let task = run(&mut master, "");
    let line = finished(&mut master, &task);
    assert!(line.contains("failed"), "{line}");
    assert!(line.contains("no basic auth credentials"), "{line}");
    assert!(line.contains("secret set NAME --registry HOST"), "{line}");

    // A wrong login: refused as unauthorized.
    let said = set_secret(
        &mut master,
        "hub",
        Some(&registry.host),
        "alice:wrong-password",
    );
    assert!(said.contains("the login for registry"), "{said}");
    let task = run(&mut master, "");
    let line = finished(&mut master, &task);
    assert!(line.contains("unauthorized"), "{line}");

    // The right login, and an env secret: the task runs the private image.
    let said = set_secret(
        &mut master,
        "hub",
        Some(&registry.host),
        &format!("alice:{password}"),
    );
    assert!(said.contains("secret hub replaced"), "{said}");
    set_secret(&mut master, "wandb", None, &api_key);
    master.expect(
        &format!("task {} {TEST_IMAGE} --secret KEY=nope -- true", worker.id),
        "no secret 'nope': set it with `secret set nope` first",
    );
    let task = run(&mut master, "--secret WANDB_KEY=wandb");
    let from = master.send(&format!("monitor {task}"));
    let dotted: String = api_key.chars().flat_map(|c| [c, '.']).collect();
    master.wait_from(from, &format!("key={dotted}"), WAIT);
    master.wait_from(from, "4000000", WAIT);
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);

    // Its pull was followed live: layers and bytes, and a line for people.
    let progress: Vec<serde_json::Value> = frames
        .lock()
        .unwrap()
        .iter()
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(f).ok())
        .filter(|e| e["type"] == "task_progress" && e["task_id"] == task.as_str())
        .collect();
    assert!(!progress.is_empty(), "no task_progress event for {task}");
    let last = progress.last().unwrap();
    assert!(
        last["progress"]["layers_total"].as_u64() >= Some(1),
        "{last}"
    );
    assert!(
        progress
            .iter()
            .any(|e| e["progress"]["bytes_total"].as_u64() >= Some(3_000_000)),
        "{progress:?}"
    );
    assert!(
        last["text"].as_str().unwrap().starts_with("pulling"),
        "{last}"
    );

    // The same over gRPC `StreamEvents`.
    let pulls: Vec<_> = grpc_events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match &e.event {
            Some(Wire::TaskProgress(p)) if p.task_id == task => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(!pulls.is_empty(), "no gRPC task_progress for {task}");
    assert!(
        pulls.iter().any(|p| p.bytes_total >= 3_000_000),
        "{pulls:?}"
    );
    assert!(pulls.iter().all(|p| p.phase == "pulling"), "{pulls:?}");

    // Secrets over the API: admin only, names without values.
    let (status, _, body) = master
        .http_request("GET", "/api/secrets", Some(&operator), None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = master
        .http_request("GET", "/api/secrets", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"hub\"") && body.contains("\"wandb\""),
        "{body}"
    );
    let put = r#"{"value":"api-set-value"}"#;
    let (status, _, body) = master
        .http_request("PUT", "/api/secrets/extra", Some(&operator), Some(put))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = master
        .http_request("PUT", "/api/secrets/extra", Some(&admin), Some(put))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = master
        .http_request("DELETE", "/api/secrets/extra", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = master
        .http_request("DELETE", "/api/secrets/extra", Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    master.expect("secrets", "registry login for");

    // The values are nowhere: API answers, events, REPL output, logs, files.
    let (_, _, api) = master
        .http_request("GET", &format!("/api/tasks/{task}"), Some(&admin), None)
        .await;
    let (_, _, listed) = master
        .http_request("GET", "/api/tasks", Some(&admin), None)
        .await;
    let events = frames.lock().unwrap().join("\n");
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("/api/tasks/{id}".into(), api.into_bytes()),
        ("/api/tasks".into(), listed.into_bytes()),
        ("/api/secrets".into(), body.into_bytes()),
        ("WebSocket events".into(), events.into_bytes()),
        (
            "gRPC events".into(),
            format!("{:?}", grpc_events.lock().unwrap()).into_bytes(),
        ),
        (
            "REPL output".into(),
            master.output().join("\n").into_bytes(),
        ),
        ("master log".into(), master.log().into_bytes()),
        ("worker log".into(), worker.log().into_bytes()),
    ];
    master.kill9();
    let export = dir.path().join("export.jsonl");
    let exported = Command::new(cloudai_e2e::bin_dir().join("cloudai-master"))
        .arg("--data-dir")
        .arg(&data)
        .arg("export")
        .arg(&export)
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let export = std::fs::read(&export).unwrap();
    assert!(
        contains(&export, "\"SECRETS\""),
        "the export carries them sealed"
    );
    places.push(("export".into(), export));
    for (path, bytes) in files_under(&data) {
        places.push((path.display().to_string(), bytes));
    }
    for (place, bytes) in &places {
        for value in [&password, &api_key] {
            assert!(!contains(bytes, value), "a secret value is in {place}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policies_the_pull_timeout_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "pull", dir.path());
    let viewer = master.api_token("viewer");
    let frames = collect(
        master
            .websocket("/ws/telemetry", Some(&viewer))
            .await
            .unwrap(),
    );

    // --pull never: a missing image fails at once and says why; a present one runs.
    let absent = format!("cloudai-test/{}:v1", unique("absent"));
    let task = master.submit(&format!("task {} {absent} --pull never -- true", worker.id));
    let line = finished(&mut master, &task);
    assert!(line.contains("--pull never forbids pulling it"), "{line}");
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --pull never -- true",
        worker.id
    ));
    assert!(finished(&mut master, &task).contains("completed"));

    // A registry that never answers: the pull timeout ends it, not the run timeout.
    let stalled = StalledRegistry::start();
    let started = std::time::Instant::now();
    let task = master.submit(&format!(
        "task {} {}/team/app:v1 --pull-timeout 2s --timeout 1h -- true",
        worker.id, stalled.host
    ));
    let line = finished(&mut master, &task);
    assert!(
        line.contains("took longer than its pull timeout (2s)"),
        "{line}"
    );
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());

    // Nothing listens yet: the worker retries with backoff; once the registry
    // is up (with the image and the login in place) the retry pulls it.
    let password = unique("pw");
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    set_secret(&mut master, "late", Some(&host), &format!("bob:{password}"));
    let image = format!("{host}/team/{}:v1", unique("late"));
    let _pulled = Pulled(vec![image.clone()]);
    let task = master.submit(&format!(
        "task {} {image} --pull always --pull-timeout 2m -- echo pulled-after-retries",
        worker.id
    ));
    let retrying =
        |frames: &Arc<Mutex<Vec<String>>>| {
            frames.lock().unwrap().iter().any(|f| {
                f.contains("task_progress") && f.contains(&task) && f.contains("retrying in")
            })
        };
    let deadline = std::time::Instant::now() + WAIT;
    while !retrying(&frames) {
        assert!(std::time::Instant::now() < deadline, "no retry reported");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The REPL shows it too: the `tasks` note, and `monitor` while it pulls.
    master.poll("tasks", &[&task, "pulling: retrying in"], WAIT);
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, "[pulling", WAIT);
    let registry = Registry::start_on(&dir.path().join("registry"), &[("bob", &password)], port);
    let pushed = registry.push(
        TEST_IMAGE,
        image.trim_start_matches(&format!("{host}/")),
        "bob",
        &password,
    );
    assert_eq!(pushed, image);
    master.wait_from(from, "pulled-after-retries", WAIT);
    let line = finished(&mut master, &task);
    assert!(line.contains("completed (exit code 0)"), "{line}");
    assert!(
        worker.log().contains("image pull failed; retrying"),
        "{}",
        worker.log()
    );
}

/// The issue's whole job: a dataset volume, a cache volume, 8 GiB of shared
/// memory, a non-root user in a working directory and a private image, from
/// the REPL and from the agent API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_style_job_runs_from_the_repl_and_the_api() {
    use cloudai_proto::v1::master_agent_client::MasterAgentClient;
    use cloudai_proto::v1::{ContainerOptions, Mount, SubmitTaskRequest, Task, mount};
    let password = unique("pw");
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), &[("trainer", &password)]);
    let image = registry.push(
        TEST_IMAGE,
        &format!("ml/{}:v1", unique("train")),
        "trainer",
        &password,
    );
    let _pulled = Pulled(vec![image.clone()]);
    let (dataset, cache) = (Volume::new("dataset"), Volume::new("hf-cache"));
    let filled = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-v",
            &format!("{}:/data", dataset.0),
            TEST_IMAGE,
        ])
        .args(["sh", "-c", "echo imagenet-shard-0 > /data/input.txt"])
        .output()
        .unwrap();
    assert!(filled.status.success(), "{filled:?}");

    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "train", dir.path());
    set_secret(
        &mut master,
        "ml-registry",
        Some(&registry.host),
        &format!("trainer:{password}"),
    );
    let script = "echo uid=$(id -u) pwd=$(pwd) shm=$(df -k /dev/shm | tail -1 | awk '{print $2}') data=$(cat /data/input.txt) cache=$(test -d /root/.cache/huggingface && echo mounted)";
    let task = master.submit(&format!(
        "task {} {image} --volume {}:/data:ro --volume {}:/root/.cache/huggingface --shm-size 8g --user 1000:1000 --workdir /workspace -- sh -c \"{script}\"",
        worker.id, dataset.0, cache.0
    ));
    let expected = "uid=1000 pwd=/workspace shm=8388608 data=imagenet-shard-0 cache=mounted";
    let line = finished(&mut master, &task);
    assert!(line.contains("completed (exit code 0)"), "{line}");
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, expected, WAIT);

    // The same job through the agent API.
    let operator = master.api_token("operator");
    let channel = master.grpc_channel(None).await;
    let volume = |source: &str, target: &str, read_only: bool| Mount {
        kind: mount::Kind::Volume as i32,
        source: source.into(),
        target: target.into(),
        read_only,
        tmpfs_size_bytes: 0,
    };
    let request = SubmitTaskRequest {
        task: Some(Task {
            image: image.clone(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            options: Some(ContainerOptions {
                shm_size_bytes: 8 << 30,
                user: "1000:1000".into(),
                workdir: "/workspace".into(),
                mounts: vec![
                    volume(&dataset.0, "/data", true),
                    volume(&cache.0, "/root/.cache/huggingface", false),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }),
        worker_id: worker.id.clone(),
        ..Default::default()
    };
    let submitted = MasterAgentClient::new(channel)
        .submit_task(with_token(request, &operator))
        .await
        .expect("the agent API takes the job")
        .into_inner();
    let line = finished(&mut master, &submitted.task_id);
    assert!(line.contains("completed (exit code 0)"), "{line}");
    let from = master.send(&format!("logs {}", submitted.task_id));
    master.wait_from(from, expected, WAIT);
}
