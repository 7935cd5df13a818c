//! The load generator's quick mode as a smoke test: it runs against a real
//! master (simulated workers heartbeating, four WebSocket clients and a stalled
//! one, workers that die and come back, tasks) and its counts add up. Timings are not asserted (docs/PERFORMANCE.md
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
    // Every reading WebSocket client got every telemetry event, despite the
    // stalled client.
    let heartbeats = summary["heartbeats"]["sent"].as_u64().unwrap();
    let dropped = summary["heartbeats"]["telemetry_dropped_by_master"]
        .as_u64()
        .unwrap();
    assert_eq!(summary["websocket"]["clients"], 4);
    assert_eq!(summary["websocket"]["stalled_clients"], 1);
    assert_eq!(
        summary["websocket"]["telemetry_received_min"],
        heartbeats - dropped
    );
    assert_eq!(
        summary["websocket"]["telemetry_received_max"],
        heartbeats - dropped
    );
    assert_eq!(summary["websocket"]["missed"], 0);
    // The churning workers were seen inactive, registered again and are active.
    assert_eq!(summary["churn"]["workers"], 5);
    assert!(
        summary["churn"]["seen_inactive_max"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    assert_eq!(summary["churn"]["came_back"], 5);
    assert_eq!(summary["churn"]["active_at_end"], 50);
}
