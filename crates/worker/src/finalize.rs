//! Finalization: once every chunk is done — or the batch is cancelled or expired and no chunk is
//! still held — concatenate the chunks' parts in order into the output and error files, write
//! the lines nobody sent as `batch_cancelled` / `batch_expired`, and end the batch.
//!
//! Idempotent: the files go under ids fixed when the batch was created, the end is one fenced
//! transaction, so a finalizer that crashes half-way is simply redone by the next one.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use vllm_batch_core::line::{is_blank, trim_line, RequestLine};
use vllm_batch_core::output::{error_line, LineFailure};
use vllm_batch_store::{file_key, BlobWriter, Fenced, FinalizeJob, FinalizeMode, FinalizeOutcome, StoreError};

use vllm_batch_core::time::unix_now;
use vllm_batch_metrics::metrics;

use crate::{Shared, Turn};

/// Counts a batch that reached its terminal status.
pub(crate) fn record_terminal(status: &str, created_at: i64) {
    metrics().batch_ended(status, (unix_now() - created_at) as f64);
}

/// Counts the batch's end, and the lines finalization added to its counts (abandoned chunks'
/// checkpointed answers and the lines it wrote as errors: no chunk completion counted them).
fn record_end(mode: FinalizeMode, created_at: i64, outcome: &FinalizeOutcome) {
    record_terminal(mode.end().0.as_str(), created_at);
    let m = metrics();
    m.requests_processed.with_label_values(&["completed"]).inc_by(outcome.extra_completed as u64);
    m.requests_processed.with_label_values(&["failed"]).inc_by(outcome.extra_failed as u64);
    m.tokens_generated.inc_by(outcome.extra_usage.output_tokens as u64);
    m.prompt_tokens.inc_by(outcome.extra_usage.input_tokens as u64);
}

pub(crate) async fn run_loop(s: Arc<Shared>, shutdown: CancellationToken) {
    crate::poll_loop(&s, &shutdown, None, &mut (), |_| Box::pin(turn(s.clone()))).await
}

async fn turn(s: Arc<Shared>) -> Turn {
    // Output files are written to the data folder (local storage): under its margin the batch
    // waits in its state, and is finalized once space returns.
    if !crate::disk_has_room(&s) {
        return Turn::Idle;
    }
    let mut job = match s.store.claim_finalization(&s.config.worker_id, s.config.lease_ms()).await {
        Ok(Some(job)) => job,
        Ok(None) => return Turn::Idle,
        Err(e) => {
            warn!(error = %e, "claiming a finalization failed; retrying");
            return Turn::Idle;
        }
    };
    // Without the batch's own `output_expires_after`, its files keep the server's retention.
    if job.output_expires_at.is_none() {
        job.output_expires_at = s.config.file_retention.map(|r| unix_now() + r.as_secs() as i64);
    }
    let span = tracing::info_span!("finalize", batch_id = %job.job.batch_id);
    match finalize(&s, &job).instrument(span.clone()).await {
        Ok(Fenced::Applied) => span.in_scope(|| info!(mode = ?job.mode, "batch finalized")),
        Ok(Fenced::Lost) => span.in_scope(|| warn!("finalization lost its lease; another worker redoes it")),
        Err(e) => {
            metrics().errors.with_label_values(&["finalize"]).inc();
            span.in_scope(|| tracing::error!(error = %e, "finalization failed; will retry"));
            let _ = s.store.release_job(&job.job).await;
            tokio::time::sleep(s.config.poll_interval * 4).await;
        }
    }
    Turn::Worked
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

/// Parts read ahead while finalization writes: a chunk commits a part segment with about every
/// heartbeat, so a long chunk leaves many small ones, and on an object store each is a request.
const PARTS_READ_AHEAD: usize = 8;

/// Copies a chunk's committed parts in order, each into the file of its kind, reading a few
/// ahead.
async fn copy_parts(s: &Shared, parts: &[String], out: &mut Sink, err: &mut Sink) -> Result<(), StoreError> {
    let mut bodies = futures_util::stream::iter(parts.to_vec())
        .map(|key: String| async move {
            let mut body = Vec::new();
            s.files.reader(&key).await?.read_to_end(&mut body).await?;
            Ok::<_, StoreError>((key.ends_with(".err.jsonl"), body))
        })
        .buffered(PARTS_READ_AHEAD);
    while let Some(part) = bodies.next().await {
        let (is_err, body) = part?;
        if is_err {
            err.write(&body).await?
        } else {
            out.write(&body).await?
        }
    }
    Ok(())
}

async fn finalize(s: &Shared, job: &FinalizeJob) -> Result<Fenced, StoreError> {
    let batch = &job.job.batch_id;
    let mut out = Sink { writer: s.files.writer(&file_key(&job.output_file_id)).await?, bytes: 0 };
    let mut err = Sink { writer: s.files.writer(&file_key(&job.error_file_id)).await?, bytes: 0 };
    let (code, message) = match job.mode {
        FinalizeMode::Expire => ("batch_expired", "The batch expired before this request was completed."),
        _ => ("batch_cancelled", "The batch was cancelled before this request was sent."),
    };
    let mut outcome = FinalizeOutcome::default();
    let mut last_beat = Instant::now();
    for chunk in &job.chunks {
        if last_beat.elapsed() > s.config.heartbeat_interval() {
            last_beat = Instant::now();
            if s.store.extend_job(&job.job, s.config.lease_ms()).await? == Fenced::Lost {
                return Ok(Fenced::Lost);
            }
        }
        copy_parts(s, &chunk.checkpoint.parts, &mut out, &mut err).await?;
        if chunk.done {
            continue;
        }
        // Abandoned to cancel or expiry: what its holders answered stays, the rest become errors.
        let cp = &chunk.checkpoint;
        outcome.extra_completed += cp.completed;
        outcome.extra_failed += cp.failed;
        outcome.extra_usage += &cp.usage;
        let spec = &chunk.spec;
        let data =
            s.files.read_range(&file_key(&job.input_file_id), spec.byte_start as u64, spec.byte_end as u64).await?;
        let lines = data
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, raw)| trim_line(raw, spec.first_line == 1 && i == 0))
            .filter(|line| !is_blank(line));
        for (offset, line) in lines.enumerate() {
            if cp.done.contains(offset) {
                continue;
            }
            let parsed: RequestLine<'_> = serde_json::from_slice(line)
                .map_err(|e| StoreError::Corrupt(format!("validated line no longer parses: {e}")))?;
            err.write(&error_line(&parsed.custom_id, None, LineFailure { code, message })).await?;
            outcome.extra_failed += 1;
        }
    }
    outcome.output_bytes = out.finish().await?;
    outcome.error_bytes = err.finish().await?;
    let done = s.store.finish_finalization(job, &outcome).await?;
    if done.applied() {
        record_end(job.mode, job.created_at, &outcome);
        if let Err(e) = s.files.delete_prefix(&format!("parts/{batch}")).await {
            warn!(error = %e, "could not remove the batch's parts");
        }
    }
    Ok(done)
}
