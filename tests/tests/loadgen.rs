//! The load generator's quick mode as a smoke test: it runs against a real
//! master and its counts add up. Timings are not asserted (docs/PERFORMANCE.md
//! holds measured numbers).

use std::process::Command;

#[test]
fn quick_load_run_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let bins = cloudai_e2e::bin_dir();
    let output = Command::new(bins.join("cloudai-loadgen"))
        .arg("--quick")
        .arg("--master-bin")
        .arg(bins.join("cloudai-master"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run cloudai-loadgen (build it with `cargo build --workspace --bins`)");
    assert!(
        output.status.success(),
        "loadgen failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(summary["workers"], 50);
    assert_eq!(summary["heartbeats"]["failed"], 0);
    assert!(
        summary["heartbeats"]["sent"].as_u64().unwrap() >= 50,
        "{summary}"
    );
    assert_eq!(
        summary["dispatch"]["completed"],
        summary["dispatch"]["tasks"]
    );
    assert_eq!(summary["dispatch"]["submit_to_assign"]["count"], 200);
}
