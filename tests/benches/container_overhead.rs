//! Container start overhead: how much later a task's container is running
//! when submitted to CloudAI than with a plain `docker run -d` of the same
//! offline image, measured side by side (alternating) in one run against a
//! real master, a real worker and the real dockerd.
//!
//! For both paths the start is the wall clock just before the command is
//! issued (the REPL line for CloudAI, the `docker run` process for Docker) and
//! the end is the container's own `State.StartedAt` from `docker inspect`.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p cloudai-e2e --bench container_overhead
//! ```
//! `CLOUDAI_BENCH_ROUNDS` sets the rounds (default 15).

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, WAIT, Worker, ensure_test_image};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, now.
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// `State.StartedAt` of a container in nanoseconds since the epoch, once it runs.
fn started_at(container: &str) -> Option<i128> {
    let output = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            container,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (running, at) = text.trim().split_once(' ')?;
    (running == "true").then(|| parse_rfc3339_ns(at)).flatten()
}

/// Parses Docker's `2026-11-27T09:40:12.123456789Z` (UTC) to nanoseconds.
fn parse_rfc3339_ns(text: &str) -> Option<i128> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60 + s) as i128) * 1_000_000_000 + nanos as i128)
}

fn wait_running(container: &str) -> i128 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(at) = started_at(container) {
            return at;
        }
        assert!(Instant::now() < deadline, "{container} never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let rounds: usize = std::env::var("CLOUDAI_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "bench", dir.path());
    let (mut docker, mut cloudai) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Plain docker run.
        let name = format!("cloudai-bench-{}-{round}", std::process::id());
        let start = now_ns();
        let status = Command::new("docker")
            .args(["run", "-d", "--name", &name, TEST_IMAGE, "sleep", "30"])
            .output()
            .expect("docker run");
        assert!(status.status.success(), "docker run failed: {status:?}");
        docker.push((wait_running(&name) - start) as f64 / 1e6);
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();

        // The same container through CloudAI.
        let start = now_ns();
        let task = master.submit(&format!("task {} {TEST_IMAGE} -- sleep 30", worker.id));
        let container = format!("cloudai-{task}-1");
        cloudai.push((wait_running(&container) - start) as f64 / 1e6);
        master.expect(&format!("cancel {task}"), "stop requested");
        master.poll("tasks", &[&task, "cancelled"], WAIT);
    }
    let (d, c) = (median(&mut docker), median(&mut cloudai));
    let spread = |v: &[f64]| format!("{:.1}–{:.1}", v[0], v[v.len() - 1]);
    println!("rounds: {rounds}");
    println!(
        "docker run -d → running:    median {d:.1} ms (range {} ms)",
        spread(&docker)
    );
    println!(
        "CloudAI submit → running:   median {c:.1} ms (range {} ms)",
        spread(&cloudai)
    );
    println!("overhead of CloudAI (median difference): {:.1} ms", c - d);
}
