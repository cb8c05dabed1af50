//! `POST /v1/batches/{batch_id}/retry` (an extension of OpenAI's API): a batch that ended with
//! lines that did not succeed becomes a new batch of exactly those lines — same `custom_id`s,
//! bodies, endpoint and completion window — with `metadata.retry_of` naming the old batch.
//!
//! By default the lines retried are those whose error is `upstream_error`, `batch_expired` or
//! `batch_cancelled` (worth sending again); `invalid_request` lines (a final 4xx from the
//! upstream) only when asked. The new input file is written by streaming the old one once and
//! keeping the chosen lines byte for byte.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use utoipa::ToSchema;
use vllm_batch_core::line::{is_blank, trim_line, RequestLine};
use vllm_batch_core::time::unix_now;
use vllm_batch_core::{Batch, BatchStatus, CompletionWindow, ErrorEnvelope, FileId, FileObject};
use vllm_batch_store::{file_key, LineReader, NewBatch};

use crate::auth::Principal;
use crate::batches::{check_open_batches, parse_batch_id, parse_body};
use crate::error::{Error, Result};
use crate::{idempotency, AppState};

/// Error codes whose lines a retry sends again by default.
const RETRIED: [&str; 3] = ["upstream_error", "batch_expired", "batch_cancelled"];

/// Longest input line read when copying: above any `--max-line-bytes` a worker validated with
/// (16 MiB by default); a longer line was never sent, so it is not retried either.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// The metadata key naming the batch a retry came from.
pub const RETRY_OF: &str = "retry_of";

/// The (optional) body of `POST /v1/batches/{batch_id}/retry`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryBatch {
    /// Also retry the lines that ended `invalid_request` (the upstream's final 4xx answer, e.g.
    /// a prompt longer than the model's context): useful after the upstream changed.
    #[serde(default)]
    include_invalid_requests: bool,
}

/// Retry the lines of an ended batch that did not succeed.
///
/// An extension of OpenAI's API. Creates a new batch whose input file holds exactly the lines of
/// the old batch that ended `upstream_error`, `batch_expired` or `batch_cancelled` (and
/// `invalid_request` with `include_invalid_requests`), with their `custom_id`s and bodies, the
/// same endpoint and completion window, and `metadata.retry_of` = the old batch's id.
#[utoipa::path(
    post,
    path = "/v1/batches/{batch_id}/retry",
    tag = "Batches",
    params(
        ("batch_id" = String, Path, description = "The ended batch whose failed lines to retry"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the retry safe to repeat: the same key with the same body within 24 hours answers the batch it created.")
    ),
    request_body(content = Option<RetryBatch>, description = "Optional; `{}` or no body retries the default error codes"),
    responses(
        (status = 200, description = "The new batch, in status `validating`", body = Batch),
        (status = 400, description = "A malformed body", body = ErrorEnvelope),
        (status = 404, description = "No such batch", body = ErrorEnvelope),
        (status = 409, description = "The batch has not ended, failed validation, has no line to retry, or its input file was deleted; or the `Idempotency-Key` was used for another request", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
pub async fn retry_batch(
    State(st): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Batch>> {
    let old_id = parse_batch_id(&id)?;
    let req: RetryBatch =
        if body.iter().all(u8::is_ascii_whitespace) { RetryBatch::default() } else { parse_body(&body)? };
    let key = idempotency::Key::from_headers(&headers, &caller)?;
    let request = || {
        let path = format!("POST /v1/batches/{old_id}/retry");
        idempotency::fingerprint([path.as_bytes(), &[req.include_invalid_requests as u8]])
    };
    idempotency::once(&st, key.as_ref(), request, retry(&st, &caller, &old_id, &req)).await.map(Json)
}

async fn retry(
    st: &AppState,
    caller: &Principal,
    old_id: &vllm_batch_core::BatchId,
    req: &RetryBatch,
) -> Result<Batch> {
    let old = st
        .store
        .get_batch(old_id, caller.scope())
        .await?
        .ok_or_else(|| Error::NotFound { kind: "Batch", id: old_id.to_string() })?;
    if !old.status.is_terminal() {
        return Err(Error::Conflict(format!(
            "Batch {old_id} has not ended (status {}); retry it once it has, or cancel it first",
            old.status
        )));
    }
    if old.status == BatchStatus::Failed {
        return Err(Error::Conflict(format!(
            "Batch {old_id} failed validation, so none of its lines ran: fix the input file (see the batch's errors) and create a new batch"
        )));
    }
    let mut codes: Vec<&str> = RETRIED.to_vec();
    if req.include_invalid_requests {
        codes.push("invalid_request");
    }
    let nothing = || {
        Error::Conflict(format!("Batch {old_id} has no line that ended with {}: nothing to retry", codes.join(", ")))
    };
    let error_file = old.error_file_id.as_deref().ok_or_else(nothing)?;
    let error_file: FileId = error_file.parse().map_err(|_| Error::Internal("stored error file id".into()))?;
    let wanted = failed_ids(st, &error_file, &codes).await?;
    if wanted.is_empty() {
        return Err(nothing());
    }
    let input: FileId = old.input_file_id.parse().map_err(|_| Error::Internal("stored input file id".into()))?;
    if st.store.get_file(&input, None).await?.is_none() {
        return Err(Error::Conflict(format!(
            "The input file {input} of batch {old_id} was deleted or has expired, so its lines cannot be sent again"
        )));
    }
    let endpoint = old.endpoint.parse().map_err(Error::Internal)?;
    let completion_window: CompletionWindow = old.completion_window.parse().map_err(Error::Internal)?;
    let mut metadata = old.metadata.clone().unwrap_or_default();
    metadata.insert(RETRY_OF.into(), old_id.to_string());
    if metadata.len() > 16 {
        return Err(Error::invalid(
            format!("Batch {old_id} already has 16 metadata pairs: there is no room for {RETRY_OF}"),
            Some("metadata"),
        ));
    }
    if let Some(owner) = &caller.owner {
        check_open_batches(st, owner).await?;
    }
    let file = write_input(st, caller, &input, &wanted, old_id).await?;
    let new = NewBatch {
        id: vllm_batch_core::BatchId::generate(),
        endpoint,
        input_file_id: file.id.parse().map_err(|_| Error::Internal("new file id".into()))?,
        completion_window,
        // The old batch's priority was checked when it was created.
        priority: vllm_batch_core::batch::metadata_priority(Some(&metadata)).ok().flatten(),
        metadata: Some(metadata),
        output_expires_after: None,
        created_at: unix_now(),
        owner: caller.owner.clone(),
    };
    let batch = st.store.insert_batch(&new).await?.ok_or_else(|| {
        Error::Conflict(format!(
            "The input file {} of the retry was deleted before its batch was created",
            new.input_file_id
        ))
    })?;
    tracing::info!(batch_id = %batch.id, retry_of = %old_id, lines = wanted.len(), "batch retry created");
    st.wake.notify_waiters();
    Ok(batch)
}

/// The `custom_id`s of the error file's lines whose code is one of `codes`.
async fn failed_ids(st: &AppState, error_file: &FileId, codes: &[&str]) -> Result<HashSet<String>> {
    #[derive(Deserialize)]
    struct ErrorLine {
        custom_id: String,
        error: Option<Code>,
    }
    #[derive(Deserialize)]
    struct Code {
        code: String,
    }
    let reader = st.files.reader(&file_key(error_file)).await?;
    let mut lines = BufReader::with_capacity(256 * 1024, reader).lines();
    let mut ids = HashSet::new();
    while let Some(line) =
        lines.next_line().await.map_err(|e| Error::Internal(format!("reading the error file: {e}")))?
    {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ErrorLine = serde_json::from_str(&line)
            .map_err(|e| Error::Internal(format!("an error file line does not parse: {e}")))?;
        if parsed.error.is_some_and(|e| codes.contains(&e.code.as_str())) {
            ids.insert(parsed.custom_id);
        }
    }
    Ok(ids)
}

/// Writes the lines of `input` whose `custom_id` is in `wanted` into a new batch input file.
async fn write_input(
    st: &AppState,
    caller: &Principal,
    input: &FileId,
    wanted: &HashSet<String>,
    old_id: &vllm_batch_core::BatchId,
) -> Result<FileObject> {
    let id = FileId::generate();
    let mut writer = st.files.writer(&file_key(&id)).await?;
    let reader = BufReader::with_capacity(256 * 1024, st.files.reader(&file_key(input)).await?);
    let mut lines = LineReader::new(reader, MAX_LINE);
    let mut kept = 0usize;
    while let Some(line) =
        lines.next_line().await.map_err(|e| Error::Internal(format!("reading the input file: {e}")))?
    {
        let Some(content) = line.content else { continue };
        let content = trim_line(content, line.number == 1);
        if is_blank(content) {
            continue;
        }
        let Ok(parsed) = serde_json::from_slice::<RequestLine<'_>>(content) else { continue };
        if wanted.contains(parsed.custom_id.as_ref()) {
            writer.write(content).await?;
            writer.write(b"\n").await?;
            kept += 1;
        }
    }
    if kept == 0 {
        return Err(Error::Conflict(format!(
            "None of the failed lines of batch {old_id} is in its input file any more"
        )));
    }
    let bytes = writer.commit().await?;
    let file = FileObject {
        id: id.to_string(),
        object: "file".into(),
        bytes: bytes as i64,
        created_at: unix_now(),
        expires_at: None,
        filename: format!("{old_id}_retry.jsonl"),
        purpose: "batch".into(),
        status: "processed".into(),
        status_details: None,
    };
    if let Err(e) = st.store.insert_file(&file, caller.owner.as_deref()).await {
        let _ = st.files.delete(&file_key(&id)).await;
        return Err(e.into());
    }
    Ok(file)
}
