//! Uploading a finished task's whole output to the master (`UploadTaskLog`)
//! when the log tail in its result does not hold all of it: the output
//! spooled while the task ran ([`crate::task::spool`]), in numbered parts.

use crate::Worker;
use crate::master_link::master_client;
use crate::task::spool;
use cloudai_proto::v1::{TaskLogPart, TaskResult};
use futures::{Stream, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;
use tonic::{Code, Status};

/// Bytes per uploaded part (the master stores each as one chunk).
pub const PART_BYTES: usize = 256 * 1024;
/// Most output the master accepts for one task attempt.
pub const MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// Time allowed for an upload: this much, plus [`TIME_PER_MIB`] per MiB sent
/// (so links down to about 100 KiB/s get through).
const BASE_TIMEOUT: Duration = Duration::from_secs(60);
const TIME_PER_MIB: Duration = Duration::from_secs(10);

/// Why an upload did not happen.
#[derive(Debug)]
pub enum UploadError {
    /// Worth another try later (master or store away).
    Retry(Status),
    /// Will not work: report the result with its tail only. The message says why.
    GiveUp(String),
}

/// Where the parts of one upload go, and what they are for.
struct Target {
    task_id: String,
    worker_id: String,
    attempt: u32,
}

/// Uploads the spooled output of `result`'s task and records in the result
/// what was stored: its chunks, their bytes, and the total.
pub async fn upload(worker: &Worker, result: &mut TaskResult) -> Result<(), UploadError> {
    let limit = worker.config().max_log_upload;
    let mut client = master_client(worker).map_err(classify)?;
    let target = Target {
        task_id: result.task_id.clone(),
        worker_id: result.worker_id.clone(),
        attempt: result.attempt,
    };
    let path = spool::path(&worker.config().data_dir, &target.task_id, target.attempt);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        UploadError::GiveUp(format!(
            "its output was not spooled ({}: {e})",
            path.display()
        ))
    })?;
    let output = ReaderStream::with_capacity(file, PART_BYTES);
    let (parts, receiver) = mpsc::channel(4);
    let reader = tokio::spawn(async move { send_parts(output, limit, &target, parts).await });
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let expected_mib = (result.log_total_bytes.min(limit) >> 20) as u32;
    let allowed = BASE_TIMEOUT + TIME_PER_MIB * expected_mib;
    request.set_timeout(allowed);
    // The header tells the master; the client enforces it itself.
    let answer = tokio::time::timeout(allowed, client.upload_task_log(request))
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer within {}s",
                allowed.as_secs()
            )))
        });
    let read = reader
        .await
        .map_err(|e| UploadError::GiveUp(format!("reading the output failed: {e}")))?;
    let stored = match answer {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(classify(status)),
    };
    let sent = read.map_err(|e| UploadError::GiveUp(format!("reading the spooled output: {e}")))?;
    if sent != stored.bytes {
        return Err(UploadError::Retry(Status::data_loss(format!(
            "the master stored {} of {sent} bytes",
            stored.bytes
        ))));
    }
    result.log_chunks = stored.chunks;
    result.log_uploaded_bytes = stored.bytes;
    result.log_total_bytes = result.log_total_bytes.max(stored.bytes);
    tracing::info!(task_id = %result.task_id, chunks = stored.chunks, bytes = stored.bytes, "whole output uploaded to the master");
    Ok(())
}

/// A refusal that another try will not change ends the upload; anything
/// else (master or its store away) is retried.
fn classify(status: Status) -> UploadError {
    match status.code() {
        Code::Unimplemented => {
            UploadError::GiveUp("the master does not take whole outputs (older version)".into())
        }
        // The same refusals that make the reporter drop a result; anything
        // else (authentication during a certificate renewal included) passes.
        Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument => UploadError::GiveUp(
            format!("the output cannot be uploaded: {}", status.message()),
        ),
        _ => UploadError::Retry(status),
    }
}

/// Cuts `output` into numbered parts of [`PART_BYTES`] and sends them, up to
/// `limit` bytes in all; returns the bytes sent. Stops early (without error)
/// when the receiver is gone: the upload failed, and its error says why.
async fn send_parts<B: AsRef<[u8]>>(
    output: impl Stream<Item = std::io::Result<B>>,
    limit: u64,
    target: &Target,
    parts: mpsc::Sender<TaskLogPart>,
) -> std::io::Result<u64> {
    let mut output = std::pin::pin!(output);
    let mut buffer: Vec<u8> = Vec::with_capacity(PART_BYTES);
    let (mut seq, mut sent) = (0u32, 0u64);
    let part = |seq: u32, data: Vec<u8>| TaskLogPart {
        task_id: target.task_id.clone(),
        worker_id: target.worker_id.clone(),
        attempt: target.attempt,
        seq,
        data,
    };
    let mut room = limit;
    while room > 0 {
        let Some(piece) = output.next().await else {
            break;
        };
        let piece = piece?;
        let piece = piece.as_ref();
        let mut piece = &piece[..piece.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        room -= piece.len() as u64;
        while !piece.is_empty() {
            let take = piece.len().min(PART_BYTES - buffer.len());
            buffer.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if buffer.len() == PART_BYTES {
                let data = std::mem::replace(&mut buffer, Vec::with_capacity(PART_BYTES));
                sent += data.len() as u64;
                if parts.send(part(seq, data)).await.is_err() {
                    return Ok(sent);
                }
                seq += 1;
            }
        }
    }
    if !buffer.is_empty() {
        sent += buffer.len() as u64;
        let _ = parts.send(part(seq, buffer)).await;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            task_id: "t-1".into(),
            worker_id: "w".into(),
            attempt: 2,
        }
    }

    fn joined(parts: &[TaskLogPart]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.data.iter().copied()).collect()
    }

    /// Runs `send_parts` over `pieces` and returns what it sent and the parts.
    async fn cut(pieces: Vec<Vec<u8>>, limit: u64) -> (u64, Vec<TaskLogPart>) {
        let (sender, mut receiver) = mpsc::channel(1000);
        let output = futures::stream::iter(pieces.into_iter().map(Ok));
        let sent = send_parts(output, limit, &target(), sender).await.unwrap();
        let mut parts = Vec::new();
        while let Ok(part) = receiver.try_recv() {
            parts.push(part);
        }
        (sent, parts)
    }

    #[tokio::test]
    async fn output_is_cut_into_numbered_full_parts() {
        // Odd-sized pieces, as Docker frames come.
        let all: Vec<u8> = (0..PART_BYTES * 3 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let pieces: Vec<Vec<u8>> = all.chunks(7919).map(<[u8]>::to_vec).collect();
        let (sent, parts) = cut(pieces, u64::MAX).await;
        assert_eq!(sent, all.len() as u64);
        let sizes: Vec<usize> = parts.iter().map(|p| p.data.len()).collect();
        assert_eq!(sizes, [PART_BYTES, PART_BYTES, PART_BYTES, 1000]);
        let seqs: Vec<u32> = parts.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert!(
            parts
                .iter()
                .all(|p| p.task_id == "t-1" && p.worker_id == "w" && p.attempt == 2)
        );
        assert_eq!(joined(&parts), all);
    }

    #[tokio::test]
    async fn the_limit_keeps_the_start() {
        let all: Vec<u8> = (0..PART_BYTES * 2).map(|i| (i % 13) as u8).collect();
        let pieces: Vec<Vec<u8>> = all.chunks(1000).map(<[u8]>::to_vec).collect();
        let limit = PART_BYTES as u64 + 10;
        let (sent, parts) = cut(pieces.clone(), limit).await;
        assert_eq!(sent, limit);
        assert_eq!(joined(&parts), all[..limit as usize]);
        let (sent, parts) = cut(pieces, 0).await;
        assert_eq!((sent, parts.len()), (0, 0));
    }

    #[tokio::test]
    async fn a_read_error_is_returned() {
        let (sender, _receiver) = mpsc::channel(10);
        let output = futures::stream::iter([
            Ok(vec![1u8; 10]),
            Err(std::io::Error::other("disk went away")),
        ]);
        let error = send_parts(output, u64::MAX, &target(), sender)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "disk went away");
    }
}
