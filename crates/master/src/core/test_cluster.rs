//! A master's core in-process for unit tests: the services wired as
//! `services.rs` wires them, over the memory store, with fake workers
//! (`WorkerCalls`) that record every assignment on tokio's clock.

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
use crate::store::{Limits, MemoryStore, TaskRecord};
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

pub(super) const INACTIVITY: Duration = Duration::from_secs(1);
pub(super) const WINDOW: Duration = Duration::from_secs(5);

/// Workers as the master sees them: every assignment is recorded (with the
/// paused clock's time) and accepted, unless the address is set to time out.
#[derive(Default)]
pub(super) struct FakeWorkers {
    assigned: Mutex<Vec<(String, String, u32, Instant)>>,
    pub(super) timing_out: Mutex<HashSet<String>>,
}

impl FakeWorkers {
    pub(super) fn assignments(&self) -> Vec<(String, String, u32, Instant)> {
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
pub(super) struct Core {
    pub(super) telemetry: Telemetry,
    pub(super) workers: Workers,
    pub(super) tasks: Tasks,
    pub(super) scheduler: Scheduler,
}

pub(super) async fn cluster() -> (Core, Arc<FakeWorkers>) {
    cluster_with(|_| {}).await
}

/// [`cluster`] with some settings changed.
pub(super) async fn cluster_with(change: impl FnOnce(&mut Settings)) -> (Core, Arc<FakeWorkers>) {
    let mut settings = Settings {
        heartbeat_interval: Duration::from_millis(100),
        inactivity_timeout: INACTIVITY,
        disconnect_window: WINDOW,
        reinvite_interval: Duration::from_secs(3600),
        advertise_addr: String::new(),
        join_token_ttl: Duration::from_secs(3600),
        policy: Policy::Binpack,
        placement_mode: PlacementMode::Builtin,
        agent_timeout: Duration::from_secs(30),
        secrets_key: None,
    };
    change(&mut settings);
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
    tokio::spawn(scheduler.clone().run());
    let master = Core {
        scheduler,
        workers: Workers::new(lifecycle, telemetry.clone(), registry, calls, 50051),
        telemetry,
        tasks,
    };
    (master, workers)
}

pub(super) fn address(worker_id: &str) -> String {
    format!("10.0.0.{}:50052", worker_id.len())
}

pub(super) async fn join(master: &Core, worker_id: &str) {
    master
        .workers
        .register(
            &WorkerId::parse("worker", worker_id).unwrap(),
            &address(worker_id),
        )
        .await
        .unwrap();
    register(master, worker_id, &[]).await;
}

/// The worker's `RegisterWorker`, listing the tasks it holds.
pub(super) async fn register(master: &Core, worker_id: &str, held: &[String]) {
    let info = WorkerInfo {
        worker_id: worker_id.into(),
        address: address(worker_id),
        cpu_count: 4,
        memory_total_bytes: 8 << 30,
        ..Default::default()
    };
    let request = RegisterWorkerRequest {
        info: Some(info),
        task_ids: held.to_vec(),
    };
    master.workers.accept_worker(request, None).await.unwrap();
}

pub(super) fn beat(master: &Core, worker_id: &str, running: &[String]) {
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

/// A `true` task in busybox.
pub(super) fn request(placement: Placement, retries: u32) -> TaskRequest {
    TaskRequest {
        placement,
        image: "busybox".into(),
        command: vec!["true".into()],
        env: BTreeMap::new(),
        limits: Limits::default(),
        timeout_seconds: 0,
        priority: 0,
        max_retries: retries,
        options: Default::default(),
        owner: "ana".into(),
    }
}

pub(super) async fn submit(master: &Core, placement: Placement, retries: u32) -> String {
    let request = request(placement, retries);
    master.tasks.submit_task(request).await.unwrap().id
}

pub(super) async fn task(master: &Core, task_id: &str) -> TaskRecord {
    master.tasks.lifecycle().task(task_id).await.unwrap()
}

/// Lets time pass in 100 ms steps, `alive` workers heartbeating (with what
/// they run), until `done` holds; panics after a minute of (paused) time.
pub(super) async fn until(
    master: &Core,
    alive: &[(&str, Vec<String>)],
    done: impl AsyncFnMut(&Core) -> bool,
) {
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

pub(super) fn result(
    task_id: &str,
    worker_id: &str,
    attempt: u32,
    status: TaskStatus,
) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        worker_id: worker_id.into(),
        status: status as i32,
        exit_code: (status == TaskStatus::Completed).then_some(0),
        attempt,
        ..Default::default()
    }
}
