//! The sample task, built offline and run end to end: watched live from the
//! REPL, and submitted by sample_tasks/submit.py through the MasterAgent API.

use cloudai_e2e::{Master, MasterOptions, WAIT, Worker, word_after};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "cloudai-sample/python-task:latest";

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
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
    for extra in [&[][..], &["--bad-input"][..]] {
        let output = Command::new("python3")
            .arg(repo().join("sample_tasks/submit.py"))
            .args([
                "--master",
                &master.grpc_addr,
                "--token",
                &token,
                "--timeout",
                "90",
            ])
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
    }
    let row = master.poll(
        "tasks",
        &["failed", "cloudai-sample"],
        Duration::from_secs(10),
    );
    assert!(
        row.contains(" 2 "),
        "the bad-input run failed with exit code 2: {row}"
    );
}
