//! `GET /health` (liveness: the process answers) and `GET /ready` (the database answers, the
//! file store takes writes, every upstream lists its models); 503 names what failed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let mut record = |name: String, r: Result<(), String>| {
        ok &= r.is_ok();
        checks.insert(
            name,
            match r {
                Ok(()) => json!({ "status": "ok" }),
                Err(e) => json!({ "status": "failing", "error": e }),
            },
        );
    };
    record("database".into(), st.store.ping().await.map_err(|e| e.to_string()));
    record("file_store".into(), st.files.check_writable().await.map_err(|e| e.to_string()));
    for (i, spec) in st.upstreams.specs().iter().enumerate() {
        let r = st.upstreams.models_of(i).await.map(|_| ()).map_err(|e| e.to_string());
        record(format!("upstream {}", spec.base_url), r);
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ok { "ready" } else { "not_ready" }, "checks": checks })))
}
