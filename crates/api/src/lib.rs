//! The HTTP API: OpenAI's Files and Batches endpoints, `/v1/models`, `/health` and `/ready`.
//! One router per resource, merged here; one shared state; one error type.

pub mod auth;
mod batches;
pub mod cache;
mod error;
mod files;
mod health;
mod idempotency;
mod models;
mod multipart;
mod observe;
mod openapi;
mod results;
mod retry;
pub mod server;
mod web;
mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderName;
use axum::Router;
use tokio::sync::Notify;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use vllm_batch_metrics::gpu::GpuSampler;
use vllm_batch_store::{FileStore, Store};
use vllm_batch_upstream::Upstreams;

pub use error::Error;
pub use webhooks::WebhookSettings;

/// Limits the API enforces on what clients send.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Largest body of the JSON endpoints, in bytes.
    pub max_json_body_bytes: usize,
    /// Unfinished batches one key's owner may have at once.
    pub max_open_batches_per_key: i64,
    /// Seconds an uploaded batch input file is kept when the upload sets no `expires_after`
    /// (`--file-retention`); `None` keeps it until deleted.
    pub file_retention_s: Option<i64>,
    /// Shortest `expires_after[seconds]` accepted (OpenAI's 3600; tests lower it).
    pub min_file_expiry_s: i64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_upload_bytes: 2 * 1024 * 1024 * 1024,
            max_json_body_bytes: 1024 * 1024,
            max_open_batches_per_key: 100,
            file_retention_s: Some(30 * 86_400),
            min_file_expiry_s: 3600,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub files: Arc<dyn FileStore>,
    pub upstreams: Upstreams,
    pub limits: ApiLimits,
    /// Nudges an embedded worker when a batch is created or cancelled.
    pub wake: Arc<Notify>,
    /// The latest GPU readings, for the verbose health endpoint.
    pub gpus: GpuSampler,
    pub started: Instant,
    /// Prometheus the web page's system panel reads (`/api/metrics/*`); `None`: this
    /// process's own registry.
    pub prometheus_url: Option<String>,
    /// API keys, the no-key rule, rate limits and the `/metrics` token.
    pub auth: Arc<auth::Auth>,
    /// Recent `GET /v1/batches/{id}` answers (100 ms), so that polling clients cost little.
    pub batch_cache: Arc<cache::BatchCache>,
    /// The data folder's free-space guard: uploads that would cross its margin get a 507, and
    /// `/ready` fails under it.
    pub disk: vllm_batch_store::DiskGuard,
    /// Webhook endpoints: whether `http://` URLs are allowed, and the client of `/test`.
    pub webhooks: WebhookSettings,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API, with request ids (an incoming `x-request-id` is kept, else a UUID) on every
/// response and in every request's log span, request metrics, and Sentry transactions (a no-op
/// when Sentry is off).
pub fn router(state: AppState) -> Router {
    let json_limit = state.limits.max_json_body_bytes;
    Router::new()
        .merge(files::router())
        .merge(batches::router())
        .merge(results::router())
        .merge(models::router())
        .merge(webhooks::router())
        .merge(health::router())
        .merge(web::router())
        .merge(openapi::router())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            // A bug must not cost the client its answer: OpenAI's envelope with a 500.
            axum::response::IntoResponse::into_response(Error::Internal("a request handler panicked".into()))
        }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(error::envelope_every_error))
        .with_state(state)
        .layer(axum::middleware::from_fn(observe::record))
        .layer(sentry_tower::SentryHttpLayer::new().enable_transaction())
        .layer(sentry_tower::NewSentryLayer::<Request>::new_from_top())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn unknown_route(req: Request) -> Error {
    Error::UnknownRoute { method: req.method().to_string(), path: req.uri().path().to_string() }
}

async fn wrong_method(req: Request) -> Error {
    Error::MethodNotAllowed { method: req.method().to_string(), path: req.uri().path().to_string() }
}
