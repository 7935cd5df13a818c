//! The task lifecycle in-process, without Docker or a network: a master on
//! the memory store with fake workers (`WorkerCalls`), driven by heartbeats
//! and reports on tokio's paused clock. The end-to-end suite proves the same
//! rules with real binaries; these pin down the timing and every branch.

use crate::core::disconnect::STOP_MARGIN;
use crate::core::events::EventBus;
use crate::core::lifecycle::Lifecycle;
use crate::core::metrics::MasterMetrics;
use crate::core::placement::PlacementMode;
use crate::core::placement::Policy;
use crate::core::registry::Registry;
use crate::core::runtime::{Runtime, Settings};
use crate::core::scheduler::Scheduler;
use crate::core::tasks::Tasks;
use crate::core::tasks::{Placement, TaskRequest};
use crate::core::telemetry::Telemetry;
use crate::core::worker_client::{LogStream, WorkerCalls};
use crate::core::workers::Workers;
use crate::store::{Limits, MemoryStore, TaskRecord, TaskState};
use cloudai_common::ids::WorkerId;
use cloudai_proto::v1::{
    AssignTaskRequest, AssignTaskResponse, CancelTaskRequest, CancelTaskResponse, Heartbeat,
    MasterRegisterRequest, MasterRegisterResponse, RegisterWorkerRequest, StreamTaskLogsRequest,
    TaskResult, TaskStatus, WorkerInfo,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

const INACTIVITY: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(5);

/// Workers as the master sees them: every assignment is recorded (with the
/// paused clock's time) and accepted, unless the address is set to time out.
#[derive(Default)]
struct FakeWorkers {
    assigned: Mutex<Vec<(String, String, u32, Instant)>>,
    timing_out: Mutex<HashSet<String>>,
}

impl FakeWorkers {
    fn assignments(&self) -> Vec<(String, String, u32, Instant)> {
        self.assigned.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl WorkerCalls for FakeWorkers {
    async fn master_register(
        &self,
        _: &str,
        _: MasterRegisterRequest,
    ) -> Result<MasterRegisterResponse, Status> {
        Ok(MasterRegisterResponse::default())
    }

    async fn assign_task(
        &self,
        address: &str,
        request: AssignTaskRequest,
    ) -> Result<AssignTaskResponse, Status> {
        if self.timing_out.lock().unwrap().contains(address) {
            return Err(Status::deadline_exceeded("no answer"));
        }
        let task = request.task.unwrap();
        self.assigned.lock().unwrap().push((
            task.task_id,
            request.worker_id,
            task.attempt,
            Instant::now(),
        ));
        Ok(AssignTaskResponse {
            accepted: true,
            message: String::new(),
        })
    }

    async fn cancel_task(
        &self,
        _: &str,
        _: CancelTaskRequest,
    ) -> Result<CancelTaskResponse, Status> {
        Ok(CancelTaskResponse { found: false })
    }

    async fn stream_task_logs(
        &self,
        _: &str,
        _: StreamTaskLogsRequest,
    ) -> Result<LogStream, Status> {
        Err(Status::unavailable("no logs in these tests"))
    }

    fn forget(&self, _: &str) {}
}

/// The core services, wired as the master wires them, over an in-memory
/// store and fake workers.
struct Core {
    telemetry: Telemetry,
    workers: Workers,
    tasks: Tasks,
}

async fn cluster() -> (Core, Arc<FakeWorkers>) {
    let settings = Settings {
        heartbeat_interval: Duration::from_millis(100),
        inactivity_timeout: INACTIVITY,
        disconnect_window: WINDOW,
        reinvite_interval: Duration::from_secs(3600),
        advertise_addr: String::new(),
        join_token_ttl: Duration::from_secs(3600),
        policy: Policy::Binpack,
        placement_mode: PlacementMode::Builtin,
        agent_timeout: Duration::from_secs(30),
    };
    let workers = Arc::new(FakeWorkers::default());
    let runtime = Runtime {
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    let store = Arc::new(MemoryStore::default());
    let (registry, metrics) = (Registry::default(), Arc::new(MasterMetrics::default()));
    let lifecycle = Lifecycle::load(
        settings,
        store,
        EventBus::default(),
        metrics.clone(),
        runtime,
    )
    .await
    .unwrap();
    let telemetry = Telemetry::new(lifecycle.clone(), registry.clone(), metrics);
    let calls: Arc<dyn WorkerCalls> = workers.clone();
    let tasks = Tasks::new(
        lifecycle.clone(),
        telemetry.clone(),
        registry.clone(),
        calls.clone(),
    );
    let scheduler = Scheduler::new(lifecycle.clone(), registry.clone(), tasks.clone());
    tokio::spawn(scheduler.run());
    let master = Core {
        workers: Workers::new(lifecycle, telemetry.clone(), registry, calls, 50051),
        telemetry,
        tasks,
    };
    (master, workers)
}

fn address(worker_id: &str) -> String {
    format!("10.0.0.{}:50052", worker_id.len())
}

async fn join(master: &Core, worker_id: &str) {
    master
        .workers
        .register(
            &WorkerId::parse("worker", worker_id).unwrap(),
            &address(worker_id),
        )
        .await
        .unwrap();
    let info = WorkerInfo {
        worker_id: worker_id.into(),
        address: address(worker_id),
        cpu_count: 4,
        memory_total_bytes: 8 << 30,
        ..Default::default()
    };
    let request = RegisterWorkerRequest {
        info: Some(info),
        task_ids: Vec::new(),
    };
    master.workers.accept_worker(request, None).await.unwrap();
}

fn beat(master: &Core, worker_id: &str, running: &[String]) {
    master
        .telemetry
        .ingest_heartbeat(Heartbeat {
            worker_id: worker_id.into(),
            cpu_count: 4,
            memory_total_bytes: 8 << 30,
            running_task_ids: running.to_vec(),
            held_task_ids: running.to_vec(),
            ..Default::default()
        })
        .unwrap();
}

async fn submit(master: &Core, placement: Placement, retries: u32) -> String {
    let request = TaskRequest {
        placement,
        image: "busybox".into(),
        command: vec!["true".into()],
        env: BTreeMap::new(),
        limits: Limits::default(),
        timeout_seconds: 0,
        priority: 0,
        max_retries: retries,
    };
    master.tasks.submit_task(request).await.unwrap().id
}

async fn task(master: &Core, task_id: &str) -> TaskRecord {
    master.tasks.lifecycle().task(task_id).await.unwrap()
}

/// Lets time pass in 100 ms steps, `alive` workers heartbeating (with what
/// they run), until `done` holds; panics after a minute of (paused) time.
async fn until(master: &Core, alive: &[(&str, Vec<String>)], done: impl AsyncFnMut(&Core) -> bool) {
    let mut done = done;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(master).await {
        assert!(Instant::now() < deadline, "condition not reached in time");
        for (worker, running) in alive {
            beat(master, worker, running);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn result(task_id: &str, worker_id: &str, attempt: u32, status: TaskStatus) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        worker_id: worker_id.into(),
        status: status as i32,
        exit_code: (status == TaskStatus::Completed).then_some(0),
        attempt,
        ..Default::default()
    }
}

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
