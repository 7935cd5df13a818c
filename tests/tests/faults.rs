//! Integrity under crashes and cuts: no result is invented or thrown away, and
//! no two attempts of a task run at once. Real binaries, real dockerd; a
//! worker is partitioned by relays on both directions of its link that stop
//! moving bytes (`cloudai_e2e::proxy`), and Docker's own event log says when
//! each container really started and stopped.

use cloudai_e2e::history::{self, History, Run, container_runs, now_nanos};
use cloudai_e2e::proxy::LinkProxy;
use cloudai_e2e::{
    Master, MasterOptions, TEST_IMAGE, WAIT, Worker, WorkerOptions, free_port, unique,
};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The task as `/api/tasks/{id}` answers it.
fn task_json(master: &Master, task_id: &str) -> Value {
    let token = master.token.clone();
    let (status, body) =
        runtime().block_on(master.http_get(&format!("/api/tasks/{task_id}"), token.as_deref()));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["task"].clone()
}

/// The whole stored output of a finished task.
fn output(master: &Master, task_id: &str) -> String {
    let token = master.token.clone();
    let (status, body) =
        runtime().block_on(master.http_get(&format!("/api/tasks/{task_id}/log"), token.as_deref()));
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the task is in one of `states`; returns its JSON.
fn wait_state(master: &Master, task_id: &str, states: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let task = task_json(master, task_id);
        if states.contains(&task["state"].as_str().unwrap_or_default()) {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} never reached {states:?}: {task}\nmaster log:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The runs of the task's containers since `since`, after checking that no
/// two of them overlapped.
fn assert_no_overlap(task_id: &str, since: u128) -> Vec<Run> {
    let runs = container_runs(task_id, since);
    history::assert_no_overlap(task_id, &runs);
    runs
}

/// Replaces a task's container by one that was created but never started,
/// as a worker that crashed between the two steps leaves it.
fn recreate_unstarted(task_id: &str, worker_id: &str, attempt: u32) {
    let name = format!("cloudai-{task_id}-{attempt}");
    let removed = Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    let created = Command::new("docker")
        .args(["create", "--name", &name])
        .args(["--label", &format!("cloudai.task_id={task_id}")])
        .args(["--label", &format!("cloudai.worker_id={worker_id}")])
        .args(["--label", &format!("cloudai.attempt={attempt}")])
        .args(["--label", "cloudai.timeout_seconds=0"])
        .args([TEST_IMAGE, "sh", "-c", "echo invented"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
}

#[test]
fn a_container_that_never_started_is_not_a_finished_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut worker = Worker::join(&mut master, "ns", dir.path());
    let command = "sh -c 'sleep 6; echo finished-for-real'";
    let once = master.submit(&format!("task {} {TEST_IMAGE} -- {command}", worker.id));
    let retried = master.submit(&format!(
        "task {} {TEST_IMAGE} --retries 1 -- {command}",
        worker.id
    ));
    for task in [&once, &retried] {
        wait_state(&master, task, &["running"], WAIT);
    }
    worker.kill9();
    recreate_unstarted(&once, &worker.id, 1);
    recreate_unstarted(&retried, &worker.id, 1);
    let since = now_nanos();
    let _back = worker.restart(dir.path(), false);

    // Docker's wait returns at once for such a container and inspect says exit
    // code 0: that must not become `completed`.
    let failed = wait_state(&master, &once, &["failed", "completed"], WAIT);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("never started"),
        "{failed}"
    );
    assert!(!output(&master, &once).contains("invented"));

    // With a retry left, the attempt runs again, for real.
    let done = wait_state(
        &master,
        &retried,
        &["completed", "failed"],
        Duration::from_secs(60),
    );
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(output(&master, &retried).contains("finished-for-real"));
    let runs = assert_no_overlap(&retried, since);
    assert!(
        runs.iter()
            .all(|(name, _, _)| name != &format!("cloudai-{retried}-1")),
        "the unstarted container never ran: {runs:?}"
    );
}

#[test]
fn a_worker_killed_mid_dispatch_invents_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut worker = Worker::join(&mut master, "nd", dir.path());
    let mut history = History::start(&master);
    let tasks: Vec<String> = (0..16)
        .map(|_| {
            master.submit(&format!(
                "task {} {TEST_IMAGE} -- sh -c 'sleep 1; echo done'",
                worker.id
            ))
        })
        .collect();
    // Right after the last one was accepted: some containers exist, some are
    // created but not started, some not even created.
    worker.kill9();
    let _back = worker.restart(dir.path(), false);
    let mut completed = 0;
    for task in &tasks {
        let end = wait_state(
            &master,
            task,
            &["completed", "failed"],
            Duration::from_secs(90),
        );
        if end["state"] == "completed" {
            completed += 1;
            let out = output(&master, task);
            assert!(
                out.contains("done"),
                "task {task} completed without running: {end} {out:?}"
            );
        } else {
            assert!(
                end["error"].as_str().unwrap_or_default().contains("lost"),
                "{end}"
            );
        }
    }
    eprintln!(
        "{completed} of {} completed for real; the rest lost",
        tasks.len()
    );
    // Seen from outside: each completed task had a container that ran, no
    // two of a task's containers overlapped, and the events agree.
    for task in &tasks {
        history.acknowledge(task);
    }
    history.check(&master, None, WAIT);
}

/// A master with this disconnect window.
fn master_with(dir: &std::path::Path, window: &'static str) -> Master {
    let options = MasterOptions {
        disconnect: window,
        ..MasterOptions::default()
    };
    Master::start(&dir.join("master"), &options)
}

/// Both directions of one worker's link, relayed so they can be cut together.
struct Partition {
    to_master: LinkProxy,
    to_worker: LinkProxy,
}

impl Partition {
    fn cut(&self) {
        self.to_master.cut();
        self.to_worker.cut();
    }

    fn heal(&self) {
        self.to_master.heal();
        self.to_worker.heal();
    }
}

/// A worker whose link to the master, both ways, goes through relays: it
/// calls the master through one, and listens on 127.0.0.2 behind the other,
/// which holds the address the master knows it by (127.0.0.1:<port>).
fn join_behind(master: &mut Master, dir: &std::path::Path) -> (Worker, Partition) {
    let id = unique("cut");
    let port = free_port();
    let to_master = LinkProxy::start(master.grpc_addr.parse().unwrap());
    let to_worker = LinkProxy::start_on(
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.2:{port}").parse().unwrap(),
    );
    let token = master.register(&id, &format!("127.0.0.1:{port}"));
    let options = WorkerOptions {
        port,
        master: Some(to_master.address.clone()),
        token,
        extra: vec!["--listen-host".into(), "127.0.0.2".into()],
        ..WorkerOptions::default()
    };
    let worker = Worker::start(&id, dir, &options);
    master.poll("workers", &[&id, "active"], WAIT);
    (
        worker,
        Partition {
            to_master,
            to_worker,
        },
    )
}

#[test]
fn a_result_from_a_cut_off_worker_is_kept_and_the_task_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = master_with(dir.path(), "30s");
    let (worker, proxy) = join_behind(&mut master, dir.path());
    let _spare = Worker::join(&mut master, "spare", dir.path());
    let since = now_nanos();
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --retries 2 -- sh -c 'sleep 4; echo real-result'",
        worker.id
    ));
    wait_state(&master, &task, &["running"], WAIT);
    proxy.cut();
    // Silent past the inactivity timeout: unknown, not failed, not rerun.
    let unknown = wait_state(&master, &task, &["unknown"], Duration::from_secs(20));
    assert_eq!(unknown["attempt"], 1, "{unknown}");
    // The container exits 0 during the cut; the result waits on the worker.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(task_json(&master, &task)["state"], "unknown");
    proxy.heal();
    let done = wait_state(&master, &task, &["completed", "failed", "queued"], WAIT);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(done["worker_id"], worker.id.as_str(), "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");
    assert!(output(&master, &task).contains("real-result"));
    let runs = assert_no_overlap(&task, since);
    assert!(
        matches!(runs.as_slice(), [(_, _, Some(_))]),
        "one container, started and ended once: {runs:?}"
    );
}

#[test]
fn a_cut_longer_than_the_window_never_runs_a_task_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = master_with(dir.path(), "5s");
    let (worker, proxy) = join_behind(&mut master, dir.path());
    let spare = Worker::join(&mut master, "spare", dir.path());
    let since = now_nanos();
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --retries 2 -- sh -c 'echo start; sleep 12; echo done'",
        worker.id
    ));
    wait_state(&master, &task, &["running"], WAIT);
    proxy.cut();
    // The cut-off worker stops its container after the window; the master
    // reruns the task elsewhere only after the window and its margin.
    worker.wait_log(
        "no heartbeat reached the master within the disconnect window",
        Duration::from_secs(30),
    );
    let rerun = wait_state(&master, &task, &["running"], Duration::from_secs(40));
    assert_eq!(rerun["attempt"], 2, "{rerun}");
    assert_eq!(rerun["worker_id"], spare.id.as_str(), "{rerun}");
    proxy.heal();
    let done = wait_state(
        &master,
        &task,
        &["completed", "failed"],
        Duration::from_secs(60),
    );
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["worker_id"], spare.id.as_str(), "{done}");
    assert!(output(&master, &task).contains("done"));
    // Back, the first worker delivers what it stopped: kept as a late result.
    let deadline = Instant::now() + WAIT;
    let late = loop {
        let task = task_json(&master, &task);
        if let Some(late) = task["late_results"].as_array().and_then(|l| l.first()) {
            break late.clone();
        }
        assert!(Instant::now() < deadline, "no late result recorded: {task}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(late["attempt"], 1, "{late}");
    assert_eq!(late["state"], "lost", "{late}");
    assert_eq!(late["worker_id"], worker.id.as_str(), "{late}");
    let runs = assert_no_overlap(&task, since);
    let started: Vec<&str> = runs.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(
        started,
        [format!("cloudai-{task}-1"), format!("cloudai-{task}-2")],
        "{runs:?}"
    );
}

#[test]
fn idle_connections_cannot_starve_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        open_files: Some(256),
        extra: vec!["--idle-timeout", "3s"],
        ..MasterOptions::default()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let worker = Worker::join(&mut master, "idle", dir.path());
    // Far more silent connections than the file limit allows, on both ports,
    // before TLS: the master keeps its place for what it needs.
    let mut silent = Vec::new();
    for i in 0..600 {
        let port = if i % 2 == 0 {
            &master.grpc_addr
        } else {
            &master.http_addr
        };
        if let Ok(stream) = std::net::TcpStream::connect(port) {
            silent.push(stream);
        }
    }
    let deadline = Instant::now() + WAIT;
    while !master.log().contains("connection refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The worker's established link still works: a task runs meanwhile.
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} -- echo still-served",
        worker.id
    ));
    // The silent ones are closed once idle; then new clients get in again.
    use std::io::Read;
    let mut closed = 0;
    for stream in &mut silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        // End of stream or a reset: the master closed it (a read timeout,
        // WouldBlock here, would mean it is still open).
        match stream.read(&mut byte) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, silent.len(), "every silent connection was closed");
    drop(silent);
    let done = wait_state(&master, &task, &["completed", "failed"], WAIT);
    assert_eq!(done["state"], "completed", "{done}");
    let (status, body) = runtime().block_on(master.http_get("/healthz", None));
    assert_eq!(status, 200, "{body}");
    assert!(!master.log().contains("panicked"), "{}", master.log());
}

#[test]
fn an_unregistered_workers_task_is_rerun_only_after_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "unreg", dir.path());
    let spare = Worker::join(&mut master, "spare", dir.path());
    let since = now_nanos();
    let task = master.submit(&format!(
        "task {} {TEST_IMAGE} --retries 1 -- sh -c 'sleep 15; echo done'",
        worker.id
    ));
    wait_state(&master, &task, &["running"], WAIT);
    master.expect(&format!("unregister {}", worker.id), "unregistered");
    // Refused from now on, the worker stops its container after the window;
    // the master reruns the task only after that.
    let unknown = wait_state(&master, &task, &["unknown"], WAIT);
    assert_eq!(unknown["attempt"], 1, "{unknown}");
    worker.wait_log(
        "no heartbeat reached the master within the disconnect window",
        Duration::from_secs(30),
    );
    let done = wait_state(
        &master,
        &task,
        &["completed", "failed"],
        Duration::from_secs(90),
    );
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["worker_id"], spare.id.as_str(), "{done}");
    assert_no_overlap(&task, since);
}
