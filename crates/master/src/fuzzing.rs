//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): each feeds
//! untrusted bytes or text to a decoder or validator the master runs on what
//! clients and workers send. Whatever the input, they must return; a panic
//! is a bug. Not an API: hidden from the docs, kept small and in one place.

use crate::api::http::rest::TaskFilter;
use crate::api::http::telemetry_ws::{ClientMessage, Selection};
use crate::auth::users::TokenIndex;
use crate::core::task_logs::{UploadSummary, check_part};
use crate::store::transfer::{Line, parse_line};
use crate::store::{ApiTokenRecord, TaskRecord, UserRecord};
use cloudai_common::validate;
use cloudai_proto::v1::{
    AgentAssignTaskRequest, Heartbeat, RegisterWorkerRequest, SubmitTaskRequest, TaskLogPart,
    TaskResult, TaskStatus,
};
use prost::Message;

/// A REPL line through the command parser.
pub fn repl_line(line: &str) {
    let _ = cloudai_cli::parse::parse(line);
}

/// A WebSocket client message, then what it selects.
pub fn websocket_message(body: &str) {
    let mut selection = Selection::all();
    match serde_json::from_str::<ClientMessage>(body) {
        Ok(ClientMessage::Subscribe { workers }) => selection.subscribe(&workers),
        Ok(ClientMessage::Unsubscribe { workers }) => selection.unsubscribe(&workers),
        Ok(ClientMessage::Ping) | Err(_) => {}
    }
    let _ = selection.matches(Some("w1"));
}

/// A query string of `GET /api/tasks`, decoded and checked as the route does.
pub fn tasks_query(query: &str) {
    let Ok(uri) = format!("/api/tasks?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    if let Ok(axum::extract::Query(filter)) = axum::extract::Query::<TaskFilter>::try_from_uri(&uri)
    {
        let _ = filter.check();
    }
}

/// An API token (header or `?token=`) looked up in an index holding one.
pub fn api_token(token: &str) {
    let index = TokenIndex::default();
    index.rebuild(&[UserRecord {
        name: "ana".into(),
        role: "viewer".into(),
        created_at: 0,
        tokens: vec![ApiTokenRecord {
            id: "abcd1234".into(),
            hash: cloudai_common::tls::fingerprint(b"s3cret"),
            created_at: 0,
            expires_at: None,
        }],
    }]);
    let _ = index.check(token, 0);
}

/// One line of an export file, as `import` reads it (log chunks decoded).
pub fn import_line(line: &str) {
    if let Ok(Line::LogChunk(chunk)) = parse_line(1, line) {
        let _ = chunk.into_record();
    }
}

/// A gRPC request body of one of the types clients and workers send (chosen
/// by the first byte), decoded and put through the master's checks and
/// conversions.
pub fn grpc_request(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Ok(heartbeat) = Heartbeat::decode(body) {
                let _ = validate::id("worker_id", &heartbeat.worker_id);
                let _ = crate::core::events::Metrics::from(&heartbeat);
                if let Some(ts) = &heartbeat.timestamp {
                    let _ = cloudai_proto::timestamp_millis(ts);
                }
            }
        }
        1 => {
            if let Ok(result) = TaskResult::decode(body) {
                let _ = validate::id("task_id", &result.task_id);
                let state = TaskStatus::try_from(result.status)
                    .ok()
                    .and_then(crate::core::convert::reported_state);
                if let Some(state) = state {
                    let task = TaskRecord::queued("t-1", "busybox", 0);
                    let _ = crate::core::results::result_record(&task, &result, state);
                }
            }
        }
        2 => {
            if let Ok(request) = RegisterWorkerRequest::decode(body)
                && let Some(info) = request.info
            {
                let _ = validate::id("info.worker_id", &info.worker_id);
                let _ = validate::address("info.address", &info.address);
                let _ = crate::core::convert::host_record(&info);
            }
        }
        3 => {
            if let Ok(request) = SubmitTaskRequest::decode(body)
                && let Some(task) = request.task
            {
                let _ = validate::task(&task);
            }
        }
        4 => {
            if let Ok(request) = AgentAssignTaskRequest::decode(body) {
                let _ = validate::id("task_id", &request.task_id);
                let _ = validate::id("worker_id", &request.worker_id);
            }
        }
        _ => {
            // An upload: a first part, then the same part again as the next.
            if let Ok(part) = TaskLogPart::decode(body) {
                let _ = check_part(&part, &part, &UploadSummary::default());
            }
        }
    }
}
