//! Request metrics: every response counted by method, route template (never a raw path) and
//! status, its latency observed, and error responses counted by error type.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use vllm_batch_metrics::metrics;

use crate::error::ErrorType;

/// Axum middleware recording `vllm_request_total`, `vllm_request_duration_seconds` and
/// `vllm_request_errors_total`.
pub async fn record(req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let endpoint = endpoint.unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = metrics();
    let status = response.status();
    m.http_requests.with_label_values(&[&method, &endpoint, status.as_str()]).inc();
    m.http_duration.with_label_values(&[&method, &endpoint]).observe(started.elapsed().as_secs_f64());
    if status.is_client_error() || status.is_server_error() {
        let kind = response.extensions().get::<ErrorType>().map(|t| t.0).unwrap_or("other");
        m.http_errors.with_label_values(&[&endpoint, kind]).inc();
    }
    response
}
