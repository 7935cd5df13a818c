//! Bounds on the connections a server accepts, so that clients that connect
//! and then say nothing (before TLS or after it) cannot use up its open files:
//! a cap on all connections and one per source IP, below the open-file limit,
//! and an idle timeout that closes a connection when no byte has moved either
//! way for that long. Refusals are counted and logged (at most every 10 s).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// How often a refusal is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The bounds a [`ConnectionGate`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open connections in all.
    pub max_total: usize,
    /// Most open connections from one IP address.
    pub max_per_ip: usize,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// These limits with `max_total` lowered to three quarters of `open_files`
    /// (the rest stays for the store, logs and outgoing connections).
    pub fn within_file_limit(self, open_files: u64) -> Self {
        let room = usize::try_from(open_files / 4 * 3)
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            max_total: self.max_total.min(room),
            ..self
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_total: 8192,
            max_per_ip: 1024,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit and returns
/// the limit in force (services start with a low soft limit, often 1024).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Counts open connections and admits new ones within [`ConnectionLimits`].
#[derive(Debug)]
pub struct ConnectionGate {
    limits: ConnectionLimits,
    open: Mutex<Open>,
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionGate {
    /// A gate with these limits.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(Open::default()),
            refused: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// The limits it applies.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit for one more connection from `ip`, or `None` (logged) when a
    /// limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let refusal = {
            let mut open = self.lock();
            let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
            if open.total >= self.limits.max_total {
                Some(format!(
                    "{} connections open, the most allowed (--max-connections)",
                    open.total
                ))
            } else if from_ip >= self.limits.max_per_ip {
                Some(format!(
                    "{from_ip} connections open from {ip}, the most allowed from one address (--max-connections-per-ip)"
                ))
            } else {
                open.total += 1;
                *open.per_ip.entry(ip).or_default() += 1;
                None
            }
        };
        let Some(refusal) = refusal else {
            return Some(Permit {
                gate: self.clone(),
                ip,
            });
        };
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if self.time_to_warn() {
            tracing::warn!(%ip, refused_total = refused, "connection refused: {refusal}; idle ones close after {}s", self.limits.idle_timeout.as_secs());
        }
        None
    }

    /// Whether a warning is due (one every [`WARN_EVERY`] at most).
    fn time_to_warn(&self) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Accepts the next connection the limits admit (others are closed at
    /// once). Accept errors, such as running out of file descriptors, are
    /// logged and waited out rather than ending the server.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
    ) -> (Guarded<TcpStream>, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let Some(permit) = self.admit(peer.ip()) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    return (Guarded::new(stream, permit, self.limits.idle_timeout), peer);
                }
                Err(error) => {
                    if self.time_to_warn() {
                        tracing::warn!(%error, open = self.open(), "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A connection that holds its [`Permit`] and fails with `TimedOut` once no
/// byte has moved either way for the idle timeout.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    _permit: Permit,
    idle: Duration,
    last_progress: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, permit: Permit, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            _permit: permit,
            idle,
            last_progress: now,
            deadline: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Called when the inner stream is not ready: the error once the
    /// connection has been idle too long, otherwise `Pending` (woken by the
    /// deadline). The timer is moved only when it fires, not on every byte.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_progress + self.idle;
            if Instant::now() >= due {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle past the idle timeout",
                )));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_progress = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<S> Guarded<S> {
    /// A write's outcome: bytes moved count as progress; not ready, the
    /// idle deadline decides.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match outcome {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write(cx, data);
        this.written(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The connections `gate` admits on `listener`, as a stream for tonic's
/// `serve_with_incoming`.
pub fn incoming(
    listener: Arc<TcpListener>,
    gate: Arc<ConnectionGate>,
) -> impl futures::Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
    futures::stream::unfold((listener, gate), |(listener, gate)| async move {
        let (stream, _) = gate.accept(&listener).await;
        Some((Ok(stream), (listener, gate)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(total: usize, per_ip: usize, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            max_total: total,
            max_per_ip: per_ip,
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    #[test]
    fn permits_are_capped_in_all_and_per_address_and_freed_on_drop() {
        let gate = ConnectionGate::new(limits(3, 2, 1000));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "a third from one address");
        let _third = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "a fourth in all");
        assert_eq!((gate.open(), gate.refused()), (3, 2));
        drop(first);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(a).is_some());
    }

    #[test]
    fn the_total_stays_below_the_file_limit() {
        let capped = limits(8192, 1024, 1).within_file_limit(1024);
        assert_eq!(capped.max_total, 768);
        assert_eq!(limits(100, 10, 1).within_file_limit(1 << 20).max_total, 100);
        assert_eq!(limits(100, 10, 1).within_file_limit(0).max_total, 1);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_a_busy_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let gate = ConnectionGate::new(limits(10, 10, 300));
        let server = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for _ in 0..2 {
                    let (mut stream, _) = gate.accept(&listener).await;
                    results.push(tokio::spawn(async move {
                        let mut buf = [0u8; 16];
                        let mut got = 0;
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) => return Ok(got),
                                Ok(n) => got += n,
                                Err(error) => return Err(error.kind()),
                            }
                        }
                    }));
                }
                results
            })
        };
        let _silent = TcpStream::connect(address).await.unwrap();
        let mut busy = TcpStream::connect(address).await.unwrap();
        for _ in 0..8 {
            busy.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(busy);
        let results = server.await.unwrap();
        let mut outcomes = Vec::new();
        for result in results {
            outcomes.push(result.await.unwrap());
        }
        assert!(
            outcomes.contains(&Err(io::ErrorKind::TimedOut)),
            "{outcomes:?}"
        );
        assert!(outcomes.contains(&Ok(8)), "{outcomes:?}");
        assert_eq!(gate.open(), 0, "both permits freed");
    }
}
