//! WebSocket telemetry: `/ws/telemetry` (every worker) and
//! `/ws/telemetry/{worker_id}` (one), with subscribe/unsubscribe messages.
//!
//! Each client gets a `snapshot` first, then events as JSON text frames. Each
//! client has its own bounded queue (its cursor in the event channel): a slow
//! client gets a `lagged` notice with the number of events it missed, and a
//! client that does not take a frame within [`SEND_TIMEOUT`] or answers no ping
//! within [`DEAD_AFTER`] is dropped. No client can delay another.

use crate::api::http::app::App;
use crate::api::http::app::Credential;
use crate::core::events::Metrics;
use crate::store::now_millis;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// Largest message a client may send.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Initial read buffer of a connection (grows for larger client messages).
const READ_BUFFER: usize = 4 * 1024;
/// Bytes gathered before a write goes to the socket.
const WRITE_BUFFER: usize = 8 * 1024;
/// How often the server pings each client.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which a client is considered dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(45);
/// Longest time one frame may take to send before the client is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Which workers a client follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    all: bool,
    include: BTreeSet<String>,
    exclude: BTreeSet<String>,
}

impl Selection {
    /// Every worker.
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// One worker.
    pub fn only(worker_id: &str) -> Self {
        Self {
            include: BTreeSet::from([worker_id.to_string()]),
            ..Self::default()
        }
    }

    /// Whether events about `worker_id` (or about no worker, when `None`) are wanted.
    pub fn matches(&self, worker_id: Option<&str>) -> bool {
        match worker_id {
            Some(id) if self.all => !self.exclude.contains(id),
            Some(id) => self.include.contains(id),
            None => self.all,
        }
    }

    /// Most worker ids one client may name in its selection.
    pub const MAX_NAMED: usize = 10_000;

    /// Adds workers (`*`: all of them). Invalid ids are ignored, and a
    /// selection never names more than [`Self::MAX_NAMED`] workers.
    pub fn subscribe(&mut self, workers: &[String]) {
        if workers.iter().any(|w| w == "*") {
            *self = Self::all();
            return;
        }
        for worker in workers
            .iter()
            .filter(|w| cloudai_common::validate::id("worker", w).is_ok())
        {
            if self.all {
                self.exclude.remove(worker);
            } else if self.include.len() < Self::MAX_NAMED {
                self.include.insert(worker.clone());
            }
        }
    }

    /// Removes workers (`*`: all of them).
    pub fn unsubscribe(&mut self, workers: &[String]) {
        if workers.iter().any(|w| w == "*") {
            *self = Self::default();
            return;
        }
        for worker in workers
            .iter()
            .filter(|w| cloudai_common::validate::id("worker", w).is_ok())
        {
            if !self.all {
                self.include.remove(worker);
            } else if self.exclude.len() < Self::MAX_NAMED {
                self.exclude.insert(worker.clone());
            }
        }
    }

    fn describe(&self) -> Value {
        json!({ "all": self.all, "workers": self.include, "excluded": self.exclude })
    }
}

/// A message from a client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    Subscribe { workers: Vec<String> },
    Unsubscribe { workers: Vec<String> },
    Ping,
}

/// `GET /ws/telemetry`
pub async fn all_workers(
    ws: WebSocketUpgrade,
    State(app): State<App>,
    Extension(credential): Extension<Credential>,
) -> Response {
    upgrade(ws, app, Selection::all(), credential)
}

/// `GET /ws/telemetry/{worker_id}`
pub async fn one_worker(
    ws: WebSocketUpgrade,
    Path(worker_id): Path<String>,
    State(app): State<App>,
    Extension(credential): Extension<Credential>,
) -> Response {
    if let Err(error) = cloudai_common::validate::id("worker_id", &worker_id) {
        return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
    }
    upgrade(ws, app, Selection::only(&worker_id), credential)
}

fn upgrade(
    ws: WebSocketUpgrade,
    app: App,
    selection: Selection,
    credential: Credential,
) -> Response {
    let revoked = app
        .auth
        .revoked(credential.0, crate::auth::users::Role::Viewer);
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        // Small per-connection buffers: a thousand dashboards must not cost
        // the default 128 KiB each way apiece. (A client that stops reading
        // is dropped after SEND_TIMEOUT.)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| serve(socket, app, selection, revoked))
}

/// The close frame of a stream whose token was revoked.
pub(crate) fn revoked_frame() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::POLICY,
        reason: "the API token was revoked".into(),
    }))
}

/// Decrements the client gauge however the connection ends.
struct ClientGuard(std::sync::Arc<crate::core::metrics::MasterMetrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.websocket_clients.dec();
    }
}

async fn send(
    socket: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: Message,
) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

fn text(body: &str) -> Message {
    Message::Text(Utf8Bytes::from(body))
}

async fn serve(
    socket: WebSocket,
    app: App,
    mut selection: Selection,
    revoked: impl std::future::Future<Output = ()>,
) {
    let mut revoked = std::pin::pin!(revoked);
    app.metrics.websocket_clients.inc();
    let _guard = ClientGuard(app.metrics.clone());
    // Subscribe before the snapshot so nothing falls between them; events the
    // snapshot already covers (seq <= its seq) are skipped.
    let mut events = app.events.subscribe();
    let (mut sink, mut incoming) = socket.split();
    let mut covered = app.events.last_seq();
    if !send(&mut sink, text(&snapshot(&app, &selection, covered))).await {
        return;
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => {
                let _ = send(&mut sink, Message::Close(None)).await;
                return;
            }
            _ = &mut revoked => {
                let _ = send(&mut sink, revoked_frame()).await;
                return;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER || !send(&mut sink, Message::Ping(Default::default())).await {
                    tracing::debug!("dropping an unresponsive WebSocket client");
                    return;
                }
            }
            message = incoming.next() => {
                let Some(Ok(message)) = message else { return };
                last_heard = Instant::now();
                let reply = match message {
                    Message::Text(body) => Some(handle_client_message(&app, &mut selection, &mut covered, body.as_str())),
                    Message::Close(_) => return,
                    // Pings are answered by the library; pongs only prove liveness.
                    _ => None,
                };
                if let Some(reply) = reply
                    && !send(&mut sink, text(&reply)).await
                {
                    return;
                }
            }
            event = events.recv() => {
                let frame = match event {
                    Ok(envelope) if envelope.seq > covered && selection.matches(envelope.event.worker_id()) => {
                        Message::Text(Utf8Bytes::from(envelope.json().as_ref()))
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        app.metrics.websocket_lagged.inc_by(missed);
                        text(&json!({ "type": "lagged", "missed": missed, "timestamp": now_millis() }).to_string())
                    }
                    Err(RecvError::Closed) => return,
                };
                if !send(&mut sink, frame).await {
                    tracing::debug!("dropping a WebSocket client that stopped reading");
                    return;
                }
            }
        }
    }
}

fn handle_client_message(
    app: &App,
    selection: &mut Selection,
    covered: &mut u64,
    body: &str,
) -> String {
    match serde_json::from_str::<ClientMessage>(body) {
        Ok(ClientMessage::Ping) => json!({ "type": "pong", "timestamp": now_millis() }).to_string(),
        Ok(ClientMessage::Subscribe { workers }) => {
            selection.subscribe(&workers);
            *covered = app.events.last_seq();
            snapshot(app, selection, *covered)
        }
        Ok(ClientMessage::Unsubscribe { workers }) => {
            selection.unsubscribe(&workers);
            *covered = app.events.last_seq();
            snapshot(app, selection, *covered)
        }
        Err(error) => json!({
            "type": "error",
            "message": format!("unrecognised message ({error}); send {{\"type\":\"subscribe\",\"workers\":[\"id\"]}}, {{\"type\":\"unsubscribe\",\"workers\":[\"*\"]}} or {{\"type\":\"ping\"}}"),
        })
        .to_string(),
    }
}

#[derive(serde::Serialize)]
struct SnapshotWorker {
    worker_id: String,
    state: &'static str,
    address: String,
    host: Option<crate::store::HostRecord>,
    last_heartbeat_ms_ago: Option<u64>,
    metrics: Option<Metrics>,
}

#[derive(serde::Serialize)]
struct Snapshot {
    r#type: &'static str,
    seq: u64,
    timestamp: i64,
    selection: Value,
    workers: Vec<SnapshotWorker>,
    active_tasks: HashMap<&'static str, u64>,
}

/// The current state of the selected workers, sent first and after every
/// selection change. Encoded directly (not through `serde_json::Value`) so
/// metrics keep the same number formatting as `telemetry` events.
pub fn snapshot(app: &App, selection: &Selection, seq: u64) -> String {
    let workers = app
        .registry
        .list()
        .into_iter()
        .filter(|w| selection.matches(Some(&w.record.id)))
        .map(|w| SnapshotWorker {
            worker_id: w.record.id.clone(),
            state: w.state.as_str(),
            address: w.record.address.clone(),
            host: w.record.host.clone(),
            last_heartbeat_ms_ago: w.last_seen.map(|t| t.elapsed().as_millis() as u64),
            metrics: w.latest.as_ref().map(Metrics::from),
        })
        .collect();
    let active_tasks: HashMap<&'static str, u64> = app
        .lifecycle
        .active_counts()
        .into_iter()
        .map(|(state, n)| (state.as_str(), n as u64))
        .collect();
    let snapshot = Snapshot {
        r#type: "snapshot",
        seq,
        timestamp: now_millis(),
        selection: selection.describe(),
        workers,
        active_tasks,
    };
    serde_json::to_string(&snapshot)
        .unwrap_or_else(|e| json!({"type": "error", "message": e.to_string()}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_add_and_remove() {
        let mut selection = Selection::only("a");
        assert!(
            selection.matches(Some("a"))
                && !selection.matches(Some("b"))
                && !selection.matches(None)
        );
        selection.subscribe(&["b".into()]);
        assert!(selection.matches(Some("b")));
        selection.unsubscribe(&["a".into()]);
        assert!(!selection.matches(Some("a")));
        selection.subscribe(&["*".into()]);
        assert!(selection.matches(Some("zzz")) && selection.matches(None));
        selection.unsubscribe(&["zzz".into()]);
        assert!(!selection.matches(Some("zzz")) && selection.matches(Some("a")));
        selection.unsubscribe(&["*".into()]);
        assert!(!selection.matches(Some("a")));
    }

    #[test]
    fn client_messages_parse() {
        assert!(matches!(
            serde_json::from_str(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        ));
        let sub: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","workers":["w1"]}"#).unwrap();
        assert!(matches!(sub, ClientMessage::Subscribe { workers } if workers == ["w1"]));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch"}"#).is_err());
    }
}
