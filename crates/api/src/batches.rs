//! `/v1/batches`: create, retrieve, list (cursor pagination) and cancel — OpenAI's Batches API.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use vllm_batch_core::batch::{check_metadata, metadata_priority, metadata_schema};
use vllm_batch_core::time::unix_now;
use vllm_batch_core::{Batch, BatchId, BatchStatus, CompletionWindow, Endpoint, ErrorEnvelope, FileId, List, Metadata};
use vllm_batch_store::NewBatch;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::idempotency;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", get(list_batches).post(create_batch))
        .route("/v1/batches/{batch_id}", get(get_batch))
        .route("/v1/batches/{batch_id}/cancel", post(cancel_batch))
        .route("/v1/batches/{batch_id}/retry", post(crate::retry::retry_batch))
}

/// When the batch's output and error files expire.
#[derive(Deserialize, ToSchema)]
struct ExpiresAfter {
    /// What the expiry counts from: only `created_at`.
    #[schema(pattern = "^created_at$")]
    anchor: String,
    /// Seconds after the anchor, from 1 hour to 30 days (a whole number; `3600.0` is accepted).
    #[schema(minimum = 3600, maximum = 2592000)]
    #[serde(deserialize_with = "whole_seconds")]
    seconds: i64,
}

/// A whole number of seconds, written as an integer or as a float with no fraction (JSON
/// encoders of some languages write `3600.0`).
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!("expected a whole number of seconds, got {n}"))),
    }
}

/// Whether the request says its body is JSON (`application/json`, or `application/…+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A list's `limit`: `default` when absent, else 1 to `max`, or a 400 naming `limit`.
pub(crate) fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(Error::invalid(format!("limit must be between 1 and {max}"), Some("limit")));
    }
    Ok(limit)
}

/// A JSON body, or a 400 naming where in it the problem is (`output_expires_after.seconds`, or
/// the missing field) — `param` is null only when the body is not JSON at all.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let message = format!("Invalid request body: {inner}");
        if inner.is_syntax() || inner.is_eof() {
            return Error::invalid(format!("We could not parse the JSON body of your request: {inner}"), None);
        }
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        // A missing or unknown field is reported at its parent: name the field itself.
        let text = inner.to_string();
        let field = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        match (path.is_empty(), field) {
            (true, Some(field)) => Error::invalid_at(message, field),
            // An unknown field's path already ends with it.
            (false, Some(field)) if path == field || path.ends_with(&format!(".{field}")) => {
                Error::invalid_at(message, path)
            }
            (false, Some(field)) => Error::invalid_at(message, format!("{path}.{field}")),
            (false, None) => Error::invalid_at(message, path),
            (true, None) => Error::invalid_at(message, "body".to_string()),
        }
    })
}

/// The body of `POST /v1/batches`.
#[derive(Deserialize, ToSchema)]
struct CreateBatch {
    /// The uploaded JSONL file of requests (purpose `batch`).
    #[schema(pattern = "^file-[0-9a-f]{32}$")]
    input_file_id: String,
    #[schema(value_type = Endpoint)]
    endpoint: String,
    /// How long the batch may take: a whole number of seconds, minutes, hours or days such as
    /// `24h`, `1h`, `30m` or `7d`, at most 30 days (OpenAI accepts only `24h`).
    #[schema(
        pattern = "^([1-9][0-9]{0,5}s|([1-9][0-9]{0,3}|[1-3][0-9]{4}|4[0-2][0-9]{3}|43[01][0-9]{2}|43200)m|([1-9][0-9]?|[1-6][0-9]{2}|7[01][0-9]|720)h|([1-9]|[12][0-9]|30)d)$"
    )]
    completion_window: String,
    #[schema(schema_with = metadata_schema)]
    metadata: Option<Metadata>,
    output_expires_after: Option<ExpiresAfter>,
}

pub(crate) fn parse_batch_id(id: &str) -> Result<BatchId> {
    id.parse().map_err(|_| Error::NotFound { kind: "Batch", id: id.to_string() })
}

/// Create a batch.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "Batches",
    request_body = CreateBatch,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the create safe to retry: the same key with the same body within 24 hours answers the batch it created instead of creating another; with another body, 409. 1 to 255 printable ASCII characters.")
    ),
    responses(
        (status = 200, description = "The batch, in status `validating` (or, for a repeated `Idempotency-Key`, the batch as first created)", body = Batch),
        (status = 400, description = "An invalid field or a malformed body", body = ErrorEnvelope),
        (status = 404, description = "No such input file", body = ErrorEnvelope),
        (status = 409, description = "The `Idempotency-Key` was used for a different request, or its first request is still running", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn create_batch(
    State(st): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Batch>> {
    if !is_json(&headers) {
        return Err(Error::invalid(
            "Expected request with `Content-Type: application/json`; send the batch as a JSON body",
            None,
        ));
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(format!(
            "The request body is larger than the {} bytes allowed",
            st.limits.max_json_body_bytes
        )),
        _ => Error::invalid(e.body_text(), None),
    })?;
    let req: CreateBatch = parse_body(&body)?;
    let key = idempotency::Key::from_headers(&headers, &caller)?;
    // The request as parsed, so that a retry that spaces its JSON differently is the same.
    let request = || {
        let canonical = serde_json::from_slice::<serde_json::Value>(&body).map(|v| v.to_string()).unwrap_or_default();
        idempotency::fingerprint([b"POST /v1/batches".as_slice(), canonical.as_bytes()])
    };
    idempotency::once(&st, key.as_ref(), request, create(&st, &caller, req)).await.map(Json)
}

/// Checks a parsed create request and records the batch.
async fn create(st: &AppState, caller: &Principal, req: CreateBatch) -> Result<Batch> {
    let endpoint: Endpoint = req.endpoint.parse().map_err(|m: String| Error::invalid(m, Some("endpoint")))?;
    let completion_window: CompletionWindow =
        req.completion_window.parse().map_err(|m: String| Error::invalid(m, Some("completion_window")))?;
    if let Some(m) = &req.metadata {
        check_metadata(m).map_err(|m| Error::invalid(m, Some("metadata")))?;
    }
    let output_expires_after = match req.output_expires_after {
        None => None,
        Some(e) if e.anchor != "created_at" => {
            return Err(Error::invalid(
                "output_expires_after.anchor must be 'created_at'",
                Some("output_expires_after.anchor"),
            ))
        }
        Some(e) if !(st.limits.min_file_expiry_s..=2_592_000).contains(&e.seconds) => {
            return Err(Error::invalid(
                format!("output_expires_after.seconds must be between {} and 2592000", st.limits.min_file_expiry_s),
                Some("output_expires_after.seconds"),
            ))
        }
        Some(e) => Some(e.seconds),
    };
    let input_file_id: FileId = req
        .input_file_id
        .parse()
        .map_err(|_| Error::invalid(format!("Invalid input_file_id {:?}", req.input_file_id), Some("input_file_id")))?;
    let file = st
        .store
        .get_file(&input_file_id, caller.scope())
        .await?
        .ok_or_else(|| Error::NotFound { kind: "File", id: input_file_id.to_string() })?;
    if file.purpose != "batch" {
        return Err(Error::invalid(
            format!(
                "File {} has purpose {:?}; a batch's input file must have purpose \"batch\"",
                file.id, file.purpose
            ),
            Some("input_file_id"),
        ));
    }
    let priority =
        metadata_priority(req.metadata.as_ref()).map_err(|m| Error::invalid(m, Some("metadata.priority")))?;
    let new = NewBatch {
        id: BatchId::generate(),
        endpoint,
        input_file_id,
        completion_window,
        priority,
        metadata: req.metadata,
        output_expires_after,
        created_at: unix_now(),
        owner: caller.owner.clone(),
    };
    if let Some(owner) = &caller.owner {
        check_open_batches(st, owner).await?;
    }
    // The file may have expired (or been deleted) since it was read above.
    let batch = st
        .store
        .insert_batch(&new)
        .await?
        .ok_or_else(|| Error::NotFound { kind: "File", id: new.input_file_id.to_string() })?;
    tracing::info!(batch_id = %batch.id, "batch created");
    st.wake.notify_waiters();
    Ok(batch)
}

/// A 429 when `owner` already has the most unfinished batches allowed.
pub(crate) async fn check_open_batches(st: &AppState, owner: &str) -> Result<()> {
    let open = st.store.count_open_batches(owner).await?;
    if open >= st.limits.max_open_batches_per_key {
        return Err(Error::TooManyOpenBatches(format!(
            "This key's owner has {open} unfinished batches, the most allowed \
             (--max-open-batches-per-key); wait for some to end or cancel them"
        )));
    }
    Ok(())
}

/// Retrieve a batch.
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}",
    tag = "Batches",
    params(("batch_id" = String, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch, with live `request_counts` and `usage`", body = Batch),
        (status = 404, description = "No such batch", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn get_batch(State(st): State<AppState>, caller: Principal, Path(id): Path<String>) -> Result<Json<Batch>> {
    let id = parse_batch_id(&id)?;
    if let Some(batch) = st.batch_cache.get(&id, caller.scope()) {
        return Ok(Json(batch));
    }
    // Stamped before the query, so a cancel that lands meanwhile still drops it.
    let fetched = std::time::Instant::now();
    let batch = st
        .store
        .get_batch(&id, caller.scope())
        .await?
        .ok_or_else(|| Error::NotFound { kind: "Batch", id: id.to_string() })?;
    st.batch_cache.put(&id, caller.scope(), &batch, fetched);
    Ok(Json(batch))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Page size; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// Cursor: the `last_id` of the previous page.
    #[param(pattern = "^batch_[0-9a-f]{32}$")]
    after: Option<String>,
}

/// List batches, newest first.
#[utoipa::path(
    get,
    path = "/v1/batches",
    tag = "Batches",
    params(ListParams),
    responses(
        (status = 200, description = "A page of batches", body = vllm_batch_core::BatchList),
        (status = 400, description = "An invalid query parameter", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn list_batches(
    State(st): State<AppState>,
    caller: Principal,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<List<Batch>>> {
    let Query(p) = params.map_err(|e| Error::invalid(e.body_text(), None))?;
    let limit = page_limit(p.limit, 20, 100)?;
    let after = p
        .after
        .map(|a| {
            a.parse::<BatchId>().map_err(|_| Error::invalid(format!("Invalid 'after' cursor {a:?}"), Some("after")))
        })
        .transpose()?;
    let page = st.store.list_batches(after.as_ref(), limit, caller.scope()).await?;
    Ok(Json(List::new(page.items, page.has_more, |b| b.id.clone())))
}

/// Cancel a batch.
///
/// Idempotent while it is cancelling or cancelled; a batch still validating is cancelled at once.
#[utoipa::path(
    post,
    path = "/v1/batches/{batch_id}/cancel",
    tag = "Batches",
    params(("batch_id" = String, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch, `cancelling` (or `cancelled` if it had not started)", body = Batch),
        (status = 404, description = "No such batch", body = ErrorEnvelope),
        (status = 409, description = "The batch is finalizing or has completed, failed or expired", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn cancel_batch(State(st): State<AppState>, caller: Principal, Path(id): Path<String>) -> Result<Json<Batch>> {
    let id = parse_batch_id(&id)?;
    st.batch_cache.forget(&id);
    let (batch, changed) = st
        .store
        .request_cancel(&id, caller.scope())
        .await?
        .ok_or_else(|| Error::NotFound { kind: "Batch", id: id.to_string() })?;
    if changed && batch.status == BatchStatus::Cancelled {
        // Cancelled while validating: it ends here, not in a worker's finalizer.
        vllm_batch_metrics::metrics().batch_ended("cancelled", (unix_now() - batch.created_at) as f64);
    }
    st.batch_cache.forget(&id);
    tracing::info!(batch_id = %batch.id, status = %batch.status, "batch cancel requested");
    st.wake.notify_waiters();
    Ok(Json(batch))
}
