//! `GET /health` (liveness: the process answers; `?verbose=1` or `/v1/health` adds upstreams,
//! GPUs, host memory, queue and uptime), `GET /ready` (the database answers, the file store takes
//! writes, every upstream lists its models; 503 names what failed) and `GET /metrics`.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vllm_batch_metrics::{metrics, CONTENT_TYPE};

use crate::error::Result;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(verbose_health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus_metrics))
}

#[derive(Deserialize)]
struct HealthParams {
    verbose: Option<String>,
}

async fn health(State(st): State<AppState>, Query(p): Query<HealthParams>) -> Json<Value> {
    match p.verbose.as_deref() {
        Some("1" | "true") => verbose_health(State(st)).await,
        _ => Json(json!({ "status": "ok" })),
    }
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
fn host_memory() -> Value {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    json!({ "memory_total_bytes": field("MemTotal:"), "memory_available_bytes": field("MemAvailable:") })
}

async fn verbose_health(State(st): State<AppState>) -> Json<Value> {
    let mut upstreams = Vec::new();
    for (i, spec) in st.upstreams.specs().iter().enumerate() {
        upstreams.push(match st.upstreams.models_of(i).await {
            Ok(models) => json!({
                "url": spec.base_url,
                "status": "up",
                "models": models.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            }),
            Err(e) => json!({ "url": spec.base_url, "status": "down", "error": e.to_string() }),
        });
    }
    let queue = match st.store.queue_stats().await {
        Ok(q) => {
            json!({ "active": q.active.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(), "queue_depth": q.queue_depth })
        }
        Err(e) => json!({ "error": e.to_string() }),
    };
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": st.started.elapsed().as_secs(),
        "upstreams": upstreams,
        "gpus": st.gpus.latest(),
        "host": host_memory(),
        "queue": queue,
    }))
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

/// Refreshes the gauges read from the database, then renders every metric.
async fn prometheus_metrics(State(st): State<AppState>) -> Result<impl IntoResponse> {
    let stats = st.store.queue_stats().await?;
    let m = metrics();
    for status in ["validating", "in_progress", "finalizing", "cancelling"] {
        let n = stats.active.iter().find(|(s, _)| s == status).map(|(_, n)| *n).unwrap_or(0);
        m.jobs_active.with_label_values(&[status]).set(n);
    }
    m.queue_depth.set(stats.queue_depth);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()))
}
