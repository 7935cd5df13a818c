//! Micro-benchmarks of the master's hot paths: placement against 1k/10k
//! workers and a pass of 1,000 placements (a scan per task against the
//! `Placer`), telemetry event JSON encoding, the heartbeat handler's work, and
//! durable store writes per backend (embedded, single and batched, through the
//! master's journal; MongoDB on an `nx-27017` server), and log chunk writes
//! and reads by chunk size, and reading a connection through the connection
//! gate's idle-timeout wrapper against a plain socket.
//! Run: `cargo bench -p cloudai-master --bench hot_paths`.

use cloudai_common::ids::WorkerId;
use cloudai_master::store::{
    EmbeddedStore, LogChunkRecord, MongoStore, ResilientStore, Store, TaskRecord, TaskState, Write,
};
use cloudai_master::{
    Candidate, Demand, Envelope, Event, GpuSample, Metrics, PlacementMode, Placer, Policy, Runtime,
    Services, Settings, place,
};
use cloudai_proto::v1::Heartbeat;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CPU: i64 = 1_000_000_000;

fn workers(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            id: format!("worker-{i:05}"),
            nano_cpus: 64 * CPU,
            memory_bytes: 512 << 30,
            gpus: (0..8).map(|g| format!("GPU-{i:05}-{g}")).collect(),
            // Uneven load so every policy has to compare.
            reserved_nano_cpus: (i as i64 % 60) * CPU,
            reserved_memory_bytes: (i as i64 % 500) << 30,
            used_gpus: (0..(i % 8)).map(|g| format!("GPU-{i:05}-{g}")).collect(),
            live_memory_used: Some((i as i64 % 400) << 30),
            live_cpu_percent: Some((i % 100) as f32),
            allowed_host_paths: Vec::new(),
            allow_host_network: false,
            allow_host_ipc: false,
        })
        .collect()
}

fn placement(c: &mut Criterion) {
    let demand = Demand {
        nano_cpus: 2 * CPU,
        memory_bytes: 16 << 30,
        gpus: cloudai_common::resources::GpuRequest::Count(2),
        host_paths: Vec::new(),
        host_network: false,
        host_ipc: false,
    };
    let mut group = c.benchmark_group("placement");
    for n in [1_000, 10_000] {
        let candidates = workers(n);
        for policy in [Policy::Binpack, Policy::Spread, Policy::LeastLoaded] {
            group.bench_with_input(
                BenchmarkId::new(format!("{policy:?}"), n),
                &candidates,
                |b, candidates| {
                    b.iter(|| place(black_box(&demand), black_box(candidates), policy).unwrap())
                },
            );
        }
    }
    group.finish();
}

/// One scheduling pass: 1,000 like tasks placed in a row over 10,000
/// workers, reserving as they go; a `place` scan per task against the pass's
/// [`Placer`].
fn placement_pass(c: &mut Criterion) {
    let demand = Demand {
        nano_cpus: CPU / 10,
        memory_bytes: 1 << 30,
        ..Demand::default()
    };
    let candidates = workers(10_000);
    let mut group = c.benchmark_group("placement_pass_1000_tasks");
    group.sample_size(10);
    group.bench_function("scan_per_task/10000", |b| {
        b.iter(|| {
            let mut candidates = candidates.clone();
            for _ in 0..1000 {
                let choice = place(&demand, &candidates, Policy::Binpack).unwrap();
                candidates[choice.index].reserve(demand.nano_cpus, demand.memory_bytes, &[]);
            }
            black_box(candidates)
        })
    });
    group.bench_function("placer/10000", |b| {
        b.iter(|| {
            let mut placer = Placer::new(candidates.clone(), Policy::Binpack);
            for _ in 0..1000 {
                black_box(placer.place(&demand).unwrap());
            }
            placer
        })
    });
    group.finish();
}

fn telemetry_json(c: &mut Criterion) {
    let metrics = Metrics {
        sampled_at: 1_700_000_000_000,
        cpu_percent: 37.5,
        cpu_count: 64,
        load_average_1m: 12.3,
        memory_used_bytes: 200 << 30,
        memory_total_bytes: 512 << 30,
        disk_used_bytes: 1 << 40,
        disk_total_bytes: 4 << 40,
        gpus: (0..8)
            .map(|g| GpuSample {
                index: g,
                uuid: format!("GPU-f565c51d-e9e8-3bce-7cac-9aff6fc9b6a{g}"),
                name: "NVIDIA H200".into(),
                utilization_percent: 88.0,
                memory_used_bytes: 100 << 30,
                memory_total_bytes: 141 << 30,
                temperature_celsius: 61.0,
                power_watts: 540.5,
                task_id: Some("t-0123456789ab".into()),
            })
            .collect(),
        running_task_ids: vec!["t-0123456789ab".into(); 4],
    };
    c.bench_function("telemetry_event_json_8_gpus", |b| {
        b.iter(|| {
            let envelope = Envelope::new(
                42,
                1_700_000_000_000,
                Event::Telemetry {
                    worker_id: "gpu-node-17".into(),
                    metrics: metrics.clone(),
                },
            );
            black_box(envelope.json())
        })
    });
}

fn settings() -> Settings {
    Settings {
        heartbeat_interval: Duration::from_secs(5),
        inactivity_timeout: Duration::from_secs(30),
        disconnect_window: Duration::from_secs(60),
        reinvite_interval: Duration::from_secs(3600),
        advertise_addr: String::new(),
        join_token_ttl: Duration::from_secs(3600),
        policy: Policy::Binpack,
        placement_mode: PlacementMode::Builtin,
        agent_timeout: Duration::from_secs(30),
        secrets_key: None,
    }
}

/// What `SendHeartbeat` does once the request is decoded: registry check and
/// hand-off to the worker's telemetry task (which runs in the background).
fn heartbeat_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let master = runtime.block_on(async {
        let tasks = Runtime {
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let master = Services::load(settings(), store, None, 0, tasks)
            .await
            .unwrap();
        for i in 0..1000 {
            master
                .workers()
                .register(
                    &WorkerId::parse("worker", &format!("w{i:04}")).unwrap(),
                    "127.0.0.1:1",
                )
                .await
                .unwrap();
        }
        master
    });
    let _in_runtime = runtime.enter();
    let heartbeat = |i: usize| Heartbeat {
        worker_id: format!("w{:04}", i % 1000),
        cpu_percent: 42.0,
        cpu_count: 64,
        memory_used_bytes: 100 << 30,
        memory_total_bytes: 512 << 30,
        ..Default::default()
    };
    let beats: Vec<Heartbeat> = (0..1000).map(heartbeat).collect();
    let mut next = 0;
    c.bench_function("heartbeat_ingest_1k_workers", |b| {
        b.iter(|| {
            next = (next + 1) % beats.len();
            black_box(master.telemetry().ingest_heartbeat(beats[next].clone()))
        })
    });
}

fn store_writes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut task = TaskRecord {
        command: vec!["true".into()],
        ..TaskRecord::queued("", "busybox", 0)
    };
    let mut n = 0u64;
    c.bench_function("embedded_store_put_task_fsync", |b| {
        b.iter(|| {
            n += 1;
            task.id = format!("t-{n:012}");
            runtime.block_on(store.put_task(&task)).unwrap()
        })
    });
    task.id = "t-conditional".into();
    runtime.block_on(store.put_task(&task)).unwrap();
    c.bench_function("embedded_store_conditional_update_fsync", |b| {
        b.iter(|| {
            runtime
                .block_on(store.update_task_if(&task, &[TaskState::Queued]))
                .unwrap()
        })
    });
}

/// The runtime the store benchmarks drive their calls on.
fn two_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` new tasks as one batch of writes.
fn task_batch(prefix: &str, round: u64, n: usize) -> Vec<Write> {
    (0..n)
        .map(|i| {
            Write::PutTask(TaskRecord::queued(
                &format!("{prefix}-{round}-{i}"),
                "busybox",
                0,
            ))
        })
        .collect()
}

/// Group commit: 64 tasks in one `write_batch` (one fsync), and one task
/// through the master's journal (`ResilientStore` over the embedded store).
fn store_batches(c: &mut Criterion) {
    let runtime = two_thread_runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut round = 0;
    c.bench_function("embedded_store_batch_64_tasks_fsync", |b| {
        b.iter(|| {
            round += 1;
            runtime
                .block_on(store.write_batch(&task_batch("b", round, 64)))
                .unwrap()
        })
    });
    let journal = runtime
        .block_on(ResilientStore::load(Arc::new(store)))
        .unwrap();
    let mut n = 0u64;
    c.bench_function("journal_over_embedded_put_task_fsync", |b| {
        b.iter(|| {
            n += 1;
            let task = TaskRecord::queued(&format!("j-{n}"), "busybox", 0);
            runtime.block_on(journal.put_task(&task)).unwrap()
        })
    });
}

/// The same writes on MongoDB, against a file-backed `nx-27017` server started
/// here (skipped with a note when `nx-27017` is not installed), or the server
/// at `CLOUDAI_BENCH_MONGODB_URI` (named `mongodb_external`). Beside them, the
/// driver alone against the same server: the server's own bound.
fn mongodb_writes(c: &mut Criterion) {
    let external = std::env::var("CLOUDAI_BENCH_MONGODB_URI").ok();
    if external.is_none()
        && std::process::Command::new("nx-27017")
            .arg("--help")
            .output()
            .is_err()
    {
        eprintln!("nx-27017 not installed: MongoDB store benchmarks skipped");
        return;
    }
    let server = external.is_none().then(cloudai_e2e::MongoServer::temporary);
    let (uri, name) = match (&external, &server) {
        (Some(uri), _) => (uri.clone(), "mongodb_external"),
        (None, Some(server)) => (server.uri.clone(), "mongodb_nx27017"),
        (None, None) => unreachable!("one of them is set"),
    };
    let runtime = two_thread_runtime();
    let store = runtime
        .block_on(MongoStore::connect(&uri, "bench"))
        .expect("connect to the MongoDB server");
    driver_only(c, name, &uri, &runtime);
    let mut n = 0u64;
    c.bench_function(&format!("{name}_put_task"), |b| {
        b.iter(|| {
            n += 1;
            let task = TaskRecord::queued(&format!("m-{n}"), "busybox", 0);
            runtime.block_on(store.put_task(&task)).unwrap()
        })
    });
    let mut round = 0;
    c.bench_function(&format!("{name}_batch_64_tasks"), |b| {
        b.iter(|| {
            round += 1;
            runtime
                .block_on(store.write_batch(&task_batch("mb", round, 64)))
                .unwrap()
        })
    });
    log_chunk_benches(c, name, &store, &runtime);
}

/// The driver with no store code: one small document upserted per round
/// trip, and 64 in one multi-statement `update` (what a store batch sends).
fn driver_only(c: &mut Criterion, name: &str, uri: &str, runtime: &tokio::runtime::Runtime) {
    use mongodb::bson::doc;
    let client = runtime
        .block_on(mongodb::Client::with_uri_str(uri))
        .expect("a MongoDB client");
    let db = client.database("bench_driver");
    let docs = db.collection::<mongodb::bson::Document>("D");
    // Indexed by id, as the store's collections are.
    let index = mongodb::IndexModel::builder()
        .keys(doc! { "id": 1 })
        .build();
    runtime
        .block_on(async { docs.create_index(index).await })
        .expect("an index");
    let mut n = 0u64;
    c.bench_function(&format!("{name}_driver_upsert_one"), |b| {
        b.iter(|| {
            n += 1;
            let id = format!("d-{n}");
            let call = docs
                .replace_one(doc! { "id": &id }, doc! { "id": &id, "state": "queued" })
                .upsert(true);
            runtime.block_on(async { call.await }).unwrap()
        })
    });
    c.bench_function(&format!("{name}_driver_update_64"), |b| {
        b.iter(|| {
            n += 1;
            let updates: Vec<_> = (0..64)
                .map(|k| {
                    let id = format!("u-{n}-{k}");
                    doc! { "q": { "id": &id }, "u": { "id": &id, "state": "queued" }, "upsert": true }
                })
                .collect();
            let command = doc! { "update": "D", "updates": updates, "ordered": false };
            runtime.block_on(async { db.run_command(command).await }).unwrap()
        })
    });
}

/// Chunk sizes the log benchmarks compare.
const CHUNK_SIZES: [(usize, &str); 3] = [(64 << 10, "64k"), (256 << 10, "256k"), (1 << 20, "1m")];

/// Writing (durably) and reading log chunks of each size on `store`.
fn log_chunk_benches(
    c: &mut Criterion,
    name: &str,
    store: &dyn Store,
    runtime: &tokio::runtime::Runtime,
) {
    let mut group = c.benchmark_group(format!("{name}_log_chunks"));
    for (size, label) in CHUNK_SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut chunk = LogChunkRecord {
            task_id: format!("t-{label}"),
            attempt: 1,
            seq: 0,
            data: (0..size).map(|i| b'a' + (i % 26) as u8).collect(),
        };
        group.bench_function(BenchmarkId::new("put", label), |b| {
            b.iter(|| {
                chunk.seq += 1;
                runtime.block_on(store.put_log_chunk(&chunk)).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("read_8", label), |b| {
            b.iter(|| {
                let page = runtime
                    .block_on(store.log_chunks(&chunk.task_id, 1, 1, 8))
                    .unwrap();
                black_box(page)
            })
        });
    }
    group.finish();
}

fn embedded_log_chunks(c: &mut Criterion) {
    let runtime = two_thread_runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    log_chunk_benches(c, "embedded", &store, &runtime);
}

/// 16 MiB over loopback TCP in 64 KiB writes, read plainly and through the
/// gate's wrapper (`cloudai_common::net::Guarded`), which every connection to
/// the master's ports goes through.
fn connection_io(c: &mut Criterion) {
    use cloudai_common::net::{ConnectionGate, ConnectionLimits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOTAL: usize = 16 << 20;
    let runtime = two_thread_runtime();
    let gate = ConnectionGate::new(ConnectionLimits::default());
    let mut group = c.benchmark_group("connection_read_16MiB");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(20);
    for guarded in [false, true] {
        let name = if guarded { "guarded" } else { "plain" };
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let address = listener.local_addr().unwrap();
                    let sender = tokio::spawn(async move {
                        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                        let block = vec![7u8; 64 << 10];
                        for _ in 0..TOTAL / block.len() {
                            stream.write_all(&block).await.unwrap();
                        }
                    });
                    let mut buf = vec![0u8; 64 << 10];
                    let mut read = 0;
                    if guarded {
                        let (mut stream, _) = gate.accept(&listener).await;
                        while read < TOTAL {
                            read += stream.read(&mut buf).await.unwrap();
                        }
                    } else {
                        let (mut stream, _) = listener.accept().await.unwrap();
                        while read < TOTAL {
                            read += stream.read(&mut buf).await.unwrap();
                        }
                    }
                    sender.await.unwrap();
                    black_box(read)
                })
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    connection_io,
    placement,
    placement_pass,
    telemetry_json,
    heartbeat_ingest,
    store_writes,
    store_batches,
    embedded_log_chunks,
    mongodb_writes
);
criterion_main!(benches);
