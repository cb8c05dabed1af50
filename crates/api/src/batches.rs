//! `/v1/batches`: create, retrieve, list (cursor pagination) and cancel — OpenAI's Batches API.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use vllm_batch_core::batch::{check_metadata, metadata_schema};
use vllm_batch_core::time::unix_now;
use vllm_batch_core::{Batch, BatchId, BatchStatus, CompletionWindow, Endpoint, ErrorEnvelope, FileId, List, Metadata};
use vllm_batch_store::NewBatch;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", get(list_batches).post(create_batch))
        .route("/v1/batches/{batch_id}", get(get_batch))
        .route("/v1/batches/{batch_id}/cancel", post(cancel_batch))
}

/// When the batch's output and error files expire.
#[derive(Deserialize, ToSchema)]
struct ExpiresAfter {
    /// What the expiry counts from: only `created_at`.
    #[schema(pattern = "^created_at$")]
    anchor: String,
    /// Seconds after the anchor, from 1 hour to 30 days.
    #[schema(minimum = 3600, maximum = 2592000)]
    seconds: i64,
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

fn parse_batch_id(id: &str) -> Result<BatchId> {
    id.parse().map_err(|_| Error::NotFound { kind: "Batch", id: id.to_string() })
}

/// Create a batch.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "Batches",
    request_body = CreateBatch,
    responses(
        (status = 200, description = "The batch, in status `validating`", body = Batch),
        (status = 400, description = "An invalid field or a malformed body", body = ErrorEnvelope),
        (status = 404, description = "No such input file", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn create_batch(
    State(st): State<AppState>,
    caller: Principal,
    body: std::result::Result<Json<CreateBatch>, JsonRejection>,
) -> Result<Json<Batch>> {
    let Json(req) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(format!(
            "The request body is larger than the {} bytes allowed",
            st.limits.max_json_body_bytes
        )),
        _ => Error::invalid(e.body_text(), None),
    })?;
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
        Some(e) if !(3600..=2_592_000).contains(&e.seconds) => {
            return Err(Error::invalid(
                "output_expires_after.seconds must be between 3600 and 2592000",
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
    let new = NewBatch {
        id: BatchId::generate(),
        endpoint,
        input_file_id,
        completion_window,
        metadata: req.metadata,
        output_expires_after,
        created_at: unix_now(),
        owner: caller.owner.clone(),
    };
    if let Some(owner) = &caller.owner {
        let open = st.store.count_open_batches(owner).await?;
        if open >= st.limits.max_open_batches_per_key {
            return Err(Error::TooManyOpenBatches(format!(
                "This key's owner has {open} unfinished batches, the most allowed \
                 (--max-open-batches-per-key); wait for some to end or cancel them"
            )));
        }
    }
    let batch = st.store.insert_batch(&new).await?;
    tracing::info!(batch_id = %batch.id, "batch created");
    st.wake.notify_waiters();
    Ok(Json(batch))
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
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 100", Some("limit")));
    }
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
