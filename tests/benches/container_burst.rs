//! A burst of short containers: N busybox `true` tasks submitted at once to
//! a real master and one real worker on the real dockerd, against N plain
//! `docker run --rm` of the same image started at once, alternating rounds
//! in one run; plus the daemons' memory (RSS) idle and after each burst.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p cloudai-e2e --bench container_burst
//! ```
//! `CLOUDAI_BURST` sets N (default 200), `CLOUDAI_BENCH_ROUNDS` the rounds
//! (default 3). Each round also runs the same burst as a Docker Swarm
//! replicated job on a single-node swarm made for it (`CLOUDAI_BENCH_SWARM=0`
//! skips it). Prints tasks/s for each path (the median round) and the ratios.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, Worker, ensure_test_image};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// N `docker run --rm` at once; seconds until the last one exited.
fn docker_burst(n: usize) -> f64 {
    let start = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new("docker")
                .args(["run", "--rm", TEST_IMAGE, "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker run")
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "docker run failed");
    }
    start.elapsed().as_secs_f64()
}

/// Runs `docker ARGS`, returning its stdout when it succeeded.
fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Docker Swarm replicated job of N tasks at once (`--max-concurrent N`),
/// on a single-node swarm made for the round and left after it; seconds
/// until all N tasks completed, or `None` where Swarm cannot start here.
fn swarm_burst(n: usize) -> Option<f64> {
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    let made = state.trim() != "active";
    if made {
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    }
    let name = format!("cloudai-burst-{}", std::process::id());
    let replicas = n.to_string();
    let start = Instant::now();
    let created = docker(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        &name,
        "--mode",
        "replicated-job",
        "--replicas",
        &replicas,
        "--max-concurrent",
        &replicas,
        "--restart-condition",
        "none",
        TEST_IMAGE,
        "true",
    ]);
    let mut elapsed = None;
    let deadline = start + Duration::from_secs(600);
    while created.is_some() && Instant::now() < deadline {
        let states = docker(&["service", "ps", &name, "--format", "{{.CurrentState}}"]);
        let complete = states.map_or(0, |s| {
            s.lines().filter(|l| l.starts_with("Complete")).count()
        });
        if complete >= n {
            elapsed = Some(start.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    docker(&["service", "rm", &name]);
    // The job's containers go with the service; wait for them before leaving.
    let label = format!("label=com.docker.swarm.service.name={name}");
    for _ in 0..120 {
        let left = docker(&["ps", "-aq", "--filter", &label]).unwrap_or_default();
        if left.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if made {
        docker(&["swarm", "leave", "--force"]);
    }
    elapsed
}

/// Completed tasks the master's `status` reports.
fn completed(master: &mut Master) -> usize {
    let line = master.poll("status", &["tasks:"], Duration::from_secs(30));
    line.split(',')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("tasks:")
                .trim()
                .strip_suffix(" completed")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// N tasks submitted at once (one REPL line each, no waiting between);
/// seconds until all of them completed.
fn cloudai_burst(master: &mut Master, worker: &str, n: usize, before: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        master.send(&format!("task {worker} {TEST_IMAGE} -- true"));
    }
    let deadline = start + Duration::from_secs(600);
    while completed(master) < before + n {
        assert!(Instant::now() < deadline, "the burst did not complete");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let n = env_number("CLOUDAI_BURST", 200);
    let rounds = env_number("CLOUDAI_BENCH_ROUNDS", 3);
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let worker = Worker::join(&mut master, "burst", dir.path());
    std::thread::sleep(Duration::from_secs(2));
    let idle = (rss_kib(master.pid()), rss_kib(worker.pid()));
    let with_swarm = std::env::var("CLOUDAI_BENCH_SWARM").map_or(true, |v| v != "0");
    let (mut docker, mut cloudai, mut swarm, mut after) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        docker.push(n as f64 / docker_burst(n));
        let before = round * n;
        cloudai.push(n as f64 / cloudai_burst(&mut master, &worker.id, n, before));
        after.push((rss_kib(master.pid()), rss_kib(worker.pid())));
        if with_swarm {
            match swarm_burst(n) {
                Some(seconds) => swarm.push(n as f64 / seconds),
                None => eprintln!("Docker Swarm could not run the job here; skipped"),
            }
        }
    }
    let spread = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        format!("{:.1}–{:.1}", v[0], v[v.len() - 1])
    };
    let (d, c) = (median(&mut docker.clone()), median(&mut cloudai.clone()));
    println!("burst of {n} busybox `true`, {rounds} rounds");
    println!(
        "docker run --rm, all at once: median {d:.1} tasks/s (range {})",
        spread(&docker)
    );
    println!(
        "CloudAI, one worker:          median {c:.1} tasks/s (range {})",
        spread(&cloudai)
    );
    println!("ratio CloudAI / docker run:   {:.2}", c / d);
    if !swarm.is_empty() {
        let w = median(&mut swarm.clone());
        println!(
            "Docker Swarm job, one node:   median {w:.1} tasks/s (range {})",
            spread(&swarm)
        );
        println!("ratio CloudAI / Swarm:        {:.2}", c / w);
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "RSS idle: master {:.1} MiB + worker {:.1} MiB = {:.1} MiB",
        mib(idle.0),
        mib(idle.1),
        mib(idle.0 + idle.1)
    );
    for (round, (m, w)) in after.iter().enumerate() {
        println!(
            "RSS after round {}: master {:.1} MiB + worker {:.1} MiB = {:.1} MiB",
            round + 1,
            mib(*m),
            mib(*w),
            mib(m + w)
        );
    }
}
