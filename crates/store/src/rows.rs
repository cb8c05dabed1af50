//! Mapping database rows (either backend's, through sqlx's `Any` driver) to the wire objects of
//! `core` and the store's records.

use sqlx::any::AnyRow;
use sqlx::Row;
use vllm_batch_core::batch::{InputTokensDetails, OutputTokensDetails};
use vllm_batch_core::{Batch, BatchError, BatchErrors, BatchId, FileObject, RequestCounts, Usage};

use crate::model::{
    ApiKey, BatchJob, Checkpoint, ChunkLease, ChunkSpec, ChunkState, FinalChunk, FinalizeJob, FinalizeMode,
};
use crate::{Result, StoreError};

/// The columns `batch_from_row` reads, with live counts: the committed counts plus the
/// checkpointed progress of the chunks not done yet (so they never go back when a chunk changes
/// hands). `SUM` of a `BIGINT` is a `NUMERIC` on PostgreSQL, hence the casts.
pub const BATCH_COLUMNS: &str = "b.*,
    CAST((SELECT COALESCE(SUM(c.completed), 0) FROM chunks c WHERE c.batch_id = b.id AND c.state <> 'done') AS BIGINT)
        AS live_completed,
    CAST((SELECT COALESCE(SUM(c.failed), 0) FROM chunks c WHERE c.batch_id = b.id AND c.state <> 'done') AS BIGINT)
        AS live_failed";

/// The columns `key_from_row` reads (`admin` as 0/1: a BOOLEAN on PostgreSQL, an INTEGER on SQLite).
pub const KEY_COLUMNS: &str =
    "id, name, prefix, salt, hash, CASE WHEN admin THEN 1 ELSE 0 END AS admin, created_at, last_used_at, revoked_at";

/// The chunk columns `chunk_from_row` reads.
pub const CHUNK_COLUMNS: &str = "idx, first_line, line_count, byte_start, byte_end";

fn text(r: &AnyRow, col: &str) -> Result<String> {
    Ok(r.try_get(col)?)
}
fn opt_text(r: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(r.try_get(col)?)
}
fn int(r: &AnyRow, col: &str) -> Result<i64> {
    Ok(r.try_get(col)?)
}
fn opt_int(r: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(r.try_get(col)?)
}

/// A stored id or name parsed back into its type.
pub fn parse<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("unparsable value {s:?}")))
}

pub fn batch_from_row(r: &AnyRow) -> Result<Batch> {
    let errors = opt_text(r, "errors")?
        .map(|e| serde_json::from_str::<Vec<BatchError>>(&e).map(BatchErrors::new))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("batch errors: {e}")))?;
    let metadata = opt_text(r, "metadata")?
        .map(|m| serde_json::from_str(&m))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("batch metadata: {e}")))?;
    Ok(Batch {
        id: text(r, "id")?,
        object: "batch".into(),
        endpoint: text(r, "endpoint")?,
        model: opt_text(r, "model")?,
        errors,
        input_file_id: text(r, "input_file_id")?,
        completion_window: text(r, "completion_window")?,
        status: text(r, "status")?.parse().map_err(StoreError::Corrupt)?,
        output_file_id: opt_text(r, "output_file_id")?,
        error_file_id: opt_text(r, "error_file_id")?,
        created_at: int(r, "created_at")?,
        in_progress_at: opt_int(r, "in_progress_at")?,
        expires_at: opt_int(r, "expires_at")?,
        finalizing_at: opt_int(r, "finalizing_at")?,
        completed_at: opt_int(r, "completed_at")?,
        failed_at: opt_int(r, "failed_at")?,
        expired_at: opt_int(r, "expired_at")?,
        cancelling_at: opt_int(r, "cancelling_at")?,
        cancelled_at: opt_int(r, "cancelled_at")?,
        request_counts: RequestCounts {
            total: int(r, "total")?,
            completed: int(r, "completed")? + int(r, "live_completed")?,
            failed: int(r, "failed")? + int(r, "live_failed")?,
        },
        usage: Usage {
            input_tokens: int(r, "input_tokens")?,
            input_tokens_details: InputTokensDetails { cached_tokens: int(r, "cached_tokens")? },
            output_tokens: int(r, "output_tokens")?,
            output_tokens_details: OutputTokensDetails { reasoning_tokens: int(r, "reasoning_tokens")? },
            total_tokens: int(r, "total_tokens")?,
        },
        metadata,
    })
}

pub fn file_from_row(r: &AnyRow) -> Result<FileObject> {
    Ok(FileObject {
        id: text(r, "id")?,
        object: "file".into(),
        bytes: int(r, "bytes")?,
        created_at: int(r, "created_at")?,
        expires_at: opt_int(r, "expires_at")?,
        filename: text(r, "filename")?,
        purpose: text(r, "purpose")?,
        status: text(r, "status")?,
        status_details: None,
    })
}

pub fn job_from_row(r: &AnyRow) -> Result<BatchJob> {
    Ok(BatchJob { batch_id: parse(&text(r, "id")?)?, fence: int(r, "job_fence")? })
}

/// A key from a row of `KEY_COLUMNS`.
pub fn key_from_row(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: text(r, "id")?,
        name: text(r, "name")?,
        prefix: text(r, "prefix")?,
        salt: text(r, "salt")?,
        hash: text(r, "hash")?,
        admin: int(r, "admin")? != 0,
        created_at: int(r, "created_at")?,
        last_used_at: opt_int(r, "last_used_at")?,
        revoked_at: opt_int(r, "revoked_at")?,
    })
}

pub fn chunk_from_row(r: &AnyRow) -> Result<ChunkSpec> {
    Ok(ChunkSpec {
        idx: int(r, "idx")?,
        first_line: int(r, "first_line")?,
        line_count: int(r, "line_count")?,
        byte_start: int(r, "byte_start")?,
        byte_end: int(r, "byte_end")?,
    })
}

pub fn chunk_state(r: &AnyRow) -> Result<ChunkState> {
    text(r, "state")?.parse().map_err(StoreError::Corrupt)
}

pub fn checkpoint(r: &AnyRow) -> Result<Checkpoint> {
    Checkpoint::from_column(opt_text(r, "checkpoint")?.as_deref())
}

/// A chunk's checkpoint (columns `checkpoint`, `done_fence`) with the parts finalization copies:
/// a chunk finished before checkpoints existed left one part of each kind under its fence.
pub fn final_checkpoint(r: &AnyRow, batch: &BatchId, idx: i64, done: bool) -> Result<Checkpoint> {
    let mut checkpoint = checkpoint(r)?;
    if done && opt_text(r, "checkpoint")?.is_none() {
        if let Some(fence) = opt_int(r, "done_fence")? {
            checkpoint.parts = ["out", "err"].map(|k| crate::model::part_key(batch, idx, fence, k)).into();
        }
    }
    Ok(checkpoint)
}

/// A claimed chunk from the claim's row (`batch_id`, `CHUNK_COLUMNS`, `fence`, `checkpoint`)
/// and its batch's row (`input_file_id`, `endpoint`, `model`, `expires_at`, `created_at`,
/// `queued_ms`, `expires_in_ms`); `first_claim`: this claim was the batch's first dispatch.
pub fn lease_from_rows(chunk: &AnyRow, batch: &AnyRow, first_claim: bool) -> Result<ChunkLease> {
    Ok(ChunkLease {
        batch_id: parse(&text(chunk, "batch_id")?)?,
        input_file_id: parse(&text(batch, "input_file_id")?)?,
        endpoint: parse(&text(batch, "endpoint")?)?,
        model: opt_text(batch, "model")?.unwrap_or_default(),
        expires_at: int(batch, "expires_at")?,
        created_at: int(batch, "created_at")?,
        chunk: chunk_from_row(chunk)?,
        fence: int(chunk, "fence")?,
        first_claim,
        queued_ms: int(batch, "queued_ms")?,
        expires_in_ms: int(batch, "expires_in_ms")?,
        checkpoint: checkpoint(chunk)?,
        priority: opt_int(batch, "priority")?,
    })
}

/// A finalization job from its batch's row (`input_file_id`, `planned_output_file_id`,
/// `planned_error_file_id`, `created_at`, `output_expires_after`) and its chunks' rows in order
/// (`CHUNK_COLUMNS`, `state`, `done_fence`, `checkpoint`).
pub fn finalize_job_from_rows(
    job: BatchJob,
    mode: FinalizeMode,
    b: &AnyRow,
    chunk_rows: &[AnyRow],
) -> Result<FinalizeJob> {
    let mut chunks = Vec::with_capacity(chunk_rows.len());
    for r in chunk_rows {
        let spec = chunk_from_row(r)?;
        let done = chunk_state(r)? == ChunkState::Done;
        let checkpoint = final_checkpoint(r, &job.batch_id, spec.idx, done)?;
        chunks.push(FinalChunk { spec, done, checkpoint });
    }
    let created_at = int(b, "created_at")?;
    Ok(FinalizeJob {
        job,
        mode,
        input_file_id: parse(&text(b, "input_file_id")?)?,
        output_file_id: parse(&text(b, "planned_output_file_id")?)?,
        error_file_id: parse(&text(b, "planned_error_file_id")?)?,
        output_expires_at: opt_int(b, "output_expires_after")?.map(|s| created_at + s),
        created_at,
        chunks,
    })
}
