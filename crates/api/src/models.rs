//! `GET /v1/models`: what the upstreams serve, merged.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa::ToSchema;
use vllm_batch_core::ErrorEnvelope;

use crate::error::{Error, Result};
use crate::AppState;

// Document what `vllm_batch_upstream::ModelInfo` serializes; the handler sends those.

/// One model an upstream serves.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Model {
    id: String,
    #[schema(pattern = "^model$")]
    object: String,
    created: i64,
    owned_by: String,
}

/// `GET /v1/models`: every model of every upstream.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ModelList {
    #[schema(pattern = "^list$")]
    object: String,
    data: Vec<Model>,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

/// List the models the upstreams serve.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "Models",
    responses(
        (status = 200, description = "The models, merged across upstreams", body = ModelList),
        (status = 502, description = "An upstream did not answer", body = ErrorEnvelope),
    )
)]
async fn list_models(State(st): State<AppState>) -> Result<Json<Value>> {
    let map = st.upstreams.discover().await.map_err(|e| Error::Upstream(e.to_string()))?;
    Ok(Json(json!({ "object": "list", "data": map.models })))
}
