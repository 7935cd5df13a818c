//! The HTTP server (axum): health now; telemetry WebSocket and metrics build on it.

use crate::cluster::Master;
use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

/// Routes served on the HTTP port.
pub fn router(master: Master) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(master)
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
