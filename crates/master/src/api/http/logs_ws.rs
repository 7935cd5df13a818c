//! `GET /ws/logs/{id}`: a WebSocket following a task's output live through its
//! worker's `StreamTaskLogs`, then its outcome (viewer token; the socket closes
//! with 1008 when the token is revoked).

use crate::api::http::app::App;
use crate::api::http::rest::{ApiError, TaskView};
use crate::error::MasterError;
use crate::store::{TaskRecord, TaskState};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use cloudai_common::ids::TaskId;
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

/// How long `/ws/logs` waits for a task's outcome after its output ended.
const OUTCOME_WAIT: Duration = Duration::from_secs(30);

/// `GET /ws/logs/{id}`: `{"type":"log","data":…}` frames while the task runs
/// (or once with the stored log), then `{"type":"end","task":…}`; for a task
/// with no output yet, `{"type":"waiting","task":…}` and the socket closes.
pub async fn follow_logs(
    State(app): State<App>,
    Path(task_id): Path<String>,
    Extension(credential): Extension<crate::api::http::app::Credential>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let task_id = TaskId::parse("task id", &task_id).map_err(MasterError::from)?;
    let task = app.tasks.task(&task_id).await?;
    let revoked = app
        .auth
        .revoked(credential.0, crate::auth::users::Role::Viewer);
    Ok(upgrade
        .on_upgrade(move |socket| stream_logs(app, task, socket, revoked))
        .into_response())
}

async fn send(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn stream_logs(
    app: App,
    task: TaskRecord,
    mut socket: WebSocket,
    revoked: impl std::future::Future<Output = ()>,
) {
    let revoked_first = tokio::select! {
        _ = forward_logs(&app, task, &mut socket) => false,
        _ = revoked => true,
    };
    if revoked_first {
        let _ = socket
            .send(crate::api::http::telemetry_ws::revoked_frame())
            .await;
        return;
    }
    let close = CloseFrame {
        code: close_code::NORMAL,
        reason: "done".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

async fn forward_logs(app: &App, task: TaskRecord, socket: &mut WebSocket) {
    let mut events = app.events.subscribe();
    let task_id = task.id.clone();
    match task.state {
        TaskState::Assigned | TaskState::Running => {}
        state if state.is_terminal() => {
            if let Ok(Some(result)) = app.store.get_result(&task_id).await {
                let data = if result.log_chunks > 0 {
                    format!(
                        "[the last {} of {} bytes; the whole output: /api/tasks/{task_id}/log]\n{}",
                        result.log.len(),
                        result.log_total_bytes,
                        result.log
                    )
                } else if result.log_truncated {
                    format!("[earlier output cut off]\n{}", result.log)
                } else {
                    result.log
                };
                if !send(socket, json!({ "type": "log", "data": data })).await {
                    return;
                }
            }
            let end = json!({ "type": "end", "task": TaskView::of(app, task) });
            send(socket, end).await;
            return;
        }
        _ => {
            let waiting = json!({ "type": "waiting", "task": TaskView::of(app, task) });
            send(socket, waiting).await;
            return;
        }
    }
    // Pinged like the telemetry socket, so a quiet task's viewer is neither
    // closed as idle nor left on a dead connection.
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + crate::api::http::telemetry_ws::PING_INTERVAL,
        crate::api::http::telemetry_ws::PING_INTERVAL,
    );
    match app.tasks.follow_logs(&task).await {
        Ok(mut stream) => loop {
            tokio::select! {
                _ = ping.tick() => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
                chunk = stream.next() => match chunk {
                    Some(Ok(chunk)) => {
                        let data = String::from_utf8_lossy(&chunk.data);
                        if !send(socket, json!({ "type": "log", "data": data })).await {
                            return;
                        }
                    }
                    Some(Err(status)) => {
                        let note = format!("[log stream ended: {}]\n", status.message());
                        send(socket, json!({ "type": "log", "data": note })).await;
                        break;
                    }
                    None => break,
                },
                // The browser went away: stop following.
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
            }
        },
        Err(error) => {
            let note = format!("[cannot follow the output: {error}]\n");
            send(socket, json!({ "type": "log", "data": note })).await;
        }
    }
    let deadline = tokio::time::Instant::now() + OUTCOME_WAIT;
    let task = match app
        .lifecycle
        .wait_until_final(&task_id, &mut events, deadline)
        .await
    {
        Ok(Some(task)) => task,
        _ => match app.lifecycle.task(&task_id).await {
            Ok(task) => task,
            Err(_) => return,
        },
    };
    send(
        socket,
        json!({ "type": "end", "task": TaskView::of(app, task) }),
    )
    .await;
}
