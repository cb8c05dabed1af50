//! `GET /health` (liveness: the process answers; `?verbose=1` or `/v1/health` adds upstreams,
//! GPUs, host memory, queue and uptime), `GET /ready` (the database answers and the file store
//! takes writes — what the API itself needs; 503 names what failed; upstreams are reported in the
//! body but never make the API unready) and `GET /metrics`.
//!
//! An upstream is judged by its health (`vllm_batch_upstream::health`): in `serve`, the worker's
//! own requests are the evidence, so an upstream that answered recently is not probed at all — a
//! probe of a busy single-slot server would queue behind our own work. Only an upstream nothing
//! was heard from lately is asked for its models, with a short timeout.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use vllm_batch_core::ErrorEnvelope;
use vllm_batch_metrics::{metrics, CONTENT_TYPE};
use vllm_batch_upstream::HealthState;

use crate::error::Result;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(verbose_health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus_metrics))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HealthParams {
    /// `1` or `true`: answer as `/v1/health` does.
    verbose: Option<String>,
}

/// What the health endpoints answer. The handlers build their JSON with `json!`; these types
/// only document it, and tests/e2e/openapi.rs checks live answers against them.
#[allow(dead_code)]
mod answer {
    use std::collections::BTreeMap;

    use utoipa::ToSchema;

    /// Liveness: the process answers.
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Liveness {
        #[schema(pattern = "^ok$")]
        status: String,
    }

    /// Liveness with what the process sees: upstreams, GPUs, host memory, queue and uptime.
    #[derive(ToSchema)]
    pub(super) struct VerboseHealth {
        #[schema(pattern = "^ok$")]
        status: String,
        version: String,
        uptime_seconds: u64,
        upstreams: Vec<UpstreamHealth>,
        /// The latest GPU readings; empty without NVML or a GPU.
        gpus: Vec<GpuHealth>,
        host: HostMemory,
        queue: QueueHealth,
    }

    /// `/health` answers briefly, or verbosely with `?verbose=1`.
    #[derive(ToSchema)]
    #[serde(untagged)]
    pub(super) enum HealthAnswer {
        Liveness(Liveness),
        Verbose(VerboseHealth),
    }

    /// One upstream: `up` with the models it lists, or `down` with why and since when.
    #[derive(ToSchema)]
    pub(super) struct UpstreamHealth {
        url: String,
        /// `down` while the upstream is down (its outage detected from our own requests, or a
        /// probe that got no answer).
        #[schema(pattern = "^(up|down)$")]
        status: String,
        /// The health state: `probing` is down with a probe on the wire.
        #[schema(pattern = "^(up|down|probing)$")]
        health: String,
        /// Unix time it went down.
        #[schema(nullable = false)]
        down_since: Option<u64>,
        /// The models it lists (its last answer's, when the latest ask got none).
        #[schema(nullable = false)]
        models: Option<Vec<String>>,
        /// Age of that list in seconds.
        #[schema(nullable = false)]
        models_age_seconds: Option<u64>,
        #[schema(nullable = false)]
        error: Option<String>,
    }

    /// One GPU's latest reading; a value NVML could not read is `null`.
    #[derive(ToSchema)]
    pub(super) struct GpuHealth {
        index: u32,
        name: String,
        uuid: String,
        #[schema(required = true)]
        temperature_celsius: Option<f64>,
        #[schema(required = true)]
        memory_used_bytes: Option<f64>,
        #[schema(required = true)]
        memory_total_bytes: Option<f64>,
        #[schema(required = true)]
        utilization_percent: Option<f64>,
        #[schema(required = true)]
        power_watts: Option<f64>,
    }

    /// The host's memory, from `/proc/meminfo` (`null` where it cannot be read).
    #[derive(ToSchema)]
    pub(super) struct HostMemory {
        #[schema(required = true)]
        memory_total_bytes: Option<u64>,
        #[schema(required = true)]
        memory_available_bytes: Option<u64>,
    }

    /// Batches by active status and the requests waiting, or why the database could not say.
    #[derive(ToSchema)]
    #[serde(untagged)]
    pub(super) enum QueueHealth {
        Stats { active: BTreeMap<String, i64>, queue_depth: i64 },
        Failing { error: String },
    }

    /// Readiness and each check's result.
    #[derive(ToSchema)]
    pub(super) struct Readiness {
        #[schema(pattern = "^(ready|not_ready)$")]
        status: String,
        /// `database` and `file_store`: what the API needs.
        checks: BTreeMap<String, ReadinessCheck>,
        /// Each upstream's state, for information: a down upstream makes batches wait, not the
        /// API unready.
        upstreams: Vec<UpstreamHealth>,
    }

    #[derive(ToSchema)]
    pub(super) struct ReadinessCheck {
        #[schema(pattern = "^(ok|failing)$")]
        status: String,
        #[schema(nullable = false)]
        error: Option<String>,
    }
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/health",
    tag = "Health",
    params(HealthParams),
    responses((status = 200, description = "The process answers", body = answer::HealthAnswer))
)]
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

/// Liveness, with upstreams, GPUs, host memory, queue and uptime.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "Health",
    responses((status = 200, description = "The process answers", body = answer::VerboseHealth))
)]
async fn verbose_health(State(st): State<AppState>) -> Json<Value> {
    let upstreams = upstream_statuses(&st).await;
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

/// Readiness.
///
/// The database answers, the file store takes writes, and the data folder has more free space
/// than `--min-free-disk`. Upstreams are reported, and do not decide readiness: while one is
/// down, batches wait for it and the API still serves.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "Health",
    responses(
        (status = 200, description = "Ready", body = answer::Readiness),
        (status = 503, description = "Not ready; `checks` names what failed", body = answer::Readiness),
    )
)]
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
    record("disk".into(), st.disk.shortfall(0).map_or(Ok(()), Err));
    let upstreams = upstream_statuses(&st).await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({ "status": if ok { "ready" } else { "not_ready" }, "checks": checks, "upstreams": upstreams })),
    )
}

/// How recent an answer from an upstream (with no failure since) must be for it to count as up
/// without a probe.
const RECENT: Duration = Duration::from_secs(30);
/// How long a probe of an upstream nothing was heard from waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the health answers say of every upstream.
async fn upstream_statuses(st: &AppState) -> Vec<Value> {
    futures_util::future::join_all((0..st.upstreams.specs().len()).map(|i| upstream_status(st, i))).await
}

async fn upstream_status(st: &AppState, i: usize) -> Value {
    let health = st.upstreams.health();
    // Answers to the worker's own requests are the evidence (the API's probes are not recorded
    // as such, so an idle upstream is asked again each time). Down: the worker's probe loop is on
    // it. Answered the worker lately: up. Otherwise ask, briefly; the answer is only reported.
    let heard_lately = health.answered_since(i, RECENT);
    let mut probe_error = None;
    if health.is_up(i) && !heard_lately {
        if let Err(e) = st.upstreams.models_within(i, PROBE_TIMEOUT).await {
            probe_error = Some(e.to_string());
        }
    }
    let report = health.report(i);
    let known = st.upstreams.discovered(i);
    let status = if report.state == HealthState::Up && probe_error.is_none() { "up" } else { "down" };
    let mut v = json!({
        "url": st.upstreams.specs()[i].shown(),
        "status": status,
        "health": report.state.as_str(),
    });
    if let Some(since) = report.down_since {
        v["down_since"] = json!(since);
    }
    if let Some((models, at)) = known.models {
        v["models"] = json!(models.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
        v["models_age_seconds"] = json!(at.elapsed().as_secs());
    }
    if let Some(error) = probe_error.or(report.last_error).or(known.error) {
        v["error"] = json!(error);
    }
    v
}

/// Prometheus metrics.
///
/// Refreshes the gauges read from the database, then renders every metric.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "Health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
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
