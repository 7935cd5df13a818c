//! The write journal of [`ResilientStore`]: writes not yet stored, in order,
//! and the one flusher task that drains them into the backend in batches,
//! retrying with backoff while it fails.

use super::ResilientStore;
use crate::store::{Store, StoreError, StoreResult, Write};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long one backend call may take before it counts as failed.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry delay after a failed write; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most writes sent to the backend in one batch.
const MAX_BATCH: usize = 256;
/// Extra time a batch may take per write (backends without batches apply
/// them one by one).
const BATCH_TIME_PER_WRITE: Duration = Duration::from_millis(20);

/// A journal entry and the caller waiting for its first outcome.
pub(super) struct Pending {
    write: Write,
    waiter: Option<oneshot::Sender<()>>,
}

impl Pending {
    /// Lets the caller go on (stored, or held after a failure).
    fn release(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.send(());
        }
    }
}

/// Journal state shared between the store and its flusher.
#[derive(Default)]
pub(super) struct Journal {
    /// Writes enqueued and not yet stored.
    pub(super) pending: AtomicUsize,
    /// Writes enqueued so far: the last one's sequence number.
    enqueued: AtomicU64,
    /// Writes stored so far (in journal order, so every sequence number up
    /// to this one is stored).
    pub(super) stored: AtomicU64,
    /// Set while the backend fails; callers then do not wait for their write.
    pub(super) degraded: AtomicBool,
    /// The backend's last error, while degraded.
    pub(super) last_error: Mutex<Option<String>>,
}

impl ResilientStore {
    /// Queues `write` (the caller holds the mirror lock, so the journal order
    /// is the order the mirror changed in) and returns its sequence number
    /// and what to wait on.
    pub(super) fn enqueue(&self, write: Write) -> (u64, Option<oneshot::Receiver<()>>) {
        self.journal.pending.fetch_add(1, Ordering::SeqCst);
        let seq = self.journal.enqueued.fetch_add(1, Ordering::SeqCst) + 1;
        let (waiter, done) = oneshot::channel();
        let waiter = (!self.journal.degraded.load(Ordering::SeqCst)).then_some(waiter);
        let waits = waiter.is_some();
        // The flusher lives as long as the runtime; if it is gone the write
        // stays in memory only, which health then reports as pending.
        let _ = self.sender.send(Pending { write, waiter });
        (seq, waits.then_some(done))
    }
}

/// A backend call that counts as failed after `limit`.
pub(super) async fn within<T>(
    limit: Duration,
    operation: &'static str,
    call: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(timed_out(operation)))
}

fn timed_out(operation: &'static str) -> StoreError {
    StoreError::Backend {
        operation,
        message: format!("no answer within {CALL_TIMEOUT:?}"),
    }
}

/// Drains the journal in order, in batches, retrying the oldest batch with
/// backoff until it is stored.
pub(super) async fn flush(
    backend: Arc<dyn Store>,
    mut receiver: mpsc::UnboundedReceiver<Pending>,
    journal: Arc<Journal>,
    stop: CancellationToken,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        if queue.is_empty() {
            // Stops only when nothing is held: `drain` asks once all is stored.
            let next = tokio::select! {
                next = receiver.recv() => next,
                _ = stop.cancelled() => None,
            };
            match next {
                Some(pending) => queue.push_back(pending),
                None => return,
            }
        }
        while let Ok(pending) = receiver.try_recv() {
            queue.push_back(pending);
        }
        // Everything waiting goes to the backend together: one commit for
        // the embedded store however many callers wrote meanwhile.
        let count = queue.len().min(MAX_BATCH);
        let batch: Vec<Write> = queue.iter().take(count).map(|p| p.write.clone()).collect();
        let limit = CALL_TIMEOUT + BATCH_TIME_PER_WRITE * count as u32;
        let outcome = tokio::time::timeout(limit, backend.write_batch(&batch))
            .await
            .unwrap_or_else(|_| Err(timed_out("writing")));
        match outcome {
            Ok(()) => {
                // Counted stored before any waiter goes on, so what it reads
                // next already finds its write released from memory.
                journal.stored.fetch_add(count as u64, Ordering::SeqCst);
                journal.pending.fetch_sub(count, Ordering::SeqCst);
                for mut stored in queue.drain(..count) {
                    stored.release();
                }
                backoff = MIN_BACKOFF;
                if queue.is_empty() && journal.degraded.swap(false, Ordering::SeqCst) {
                    *journal.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    tracing::info!("store reachable again; every held write is stored");
                }
            }
            Err(error) => {
                if !journal.degraded.swap(true, Ordering::SeqCst) {
                    tracing::error!(%error, "store write failed; holding writes in memory and retrying");
                }
                *journal.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(error.to_string());
                queue.iter_mut().for_each(Pending::release);
                let pause = tokio::time::sleep(backoff);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        next = receiver.recv() => match next {
                            Some(mut pending) => {
                                pending.release();
                                queue.push_back(pending);
                            }
                            None => break,
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
