//! Per-task output: a bounded backlog plus a live fan-out to followers.

use cloudai_proto::v1::LogChunk;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{Notify, broadcast};

/// Most output kept in memory per task; older chunks are dropped first.
pub const MAX_BUFFERED_BYTES: usize = 1 << 20;
/// Largest log tail sent with a task's result.
pub const MAX_REPORTED_BYTES: usize = 256 * 1024;
/// Chunks a slow follower may fall behind before it is told it lagged.
const FOLLOWER_CAPACITY: usize = 1024;

struct State {
    chunks: VecDeque<LogChunk>,
    bytes: usize,
    /// Every byte pushed, kept or not.
    total: u64,
    truncated: bool,
    live: Live,
}

/// The live fan-out: made when the first follower comes (most tasks have
/// none, and a channel holds `FOLLOWER_CAPACITY` slots), gone once the
/// output ended.
enum Live {
    Open(Option<broadcast::Sender<LogChunk>>),
    Ended,
}

/// Output of one task.
pub struct LogBuffer {
    state: Mutex<State>,
    /// Told when a follower subscribes (the first one wakes [`Self::followed`]).
    followed: Notify,
}

/// What a new follower gets: everything buffered so far and, while the task
/// runs, a receiver for what comes next (subscribed without a gap).
pub struct Subscription {
    /// Buffered chunks, oldest first.
    pub backlog: Vec<LogChunk>,
    /// Live chunks; `None` when the output has already ended.
    pub live: Option<broadcast::Receiver<LogChunk>>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBuffer {
    /// An empty, open buffer.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                bytes: 0,
                total: 0,
                truncated: false,
                live: Live::Open(None),
            }),
            followed: Notify::new(),
        }
    }

    /// Resolves once someone subscribed to this output (or at once if
    /// someone already did).
    pub async fn followed(&self) {
        self.followed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a chunk and hands it to followers.
    pub fn push(&self, chunk: LogChunk) {
        let mut state = self.lock();
        if let Live::Open(Some(live)) = &state.live {
            // No follower left is fine.
            let _ = live.send(chunk.clone());
        }
        state.bytes += chunk.data.len();
        state.total += chunk.data.len() as u64;
        state.chunks.push_back(chunk);
        while state.bytes > MAX_BUFFERED_BYTES {
            let Some(old) = state.chunks.pop_front() else {
                break;
            };
            state.bytes -= old.data.len();
            state.truncated = true;
        }
    }

    /// Marks the output as ended; followers' streams finish.
    pub fn close(&self) {
        self.lock().live = Live::Ended;
    }

    /// Backlog plus live receiver, atomically.
    pub fn subscribe(&self) -> Subscription {
        let mut state = self.lock();
        let live = match &mut state.live {
            Live::Open(sender) => Some(
                sender
                    .get_or_insert_with(|| broadcast::channel(FOLLOWER_CAPACITY).0)
                    .subscribe(),
            ),
            Live::Ended => None,
        };
        self.followed.notify_one();
        Subscription {
            backlog: state.chunks.iter().cloned().collect(),
            live,
        }
    }

    /// Bytes of output seen in all, including those no longer buffered.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// The last `MAX_REPORTED_BYTES` of output, for the result report, and
    /// whether anything older was dropped.
    pub fn tail(&self) -> (Vec<u8>, bool) {
        let state = self.lock();
        let all: Vec<u8> = state
            .chunks
            .iter()
            .flat_map(|c| c.data.iter().copied())
            .collect();
        let start = all.len().saturating_sub(MAX_REPORTED_BYTES);
        (all[start..].to_vec(), state.truncated || start > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> LogChunk {
        LogChunk {
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn followers_get_backlog_then_live_then_end() {
        let buffer = LogBuffer::new();
        buffer.push(chunk("one\n"));
        let mut sub = buffer.subscribe();
        assert_eq!(sub.backlog.len(), 1);
        buffer.push(chunk("two\n"));
        buffer.close();
        let live = sub.live.as_mut().unwrap();
        assert_eq!(live.recv().await.unwrap().data, b"two\n");
        assert!(live.recv().await.is_err());
        assert!(buffer.subscribe().live.is_none());
        assert_eq!(buffer.tail(), (b"one\ntwo\n".to_vec(), false));
    }

    #[tokio::test]
    async fn a_subscription_wakes_the_wait_for_a_follower() {
        let buffer = std::sync::Arc::new(LogBuffer::new());
        let waiting = tokio::spawn({
            let buffer = buffer.clone();
            async move { buffer.followed().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no one follows yet");
        let _sub = buffer.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the subscription wakes it")
            .unwrap();
        // A wait begun after the subscription resolves at once.
        let late = LogBuffer::new();
        let _sub = late.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(5), late.followed())
            .await
            .expect("resolves at once");
    }

    #[test]
    fn memory_is_bounded() {
        let buffer = LogBuffer::new();
        let line = "x".repeat(1000);
        for _ in 0..3000 {
            buffer.push(chunk(&line));
        }
        let total: usize = buffer
            .subscribe()
            .backlog
            .iter()
            .map(|c| c.data.len())
            .sum();
        assert!(total <= MAX_BUFFERED_BYTES);
        let (tail, truncated) = buffer.tail();
        assert_eq!(tail.len(), MAX_REPORTED_BYTES);
        assert!(truncated);
        assert_eq!(buffer.total_bytes(), 3_000_000);
    }
}
