//! Mapping database rows to the wire objects of `core`.

use sqlx::Row;
use vllm_batch_core::batch::{InputTokensDetails, OutputTokensDetails};
use vllm_batch_core::{Batch, BatchError, BatchErrors, FileObject, RequestCounts, Usage};

use crate::{Result, StoreError};

/// The columns `batch_from_row` reads, with live counts: the committed counts plus the progress
/// that workers report for the chunks they hold.
pub const BATCH_COLUMNS: &str = "b.*,
    (SELECT COALESCE(SUM(c.completed), 0) FROM chunks c WHERE c.batch_id = b.id AND c.state = 'leased') AS live_completed,
    (SELECT COALESCE(SUM(c.failed), 0) FROM chunks c WHERE c.batch_id = b.id AND c.state = 'leased') AS live_failed";

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
