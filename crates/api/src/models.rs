//! `GET /v1/models`: what the upstreams serve, merged.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

async fn list_models(State(st): State<AppState>) -> Result<Json<Value>> {
    let map = st.upstreams.discover().await.map_err(|e| Error::Upstream(e.to_string()))?;
    Ok(Json(json!({ "object": "list", "data": map.models })))
}
