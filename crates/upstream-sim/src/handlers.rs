//! The axum router: `/v1/models`, `/metrics`, `/sim/stats`, `/health`, the
//! five inference endpoints, and the middleware that stamps every response with
//! `x-request-id`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use futures_util::StreamExt;

use crate::bodies::{self, Endpoint};
use crate::engine::Pending;
use crate::faults::{self, error_response};
use crate::state::SimState;
use crate::{det, metrics};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Builds the simulator's router over `state`.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    let mut r = Router::new()
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics_handler))
        .route("/sim/stats", get(|State(st): State<Arc<SimState>>| async move { Json(st.snapshot()) }))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/version", get(|| async { Json(json!({"version": "upstream-sim"})) }));
    for ep in [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Score,
        Endpoint::Rerank,
        Endpoint::Responses,
    ] {
        r = r.route(
            ep.path(),
            post(move |State(st): State<Arc<SimState>>, body: Bytes| async move { inference(st, ep, body).await }),
        );
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Echoes the caller's `x-request-id`, or stamps a fresh one (as vLLM does).
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&det::random_hex32()).expect("hex is a valid header value"));
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}

async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    // A single-threaded server answers between generations only.
    let _slot = if st.models_wait_for_slot && st.engine.is_none() { Some(st.schedule().await) } else { None };
    let created = bodies::created();
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": m,
                "parent": null,
                "max_model_len": 8192,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn metrics_handler(State(st): State<Arc<SimState>>) -> Response {
    st.stats.metrics_requests.fetch_add(1, Ordering::Relaxed);
    if !st.serve_metrics {
        return (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response();
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&st)).into_response()
}

/// The shared path of every inference endpoint: validate, maybe inject a
/// fault, wait for a scheduler slot (or the engine), "run", answer.
async fn inference(st: Arc<SimState>, ep: Endpoint, body: Bytes) -> Response {
    let st_arc = st.clone();
    let st = &*st;
    let arrival = st.stats.arrived();
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return error_response(StatusCode::BAD_REQUEST, "expected a JSON object", "Bad Request", Some("body")),
        Err(e) => {
            let message = format!("JSON decode error: {e}");
            return error_response(StatusCode::BAD_REQUEST, &message, "Bad Request", Some("body.0"));
        }
    };
    // vLLM runs a request without `model` on the model it serves (the first, here).
    let model = match req.get("model") {
        Some(Value::String(m)) => m.as_str(),
        None | Some(Value::Null) => st.models[0].as_str(),
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "model: Input should be a valid string",
                "Bad Request",
                Some("body.model"),
            )
        }
    };
    let Some(index) = st.models.iter().position(|m| m == model) else {
        let message = format!("The model `{model}` does not exist. Valid aliases: {}.", st.models.join(", "));
        return error_response(StatusCode::NOT_FOUND, &message, "NotFoundError", Some("model"));
    };
    st.model_arrived(index, arrival);
    let prepared = match bodies::build(ep, &req, model) {
        Ok(p) => p,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, &msg, "BadRequestError", None),
    };
    // vLLM's `priority` (lower runs first): ignored under fcfs (vLLM 0.32), or refused there as
    // older releases did.
    let priority = match req.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(p) => p,
            None => {
                let message = "priority: Input should be a valid integer";
                return error_response(StatusCode::BAD_REQUEST, message, "Bad Request", Some("body.priority"));
            }
        },
    };
    if priority != 0 {
        if !st.priority_scheduling && st.refuse_priority_without_policy {
            let message = format!("Got priority {priority} but Priority scheduling is not enabled.");
            return error_response(StatusCode::BAD_REQUEST, &message, "BadRequestError", None);
        }
        st.stats.prioritized_requests.fetch_add(1, Ordering::Relaxed);
    }
    let stream = matches!(ep, Endpoint::Chat | Endpoint::Completions)
        && req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if let Some(fault) = faults::decide(st, &body) {
        st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(path = ep.path(), ?fault, "injecting fault");
        return faults::respond(st, fault).await;
    }

    if let Some(engine) = &st.engine {
        let pending = engine.submit(prepared.prompt_tokens, prepared.completion_tokens, priority, stream);
        if stream {
            return streamed(st_arc, ep, prepared, Some(pending));
        }
        if pending.done.await.is_err() {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine is shutting down",
                "ServiceUnavailableError",
                None,
            );
        }
    } else {
        let slot = st.schedule().await;
        let run_time = st.run_time(prepared.completion_tokens);
        if !run_time.is_zero() {
            tokio::time::sleep(run_time).await;
        }
        drop(slot);
        if stream {
            return streamed(st_arc, ep, prepared, None);
        }
    }

    st.stats.succeeded(prepared.prompt_tokens, prepared.completion_tokens);
    Json(prepared.body).into_response()
}

/// A streamed answer (server-sent events): the first chunk when the engine has produced the
/// first token, the last one and `[DONE]` when it has produced the last (both at once in the
/// fixed-latency mode, `pending` `None`, which has already run the request).
fn streamed(st: Arc<SimState>, ep: Endpoint, prepared: bodies::Prepared, pending: Option<Pending>) -> Response {
    let (first_chunk, last_chunk) = bodies::stream_chunks(ep, &prepared.body);
    let (first, done) = match pending {
        Some(p) => (Some(p.first), Some(p.done)),
        None => (None, None),
    };
    let head = async move {
        if let Some(first) = first {
            let _ = first.await;
        }
        Ok::<_, std::io::Error>(Bytes::from(format!("data: {first_chunk}\n\n")))
    };
    let (prompt_tokens, completion_tokens) = (prepared.prompt_tokens, prepared.completion_tokens);
    let tail = async move {
        if let Some(done) = done {
            done.await.map_err(|_| std::io::Error::other("the engine is shutting down"))?;
        }
        st.stats.succeeded(prompt_tokens, completion_tokens);
        Ok(Bytes::from(format!("data: {last_chunk}\n\ndata: [DONE]\n\n")))
    };
    let body = futures_util::stream::once(head).chain(futures_util::stream::once(tail));
    let mut resp = Response::new(axum::body::Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp
}
