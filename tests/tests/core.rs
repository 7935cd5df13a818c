//! The core cluster loop end to end: real binaries, real dockerd, real store.

use cloudai_e2e::{
    Master, MasterOptions, TEST_IMAGE, Volume, WAIT, Worker, WorkerOptions, free_port, unique,
    word_after,
};
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::{Heartbeat, RegisterWorkerRequest, TaskLogPart, WorkerInfo};
use std::time::Duration;
use tonic::Code;

/// A master plus one worker that joined with its token (mutual TLS).
fn cluster(dir: &std::path::Path) -> (Master, Worker) {
    let mut master = Master::start(&dir.join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "w", dir);
    (master, worker)
}

fn insecure() -> MasterOptions {
    MasterOptions {
        insecure: true,
        ..MasterOptions::default()
    }
}

#[test]
fn failing_task_reports_exit_code_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'echo hello; exit 3'",
        worker.id
    ));
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, "hello", WAIT);
    master.wait_from(from, &format!("task {task} failed (exit code 3)"), WAIT);
    // Finished: `monitor` and `logs` print the stored output.
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "hello", WAIT);
    let line = master.poll("tasks", &[&task, "failed", "busybox"], WAIT);
    assert!(line.contains(" 3 "), "exit code missing from {line:?}");
}

#[test]
fn successful_task_completes_with_env_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --cpus 0.5 --memory 64m --env GREETING=bonjour -- sh -c 'echo $GREETING'",
        worker.id
    ));
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, "bonjour", WAIT);
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
}

#[test]
fn container_options_set_shared_memory_user_and_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    // 256 MiB of /dev/shm is 262144 1K-blocks; Docker's default is 65536.
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --shm-size 256m --user 1000:1000 --workdir /tmp -- sh -c 'df -k /dev/shm; echo uid=$(id -u) gid=$(id -g); echo cwd=$(pwd)'",
        worker.id
    ));
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, "262144", WAIT);
    master.wait_from(from, "uid=1000 gid=1000", WAIT);
    master.wait_from(from, "cwd=/tmp", WAIT);
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
    // Refused before anything runs, in one line naming the option.
    for (line, problem) in [
        ("--user 'no such!'", "user: 'no such!' is not a user"),
        ("--workdir work", "workdir: 'work' is not an absolute path"),
        ("--shm-size 2t", "shm-size: is larger than 1 TiB"),
    ] {
        master.expect(
            &format!("task {} {TEST_IMAGE} {line} -- true", worker.id),
            problem,
        );
    }
}

#[test]
fn volumes_host_paths_and_tmpfs_are_mounted_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("input.txt"), "from-the-host\n").unwrap();
    let shared = shared.display().to_string();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join_with(
        &mut master,
        "mnt",
        dir.path(),
        &["--allow-host-path", &shared],
    );
    let volume = Volume::new("cache");
    let run = |master: &mut Master, options: &str, script: &str| {
        let task = master.submit(&format!(
            "task {} {TEST_IMAGE} {options} -- sh -c '{script}'",
            worker.id
        ));
        let from = master.send(&format!("monitor {task}"));
        master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
        master
            .output()
            .into_iter()
            .skip(from)
            .collect::<Vec<_>>()
            .join("\n")
    };
    // A named volume outlives the task that wrote it.
    run(
        &mut master,
        &format!("--volume {}:/cache", volume.0),
        "echo kept > /cache/model.bin",
    );
    let read = run(
        &mut master,
        &format!("--volume {}:/cache:ro", volume.0),
        "cat /cache/model.bin",
    );
    assert!(read.contains("kept"), "{read}");
    // A host path under --allow-host-path, read-only; a tmpfs of the asked size.
    let out = run(
        &mut master,
        &format!("--volume {shared}:/in:ro --tmpfs /scratch:16m"),
        "cat /in/input.txt; df -k /scratch | tail -1; touch /in/x 2>/dev/null || echo read-only",
    );
    for needle in ["from-the-host", "16384", "read-only"] {
        assert!(out.contains(needle), "{needle} missing: {out}");
    }
    // A host path the worker does not allow: refused at once on a named
    // worker, and waiting with the reason when queued.
    master.expect(
        &format!(
            "task {} {TEST_IMAGE} --volume /etc:/host-etc -- true",
            worker.id
        ),
        "does not allow host path '/etc': start it with --allow-host-path",
    );
    let queued = master.submit(&format!(
        "task auto {TEST_IMAGE} --volume /etc:/host-etc -- true"
    ));
    master.poll(
        "tasks --state queued",
        &[&queued, "--allow-host-path"],
        WAIT,
    );
    master.expect(&format!("cancel {queued}"), "cancelled");
}

#[test]
fn network_modes_and_labels_are_applied_and_host_network_needs_an_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let plain = Worker::join(&mut master, "net", dir.path());
    let open = Worker::join_with(
        &mut master,
        "hostnet",
        dir.path(),
        &["--allow-host-network"],
    );
    // `none`: the container has only its loopback interface.
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --network none --label team=vision -- sh -c 'echo ifaces=$(ls /sys/class/net | tr \"\\n\" \" \"); sleep 2'",
        plain.id
    ));
    let from = master.send(&format!("monitor {task}"));
    let line = master.wait_from(from, "ifaces=", WAIT);
    assert_eq!(line.trim(), "ifaces=lo", "only the loopback interface");
    // The label is on the container, beside the system's own.
    let inspect = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"team\"}} {{index .Config.Labels \"cloudai.task_id\"}}",
        ])
        .arg(format!("cloudai-{task}-1"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("vision {task}")
    );
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
    // `host` only where the worker allows it.
    master.expect(
        &format!("task {} {TEST_IMAGE} --network host -- true", plain.id),
        "does not allow the host's network: start it with --allow-host-network",
    );
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --network host -- sh -c 'ls /sys/class/net | grep -c . '",
        open.id
    ));
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
    // System labels cannot be set by a task.
    master.expect(
        &format!(
            "task {} {TEST_IMAGE} --label cloudai.task_id=x -- true",
            plain.id
        ),
        "cloudai.* labels are the system's",
    );
}

#[test]
fn host_ipc_needs_an_opt_in_and_shares_the_hosts_ipc_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let plain = Worker::join(&mut master, "ipc", dir.path());
    let sharing = Worker::join_with(&mut master, "hostipc", dir.path(), &["--allow-host-ipc"]);
    master.expect(
        &format!("task {} {TEST_IMAGE} --ipc host -- true", plain.id),
        "does not allow the host's IPC namespace: start it with --allow-host-ipc",
    );
    master.expect(
        &format!("task {} {TEST_IMAGE} --ipc shareable -- true", plain.id),
        "ipc: 'shareable' is not one of private, host",
    );
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_ipc = host_ipc.to_string_lossy();
    let mut namespace = |worker: &str, mode: &str| {
        let task = master.submit(&format!(
            "task {worker} {TEST_IMAGE} --ipc {mode} -- sh -c 'echo ns=$(readlink /proc/self/ns/ipc)'"
        ));
        let from = master.send(&format!("monitor {task}"));
        let line = master.wait_from(from, "ns=", WAIT);
        master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
        line.trim().trim_start_matches("ns=").to_string()
    };
    assert_eq!(namespace(&sharing.id, "host"), host_ipc);
    assert_ne!(namespace(&plain.id, "private"), host_ipc);
    // Queued with --ipc host, a task goes only to the worker allowing it.
    let task = master.submit(&format!("task auto {TEST_IMAGE} --ipc host -- true"));
    let row = master.poll("tasks", &[&task, "completed"], WAIT);
    assert!(row.contains(&sharing.id), "{row}");
}

#[test]
fn memory_hog_is_reported_as_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --memory 16m -- sh -c 'x=$(yes | head -c 200000000); echo survived'",
        worker.id
    ));
    let from = master.send(&format!("monitor {task}"));
    let line = master.wait_from(from, &format!("task {task} failed"), WAIT);
    assert!(
        line.contains("out of memory"),
        "expected an OOM kill, got {line:?}"
    );
}

fn grpc(
    addr: &str,
) -> (
    tokio::runtime::Runtime,
    MasterServiceClient<tonic::transport::Channel>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(MasterServiceClient::connect(format!("http://{addr}")))
        .expect("connect to the master");
    (runtime, client)
}

fn info(id: &str, address: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        address: address.into(),
        ..Default::default()
    }
}

#[test]
fn unknown_worker_is_refused_with_the_register_command() {
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(&dir.path().join("master"), &insecure());
    let (runtime, mut client) = grpc(&master.grpc_addr);
    let status = runtime
        .block_on(client.register_worker(RegisterWorkerRequest {
            info: Some(info("ghost", "127.0.0.1:6000")),
            task_ids: vec![],
        }))
        .expect_err("an unknown worker must be refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("register ghost 127.0.0.1:6000"),
        "{}",
        status.message()
    );
    let status = runtime
        .block_on(client.send_heartbeat(Heartbeat {
            worker_id: "ghost".into(),
            ..Default::default()
        }))
        .expect_err("heartbeats of unknown workers are refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    // Malformed input gets InvalidArgument, not a crash.
    let status = runtime
        .block_on(client.register_worker(RegisterWorkerRequest {
            info: None,
            task_ids: vec![],
        }))
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// `UploadTaskLog` checks every upload before storing anything: an empty one,
/// an unknown task, a task of another worker, a task that already ended.
/// (Without TLS; with it, the caller must also hold the worker's certificate.)
#[test]
fn uploads_of_task_output_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &insecure());
    let (runtime, client) = grpc(&master.grpc_addr);
    let part = |task_id: &str, worker_id: &str| TaskLogPart {
        task_id: task_id.into(),
        worker_id: worker_id.into(),
        attempt: 1,
        seq: 0,
        data: b"output\n".to_vec(),
    };
    let upload = |parts: Vec<TaskLogPart>| {
        runtime
            .block_on(client.clone().upload_task_log(futures::stream::iter(parts)))
            .expect_err("refused")
    };
    let status = upload(vec![]);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A registered worker that registers but serves nothing: its task fails at once.
    let address = format!("127.0.0.1:{}", free_port());
    master.register("up", &address);
    runtime
        .block_on(client.clone().register_worker(RegisterWorkerRequest {
            info: Some(info("up", &address)),
            task_ids: vec![],
        }))
        .expect("a registered worker is accepted");
    let line = master.expect(&format!("task up {TEST_IMAGE} -- true"), "failed to start");
    let task = word_after(&line, "task ").to_string();
    master.poll("tasks", &[&task, "failed"], WAIT);
    let status = upload(vec![part("t-nope", "up")]);
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = upload(vec![part(&task, "ghost")]);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("belongs to worker"), "{status:?}");
    let status = upload(vec![part(&task, "up")]);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("already failed"), "{status:?}");
}

#[test]
fn worker_first_registration_is_refused_until_registered_then_accepted() {
    let dir = tempfile::tempdir().unwrap();
    // The registration protocol itself, without TLS; no re-invitations, so the
    // worker must get in on its own.
    let options = MasterOptions {
        reinvite: "1h",
        ..insecure()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let id = unique("wf");
    let port = free_port();
    let worker_options = WorkerOptions {
        port,
        master: Some(master.grpc_addr.clone()),
        insecure: true,
        ..WorkerOptions::default()
    };
    let worker = Worker::start(&id, dir.path(), &worker_options);
    worker.wait_log(&format!("register {id} 127.0.0.1:{port}"), WAIT);
    assert!(
        worker.log().contains("not pre-registered"),
        "{}",
        worker.log()
    );
    master.register(&id, &format!("127.0.0.1:{port}"));
    master.poll("workers", &[&id, "active"], WAIT);
    worker.wait_log("registered with the master", WAIT);
}

#[test]
fn master_first_invitation_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &insecure());
    let worker = Worker::start(
        &unique("wm"),
        dir.path(),
        &WorkerOptions {
            insecure: true,
            ..WorkerOptions::default()
        },
    );
    master.expect(
        &format!("register {} {}", worker.id, worker.address),
        "accepted the invitation",
    );
    master.poll("workers", &[&worker.id, "active"], WAIT);
}

#[test]
fn unregister_cuts_the_worker_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, mut worker) = cluster(dir.path());
    master.expect(&format!("unregister {}", worker.id), "no longer accepted");
    master.expect("workers", "no workers registered");
    // Its certificate is revoked: the worker's own calls are refused.
    worker.wait_log("does not belong to worker", WAIT);
    master.expect(
        &format!("task {} {TEST_IMAGE} true", worker.id),
        &format!("no worker '{}'", worker.id),
    );
    // Registering again needs a new token: the old certificate stays revoked.
    worker.kill9();
    master.register(&worker.id, &worker.address);
    let restarted = worker.restart(dir.path(), false);
    restarted.wait_log("does not belong to worker", WAIT);
}

#[test]
fn master_restart_keeps_registry_and_history_and_workers_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        grpc_port: free_port(),
        ..MasterOptions::default()
    };
    let data = dir.path().join("master");
    let mut master = Master::start(&data, &options);
    let mut worker = Worker::join(&mut master, "wr", dir.path());
    let id = worker.id.clone();
    let task = master.submit(&format!(
        "task {id} {TEST_IMAGE} -- sh -c 'echo persisted; exit 3'"
    ));
    master.poll("tasks", &[&task, "failed"], WAIT);

    master.kill9();
    let mut master = Master::start(&data, &options);
    // Registry, history and the CA survived SIGKILL; the worker is back without operator action.
    master.poll("workers", &[&id, "active"], WAIT);
    let line = master.poll("tasks", &[&task, "failed", "busybox"], WAIT);
    assert!(line.contains(" 3 "), "{line}");
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "persisted", WAIT);

    // A worker killed and restarted (no token, no --master: both remembered)
    // is re-accepted without operator action too.
    worker.kill9();
    master.poll("workers", &[&id, "inactive"], WAIT);
    let _worker = worker.restart(dir.path(), false);
    master.poll("workers", &[&id, "active"], WAIT);
}

#[test]
fn bad_input_gets_one_clear_line_and_the_repl_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let w = &worker.id;
    for (command, needle) in [
        (
            format!("task nosuch {TEST_IMAGE} true"),
            "error: no worker 'nosuch'".to_string(),
        ),
        (
            format!("task {w} \"\" true"),
            "error: image: must not be empty".to_string(),
        ),
        (
            format!("task {w} Bad//Image true"),
            "error: image:".to_string(),
        ),
        (
            format!("task {w} {TEST_IMAGE} --cpus -1 true"),
            "error: --cpus".to_string(),
        ),
        (
            format!("task {w} {TEST_IMAGE} --memory 99999t true"),
            "error: limits.memory".to_string(),
        ),
        (
            format!("task {w} {TEST_IMAGE} --memory 1k true"),
            "error: limits.memory".to_string(),
        ),
        (
            "monitor t-doesnotexist".to_string(),
            "error: no task 't-doesnotexist'".to_string(),
        ),
        (
            "monitor".to_string(),
            "error: monitor takes 1 argument".to_string(),
        ),
        ("stauts".to_string(), "did you mean `status`".to_string()),
        (
            "register x not-an-address".to_string(),
            "error: address:".to_string(),
        ),
    ] {
        let from = master.send(&command);
        let line = master.wait_from(from, "error:", WAIT);
        assert!(
            line.contains(&needle),
            "`{command}` printed {line:?}, expected {needle:?}"
        );
        let printed = master.output().len() - from;
        assert_eq!(printed, 1, "`{command}` should print exactly one line");
    }
    master.expect("status", "workers: 1 active");
    assert_eq!(
        word_after(&master.expect("status", "tasks:"), "tasks:"),
        "none"
    );
}

#[test]
fn image_that_cannot_be_pulled_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let task = master.submit(&format!(
        "task {} cloudai-test/does-not-exist:1 true",
        worker.id
    ));
    let line = master.poll("tasks", &[&task, "failed"], Duration::from_secs(60));
    assert!(line.contains("could not be pulled"), "{line}");
}

#[test]
fn monitor_follows_a_running_task_live() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'echo start; sleep 2; echo end'",
        worker.id
    ));
    master.poll("tasks", &[&task, "running"], WAIT);
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, "start", WAIT);
    master.wait_from(from, "end", WAIT);
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);
    let from = master.send(&format!("stats {}", worker.id));
    master.wait_from(from, "cpu  [", WAIT);
    master.wait_from(from, "mem  [", WAIT);
}

#[test]
fn restarted_worker_adopts_its_running_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut worker = Worker::join(&mut master, "wa", dir.path());
    let id = worker.id.clone();
    // More output than a result's tail, written after the worker is gone.
    let task = master.submit(&format!(
        "task {id} {TEST_IMAGE} -- sh -c 'echo first; sleep 3; seq 1 60000; echo adopted-done'"
    ));
    master.poll("tasks", &[&task, "running"], WAIT);
    worker.kill9();
    // The container keeps running without its worker; the restarted worker finds it by label.
    let worker = worker.restart(dir.path(), false);
    worker.wait_log("adopting a container from an earlier run", WAIT);
    master.poll("tasks", &[&task, "completed", "busybox"], WAIT);
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "adopted-done", WAIT);
    // The adopting worker followed the output from its start: all of it is stored.
    let numbers: String = (1..=60_000).map(|n| format!("{n}\n")).collect();
    let expected = format!("first\n{numbers}adopted-done\n");
    let viewer = master.api_token("viewer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_stored_output(&master, &runtime, &viewer, &task, &expected);
}

#[test]
fn cancel_stops_a_running_task() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'echo waiting; sleep 60'",
        worker.id
    ));
    master.poll("tasks", &[&task, "running"], WAIT);
    master.expect(&format!("cancel {task}"), &format!("task {task}"));
    let line = master.poll("tasks", &[&task, "cancelled", "busybox"], WAIT);
    assert!(line.contains("cancelled"), "{line}");
    master.expect(&format!("cancel {task}"), "already ended");
}

#[test]
fn a_worker_back_without_its_container_fails_the_task_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut worker = Worker::join(&mut master, "wl", dir.path());
    let id = worker.id.clone();
    let task = master.submit(&format!("task {id} {TEST_IMAGE} -- sleep 60"));
    master.poll("tasks", &[&task, "running"], WAIT);
    worker.kill9();
    cloudai_e2e::remove_containers(&id);
    let _worker = worker.restart(dir.path(), false);
    let line = master.poll("tasks", &[&task, "failed", "busybox"], WAIT);
    assert!(line.contains("lost"), "{line}");
}

#[test]
fn gpu_requests_without_free_gpus_are_refused_or_wait_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, worker) = cluster(dir.path());
    // Named worker: refused at once, saying why.
    let line = master.expect(
        &format!("task {} {TEST_IMAGE} --gpus 1 -- true", worker.id),
        "error:",
    );
    assert!(line.contains("lacks 1 free GPUs"), "{line}");
    // Auto: queued, and `tasks` says what it waits for.
    let line = master.expect(
        &format!("task auto {TEST_IMAGE} --gpus 2 -- true"),
        "queued for placement",
    );
    let task = word_after(&line, "task ").to_string();
    master.poll(
        "tasks",
        &[&task, "queued", "waiting: no worker with 2 free GPUs"],
        WAIT,
    );
    master.expect(&format!("cancel {task}"), "cancelled");
}

/// The first difference between two long texts, for a readable failure.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |text: &str| {
        let start = at.saturating_sub(40);
        String::from_utf8_lossy(&text.as_bytes()[start..(at + 80).min(text.len())]).into_owned()
    };
    format!(
        "{} bytes, expected {}; first difference at byte {at}:\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    )
}

/// Asserts that `GET /api/tasks/{task}/log` answers exactly `want`.
fn assert_stored_output(
    master: &Master,
    runtime: &tokio::runtime::Runtime,
    token: &str,
    task: &str,
    want: &str,
) {
    let (status, body) =
        runtime.block_on(master.http_get(&format!("/api/tasks/{task}/log"), Some(token)));
    assert_eq!(status, 200, "{task}: {body}");
    assert!(body == want, "{task}: {}", first_difference(&body, want));
}

/// Output past the tail a result carries (256 KiB from the worker, 1 MiB kept
/// by the master) is uploaded and stored whole in chunks: `logs` and
/// `/api/tasks/{id}/log` give it back from its first line. A worker with a
/// lower `--max-log-upload` keeps the start and the end and the gap is named.
#[test]
fn a_large_output_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let whole = Worker::join(&mut master, "wlog", dir.path());
    let limited = Worker::join_with(
        &mut master,
        "wcap",
        dir.path(),
        &["--max-log-upload", "300k"],
    );
    let lines = 200_000;
    let expected: String = (1..=lines).map(|n| format!("{n}\n")).collect();
    assert!(expected.len() > 1 << 20, "more than any tail holds");
    let command = format!("-- seq 1 {lines}");
    // Several at once: Docker's log follower may end early on a loaded host
    // (the worker then reads the rest); every output must still be whole.
    let full: Vec<String> = (0..4)
        .map(|_| master.submit(&format!("task {} {TEST_IMAGE} {command}", whole.id)))
        .collect();
    let capped = master.submit(&format!("task {} {TEST_IMAGE} {command}", limited.id));
    // Output ending in a 48 KiB line without a newline: Docker cuts it into
    // three full 16 KiB pieces with one timestamp, so the worker cannot tell
    // more did not follow and reads the log's end again (nothing may come twice).
    let open_end = master.submit(&format!(
        "task {} {TEST_IMAGE} -- sh -c 'seq 1 {lines}; head -c 49152 /dev/zero | tr \"\\0\" x'",
        whole.id
    ));
    // Six large outputs through one debug-build worker on two cores take a while.
    for task in full.iter().chain([&capped, &open_end]) {
        master.poll("tasks", &[task, "completed"], 3 * WAIT);
    }

    let viewer = master.api_token("viewer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for task in &full {
        assert_stored_output(&master, &runtime, &viewer, task, &expected);
    }
    let want = format!("{expected}{}", "x".repeat(49_152));
    assert_stored_output(&master, &runtime, &viewer, &open_end, &want);
    let full = &full[0];
    let (status, view) =
        runtime.block_on(master.http_get(&format!("/api/tasks/{full}"), Some(&viewer)));
    assert_eq!(status, 200, "{view}");
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["full_log"], true, "{view}");
    assert_eq!(view["log_bytes"], expected.len(), "{view}");

    // The REPL prints the same output, every line in order, then the outcome.
    let from = master.send(&format!("logs {full}"));
    master.wait_from(from, &format!("task {full} completed"), WAIT);
    let printed = master.output();
    let start = printed[from..]
        .iter()
        .position(|line| line == "1")
        .expect("the first line of the output")
        + from;
    let numbers: Vec<&str> = printed[start..start + lines]
        .iter()
        .map(String::as_str)
        .collect();
    let wanted: Vec<String> = (1..=lines).map(|n| n.to_string()).collect();
    assert!(
        numbers == wanted,
        "`logs` printed the output out of order or with gaps"
    );
    assert!(
        !printed[from..].iter().any(|l| l.contains("cut off")),
        "nothing was cut"
    );

    // Capped at 300 KiB: the start up to the limit, a note, the 256 KiB tail.
    let (head, tail) = (300 * 1024, 256 * 1024);
    let gap = expected.len() - head - tail;
    let want = format!(
        "{}\n[{gap} bytes of output not kept: the worker uploads at most its --max-log-upload]\n{}",
        &expected[..head],
        &expected[expected.len() - tail..]
    );
    assert_stored_output(&master, &runtime, &viewer, &capped, &want);
}

/// History pages newest first, each page pointing at the next with a
/// cursor, and `--keep-history` prunes finished tasks in the background.
#[test]
fn history_pages_with_a_cursor_and_old_tasks_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        extra: vec!["--keep-history", "4s"],
        ..MasterOptions::default()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let worker = Worker::join(&mut master, "h", dir.path());
    let tasks: Vec<String> = (0..3)
        .map(|n| master.submit(&format!("task {} {TEST_IMAGE} -- echo run-{n}", worker.id)))
        .collect();
    for task in &tasks {
        master.poll("tasks", &[task, "completed"], WAIT);
    }
    // The newest two, then the one before them.
    // What one command printed, up to the line with `last`.
    let listing = |master: &mut Master, command: &str, last: &str| {
        let from = master.send(command);
        master.wait_from(from, last, WAIT);
        master.output()[from..].join("\n")
    };
    let first = listing(&mut master, "tasks --limit 2", "older ones: `--cursor ");
    assert!(
        first.contains(&tasks[2]) && first.contains(&tasks[1]),
        "{first}"
    );
    assert!(!first.contains(&tasks[0]), "{first}");
    let cursor = word_after(&first, "--cursor ").trim_end_matches(['`', ')']);
    let second = listing(
        &mut master,
        &format!("tasks --limit 2 --cursor {cursor}"),
        &tasks[0],
    );
    assert!(!second.contains(&tasks[2]), "{second}");
    let from = master.send("tasks --cursor nonsense");
    master.wait_from(from, "is not one a task listing returned", WAIT);

    // Finished more than 4 s ago: pruned, output and all.
    master.poll("tasks", &["no tasks"], WAIT);
    let from = master.send(&format!("logs {}", tasks[0]));
    master.wait_from(from, "no task", WAIT);
}
