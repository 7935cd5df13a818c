//! The fault suite on a real network: the master, two workers and the MongoDB
//! store each in a network namespace of their own (`cloudai_e2e::netns`),
//! links cut with `ip link set … down` and degraded with `tc netem`, and the
//! master killed with SIGKILL. Every scenario ends with the history checker
//! (`cloudai_e2e::history`): no two attempts of a task overlapped (Docker's
//! event log), every acknowledged task is final, a completed task had a
//! container that ran, and the API, the store and the event stream agree.
//!
//! Skips (with a message) where namespaces cannot be made (not root).

use cloudai_e2e::history::History;
use cloudai_e2e::netns::Net;
use cloudai_e2e::{Master, MasterOptions, MongoServer, TEST_IMAGE, Worker};
use std::path::Path;
use std::time::{Duration, Instant};

/// Inactivity timeout and disconnect window of these masters.
const INACTIVITY: &str = "3s";
const WINDOW: &str = "8s";

/// A cluster on its own network: master, workers `w1` and `w2`, the store.
struct Cluster {
    net: Net,
    store: MongoServer,
    master: Master,
    workers: Vec<Worker>,
}

fn options(net: &Net, store: &MongoServer, grpc_port: u16, http_port: u16) -> MasterOptions {
    MasterOptions {
        grpc_port,
        http_port,
        inactivity: INACTIVITY,
        disconnect: WINDOW,
        netns: Some(net.host("master").clone()),
        mongodb_uri: Some(store.uri.clone()),
        ..MasterOptions::default()
    }
}

/// The cluster, or `None` where namespaces are unavailable.
fn cluster(dir: &Path, workers: usize) -> Option<Cluster> {
    cloudai_e2e::ensure_test_image();
    let net = Net::new(&["master", "store", "w1", "w2"])?;
    let store = MongoServer::start_on(&dir.join("store"), Some(net.host("store")));
    let mut master = Master::start(&dir.join("master"), &options(&net, &store, 0, 0));
    let workers = ["w1", "w2"][..workers]
        .iter()
        .map(|name| Worker::join_on(&mut master, name, dir, &[], Some(net.host(name))))
        .collect();
    Some(Cluster {
        net,
        store,
        master,
        workers,
    })
}

fn task_state(master: &Master, task_id: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, body) = runtime
        .block_on(master.http_get(&format!("/api/tasks/{task_id}"), master.token.as_deref()));
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["task"].clone()
}

fn wait_state(master: &Master, task_id: &str, state: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while task_state(master, task_id)["state"] != state {
        assert!(
            Instant::now() < deadline,
            "task {task_id} never became {state}: {}\nmaster log:\n{}",
            task_state(master, task_id),
            master.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_attempt_running(master: &Master, task_id: &str, attempt: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let task = task_state(master, task_id);
        if task["state"] == "running" && task["attempt"] == attempt {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} never ran attempt {attempt}: {task}\nmaster log:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn skip() {
    eprintln!("SKIPPED: this test needs network namespaces (root)");
}

#[test]
fn a_partition_shorter_than_the_window_keeps_the_real_result() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut c) = cluster(dir.path(), 1) else {
        return skip();
    };
    let mut history = History::start(&c.master);
    let worker = c.workers[0].id.clone();
    let task = c.master.submit(&format!(
        "task {worker} {TEST_IMAGE} --retries 2 -- sh -c 'sleep 10; echo survived'"
    ));
    history.acknowledge(&task);
    wait_state(&c.master, &task, "running", Duration::from_secs(30));
    // Cut past the inactivity timeout, healed within the window: unknown
    // meanwhile, never rerun, and the worker's own result counts.
    c.net.cut("w1");
    wait_state(&c.master, &task, "unknown", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    c.net.heal("w1");
    let finals = history.check(&c.master, Some(&c.store.uri), Duration::from_secs(60));
    assert_eq!(finals[&task], "completed");
    let done = task_state(&c.master, &task);
    assert_eq!(done["attempt"], 1, "{done}");
}

#[test]
fn a_partition_longer_than_the_window_never_runs_a_task_twice() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut c) = cluster(dir.path(), 2) else {
        return skip();
    };
    let mut history = History::start(&c.master);
    let first = c.workers[0].id.clone();
    let tasks: Vec<String> = (0..2)
        .map(|_| {
            c.master.submit(&format!(
                "task {first} {TEST_IMAGE} --retries 2 -- sh -c 'sleep 25; echo done'"
            ))
        })
        .collect();
    for task in &tasks {
        history.acknowledge(task);
        wait_state(&c.master, task, "running", Duration::from_secs(30));
    }
    // Cut for longer than the window and its margin: the worker stops its
    // containers, the master reruns the tasks on w2 only after that.
    c.net.cut("w1");
    for task in &tasks {
        wait_attempt_running(&c.master, task, 2, Duration::from_secs(60));
    }
    c.net.heal("w1");
    let finals = history.check(&c.master, Some(&c.store.uri), Duration::from_secs(90));
    for task in &tasks {
        assert_eq!(finals[task], "completed", "{task}");
    }
}

#[test]
fn a_flapping_lossy_link_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut c) = cluster(dir.path(), 2) else {
        return skip();
    };
    let mut history = History::start(&c.master);
    c.net.degrade("w1", Duration::from_millis(100), 20);
    // Half placed on the flapping worker by name, half by the scheduler.
    let w1 = c.workers[0].id.clone();
    for target in [w1.as_str(), "auto"].repeat(4) {
        let task = c.master.submit(&format!(
            "task {target} {TEST_IMAGE} --retries 3 -- sh -c 'sleep 3; echo ok'"
        ));
        history.acknowledge(&task);
    }
    // Down for a second, up for two, several times, while the tasks run.
    for _ in 0..6 {
        c.net.cut("w1");
        std::thread::sleep(Duration::from_secs(1));
        c.net.heal("w1");
        std::thread::sleep(Duration::from_secs(2));
    }
    c.net.clear("w1");
    let finals = history.check(&c.master, Some(&c.store.uri), Duration::from_secs(120));
    assert!(finals.values().all(|s| s == "completed"), "{finals:?}");
}

#[test]
fn a_slow_then_dead_store_loses_no_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut c) = cluster(dir.path(), 1) else {
        return skip();
    };
    let mut history = History::start(&c.master);
    let line = format!("task auto {TEST_IMAGE} -- sh -c 'sleep 1; echo stored'");
    // Slow: packets to and from the store wait (400 ms each with netem).
    c.net.degrade("store", Duration::from_millis(400), 0);
    for _ in 0..3 {
        let task = c.master.submit(&line);
        history.acknowledge(&task);
    }
    c.net.clear("store");
    // Dead, then back on the same file: what the master acknowledged meanwhile
    // is held and written once the store answers again.
    c.store.stop();
    for _ in 0..3 {
        let task = c.master.submit(&line);
        history.acknowledge(&task);
    }
    std::thread::sleep(Duration::from_secs(3));
    c.store.resume();
    let finals = history.check(&c.master, Some(&c.store.uri), Duration::from_secs(90));
    assert!(finals.values().all(|s| s == "completed"), "{finals:?}");
}

#[test]
fn a_master_killed_mid_dispatch_runs_each_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut c) = cluster(dir.path(), 2) else {
        return skip();
    };
    let (grpc_port, http_port) = (port_of(&c.master.grpc_addr), port_of(&c.master.http_addr));
    let since = cloudai_e2e::history::now_nanos();
    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        acknowledged.push(c.master.submit(&format!(
            "task auto {TEST_IMAGE} --retries 1 -- sh -c 'sleep 2; echo once'"
        )));
    }
    // Right after the last acknowledgement: some tasks placed, some on their
    // way to a worker, some queued.
    let token = c.master.token.clone();
    c.master.kill9();
    let mut master = Master::start(
        &dir.path().join("master"),
        &options(&c.net, &c.store, grpc_port, http_port),
    );
    master.token = token;
    let mut history = History::start_since(&master, since);
    for task in &acknowledged {
        history.acknowledge(task);
    }
    let finals = history.check(&master, Some(&c.store.uri), Duration::from_secs(120));
    assert!(finals.values().all(|s| s == "completed"), "{finals:?}");
}

#[test]
fn a_worker_killed_mid_task_has_its_tasks_rerun_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut c) = cluster(dir.path(), 2) else {
        return skip();
    };
    let mut history = History::start(&c.master);
    let first = c.workers[0].id.clone();
    let tasks: Vec<String> = (0..3)
        .map(|_| {
            c.master.submit(&format!(
                "task {first} {TEST_IMAGE} --retries 1 -- sh -c 'sleep 4; echo done'"
            ))
        })
        .collect();
    for task in &tasks {
        history.acknowledge(task);
        wait_state(&c.master, task, "running", Duration::from_secs(30));
    }
    // SIGKILL mid-task, and back at once: the worker adopts its running
    // containers, and whatever was lost runs again, never beside itself.
    c.workers[0].kill9();
    let back = c.workers[0].restart(dir.path(), false);
    let finals = history.check(&c.master, Some(&c.store.uri), Duration::from_secs(120));
    assert!(finals.values().all(|s| s == "completed"), "{finals:?}");
    drop(back);
}

fn port_of(address: &str) -> u16 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}
