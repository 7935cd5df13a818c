//! The sample task, built offline and run end to end: watched live from the
//! REPL, submitted by sample_tasks/submit.py through the MasterAgent API, and
//! run on a named volume it reads its input from and writes its result to.

use cloudai_e2e::{Master, MasterOptions, TEST_IMAGE, Volume, WAIT, Worker, word_after};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "cloudai-sample/python-task:latest";

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Submits a task line, waits until `tasks` shows it `state` (`completed`,
/// `failed`), and returns what `logs` prints for it, its outcome line last.
fn run_to_end(master: &mut Master, line: &str, state: &str) -> String {
    let task = master.submit(line);
    master.poll("tasks", &[&task, state], WAIT);
    let from = master.send(&format!("logs {task}"));
    master.wait_from(from, &format!("task {task} {state}"), WAIT);
    master
        .output()
        .into_iter()
        .skip(from)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` has a line that is exactly `line` (spaces around aside).
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

#[test]
fn the_sample_task_runs_and_reports_bad_input() {
    let built = Command::new("bash")
        .arg(repo().join("sample_tasks/build-offline.sh"))
        .status()
        .expect("build script");
    assert!(built.success(), "sample_tasks/build-offline.sh failed");
    // scripts/test.sh generates the stubs before the suite; generate them here
    // only when missing (another test binary may be reading them).
    if !repo()
        .join("agentic_scheduler/cloudai_proto/master_agent_pb2_grpc.py")
        .exists()
    {
        let generated = Command::new("bash")
            .arg(repo().join("proto/generate.sh"))
            .status()
            .expect("generate.sh");
        assert!(generated.success());
    }

    // Declared before the worker, so removed after it (and its containers).
    let data = Volume::new("sample_data");
    let empty = Volume::new("sample_empty");
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let _worker = Worker::join(&mut master, "sm", dir.path());

    // Live from the REPL: progress lines, then the final state.
    let line = master.expect(
        &format!("task auto {IMAGE} --memory 128m --env STEPS=4 --env DELAY=0.5"),
        "queued",
    );
    let task = word_after(&line, "task ").to_string();
    master.poll("tasks", &[&task, "running"], WAIT);
    let from = master.send(&format!("monitor {task}"));
    master.wait_from(from, "step 4/4", WAIT);
    master.wait_from(from, &format!("task {task} completed (exit code 0)"), WAIT);

    // From a script, through the agent API: a good run and bad input.
    let token = master.api_token("operator");
    let ca = master.data_dir.join("tls/ca.crt");
    let grpc_addr = master.grpc_addr.clone();
    let submit = |extra: &[&str]| {
        let output = Command::new("python3")
            .arg(repo().join("sample_tasks/submit.py"))
            .args(["--master", &grpc_addr, "--token", &token, "--timeout", "90"])
            .arg("--ca")
            .arg(&ca)
            .args(extra)
            .output()
            .expect("run submit.py");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "submit.py {extra:?}:\n{text}");
        assert!(text.contains("ok: the task ended as expected"), "{text}");
    };
    submit(&[]);
    submit(&["--bad-input"]);
    let row = master.poll(
        "tasks",
        &["failed", "cloudai-sample"],
        Duration::from_secs(10),
    );
    assert!(
        row.contains(" 2 "),
        "the bad-input run failed with exit code 2: {row}"
    );

    // On a named volume: a first task writes the input, the sample task reads
    // /data/input.txt (DATA_DIR=/data) and writes /data/result.json, a third
    // task reads the result back.
    let input = format!(
        "task auto {TEST_IMAGE} --volume {}:/data -- sh -c 'echo 3 1.5 -2 > /data/input.txt; echo 10 7 >> /data/input.txt'",
        data.0
    );
    run_to_end(&mut master, &input, "completed");
    let logs = run_to_end(
        &mut master,
        &format!(
            "task auto {IMAGE} --memory 128m --volume {}:/data --env DATA_DIR=/data --env DELAY=0.2",
            data.0
        ),
        "completed",
    );
    for line in [
        "starting: 5 values from /data/input.txt, 0.2s each",
        "step 3/5 value=-2 sum=2.5",
        "step 5/5 value=7 sum=19.5",
        "done: sum 19.5, mean 3.9; wrote /data/result.json",
    ] {
        assert!(has_line(&logs, line), "{line:?} missing:\n{logs}");
    }
    assert!(logs.contains("completed (exit code 0)"), "{logs}");
    let read_back = format!(
        "task auto {TEST_IMAGE} --volume {}:/data:ro -- sh -c 'cat /data/result.json; ls -a /data'",
        data.0
    );
    let out = run_to_end(&mut master, &read_back, "completed");
    let expected =
        r#"{"count": 5, "input": "input.txt", "max": 10, "mean": 3.9, "min": -2, "sum": 19.5}"#;
    assert!(
        has_line(&out, expected),
        "result.json is not {expected}:\n{out}"
    );
    // Written through a temporary file and a rename: none is left behind.
    assert!(
        has_line(&out, "input.txt") && !out.contains(".tmp"),
        "{out}"
    );

    // The same volume through the API: submit.py --volume (STEPS=2 takes the
    // first two values) rewrites the result.
    submit(&["--volume", &data.0, "--steps", "2"]);
    let out = run_to_end(&mut master, &read_back, "completed");
    let expected =
        r#"{"count": 2, "input": "input.txt", "max": 3, "mean": 2.25, "min": 1.5, "sum": 4.5}"#;
    assert!(
        has_line(&out, expected),
        "result.json is not {expected}:\n{out}"
    );

    // A volume without input.txt is bad input: exit code 2, saying so.
    let logs = run_to_end(
        &mut master,
        &format!(
            "task auto {IMAGE} --volume {}:/data --env DATA_DIR=/data",
            empty.0
        ),
        "failed",
    );
    assert!(logs.contains("error: /data/input.txt is missing"), "{logs}");
    assert!(logs.contains("failed (exit code 2)"), "{logs}");
    // A volume Docker created is root's: another user can read the input but
    // not write the result, told before the first step (exit code 1).
    let logs = run_to_end(
        &mut master,
        &format!(
            "task auto {IMAGE} --user 1000:1000 --volume {}:/data --env DATA_DIR=/data",
            data.0
        ),
        "failed",
    );
    assert!(
        logs.contains(
            "error: cannot write the result in /data (uid 1000, gid 1000): Permission denied"
        ),
        "{logs}"
    );
    assert!(
        logs.contains("failed (exit code 1)") && !logs.contains("step 1/"),
        "{logs}"
    );
}
