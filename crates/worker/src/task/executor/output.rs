//! Reading a container's output: [`Executor::collect_logs`] (followed, or
//! what Docker holds after a [`LogMark`]) and the timestamp of its last piece,
//! with Docker's timestamp prefix split from each piece.

use super::Executor;
use crate::task::logs::LogBuffer;
use crate::task::spool::Spool;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use cloudai_proto::v1::{LogChunk, LogStream};
use futures::StreamExt;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// How [`Executor::collect_logs`] reads a container's output.
#[derive(Debug, Clone)]
pub enum LogRead {
    /// From the start, following until Docker ends the stream (after the
    /// container stopped and all its output was delivered) or the token is
    /// cancelled.
    Follow(CancellationToken),
    /// What Docker holds now after `mark` (from the start when `None`), without following.
    After(Option<LogMark>),
}

/// Size of the pieces Docker cuts a line into when it has no newline within
/// them; every piece but a line's last is exactly this long, and they all
/// carry the line's timestamp.
pub const DOCKER_PIECE_BYTES: usize = 16 * 1024;

/// Where a read of a container's output stopped: Docker's timestamp of the
/// last piece and how many bytes carried that same timestamp (the pieces of
/// a line longer than [`DOCKER_PIECE_BYTES`] share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMark {
    /// Nanoseconds since the epoch.
    pub nanos: i128,
    /// Bytes read with exactly that timestamp.
    pub bytes_at: u64,
    /// The last piece may be followed by more of its line: a full piece
    /// without a newline.
    pub may_continue: bool,
}

impl LogMark {
    /// Advances the mark over a piece read with `nanos`.
    fn passed(mark: Option<LogMark>, nanos: i128, piece: &[u8]) -> LogMark {
        let before = mark.filter(|m| m.nanos == nanos).map_or(0, |m| m.bytes_at);
        LogMark {
            nanos,
            bytes_at: before + piece.len() as u64,
            may_continue: piece.len() >= DOCKER_PIECE_BYTES && !piece.ends_with(b"\n"),
        }
    }
}

/// What [`Executor::collect_logs`] hands back.
pub struct Collected {
    /// The spool it wrote to.
    pub spool: Option<Spool>,
    /// Where the read stopped (`None`: nothing with a timestamp was read).
    pub mark: Option<LogMark>,
}

/// Splits Docker's RFC 3339 timestamp prefix (`2026-11-27T12:00:00.123456789Z `,
/// or with an offset for log drivers that keep local time; logs read with
/// `timestamps`) from a piece of output, as nanoseconds since the epoch.
fn split_timestamp(message: &[u8]) -> (Option<i128>, &[u8]) {
    let prefix = &message[..message.len().min(48)];
    let Some(space) = prefix.iter().position(|&b| b == b' ') else {
        return (None, message);
    };
    let parsed = std::str::from_utf8(&message[..space])
        .ok()
        .and_then(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        });
    match parsed {
        Some(at) => (Some(at.unix_timestamp_nanos()), &message[space + 1..]),
        None => (None, message),
    }
}

impl Executor {
    /// Copies the container's output into `buffer` (and `spool`, when given)
    /// as `read` says. Hands the spool back, for more output or for
    /// [`Spool::finish`], with the mark of the last piece read.
    pub async fn collect_logs(
        &self,
        name: &str,
        task_id: &str,
        buffer: &LogBuffer,
        read: LogRead,
        mut spool: Option<Spool>,
    ) -> Collected {
        let (follow, after, stop) = match read {
            LogRead::Follow(stop) => (true, None, stop),
            LogRead::After(mark) => (false, mark, CancellationToken::new()),
        };
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            // Docker's `since` is in whole seconds; the mark sorts out the rest.
            since: after.map_or(0, |m| {
                i32::try_from(m.nanos.div_euclid(1_000_000_000)).unwrap_or(0)
            }),
            ..Default::default()
        };
        let mut logs = self.docker.logs(name, Some(options));
        let mut mark = None;
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break,
                item = logs.next() => item,
            };
            let Some(item) = item else { break };
            let (stream, message) = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    (LogStream::Stdout, message)
                }
                Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
                Ok(LogOutput::StdIn { .. }) => continue,
                Err(error) => {
                    tracing::warn!(task_id, %error, "log stream from Docker ended with an error");
                    break;
                }
            };
            let (nanos, message) = split_timestamp(&message);
            let seen = nanos.map(|n| LogMark::passed(mark, n, message));
            mark = seen.or(mark);
            let data = match (after, seen) {
                // Read before: older than the mark, or within its bytes.
                (Some(after), Some(seen)) if seen.nanos < after.nanos => continue,
                (Some(after), Some(seen)) if seen.nanos == after.nanos => {
                    let new = seen.bytes_at.saturating_sub(after.bytes_at);
                    &message[message.len() - (new as usize).min(message.len())..]
                }
                _ => message,
            };
            if data.is_empty() {
                continue;
            }
            if let Some(spool) = spool.as_mut() {
                spool.write(data).await;
            }
            buffer.push(LogChunk {
                task_id: task_id.to_string(),
                stream: stream as i32,
                data: data.to_vec(),
                timestamp: Some(cloudai_proto::timestamp(SystemTime::now())),
            });
        }
        Collected { spool, mark }
    }

    /// Docker's timestamp of the last piece of a container's output, in
    /// nanoseconds since the epoch (read from the end of its log: cheap
    /// whatever the output's size).
    pub async fn last_log_time(&self, name: &str) -> Option<i128> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: "1".into(),
            ..Default::default()
        };
        let mut logs = self.docker.logs(name, Some(options));
        let mut last = None;
        while let Some(Ok(item)) = logs.next().await {
            if let LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } = item
            {
                last = split_timestamp(&message).0;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_are_split_from_the_output() {
        let (nanos, data) = split_timestamp(b"2026-11-27T12:00:00.123456789Z hello world\n");
        assert_eq!(nanos, Some(1_795_780_800_123_456_789));
        assert_eq!(data, b"hello world\n");
        // Log drivers that keep local time: the same instant.
        let (local, _) = split_timestamp(b"2026-11-27T13:00:00.123456789+01:00 x");
        assert_eq!(local, nanos);
        // Output that merely contains a space is left whole.
        assert_eq!(
            split_timestamp(b"no stamp here"),
            (None, &b"no stamp here"[..])
        );
        assert_eq!(split_timestamp(b""), (None, &b""[..]));
    }

    #[test]
    fn a_mark_counts_the_bytes_of_its_timestamp() {
        let full_piece = vec![b'x'; DOCKER_PIECE_BYTES];
        let first = LogMark::passed(None, 5, &full_piece);
        assert_eq!((first.bytes_at, first.may_continue), (16_384, true));
        let same = LogMark::passed(Some(first), 5, b"45\n");
        assert_eq!(
            (same.nanos, same.bytes_at, same.may_continue),
            (5, 16_387, false)
        );
        // A short piece without a newline is the last of its line.
        let next = LogMark::passed(Some(same), 6, b"x");
        assert_eq!(
            (next.nanos, next.bytes_at, next.may_continue),
            (6, 1, false)
        );
    }
}
