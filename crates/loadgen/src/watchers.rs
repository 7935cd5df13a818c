//! Dashboard-like WebSocket clients of `/ws/telemetry`: each counts the
//! telemetry events it receives and how late they arrive (receive time minus
//! the event's `timestamp`, both on this machine's clock); stalled clients
//! connect and then never read, to show they hold nobody else up.

use crate::sim::Samples;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio_tungstenite::tungstenite::Message;

/// What one reading client saw.
#[derive(Default)]
pub struct Seen {
    /// Telemetry events received.
    pub telemetry: AtomicU64,
    /// Events the server said this client missed (`lagged`).
    pub missed: AtomicU64,
}

/// The clients of one run.
pub struct Watchers {
    /// One entry per reading client.
    pub seen: Vec<Arc<Seen>>,
    /// Delivery latency of every telemetry event to every reading client.
    pub latency: Arc<Samples>,
    /// Stalled clients' sockets, held open and never read.
    _stalled: Vec<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
}

impl Watchers {
    /// Connects `readers` reading clients and `stalled` stalled ones to `http`.
    pub async fn connect(http: &str, readers: usize, stalled: usize) -> anyhow::Result<Watchers> {
        let url = format!("ws://{http}/ws/telemetry");
        let latency = Arc::new(Samples::default());
        let mut seen = Vec::with_capacity(readers);
        for _ in 0..readers {
            let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
            let client = Arc::new(Seen::default());
            seen.push(client.clone());
            tokio::spawn(read(socket, client, latency.clone()));
        }
        let mut held = Vec::with_capacity(stalled);
        for _ in 0..stalled {
            held.push(tokio_tungstenite::connect_async(&url).await?.0);
        }
        Ok(Watchers {
            seen,
            latency,
            _stalled: held,
        })
    }

    /// Telemetry events received by the clients: (fewest, most).
    pub fn received(&self) -> (u64, u64) {
        let counts = self
            .seen
            .iter()
            .map(|s| s.telemetry.load(Ordering::Relaxed));
        (counts.clone().min().unwrap_or(0), counts.max().unwrap_or(0))
    }

    /// Events missed by all reading clients together.
    pub fn missed(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.missed.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until no client has received anything for `quiet`.
    pub async fn settle(&self, quiet: Duration) {
        let mut last = self.total();
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.total();
            if now == last {
                return;
            }
            last = now;
        }
    }

    fn total(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.telemetry.load(Ordering::Relaxed))
            .sum()
    }
}

async fn read<S>(mut socket: S, seen: Arc<Seen>, latency: Arc<Samples>)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        // The envelope starts with its type; only telemetry and lagged matter.
        if text.contains("\"type\":\"telemetry\"") {
            seen.telemetry.fetch_add(1, Ordering::Relaxed);
            if let Some(sent) = number_after(&text, "\"timestamp\":") {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                latency.add(Duration::from_millis(now.saturating_sub(sent)));
            }
        } else if text.contains("\"type\":\"lagged\"") {
            let missed = number_after(&text, "\"missed\":").unwrap_or(1);
            seen.missed.fetch_add(missed, Ordering::Relaxed);
        }
    }
}

/// The unsigned number right after `key` in a JSON text.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn finds_numbers_after_keys() {
        let text = r#"{"seq":3,"timestamp":1795762643512,"type":"telemetry"}"#;
        assert_eq!(number_after(text, "\"timestamp\":"), Some(1795762643512));
        assert_eq!(number_after(text, "\"seq\":"), Some(3));
        assert_eq!(number_after(text, "\"missed\":"), None);
    }
}
