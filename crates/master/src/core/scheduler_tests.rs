//! The scheduler in-process: queue order, retry backoff, waiting reasons and
//! the built-in scheduler covering for an agent, on the harness of
//! `test_cluster.rs` (fake workers, memory store, tokio's clock).

use super::test_cluster::*;
use crate::core::placement::PlacementMode;
use crate::core::tasks::Placement;
use crate::store::TaskState;
use cloudai_proto::v1::TaskStatus;
use std::time::Duration;
use tokio::time::Instant;

/// A task that takes all four CPUs of a test worker.
fn whole_worker(priority: i32) -> crate::core::tasks::TaskRequest {
    let mut request = request(Placement::Auto, 0);
    request.limits.nano_cpus = 4_000_000_000;
    request.priority = priority;
    request
}

#[tokio::test(start_paused = true)]
async fn the_queue_places_higher_priority_first_then_older() {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    let alive = [("wa", vec![])];
    let blocker = master.tasks.submit_task(whole_worker(0)).await.unwrap().id;
    until(&master, &alive, async |_| workers.assignments().len() == 1).await;
    // Submission times are wall-clock milliseconds: keep them apart.
    let apart = || std::thread::sleep(Duration::from_millis(3));
    let low = master.tasks.submit_task(whole_worker(0)).await.unwrap().id;
    apart();
    let high = master.tasks.submit_task(whole_worker(5)).await.unwrap().id;
    apart();
    let later_low = master.tasks.submit_task(whole_worker(0)).await.unwrap().id;
    // Nothing else fits while the blocker holds the worker; each says why.
    let later = Instant::now() + Duration::from_secs(2);
    until(&master, &alive, async |_| Instant::now() >= later).await;
    assert_eq!(workers.assignments().len(), 1);
    let reason = master.scheduler.waiting_reason(&high).unwrap_or_default();
    assert!(reason.contains("free CPUs"), "{reason}");
    // Each finished task frees the worker for the next in queue order.
    let mut finished = blocker;
    for expected in [&high, &low, &later_low] {
        let count = workers.assignments().len();
        master
            .tasks
            .complete_task(result(&finished, "wa", 1, TaskStatus::Completed))
            .await
            .unwrap();
        until(&master, &alive, async |_| {
            workers.assignments().len() == count + 1
        })
        .await;
        finished = workers.assignments()[count].0.clone();
        assert_eq!(&finished, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_after_a_doubling_backoff() {
    let (master, workers) = cluster().await;
    join(&master, "wa").await;
    let alive = [("wa", vec![])];
    let id = master
        .tasks
        .submit_task(request(Placement::Auto, 2))
        .await
        .unwrap()
        .id;
    until(&master, &alive, async |_| workers.assignments().len() == 1).await;
    for (attempt, backoff) in [(1, 1), (2, 2)] {
        let failed_at = Instant::now();
        let requeued = master
            .tasks
            .complete_task(result(&id, "wa", attempt, TaskStatus::Failed))
            .await
            .unwrap();
        assert_eq!(requeued.state, TaskState::Queued);
        until(&master, &alive, async |_| {
            workers.assignments().len() == attempt as usize + 1
        })
        .await;
        let (_, _, next, placed_at) = workers.assignments()[attempt as usize].clone();
        assert_eq!(next, attempt + 1);
        let waited = placed_at - failed_at;
        // Held for the backoff, then placed within a pass or two.
        assert!(waited >= Duration::from_secs(backoff), "{waited:?}");
        assert!(waited < Duration::from_secs(backoff + 2), "{waited:?}");
    }
    // Out of retries: the third failure is final.
    let failed = master
        .tasks
        .complete_task(result(&id, "wa", 3, TaskStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
}

/// The agent window is measured on the wall clock (queue times are stored),
/// so this test runs in real time, with a short window.
#[tokio::test]
async fn the_builtin_scheduler_covers_for_a_silent_agent() {
    let window = Duration::from_millis(600);
    let (master, workers) = cluster_with(|s| {
        s.placement_mode = PlacementMode::Agent;
        s.agent_timeout = window;
    })
    .await;
    join(&master, "wa").await;
    let alive = [("wa", vec![])];
    let submitted = Instant::now();
    let id = master
        .tasks
        .submit_task(request(Placement::Auto, 0))
        .await
        .unwrap()
        .id;
    master.scheduler.schedule_pass().await;
    let reason = master.scheduler.waiting_reason(&id).unwrap_or_default();
    assert!(reason.contains("waiting for agent"), "{reason}");
    assert!(workers.assignments().is_empty());
    until(&master, &alive, async |_| !workers.assignments().is_empty()).await;
    assert!(
        submitted.elapsed() >= window,
        "placed before the agent's window"
    );
}
