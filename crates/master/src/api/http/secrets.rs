//! The secrets API (admin token only); values go in, never out:
//!
//! - `GET /api/secrets`: names, registry hosts and times;
//! - `PUT /api/secrets/{name}` with `{"value": "...", "registry": "host:port"}`
//!   (`registry` optional: set, the value is `USER:PASSWORD` for that registry);
//! - `DELETE /api/secrets/{name}`.

use crate::api::http::app::{App, Credential};
use crate::api::http::rest::ApiError;
use crate::auth::users::Role;
use axum::Json;
use axum::extract::{Extension, Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

/// The body of `PUT /api/secrets/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    value: String,
    #[serde(default)]
    registry: Option<String>,
}

/// The token already passed the router's viewer check (and its rate
/// limit); this asks for more.
fn admin(app: &App, credential: &Credential) -> Result<(), ApiError> {
    app.auth
        .authorize(credential.0.as_deref(), Role::Admin, None)?;
    Ok(())
}

/// `GET /api/secrets`.
pub async fn list(
    State(app): State<App>,
    Extension(credential): Extension<Credential>,
) -> Result<Json<Value>, ApiError> {
    admin(&app, &credential)?;
    let secrets: Vec<Value> = app
        .tasks
        .secrets()
        .list()
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "registry": s.registry,
                "created_at": s.created_at,
                "updated_at": s.updated_at,
            })
        })
        .collect();
    Ok(Json(json!({ "secrets": secrets })))
}

/// `PUT /api/secrets/{name}`.
pub async fn set(
    State(app): State<App>,
    Extension(credential): Extension<Credential>,
    Path(name): Path<String>,
    Json(body): Json<SetSecret>,
) -> Result<Json<Value>, ApiError> {
    admin(&app, &credential)?;
    let replaced = app
        .tasks
        .secrets()
        .set(&name, &body.value, body.registry.as_deref())
        .await?;
    Ok(Json(json!({ "name": name, "replaced": replaced })))
}

/// `DELETE /api/secrets/{name}`.
pub async fn remove(
    State(app): State<App>,
    Extension(credential): Extension<Credential>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&app, &credential)?;
    app.tasks.secrets().remove(&name).await?;
    Ok(Json(json!({ "name": name, "removed": true })))
}
