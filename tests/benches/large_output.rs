//! What a large output costs: the time from submitting a task to seeing it
//! completed when it writes `CLOUDAI_BENCH_OUTPUT_MIB` MiB (default 64) to
//! stdout, against the same task writing the same bytes to /dev/null, run
//! alternately in one run against a real master, worker and dockerd. The
//! difference is what moving the output costs: Docker's logging, the worker
//! following it (and spooling it), uploading it in chunks, and the store
//! writing them. The upload alone (worker log: task finished → output
//! uploaded) is reported apart, and as a reference, the time plain Docker
//! takes for the same thing: `docker run -d`, then `docker logs -f` to the end.
//! The stored output is checked for its size each round.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p cloudai-e2e --bench large_output
//! ```
//! `CLOUDAI_BENCH_ROUNDS` sets the rounds (default 3); `CLOUDAI_TEST_STORE=mongodb`
//! runs the master on nx-27017.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, ensure_test_image};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds of the day of a worker log line's timestamp (`2026-11-27T11:55:47.647383Z ...`).
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let mut parts = time.trim_end_matches('Z').split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Seconds from "task finished" to "whole output uploaded" for `task` in the worker log.
fn upload_seconds(log: &str, task: &str) -> f64 {
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle) && l.contains(task))
            .and_then(seconds_of_day)
            .unwrap_or_else(|| panic!("no '{needle}' line for {task}"))
    };
    (at("whole output uploaded") - at("task finished")).rem_euclid(86_400.0)
}

/// Seconds plain Docker takes to run `command` detached and deliver its whole
/// output with `docker logs -f`.
fn docker_reference(command: &str, bytes: usize) -> f64 {
    let start = Instant::now();
    let output = Command::new("docker")
        .args(["run", "-d", TEST_IMAGE, "sh", "-c", command])
        .output()
        .expect("docker run");
    assert!(output.status.success(), "{output:?}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let mut follow = Command::new("docker")
        .args(["logs", "-f", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker logs");
    let (mut stdout, mut read, mut buffer) = (follow.stdout.take().unwrap(), 0, vec![0; 1 << 16]);
    while let Ok(n) = stdout.read(&mut buffer) {
        if n == 0 {
            break;
        }
        read += n;
    }
    let _ = follow.wait();
    let seconds = start.elapsed().as_secs_f64();
    let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    assert_eq!(read, bytes, "docker logs delivered everything");
    seconds
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Seconds from submitting `command` to its task being completed.
fn run(
    master: &mut Master,
    runtime: &tokio::runtime::Runtime,
    token: &str,
    worker: &str,
    command: &str,
) -> (String, f64) {
    let start = Instant::now();
    let task = master.submit(&format!("task {worker} {TEST_IMAGE} -- sh -c '{command}'"));
    let deadline = start + WAIT * 10;
    loop {
        let (status, body) =
            runtime.block_on(master.http_get(&format!("/api/tasks/{task}"), Some(token)));
        assert_eq!(status, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        match view["task"]["state"].as_str() {
            Some("completed") => return (task, start.elapsed().as_secs_f64()),
            Some("failed" | "lost" | "cancelled" | "timed_out") => panic!("{body}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{task} never completed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let rounds = env_number("CLOUDAI_BENCH_ROUNDS", 3);
    let mib = env_number("CLOUDAI_BENCH_OUTPUT_MIB", 64);
    let bytes = mib << 20;
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let limit = format!("{}m", mib + 1);
    let worker = Worker::join_with(
        &mut master,
        "bench",
        dir.path(),
        &["--max-log-upload", &limit],
    );
    let token = master.api_token("viewer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let writer =
        format!("yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU | head -c {bytes}");
    let (mut quiet, mut loud, mut uploads, mut docker) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (_, seconds) = run(
            &mut master,
            &runtime,
            &token,
            &worker.id,
            &format!("{writer} > /dev/null"),
        );
        quiet.push(seconds);
        let (task, seconds) = run(&mut master, &runtime, &token, &worker.id, &writer);
        loud.push(seconds);
        let (status, view) =
            runtime.block_on(master.http_get(&format!("/api/tasks/{task}"), Some(&token)));
        assert_eq!(status, 200, "{view}");
        let view: serde_json::Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["log_bytes"], bytes, "the whole output is stored");
        assert_eq!(view["full_log"], true);
        uploads.push(upload_seconds(&worker.log(), &task));
        docker.push(docker_reference(&writer, bytes));
    }
    let (q, l) = (median(&mut quiet), median(&mut loud));
    let spread = |v: &[f64]| format!("{:.2}–{:.2}", v[0], v[v.len() - 1]);
    println!(
        "rounds: {rounds}, output {mib} MiB, store {}",
        if cloudai_e2e::store_is_mongodb() {
            "MongoDB (nx-27017)"
        } else {
            "embedded"
        }
    );
    println!(
        "output to /dev/null: submit → completed median {q:.2} s (range {} s)",
        spread(&quiet)
    );
    println!(
        "output to stdout:    submit → completed median {l:.2} s (range {} s)",
        spread(&loud)
    );
    println!(
        "cost of the output: {:.2} s, {:.0} MiB/s",
        l - q,
        mib as f64 / (l - q)
    );
    let u = median(&mut uploads);
    println!(
        "of which the upload (finished → stored): median {u:.2} s (range {} s), {:.0} MiB/s",
        spread(&uploads),
        mib as f64 / u
    );
    let d = median(&mut docker);
    println!(
        "plain Docker, run -d + logs -f to the end: median {d:.2} s (range {} s)",
        spread(&docker)
    );
}
