//! The task lifecycle in-process, without Docker or a network: a master on
//! the memory store with fake workers (`WorkerCalls`), driven by heartbeats
//! and reports on tokio's paused clock. The end-to-end suite proves the same
//! rules with real binaries; these pin down the timing and every branch.

use super::test_cluster::*;
use crate::core::disconnect::STOP_MARGIN;
use crate::core::tasks::Placement;
use crate::store::TaskState;
use cloudai_common::ids::WorkerId;
use cloudai_proto::v1::TaskStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A task placed and running on one of two workers, which then goes silent.
async fn running_then_silent() -> (Core, Arc<FakeWorkers>, String, String, String) {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    join(&master, "wbb").await;
    let id = submit(&master, Placement::Auto, 1).await;
    let both = [("wa", vec![]), ("wbb", vec![])];
    until(&master, &both, async |_| !workers.assignments().is_empty()).await;
    let first = workers.assignments()[0].1.clone();
    let other = if first == "wa" { "wbb" } else { "wa" }.to_string();
    let running = [(first.as_str(), vec![id.clone()]), (other.as_str(), vec![])];
    until(&master, &running, async |m| {
        task(m, &id).await.state == TaskState::Running
    })
    .await;
    (master, workers, id, first, other)
}

#[tokio::test(start_paused = true)]
async fn a_silent_workers_task_is_unknown_and_rerun_only_after_the_window() {
    let (master, workers, id, first, other) = running_then_silent().await;
    let silent_since = Instant::now();
    let alive = [(other.as_str(), vec![])];
    until(&master, &alive, async |m| {
        task(m, &id).await.state == TaskState::Unknown
    })
    .await;
    assert!(silent_since.elapsed() >= INACTIVITY);
    assert_eq!(workers.assignments().len(), 1, "not rerun while unknown");
    // The rerun goes to the other worker, after the window and its margin.
    until(&master, &alive, async |_| workers.assignments().len() == 2).await;
    let (rerun_id, rerun_on, attempt, at) = workers.assignments()[1].clone();
    assert_eq!(
        (rerun_id.as_str(), rerun_on.as_str(), attempt),
        (id.as_str(), other.as_str(), 2)
    );
    assert!(
        at - silent_since >= WINDOW + STOP_MARGIN,
        "rerun {:?} after the last heartbeat",
        at - silent_since
    );
    // The first worker's report of attempt 1, once it is back, is kept aside.
    let late = master
        .tasks
        .complete_task(result(&id, &first, 1, TaskStatus::Lost))
        .await
        .unwrap();
    assert_eq!(late.attempt, 2);
    assert_eq!(late.late_results.len(), 1);
    assert_eq!(late.late_results[0].state, TaskState::Lost);
    assert_eq!(late.late_results[0].worker_id, first);
    // Repeated, it is recorded once.
    let again = master
        .tasks
        .complete_task(result(&id, &first, 1, TaskStatus::Lost))
        .await
        .unwrap();
    assert_eq!(again.late_results.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_result_arriving_while_unknown_is_the_outcome() {
    let (master, workers, id, first, other) = running_then_silent().await;
    let alive = [(other.as_str(), vec![])];
    until(&master, &alive, async |m| {
        task(m, &id).await.state == TaskState::Unknown
    })
    .await;
    let done = master
        .tasks
        .complete_task(result(&id, &first, 1, TaskStatus::Completed))
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.attempt, done.exit_code),
        (TaskState::Completed, 1, Some(0))
    );
    // Nothing reruns it afterwards.
    tokio::time::sleep(WINDOW + STOP_MARGIN * 2).await;
    assert_eq!(workers.assignments().len(), 1);
    assert_eq!(task(&master, &id).await.state, TaskState::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_returning_worker_settles_its_unknown_task() {
    let (master, workers, id, first, other) = running_then_silent().await;
    let alive = [(other.as_str(), vec![])];
    until(&master, &alive, async |m| {
        task(m, &id).await.state == TaskState::Unknown
    })
    .await;
    // Back before the window: the task still runs there.
    let both = [(first.as_str(), vec![id.clone()]), (other.as_str(), vec![])];
    until(&master, &both, async |m| {
        task(m, &id).await.state == TaskState::Running
    })
    .await;
    let back = task(&master, &id).await;
    assert_eq!((back.attempt, back.error), (1, None));
    // Heartbeating on, it stays there well past the window.
    let end = Instant::now() + WINDOW + STOP_MARGIN * 2;
    until(&master, &both, async |_| Instant::now() >= end).await;
    assert_eq!(task(&master, &id).await.state, TaskState::Running);
    assert_eq!(workers.assignments().len(), 1, "never rerun");
}

#[tokio::test(start_paused = true)]
async fn the_real_outcome_replaces_a_lost_verdict() {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    let id = submit(
        &master,
        Placement::Worker(WorkerId::parse("worker", "wa").unwrap()),
        0,
    )
    .await;
    let running = [("wa", vec![id.clone()])];
    until(&master, &running, async |m| {
        task(m, &id).await.state == TaskState::Running
    })
    .await;
    until(&master, &[], async |m| {
        task(m, &id).await.state == TaskState::Failed
    })
    .await;
    let failed = task(&master, &id).await;
    assert!(failed.error.unwrap().contains("disconnect window"));
    // The worker was cut off, not dead: its real result wins.
    let done = master
        .tasks
        .complete_task(result(&id, "wa", 1, TaskStatus::Completed))
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.exit_code),
        (TaskState::Completed, Some(0))
    );
    // A repeat changes nothing, and a failed report after it neither.
    let repeat = master
        .tasks
        .complete_task(result(&id, "wa", 1, TaskStatus::Failed))
        .await
        .unwrap();
    assert_eq!(repeat.state, TaskState::Completed);
    assert_eq!(workers.assignments().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_assignment_leaves_the_task_unknown_not_requeued() {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    workers.timing_out.lock().unwrap().insert(address("wa"));
    let id = submit(
        &master,
        Placement::Worker(WorkerId::parse("worker", "wa").unwrap()),
        2,
    )
    .await;
    let state = task(&master, &id).await;
    assert_eq!((state.state, state.attempt), (TaskState::Unknown, 1));
    // The worker did get it: its heartbeat says it runs.
    let running = [("wa", vec![id.clone()])];
    until(&master, &running, async |m| {
        task(m, &id).await.state == TaskState::Running
    })
    .await;
    assert_eq!(task(&master, &id).await.attempt, 1);
}

#[tokio::test(start_paused = true)]
async fn a_never_started_attempt_is_retried_and_not_completed() {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    let id = submit(
        &master,
        Placement::Worker(WorkerId::parse("worker", "wa").unwrap()),
        1,
    )
    .await;
    let requeued = master
        .tasks
        .complete_task(result(&id, "wa", 1, TaskStatus::Lost))
        .await
        .unwrap();
    assert_eq!((requeued.state, requeued.attempt), (TaskState::Queued, 2));
    let alive = [("wa", vec![])];
    until(&master, &alive, async |_| workers.assignments().len() == 2).await;
    assert_eq!(workers.assignments()[1].2, 2);
    // Without retries left it fails, naming why.
    let failed = master
        .tasks
        .complete_task(result(&id, "wa", 2, TaskStatus::Lost))
        .await
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert!(failed.error.unwrap().starts_with("lost"));
}

/// Found by the history checker (a master restarted mid-dispatch): a worker
/// re-registers with the list of tasks it held just before an assignment
/// reached it. That task is not lost: it is unknown until the worker's
/// heartbeats show it, and it runs once.
#[tokio::test(start_paused = true)]
async fn a_registration_racing_an_assignment_runs_it_once() {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    let id = submit(
        &master,
        Placement::Worker(WorkerId::parse("w", "wa").unwrap()),
        2,
    )
    .await;
    assert_eq!(workers.assignments().len(), 1);
    register(&master, "wa", &[]).await;
    let alive = [("wa", vec![])];
    until(&master, &alive, async |m| {
        task(m, &id).await.state == TaskState::Unknown
    })
    .await;
    // Its heartbeats hold it (the assignment had arrived): running again.
    let running = [("wa", vec![id.clone()])];
    until(&master, &running, async |m| {
        task(m, &id).await.state == TaskState::Running
    })
    .await;
    let later = Instant::now() + WINDOW + STOP_MARGIN + Duration::from_secs(10);
    until(&master, &running, async |_| Instant::now() >= later).await;
    let task = task(&master, &id).await;
    assert_eq!((task.state, task.attempt), (TaskState::Running, 1));
    assert_eq!(workers.assignments().len(), 1, "never assigned twice");
}
