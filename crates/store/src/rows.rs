//! Mapping database rows to the wire objects of `core`.

use sqlx::Row;
use vllm_batch_core::batch::{InputTokensDetails, OutputTokensDetails};
use vllm_batch_core::{Batch, BatchError, BatchErrors, FileObject, RequestCounts, Usage};

use crate::model::{ApiKey, BatchJob, ChunkLease, ChunkSpec, FinalizeJob, FinalizeMode};
use crate::{Result, StoreError};

/// The columns `batch_from_row` reads, with live counts: the committed counts plus the progress
/// that workers report for the chunks they hold.
/// Written for both SQLite and PostgreSQL (where `SUM` of a `BIGINT` is a `NUMERIC`, hence the casts).
pub const BATCH_COLUMNS: &str = "b.*,
    CAST((SELECT COALESCE(SUM(c.completed), 0) FROM chunks c WHERE c.batch_id = b.id AND c.state = 'leased') AS BIGINT)
        AS live_completed,
    CAST((SELECT COALESCE(SUM(c.failed), 0) FROM chunks c WHERE c.batch_id = b.id AND c.state = 'leased') AS BIGINT)
        AS live_failed";

pub fn batch_from_row<R: Row>(r: &R) -> Result<Batch>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let status: String = r.try_get("status")?;
    let errors: Option<String> = r.try_get("errors")?;
    let errors = errors
        .map(|e| serde_json::from_str::<Vec<BatchError>>(&e).map(BatchErrors::new))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("batch errors: {e}")))?;
    let metadata: Option<String> = r.try_get("metadata")?;
    let metadata = metadata
        .map(|m| serde_json::from_str(&m))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("batch metadata: {e}")))?;
    let live_completed: i64 = r.try_get("live_completed")?;
    let live_failed: i64 = r.try_get("live_failed")?;
    let input_tokens: i64 = r.try_get("input_tokens")?;
    let output_tokens: i64 = r.try_get("output_tokens")?;
    Ok(Batch {
        id: r.try_get("id")?,
        object: "batch".into(),
        endpoint: r.try_get("endpoint")?,
        model: r.try_get("model")?,
        errors,
        input_file_id: r.try_get("input_file_id")?,
        completion_window: r.try_get("completion_window")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        output_file_id: r.try_get("output_file_id")?,
        error_file_id: r.try_get("error_file_id")?,
        created_at: r.try_get("created_at")?,
        in_progress_at: r.try_get("in_progress_at")?,
        expires_at: r.try_get("expires_at")?,
        finalizing_at: r.try_get("finalizing_at")?,
        completed_at: r.try_get("completed_at")?,
        failed_at: r.try_get("failed_at")?,
        expired_at: r.try_get("expired_at")?,
        cancelling_at: r.try_get("cancelling_at")?,
        cancelled_at: r.try_get("cancelled_at")?,
        request_counts: RequestCounts {
            total: r.try_get("total")?,
            completed: r.try_get::<i64, _>("completed")? + live_completed,
            failed: r.try_get::<i64, _>("failed")? + live_failed,
        },
        usage: Usage {
            input_tokens,
            input_tokens_details: InputTokensDetails { cached_tokens: r.try_get("cached_tokens")? },
            output_tokens,
            output_tokens_details: OutputTokensDetails { reasoning_tokens: r.try_get("reasoning_tokens")? },
            total_tokens: r.try_get("total_tokens")?,
        },
        metadata,
    })
}

pub fn file_from_row<R: Row>(r: &R) -> Result<FileObject>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(FileObject {
        id: r.try_get("id")?,
        object: "file".into(),
        bytes: r.try_get("bytes")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        filename: r.try_get("filename")?,
        purpose: r.try_get("purpose")?,
        status: r.try_get("status")?,
        status_details: None,
    })
}

/// Bounds every row type used here meets (SQLite's and PostgreSQL's).
pub trait DbRow: Row
where
    for<'a> &'a str: sqlx::ColumnIndex<Self>,
{
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool>;
}

impl<R: Row> DbRow for R
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
}

/// A stored id or name parsed back into its type.
pub fn parse<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("unparsable value {s:?}")))
}

pub fn job_from_row<R: DbRow>(r: &R) -> Result<BatchJob>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(BatchJob { batch_id: parse(&r.text("id")?)?, fence: r.int("job_fence")? })
}

pub fn key_from_row<R: DbRow>(r: &R) -> Result<ApiKey>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(ApiKey {
        id: r.text("id")?,
        name: r.text("name")?,
        prefix: r.text("prefix")?,
        salt: r.text("salt")?,
        hash: r.text("hash")?,
        admin: r.flag("admin")?,
        created_at: r.int("created_at")?,
        last_used_at: r.opt_int("last_used_at")?,
        revoked_at: r.opt_int("revoked_at")?,
    })
}

pub fn chunk_from_row<R: DbRow>(r: &R) -> Result<ChunkSpec>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(ChunkSpec {
        idx: r.int("idx")?,
        first_line: r.int("first_line")?,
        line_count: r.int("line_count")?,
        byte_start: r.int("byte_start")?,
        byte_end: r.int("byte_end")?,
    })
}

/// A claimed chunk from the claim's row (`batch_id`, the chunk's columns, `fence`) and its
/// batch's row (`input_file_id`, `endpoint`, `model`, `expires_at`, `created_at`);
/// `first_claim`: this claim was the batch's first dispatch.
pub fn lease_from_rows<R: DbRow>(chunk: &R, batch: &R, first_claim: bool) -> Result<ChunkLease>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(ChunkLease {
        batch_id: parse(&chunk.text("batch_id")?)?,
        input_file_id: parse(&batch.text("input_file_id")?)?,
        endpoint: parse(&batch.text("endpoint")?)?,
        model: batch.opt_text("model")?.unwrap_or_default(),
        expires_at: batch.int("expires_at")?,
        created_at: batch.int("created_at")?,
        chunk: chunk_from_row(chunk)?,
        fence: chunk.int("fence")?,
        first_claim,
    })
}

/// A finalization job from its batch's row (`input_file_id`, `planned_output_file_id`,
/// `planned_error_file_id`, `created_at`, `output_expires_after`) and its chunks' rows in order
/// (the chunk's columns, `state`, `done_fence`).
pub fn finalize_job_from_rows<R: DbRow>(
    job: BatchJob,
    mode: FinalizeMode,
    b: &R,
    chunk_rows: &[R],
) -> Result<FinalizeJob>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let mut chunks = Vec::with_capacity(chunk_rows.len());
    for r in chunk_rows {
        let fence = if r.text("state")? == "done" { r.opt_int("done_fence")? } else { None };
        chunks.push((chunk_from_row(r)?, fence));
    }
    let created_at = b.int("created_at")?;
    Ok(FinalizeJob {
        job,
        mode,
        input_file_id: parse(&b.text("input_file_id")?)?,
        output_file_id: parse(&b.text("planned_output_file_id")?)?,
        error_file_id: parse(&b.text("planned_error_file_id")?)?,
        output_expires_at: b.opt_int("output_expires_after")?.map(|s| created_at + s),
        created_at,
        chunks,
    })
}
