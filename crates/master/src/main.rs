//! `cloudai-master`: parses configuration, binds, starts the master and its REPL.

use anyhow::Context;
use clap::Parser;
use cloudai_master::store::transfer;
use cloudai_master::{Listeners, MasterConfig, StoreCommand, cli};
use std::io::IsTerminal;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc returns freed memory to the system far better than glibc's
/// allocator under tokio's many threads (docs/PERFORMANCE.md: idle and
/// WebSocket fan-out memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    cloudai_common::load_dotenv();
    let config = MasterConfig::parse();
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    cloudai_common::logging::init("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match config.command.clone() {
        Some(command) => runtime.block_on(transfer(&config, command)),
        None => runtime.block_on(serve(config, runtime.handle().clone())),
    }
}

/// `export` / `import`: copies records out of or into the configured store.
async fn transfer(config: &MasterConfig, command: StoreCommand) -> anyhow::Result<()> {
    use std::io::{BufReader, BufWriter};
    let store = cloudai_master::open_backend(config)
        .await
        .context("cannot open the store (with the embedded store: is a master still running on this data directory?)")?;
    let progress = |counts: &transfer::Counts| eprintln!("... {counts}");
    let (verb, route, counts) = match command {
        StoreCommand::Export { file } => {
            let counts = if file.as_os_str() == "-" {
                transfer::export(&*store, &mut BufWriter::new(std::io::stdout()), progress).await
            } else {
                let out = std::fs::File::create(&file)
                    .with_context(|| format!("cannot create {}", file.display()))?;
                transfer::export(&*store, &mut BufWriter::new(out), progress).await
            };
            let route = format!("from {} to {}", store.describe(), file.display());
            ("exported", route, counts)
        }
        StoreCommand::Import { file } => {
            let counts = if file.as_os_str() == "-" {
                transfer::import(&*store, std::io::stdin().lock(), progress).await
            } else {
                let input = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                transfer::import(&*store, BufReader::new(input), progress).await
            };
            let route = format!("from {} into {}", file.display(), store.describe());
            ("imported", route, counts)
        }
    };
    let counts = counts.with_context(|| format!("{verb} nothing complete {route}"))?;
    eprintln!("{verb} {counts} {route}");
    Ok(())
}

async fn serve(config: MasterConfig, handle: tokio::runtime::Handle) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(config.grpc_addr).await.with_context(|| {
        format!(
            "cannot listen for gRPC on {} (is another master running? use --grpc-addr)",
            config.grpc_addr
        )
    })?;
    let http = TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {} (use --http-addr)",
            config.http_addr
        )
    })?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let shutdown = CancellationToken::new();
    let running = cloudai_master::start(&config, Listeners { grpc, http }, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "cannot start the master with data directory {}",
                config.data_dir.display()
            )
        })?;
    println!(
        "cloudai-master {}: gRPC on {grpc_addr}, HTTP on {http_addr}, store: {}",
        cloudai_common::VERSION,
        running.services.vitals_store_description()
    );
    // At an interactive REPL, Ctrl-C stops the command being run (a live view),
    // not the master; SIGTERM, `exit` and Ctrl-D stop the master.
    let interactive = !config.no_repl && std::io::stdin().is_terminal();
    if !config.no_repl {
        cli::spawn(running.services.clone(), handle, config.data_dir.clone())?;
    }
    tokio::spawn(async move {
        let stop = async {
            if interactive {
                cloudai_common::signals::terminate_requested().await;
            } else {
                cloudai_common::signals::stop_requested().await;
            }
        };
        tokio::select! {
            _ = stop => shutdown.cancel(),
            _ = shutdown.cancelled() => {}
        }
    });
    running.wait().await;
    tracing::info!("master stopped");
    Ok(())
}
