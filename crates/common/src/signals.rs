//! Process signals: the futures both daemons use to stop cleanly.

/// Resolves on SIGTERM (never on platforms without it).
pub async fn terminate_requested() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
            tracing::info!("SIGTERM: shutting down");
            return;
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGTERM"),
    }
    std::future::pending::<()>().await;
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, logging which one arrived.
pub async fn stop_requested() {
    tokio::select! {
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => tracing::info!("interrupted: shutting down"),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                terminate_requested().await;
            }
        },
        _ = terminate_requested() => {}
    }
}
