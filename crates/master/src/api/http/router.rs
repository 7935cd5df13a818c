//! The HTTP server (axum): the dashboard (`/`), its JSON API (`/api/*`),
//! WebSocket telemetry and logs, Prometheus metrics, health.
//! With TLS on, `/api/*`, `/ws/*` and `/metrics` need an API token (viewer or above) in
//! `Authorization: Bearer <token>` or, for browsers' WebSockets, `?token=`.

use crate::api::http::app::{App, Credential};
use crate::api::http::listener::Peer;
use crate::api::http::{dashboard, logs_ws, rest as api, secrets, telemetry_ws as ws};
use crate::auth::users::Role;
use crate::services::Services;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde_json::{Value, json};

/// Routes served on the HTTP port.
pub fn router(services: &Services) -> Router {
    let app = App::new(services);
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/ws/telemetry", get(ws::all_workers))
        .route("/ws/telemetry/{worker_id}", get(ws::one_worker))
        .route("/ws/logs/{task_id}", get(logs_ws::follow_logs))
        .route("/api/cluster", get(api::cluster))
        .route("/api/tasks", get(api::tasks))
        .route("/api/tasks/{task_id}", get(api::task))
        .route("/api/tasks/{task_id}/log", get(api::task_log))
        .route("/api/secrets", get(secrets::list))
        .route(
            "/api/secrets/{name}",
            axum::routing::put(secrets::set).delete(secrets::remove),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), require_viewer));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(dashboard::routes())
        .merge(protected)
        .with_state(app)
}

/// The bearer token of a request, from the header or the `token` query parameter.
fn bearer(request: &Request) -> Option<String> {
    if let Some(value) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_string)
}

async fn require_viewer(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.0);
    let token = bearer(&request);
    match app.auth.authorize(token.as_deref(), Role::Viewer, peer) {
        Ok(_) => {
            request.extensions_mut().insert(Credential(token));
            next.run(request).await
        }
        Err(error) => api::ApiError::from(error).into_response(),
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics
            .render(app.registry.counts(), &app.lifecycle.active_counts()),
    )
}

/// `GET /healthz`: open, for load balancers and probes; 503 while the store
/// does not answer.
async fn healthz(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let health = api::Health::of(&app).await;
    let status = if health.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_value(&health).unwrap_or_default();
    body["status"] = json!(if health.healthy() { "ok" } else { "degraded" });
    (status, Json(body))
}
