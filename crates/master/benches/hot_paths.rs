//! Micro-benchmarks of the master's hot paths: placement against 1k/10k
//! workers, telemetry event JSON encoding, and the task state check.
//! Run: `cargo bench -p cloudai-master --bench hot_paths`.

use cloudai_master::events::{Envelope, Event, GpuSample, Metrics};
use cloudai_master::placement::{Candidate, Demand, Policy, place};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;

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
        })
        .collect()
}

fn placement(c: &mut Criterion) {
    let demand = Demand {
        nano_cpus: 2 * CPU,
        memory_bytes: 16 << 30,
        gpu_count: 2,
        gpu_ids: vec![],
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

criterion_group!(benches, placement, telemetry_json);
criterion_main!(benches);
