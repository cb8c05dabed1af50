//! `/v1/batches`: create, retrieve, list (cursor pagination) and cancel — OpenAI's Batches API.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use vllm_batch_core::batch::check_metadata;
use vllm_batch_core::time::unix_now;
use vllm_batch_core::{Batch, BatchId, BatchStatus, CompletionWindow, Endpoint, FileId, List, Metadata};
use vllm_batch_store::NewBatch;

use crate::error::{Error, Result};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", get(list_batches).post(create_batch))
        .route("/v1/batches/{batch_id}", get(get_batch))
        .route("/v1/batches/{batch_id}/cancel", post(cancel_batch))
}

#[derive(Deserialize)]
struct ExpiresAfter {
    anchor: String,
    seconds: i64,
}

#[derive(Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Option<Metadata>,
    output_expires_after: Option<ExpiresAfter>,
}

fn parse_batch_id(id: &str) -> Result<BatchId> {
    id.parse().map_err(|_| Error::NotFound { kind: "Batch", id: id.to_string() })
}

async fn create_batch(
    State(st): State<AppState>,
    body: std::result::Result<Json<CreateBatch>, JsonRejection>,
) -> Result<Json<Batch>> {
    let Json(req) = body.map_err(|e| Error::invalid(e.body_text(), None))?;
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
        .get_file(&input_file_id)
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
    };
    let batch = st.store.insert_batch(&new).await?;
    tracing::info!(batch_id = %batch.id, "batch created");
    st.wake.notify_waiters();
    Ok(Json(batch))
}

async fn get_batch(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Batch>> {
    let id = parse_batch_id(&id)?;
    let batch = st.store.get_batch(&id).await?.ok_or_else(|| Error::NotFound { kind: "Batch", id: id.to_string() })?;
    Ok(Json(batch))
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<i64>,
    after: Option<String>,
}

async fn list_batches(
    State(st): State<AppState>,
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
    let page = st.store.list_batches(after.as_ref(), limit).await?;
    Ok(Json(List::new(page.items, page.has_more, |b| b.id.clone())))
}

async fn cancel_batch(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Batch>> {
    let id = parse_batch_id(&id)?;
    let (batch, changed) =
        st.store.request_cancel(&id).await?.ok_or_else(|| Error::NotFound { kind: "Batch", id: id.to_string() })?;
    if changed && batch.status == BatchStatus::Cancelled {
        // Cancelled while validating: it ends here, not in a worker's finalizer.
        let m = vllm_batch_metrics::metrics();
        m.jobs_total.with_label_values(&["cancelled"]).inc();
        m.processing_duration.observe((unix_now() - batch.created_at).max(0) as f64);
    }
    tracing::info!(batch_id = %batch.id, status = %batch.status, "batch cancel requested");
    st.wake.notify_waiters();
    Ok(Json(batch))
}
