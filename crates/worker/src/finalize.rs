//! Finalization: once every chunk is done — or the batch is cancelled or expired and no chunk is
//! still held — concatenate the chunks' parts in order into the output and error files, write
//! the lines nobody sent as `batch_cancelled` / `batch_expired`, and end the batch.
//!
//! Idempotent: the files go under ids fixed when the batch was created, the end is one fenced
//! transaction, so a finalizer that crashes half-way is simply redone by the next one.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use vllm_batch_core::line::{is_blank, trim_line, RequestLine};
use vllm_batch_core::output::{error_line, LineFailure};
use vllm_batch_store::{file_key, part_key, BlobWriter, FinalizeJob, FinalizeMode, FinalizeOutcome, StoreError};

use vllm_batch_core::time::unix_now;
use vllm_batch_metrics::metrics;

use crate::Shared;

/// Counts a batch that reached its terminal status.
pub(crate) fn record_terminal(status: &str, created_at: i64) {
    metrics().batch_ended(status, (unix_now() - created_at) as f64);
}

fn record_end(mode: FinalizeMode, created_at: i64, extra_failed: i64) {
    let status = match mode {
        FinalizeMode::Complete => "completed",
        FinalizeMode::Cancel => "cancelled",
        FinalizeMode::Expire => "expired",
    };
    record_terminal(status, created_at);
    metrics().requests_processed.with_label_values(&["failed"]).inc_by(extra_failed as u64);
}

pub(crate) async fn run_loop(s: Arc<Shared>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match s.store.claim_finalization(&s.config.worker_id, s.config.lease_ms()).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("finalize", batch_id = %job.job.batch_id);
                match finalize(&s, &job).instrument(span.clone()).await {
                    Ok(true) => span.in_scope(|| info!(mode = ?job.mode, "batch finalized")),
                    Ok(false) => span.in_scope(|| warn!("finalization lost its lease; another worker redoes it")),
                    Err(e) => {
                        metrics().errors.with_label_values(&["finalize"]).inc();
                        span.in_scope(|| tracing::error!(error = %e, "finalization failed; will retry"));
                        let _ = s.store.release_job(&job.job).await;
                        tokio::time::sleep(s.config.poll_interval * 4).await;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "claiming a finalization failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = s.wake.notified() => {}
            _ = tokio::time::sleep(s.config.poll_interval) => {}
        }
    }
}

/// Lines counted while writing one of the two files.
struct Sink {
    writer: Box<dyn BlobWriter>,
    bytes: u64,
}

impl Sink {
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.bytes += data.len() as u64;
        self.writer.write(data).await
    }

    /// Commits the file when it has content; an empty file is dropped (its id stays null).
    async fn finish(self) -> Result<Option<i64>, StoreError> {
        if self.bytes == 0 {
            return Ok(None);
        }
        Ok(Some(self.writer.commit().await? as i64))
    }
}

async fn copy_part(s: &Shared, key: &str, sink: &mut Sink) -> Result<(), StoreError> {
    let mut reader = s.files.reader(key).await?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sink.write(&buf[..n]).await?;
    }
}

async fn finalize(s: &Shared, job: &FinalizeJob) -> Result<bool, StoreError> {
    let batch = &job.job.batch_id;
    let mut out = Sink { writer: s.files.writer(&file_key(&job.output_file_id)).await?, bytes: 0 };
    let mut err = Sink { writer: s.files.writer(&file_key(&job.error_file_id)).await?, bytes: 0 };
    let (code, message) = match job.mode {
        FinalizeMode::Expire => ("batch_expired", "The batch expired before this request was completed."),
        _ => ("batch_cancelled", "The batch was cancelled before this request was sent."),
    };
    let mut extra_failed = 0;
    let mut last_beat = Instant::now();
    for (chunk, fence) in &job.chunks {
        if last_beat.elapsed() > s.config.heartbeat_interval() {
            last_beat = Instant::now();
            if !s.store.extend_job(&job.job, s.config.lease_ms()).await? {
                return Ok(false);
            }
        }
        match fence {
            Some(fence) => {
                copy_part(s, &part_key(batch, chunk.idx, *fence, "out"), &mut out).await?;
                copy_part(s, &part_key(batch, chunk.idx, *fence, "err"), &mut err).await?;
            }
            None => {
                let data = s
                    .files
                    .read_range(&file_key(&job.input_file_id), chunk.byte_start as u64, chunk.byte_end as u64)
                    .await?;
                for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
                    let line = trim_line(raw, chunk.first_line == 1 && i == 0);
                    if is_blank(line) {
                        continue;
                    }
                    let parsed: RequestLine<'_> = serde_json::from_slice(line)
                        .map_err(|e| StoreError::Corrupt(format!("validated line no longer parses: {e}")))?;
                    err.write(&error_line(&parsed.custom_id, None, LineFailure { code, message })).await?;
                    extra_failed += 1;
                }
            }
        }
    }
    let outcome = FinalizeOutcome { output_bytes: out.finish().await?, error_bytes: err.finish().await?, extra_failed };
    let done = s.store.finish_finalization(job, &outcome).await?;
    if done {
        record_end(job.mode, job.created_at, outcome.extra_failed);
        if let Err(e) = s.files.delete_prefix(&format!("parts/{batch}")).await {
            warn!(error = %e, "could not remove the batch's parts");
        }
    }
    Ok(done)
}
