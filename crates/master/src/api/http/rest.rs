//! The JSON API behind the dashboard (viewer token, like the WebSocket
//! telemetry):
//!
//! - `GET /api/cluster`: workers by state, tasks by state, queue depth, uptime, store health;
//! - `GET /api/tasks?state=&worker=&limit=`: tasks, most recent first;
//! - `GET /api/tasks/{id}`: one task, with its stored log tail once it ended;
//! - `GET /api/tasks/{id}/log`: a finished task's whole stored output, as text.
//!
//! `/api/secrets` (admin only) is in `secrets.rs`.
//! `GET /ws/logs/{id}` (a task's output live) is in `logs_ws.rs`.
//!
//! Task environments are never sent: they may hold secrets, and a viewer token
//! is meant for screens.

use crate::api::http::app::App;
use crate::error::MasterError;
use crate::store::{Limits, TaskCursor, TaskQuery, TaskRecord, TaskState};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudai_common::ids::TaskId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Most tasks one `/api/tasks` answer lists.
pub const MAX_TASKS_LISTED: usize = 1000;

/// A task as the dashboard sees it (no environment).
#[derive(Debug, Serialize)]
pub struct TaskView {
    id: String,
    image: String,
    command: Vec<String>,
    state: TaskState,
    worker_id: Option<String>,
    priority: i32,
    attempt: u32,
    max_retries: u32,
    limits: Limits,
    /// How the container runs (shared memory, user, working directory).
    options: crate::store::ContainerOptions,
    assigned_gpus: Vec<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    exit_code: Option<i32>,
    error: Option<String>,
    oom_killed: bool,
    /// Results of earlier attempts that arrived after the task was run again.
    late_results: Vec<crate::store::LateResult>,
    /// Why a queued task is still waiting, when the scheduler knows.
    waiting_reason: Option<String>,
    /// While assigned: how its worker's image pull goes.
    progress: Option<TaskProgressView>,
}

/// Pull progress with its line for people (`pulling 43% (1.2 of 2.8 GiB)`).
#[derive(Debug, Serialize)]
struct TaskProgressView {
    #[serde(flatten)]
    progress: crate::core::events::TaskProgress,
    text: String,
}

impl TaskView {
    pub(crate) fn of(app: &App, task: TaskRecord) -> Self {
        let waiting_reason = (task.state == TaskState::Queued)
            .then(|| app.scheduler.waiting_reason(&task.id))
            .flatten();
        let progress = (task.state == TaskState::Assigned)
            .then(|| app.lifecycle.progress(&task.id))
            .flatten()
            .map(|progress| TaskProgressView {
                text: progress.describe(),
                progress,
            });
        Self {
            waiting_reason,
            progress,
            id: task.id,
            image: task.image,
            command: task.command,
            state: task.state,
            worker_id: task.worker_id,
            priority: task.priority,
            attempt: task.attempt,
            max_retries: task.max_retries,
            limits: task.limits,
            options: task.options,
            assigned_gpus: task.assigned_gpus,
            created_at: task.created_at,
            started_at: task.started_at,
            finished_at: task.finished_at,
            exit_code: task.exit_code,
            error: task.error,
            oom_killed: task.oom_killed,
            late_results: task.late_results,
        }
    }
}

/// An error as an HTTP answer: `{"error": "..."}` with a fitting status
/// (every HTTP route of the master answers errors this way).
pub struct ApiError(MasterError);

impl From<MasterError> for ApiError {
    fn from(error: MasterError) -> Self {
        Self(error)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code().http()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.0.client_message() }))).into_response()
    }
}

/// What `/healthz` and `/api/cluster` both say about the master.
#[derive(Debug, Serialize)]
pub struct Health {
    version: &'static str,
    uptime_seconds: u64,
    workers: WorkerCounts,
    store: String,
    store_healthy: bool,
    store_error: Option<String>,
    tls: bool,
}

#[derive(Debug, Serialize)]
struct WorkerCounts {
    pending: usize,
    active: usize,
    inactive: usize,
}

impl Health {
    /// The master's health now (a cheap round trip to the store).
    pub async fn of(app: &App) -> Self {
        let (pending, active, inactive) = app.registry.counts();
        let store = app.vitals.store().await;
        Self {
            version: cloudai_common::VERSION,
            uptime_seconds: app.vitals.uptime().as_secs(),
            workers: WorkerCounts {
                pending,
                active,
                inactive,
            },
            store: app.store.describe(),
            store_healthy: store.is_ok(),
            store_error: store.err().map(|e| e.to_string()),
            tls: app.auth.pki().is_some(),
        }
    }

    /// Whether the store answers.
    pub fn healthy(&self) -> bool {
        self.store_healthy
    }
}

/// `GET /api/cluster`: [`Health`] with the tasks by state.
pub async fn cluster(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let by_state: BTreeMap<&'static str, usize> = app
        .lifecycle
        .task_counts()
        .into_iter()
        .map(|(state, n)| (state.as_str(), n))
        .collect();
    let mut body = serde_json::to_value(Health::of(&app).await).unwrap_or_default();
    body["queue_depth"] = json!(by_state.get("queued").copied().unwrap_or(0));
    body["tasks"] = json!(by_state);
    Ok(Json(body))
}

/// Filters of `GET /api/tasks`: `since` and `until` are Unix seconds,
/// `cursor` a `next_cursor` an earlier page returned.
#[derive(Debug, Deserialize)]
pub struct TaskFilter {
    state: Option<String>,
    worker: Option<String>,
    owner: Option<String>,
    image: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

impl TaskFilter {
    /// The store query this filter asks for, each part checked.
    pub(crate) fn check(self) -> Result<TaskQuery, MasterError> {
        let state = match self.state.as_deref().filter(|s| !s.is_empty()) {
            Some(name) => Some(TaskState::parse(name).ok_or_else(|| {
                MasterError::InvalidArgument(format!(
                    "unknown state '{name}'; one of: {}",
                    TaskState::ALL.map(|s| s.as_str()).join(", ")
                ))
            })?),
            None => None,
        };
        let worker = self.worker.filter(|w| !w.is_empty());
        if let Some(worker) = &worker {
            cloudai_common::validate::id("worker", worker)?;
        }
        let limit = self.limit.unwrap_or(200);
        if !(1..=MAX_TASKS_LISTED).contains(&limit) {
            return Err(MasterError::InvalidArgument(format!(
                "limit must be between 1 and {MAX_TASKS_LISTED}"
            )));
        }
        let millis = |name: &str, seconds: Option<i64>| {
            seconds
                .map(|s| {
                    s.checked_mul(1000).ok_or_else(|| {
                        MasterError::InvalidArgument(format!("{name}: {s} is not a time"))
                    })
                })
                .transpose()
        };
        let before = self
            .cursor
            .filter(|c| !c.is_empty())
            .map(|c| TaskCursor::parse(&c))
            .transpose()
            .map_err(|e| MasterError::InvalidArgument(e.to_string()))?;
        let nonempty = |text: Option<String>| text.filter(|t| !t.is_empty());
        Ok(TaskQuery {
            state,
            worker_id: worker,
            owner: nonempty(self.owner),
            image: nonempty(self.image),
            since: millis("since", self.since)?,
            until: millis("until", self.until)?,
            before,
            limit,
        })
    }
}

/// `GET /api/tasks`: a page of history, newest first, and the cursor of
/// the next one (`null` at the end).
pub async fn tasks(
    State(app): State<App>,
    Query(filter): Query<TaskFilter>,
) -> Result<Json<Value>, ApiError> {
    let page = app.store.query_tasks(&filter.check()?).await?;
    let tasks: Vec<TaskView> = page
        .tasks
        .into_iter()
        .map(|t| TaskView::of(&app, t))
        .collect();
    let next_cursor = page.next.map(|c| c.to_string());
    Ok(Json(json!({ "tasks": tasks, "next_cursor": next_cursor })))
}

/// `GET /api/tasks/{id}`.
pub async fn task(
    State(app): State<App>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task_id = TaskId::parse("task id", &task_id).map_err(MasterError::from)?;
    let task = app.tasks.task(&task_id).await?;
    let result = if task.state.is_terminal() {
        app.store.get_result(&task.id).await?
    } else {
        None
    };
    // Workers report the whole size; results stored before they did, only the tail.
    let log_bytes = result
        .as_ref()
        .map(|r| r.log_total_bytes.max(r.log.len() as u64));
    Ok(Json(json!({
        "task": TaskView::of(&app, task),
        "log": result.as_ref().map(|r| r.log.as_str()),
        "log_truncated": result.as_ref().is_some_and(|r| r.log_truncated),
        "log_bytes": log_bytes,
        "full_log": result.as_ref().is_some_and(|r| r.log_chunks > 0),
    })))
}

/// `GET /api/tasks/{id}/log`: the whole stored output of a finished task,
/// streamed as it is read from the store.
pub async fn task_log(
    State(app): State<App>,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let task_id = TaskId::parse("task id", &task_id).map_err(MasterError::from)?;
    let task = app.tasks.task(&task_id).await?;
    if !task.state.is_terminal() {
        return Err(MasterError::FailedPrecondition(format!(
            "task '{task_id}' is {}; its output is stored when it ends (/ws/logs/{task_id} follows it live)",
            task.state
        ))
        .into());
    }
    let Some(output) = app.tasks.stored_output(&task).await? else {
        return Err(MasterError::NotFound(format!("task '{task_id}' has no stored output")).into());
    };
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    Ok((headers, Body::from_stream(output.pieces())).into_response())
}
