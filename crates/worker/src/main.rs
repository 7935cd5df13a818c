//! `cloudai-worker`: parses configuration, binds a port, starts the worker.

use anyhow::Context;
use clap::Parser;
use cloudai_worker::WorkerConfig;
use cloudai_worker::config::FIRST_WORKER_PORT;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc hands memory freed after a burst of tasks back to the system;
/// glibc's allocator kept ~8 MB of it per burst in its thread arenas
/// (docs/PERFORMANCE.md: a burst of short containers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    cloudai_common::load_dotenv();
    let config = WorkerConfig::parse();
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    cloudai_common::logging::init("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

/// Binds `--port`, or the first free port from 50052 up.
async fn bind(config: &WorkerConfig) -> anyhow::Result<TcpListener> {
    let host = &config.listen_host;
    if let Some(port) = config.port {
        return TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port} (choose another --port)"));
    }
    for port in FIRST_WORKER_PORT..FIRST_WORKER_PORT.saturating_add(1000) {
        if let Ok(listener) = TcpListener::bind((host.as_str(), port)).await {
            return Ok(listener);
        }
    }
    anyhow::bail!(
        "no free port in {FIRST_WORKER_PORT}..{}: pass --port",
        FIRST_WORKER_PORT + 1000
    )
}

async fn serve(config: WorkerConfig) -> anyhow::Result<()> {
    if config.print_metrics {
        return print_metrics(&config).await;
    }
    let listener = bind(&config).await?;
    let shutdown = CancellationToken::new();
    let running = match cloudai_worker::start(config, listener, shutdown.clone()).await {
        Ok(running) => running,
        Err(error @ cloudai_worker::StartError::NotJoined(_)) => {
            println!("{error}");
            anyhow::bail!("this worker has not joined a cluster");
        }
        Err(error) => return Err(anyhow::Error::new(error).context("cannot start the worker")),
    };
    let worker = &running.worker;
    println!(
        "cloudai-worker {} '{}' listening on {}",
        cloudai_common::VERSION,
        worker.id(),
        worker.address()
    );
    if worker.identity().is_some() {
        println!(
            "joined the cluster; certificate in {}",
            worker.config().data_dir.join("tls").display()
        );
    } else {
        match worker.link().master() {
            Some(master) => {
                println!("registering with the master at {master}; if refused, run on the master:")
            }
            None => {
                println!("waiting for the master; register this worker by running on the master:")
            }
        }
        println!("  register {} {}", worker.id(), worker.address());
    }
    tokio::spawn(async move {
        cloudai_common::signals::stop_requested().await;
        shutdown.cancel();
    });
    running.wait().await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn print_metrics(config: &WorkerConfig) -> anyhow::Result<()> {
    let mut sampler = cloudai_common::host::Sampler::new();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let sample = sampler.sample();
    let info = cloudai_common::host::worker_info(&config.worker_id(), "-");
    let gpus = cloudai_worker::gpu::GpuProbe::new().metrics();
    let json = serde_json::json!({
        "worker_id": info.worker_id,
        "hostname": info.hostname,
        "os": format!("{} {}", info.os, info.os_version),
        "arch": info.arch,
        "cpu_model": info.cpu_model,
        "cpu_count": sample.cpu_count,
        "cpu_percent": sample.cpu_percent,
        "memory_used_bytes": sample.memory_used_bytes,
        "memory_total_bytes": sample.memory_total_bytes,
        "load_average_1m": sample.load_average_1m,
        "network_interfaces": info.network_interfaces.iter().map(|n| serde_json::json!({"name": n.name, "mac": n.mac, "addresses": n.addresses})).collect::<Vec<_>>(),
        "gpus": gpus.iter().map(|g| serde_json::json!({
            "index": g.index,
            "uuid": g.uuid,
            "name": g.name,
            "utilization_percent": g.utilization_percent,
            "memory_used_bytes": g.memory_used_bytes,
            "memory_total_bytes": g.memory_total_bytes,
            "temperature_celsius": g.temperature_celsius,
            "power_watts": g.power_watts,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
