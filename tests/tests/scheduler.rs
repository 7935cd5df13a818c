//! The scheduler end to end: auto placement, the queue draining as capacity
//! frees, priorities, timeouts, and retries after a worker dies mid-task.
//! Workers on this machine report its CPUs; tasks reserve all of them with
//! `--cpus <all>` so that only one fits per worker.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, word_after};
use std::time::Duration;

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn submit(master: &mut Master, args: &str) -> String {
    let line = master.expect(
        &format!("task auto {TEST_IMAGE} {args}"),
        "queued for placement",
    );
    word_after(&line, "task ").to_string()
}

/// The worker a task row names (third column of `tasks`).
fn worker_of(line: &str) -> String {
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn auto_placement_spreads_by_capacity_and_the_queue_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let _a = Worker::join(&mut master, "sa", dir.path());
    let _b = Worker::join(&mut master, "sb", dir.path());
    let all = cpus();
    let long = format!("--cpus {all} -- sh -c 'sleep 4; echo done'");
    let first = submit(&mut master, &long);
    let second = submit(&mut master, &long);
    let third = submit(&mut master, &format!("--cpus {all} -- echo third"));
    let one = master.poll("tasks", &[&first, "running"], WAIT);
    let two = master.poll("tasks", &[&second, "running"], WAIT);
    assert_ne!(worker_of(&one), worker_of(&two), "each fills a worker");
    // The third waits, saying why, until one of them finishes.
    master.poll(
        "tasks",
        &[
            &third,
            "queued",
            &format!("waiting: no worker with {all} free CPUs"),
        ],
        WAIT,
    );
    master.poll("tasks", &[&third, "completed"], WAIT);
    master.poll("tasks", &[&first, "completed"], WAIT);
    master.poll("tasks", &[&second, "completed"], WAIT);
}

#[test]
fn higher_priority_runs_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let _w = Worker::join(&mut master, "sp", dir.path());
    let all = cpus();
    let blocker = submit(&mut master, &format!("--cpus {all} -- sleep 3"));
    master.poll("tasks", &[&blocker, "running"], WAIT);
    let low = submit(
        &mut master,
        &format!("--cpus {all} --priority 1 -- sleep 2"),
    );
    let high = submit(
        &mut master,
        &format!("--cpus {all} --priority 9 -- sleep 2"),
    );
    master.poll("tasks", &[&high, "running"], WAIT);
    let low_row = master.poll("tasks", &[&low], WAIT);
    assert!(
        low_row.contains("queued"),
        "the low-priority task waits while the high one runs: {low_row}"
    );
    master.poll("tasks", &[&low, "completed"], WAIT);
}

#[test]
fn a_task_past_its_timeout_is_killed_and_marked_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let _w = Worker::join(&mut master, "st", dir.path());
    let task = submit(
        &mut master,
        "--timeout 2s -- sh -c 'echo started; sleep 60'",
    );
    let row = master.poll("tasks", &[&task, "timed_out"], Duration::from_secs(60));
    assert!(row.contains("timeout"), "{row}");
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "started", WAIT);
}

#[test]
fn a_task_on_a_dead_worker_is_retried_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut doomed = Worker::join(&mut master, "sd", dir.path());
    let survivor = Worker::join(&mut master, "ss", dir.path());
    let line = master.expect(
        &format!(
            "task {} {TEST_IMAGE} --retries 1 -- sh -c 'sleep 5; echo finished'",
            doomed.id
        ),
        "task t-",
    );
    let task = word_after(&line, "task ").to_string();
    master.poll("tasks", &[&task, "running", &doomed.id], WAIT);
    doomed.kill9();
    cloudai_e2e::remove_containers(&doomed.id);
    // Inactivity (3s) → lost → requeued → placed on the survivor → completed there.
    let row = master.poll(
        "tasks",
        &[&task, "completed", &survivor.id],
        Duration::from_secs(60),
    );
    assert!(row.contains(" 0 "), "{row}");
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, "finished", WAIT);
}

#[test]
fn without_retries_a_lost_task_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut doomed = Worker::join(&mut master, "sf", dir.path());
    let line = master.expect(
        &format!("task {} {TEST_IMAGE} -- sleep 30", doomed.id),
        "task t-",
    );
    let task = word_after(&line, "task ").to_string();
    master.poll("tasks", &[&task, "running"], WAIT);
    doomed.kill9();
    cloudai_e2e::remove_containers(&doomed.id);
    // Silent: unknown first (it might still run), failed once the window passed.
    master.poll("tasks", &[&task, "unknown"], Duration::from_secs(30));
    let row = master.poll("tasks", &[&task, "failed"], Duration::from_secs(60));
    assert!(row.contains("silent past the disconnect window"), "{row}");
}

#[test]
fn the_queue_survives_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = MasterOptions {
        grpc_port: cloudai_e2e::free_port(),
        ..MasterOptions::default()
    };
    let data = dir.path().join("master");
    let mut master = Master::start(&data, &options);
    // No worker: the task waits in the queue.
    let task = submit(&mut master, "-- echo from-the-queue");
    master.poll(
        "tasks",
        &[&task, "queued", "waiting: no active worker"],
        WAIT,
    );
    master.kill9();
    let mut master = Master::start(&data, &options);
    master.poll("tasks", &[&task, "queued"], WAIT);
    let _w = Worker::join(&mut master, "sq", dir.path());
    master.poll("tasks", &[&task, "completed"], WAIT);
}

#[test]
fn a_returning_worker_stops_a_task_that_was_given_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut doomed = Worker::join(&mut master, "sr", dir.path());
    let survivor = Worker::join(&mut master, "sv", dir.path());
    let line = master.expect(
        &format!(
            "task {} {TEST_IMAGE} --retries 1 -- sh -c 'sleep 12; echo done'",
            doomed.id
        ),
        "task t-",
    );
    let task = word_after(&line, "task ").to_string();
    master.poll("tasks", &[&task, "running", &doomed.id], WAIT);
    // The worker dies but its container keeps running; the task moves on.
    doomed.kill9();
    master.poll(
        "tasks",
        &[&task, "running", &survivor.id],
        Duration::from_secs(60),
    );
    // Back, the old worker adopts its container, learns it was given away, and stops it:
    // the task never runs twice at once.
    let back = doomed.restart(dir.path(), false);
    back.wait_log("the master does not want this task here", WAIT);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=cloudai.worker_id={}", back.id),
            ])
            .output()
            .unwrap();
        if listed.stdout.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the given-away container is still running"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    master.poll(
        "tasks",
        &[&task, "completed", &survivor.id],
        Duration::from_secs(60),
    );
}
