//! Live telemetry end to end: a real WebSocket client and a Prometheus parser
//! against the real master with real workers.

use cloudai_e2e::Socket;
use cloudai_e2e::{Master, MasterOptions, WAIT, Worker, free_port, unique};
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_proto::v1::{GpuMetrics, Heartbeat};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Heartbeat interval of the test masters (MasterOptions::default).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A WebSocket with the master's admin token (wss:// unless --insecure).
async fn connect(master: &Master, path: &str) -> Socket {
    master
        .websocket(path, master.token.as_deref())
        .await
        .expect("WebSocket connect")
}

/// Next JSON text message, skipping control frames.
async fn next_json(ws: &mut Socket, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {timeout:?}"))
            .expect("socket open")
            .expect("socket healthy");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("valid JSON");
        }
    }
}

/// Waits for a message matching `wanted`, returning it.
async fn wait_for(ws: &mut Socket, timeout: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = next_json(ws, left).await;
        if wanted(&message) {
            return message;
        }
    }
}

fn is(message: &Value, kind: &str, worker: &str) -> bool {
    message["type"] == kind && message["worker_id"] == worker
}

fn snapshot_ids(snapshot: &Value) -> Vec<String> {
    snapshot["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker_id"].as_str().unwrap().to_string())
        .collect()
}

/// A master and two workers that joined with their tokens.
fn cluster(dir: &std::path::Path) -> (Master, Worker, Worker) {
    let mut master = Master::start(&dir.join("master"), &MasterOptions::default());
    let a = Worker::join(&mut master, "ta", dir);
    let b = Worker::join(&mut master, "tb", dir);
    master.poll("status", &["workers: 2 active"], WAIT);
    (master, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_live_telemetry_filtering_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (master, a, b) = cluster(dir.path());

    let mut all = connect(&master, "/ws/telemetry").await;
    let snapshot = next_json(&mut all, WAIT).await;
    assert_eq!(snapshot["type"], "snapshot");
    let mut ids = snapshot_ids(&snapshot);
    ids.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        snapshot["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "active")
    );
    // Live telemetry within two heartbeats, with a sequence number and timestamp.
    let sample = wait_for(&mut all, 2 * HEARTBEAT + Duration::from_secs(1), |m| {
        is(m, "telemetry", &a.id)
    })
    .await;
    assert!(sample["seq"].as_u64().unwrap() > snapshot["seq"].as_u64().unwrap());
    assert!(sample["timestamp"].as_i64().unwrap() > 0);
    assert!(sample["metrics"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(sample["metrics"]["cpu_count"].as_u64().unwrap() >= 1);

    // Per-worker endpoint: only that worker's events.
    let mut only_a = connect(&master, &format!("/ws/telemetry/{}", a.id)).await;
    let snapshot = next_json(&mut only_a, WAIT).await;
    assert_eq!(snapshot_ids(&snapshot), vec![a.id.clone()]);
    for _ in 0..4 {
        let message = next_json(&mut only_a, WAIT).await;
        assert_eq!(
            message["worker_id"], a.id,
            "a per-worker socket got {message}"
        );
    }

    // Change the selection on the open socket: add b, then drop a.
    only_a
        .send(Message::text(
            json!({"type": "subscribe", "workers": [b.id]}).to_string(),
        ))
        .await
        .unwrap();
    let snapshot = wait_for(&mut only_a, WAIT, |m| m["type"] == "snapshot").await;
    assert_eq!(snapshot_ids(&snapshot).len(), 2);
    wait_for(&mut only_a, WAIT, |m| is(m, "telemetry", &b.id)).await;
    only_a
        .send(Message::text(
            json!({"type": "unsubscribe", "workers": [a.id]}).to_string(),
        ))
        .await
        .unwrap();
    let snapshot = wait_for(&mut only_a, WAIT, |m| m["type"] == "snapshot").await;
    assert_eq!(snapshot_ids(&snapshot), vec![b.id.clone()]);
    for _ in 0..4 {
        let message = next_json(&mut only_a, WAIT).await;
        assert_eq!(
            message["worker_id"], b.id,
            "after unsubscribing a, got {message}"
        );
    }

    // Keepalive: protocol ping frames and JSON pings both answered.
    only_a
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, only_a.next())
            .await
            .expect("pong in time")
            .unwrap()
            .unwrap();
        if let Message::Pong(payload) = frame {
            assert_eq!(&payload[..], b"hi");
            break;
        }
    }
    only_a
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    wait_for(&mut only_a, WAIT, |m| m["type"] == "pong").await;
    only_a
        .send(Message::text(r#"{"type":"launch_missiles"}"#))
        .await
        .unwrap();
    let error = wait_for(&mut only_a, WAIT, |m| m["type"] == "error").await;
    assert!(error["message"].as_str().unwrap().contains("subscribe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_is_detected_and_return_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = Master::start(&dir.path().join("master"), &MasterOptions::default());
    let mut worker = Worker::join(&mut master, "ti", dir.path());
    let id = worker.id.clone();
    let mut ws = connect(&master, &format!("/ws/telemetry/{id}")).await;
    wait_for(&mut ws, WAIT, |m| is(m, "telemetry", &id)).await;
    worker.kill9();
    // The test master's inactivity timeout is 3s.
    let inactive = wait_for(&mut ws, WAIT, |m| is(m, "worker_inactive", &id)).await;
    assert_eq!(inactive["reason"], "timeout");
    let _back = worker.restart(dir.path(), false);
    wait_for(&mut ws, WAIT, |m| is(m, "worker_active", &id)).await;
    wait_for(&mut ws, WAIT, |m| is(m, "telemetry", &id)).await;
}

/// A WebSocket client that completes the handshake and then never reads.
fn stalled_client(http_addr: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(http_addr).unwrap();
    write!(
        stream,
        "GET /ws/telemetry HTTP/1.1\r\nHost: {http_addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut response = [0u8; 12];
    stream.read_exact(&mut response).unwrap();
    assert_eq!(&response, b"HTTP/1.1 101");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_delay_a_healthy_one() {
    let dir = tempfile::tempdir().unwrap();
    // Without TLS, so the test can send a fake worker's heartbeats itself, fast and large.
    let options = MasterOptions {
        insecure: true,
        ..MasterOptions::default()
    };
    let mut master = Master::start(&dir.path().join("master"), &options);
    let id = unique("ts");
    master.expect(
        &format!("register {id} 127.0.0.1:{}", free_port()),
        "not reachable yet",
    );
    let _stalled = stalled_client(&master.http_addr);
    let mut healthy = connect(&master, "/ws/telemetry").await;
    next_json(&mut healthy, WAIT).await;

    let mut client = MasterServiceClient::connect(format!("http://{}", master.grpc_addr))
        .await
        .unwrap();
    let gpus: Vec<GpuMetrics> = (0..16)
        .map(|i| GpuMetrics {
            index: i,
            uuid: format!("GPU-{i:032}"),
            name: "Test GPU with a long name".into(),
            ..Default::default()
        })
        .collect();
    // More events than one client's queue holds (8192), so the stalled client must lag.
    const SENT: u32 = 12_000;
    let reader = tokio::spawn(async move {
        // The healthy client sees every sample, in order, the last one included.
        let mut seen = 0;
        loop {
            let message = next_json(&mut healthy, WAIT).await;
            assert_ne!(message["type"], "lagged", "the healthy client must not lag");
            if message["type"] == "telemetry" {
                seen += 1;
                if message["metrics"]["cpu_count"] == SENT {
                    return (seen, healthy);
                }
            }
        }
    });
    for n in 1..=SENT {
        let heartbeat = Heartbeat {
            worker_id: id.clone(),
            cpu_count: n,
            gpus: gpus.clone(),
            ..Default::default()
        };
        client.send_heartbeat(heartbeat).await.unwrap();
    }
    // Well under the 10s a stalled send may take before that client is dropped.
    // The healthy socket stays open (returned by the reader) while the stalled one is checked.
    let (seen, _healthy) = tokio::time::timeout(Duration::from_secs(8), reader)
        .await
        .expect("healthy client not delayed")
        .unwrap();
    assert!(seen >= 1, "saw {seen} samples");
    // The stalled client really fell behind: it was told it lagged, or dropped
    // once a frame could not be sent within the server's send timeout (10s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = http_get(&master, "/metrics").await;
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let lagged = sample(&scrape, "cloudai_websocket_lagged_events_total", None);
        let clients = sample(&scrape, "cloudai_websocket_clients", None);
        if lagged > 0.0 || clients < 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled client was neither told it lagged nor dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `GET path` with the master's admin token; the body of a 200 response.
async fn http_get(master: &Master, path: &str) -> String {
    let (status, body) = master.http_get(path, master.token.as_deref()).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match found.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is not a number: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scrapeable_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let (master, a, _b) = cluster(dir.path());
    let _ws = connect(&master, "/ws/telemetry").await;
    let mut ws = connect(&master, &format!("/ws/telemetry/{}", a.id)).await;
    wait_for(&mut ws, WAIT, |m| is(m, "telemetry", &a.id)).await;
    let body = http_get(&master, "/metrics").await;
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    assert_eq!(
        sample(&scrape, "cloudai_workers", Some(("state", "active"))),
        2.0
    );
    assert_eq!(
        sample(&scrape, "cloudai_workers", Some(("state", "inactive"))),
        0.0
    );
    assert!(sample(&scrape, "cloudai_heartbeats_received_total", None) >= 2.0);
    assert_eq!(
        sample(&scrape, "cloudai_telemetry_dropped_total", None),
        0.0
    );
    assert!(sample(&scrape, "cloudai_websocket_clients", None) >= 2.0);
    assert_eq!(sample(&scrape, "cloudai_queue_depth", None), 0.0);
    let latency = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "cloudai_grpc_request_duration_seconds"
                && s.labels.get("method") == Some("SendHeartbeat")
        })
        .expect("heartbeat latency histogram");
    match &latency.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.count > 0.0))
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
    let health: Value = serde_json::from_str(&http_get(&master, "/healthz").await).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["workers"]["active"], 2);
}
