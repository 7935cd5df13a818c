//! The HTTP server (axum): WebSocket telemetry, Prometheus metrics, health.

use crate::cluster::Master;
use crate::ws;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

/// Routes served on the HTTP port.
pub fn router(master: Master) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws/telemetry", get(ws::all_workers))
        .route("/ws/telemetry/{worker_id}", get(ws::one_worker))
        .with_state(master)
}

async fn metrics(State(master): State<Master>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        master.render_metrics(),
    )
}

async fn healthz(State(master): State<Master>) -> Json<Value> {
    let (pending, active, inactive) = master.registry().counts();
    Json(json!({
        "status": "ok",
        "store": master.store().describe(),
        "uptime_seconds": master.uptime().as_secs(),
        "workers": { "pending": pending, "active": active, "inactive": inactive },
    }))
}
