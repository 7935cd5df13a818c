//! `cloudai-master`: parses configuration, binds, starts the master and its REPL.

use anyhow::Context;
use clap::Parser;
use cloudai_master::{Listeners, MasterConfig, cli};
use std::io::IsTerminal;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    runtime.block_on(serve(config, runtime.handle().clone()))
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
        running.master.store().describe()
    );
    // At an interactive REPL, Ctrl-C stops the command being run (a live view),
    // not the master; SIGTERM, `exit` and Ctrl-D stop the master.
    let interactive = !config.no_repl && std::io::stdin().is_terminal();
    if !config.no_repl {
        cli::repl::spawn(running.master.clone(), handle, config.data_dir.clone())?;
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
