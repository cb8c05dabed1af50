//! The one error type of the HTTP surface. Every failure renders OpenAI's envelope
//! `{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vllm_batch_core::{ApiErrorBody, ErrorEnvelope};
use vllm_batch_store::StoreError;

/// The `type` of an error response, attached for the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorType(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed or names something invalid.
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<std::borrow::Cow<'static, str>>, code: Option<&'static str> },
    /// 404: no such object (also what another owner's objects look like).
    #[error("No such {kind} object: {id}")]
    NotFound { kind: &'static str, id: String },
    /// 404 for a path that is not an endpoint.
    #[error("Unknown request URL: {method} {path}")]
    UnknownRoute { method: String, path: String },
    /// 401: no valid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// 429: the key's request rate is over its limit.
    #[error("Rate limit reached for this API key; retry in {retry_after} s.")]
    RateLimited { retry_after: u64 },
    /// 429: the key has as many unfinished batches as it may.
    #[error("{0}")]
    TooManyOpenBatches(String),
    /// 409: the object's state forbids the operation.
    #[error("{0}")]
    Conflict(String),
    /// 413: the upload or body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// 408: the client stopped sending its request body.
    #[error("{0}")]
    Timeout(String),
    /// 403: refused whoever the caller is (a foreign `Host` or `Origin` in keyless mode).
    #[error("{0}")]
    Forbidden(String),
    /// 405: the path exists, the method does not.
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// 507: the server keeps too little free space to store what was sent.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 502: the upstream did not answer.
    #[error("{0}")]
    Upstream(String),
    /// 500: our fault; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Error::InvalidRequest { message: message.into(), param: param.map(Into::into), code: None }
    }

    /// A 400 naming a parameter known only at run time (a path into a JSON body).
    pub fn invalid_at(message: impl Into<String>, param: String) -> Self {
        Error::InvalidRequest { message: message.into(), param: Some(param.into()), code: None }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                Error::InsufficientStorage("The server's storage is full; try again later.".into())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind, param, code) = match &self {
            Error::InvalidRequest { param, code, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                param.as_deref().map(str::to_string),
                code.map(str::to_string),
            ),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "invalid_request_error", Some("id".into()), None),
            Error::UnknownRoute { .. } => {
                (StatusCode::NOT_FOUND, "invalid_request_error", None, Some("unknown_url".into()))
            }
            Error::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", None, None),
            Error::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, "invalid_request_error", None, Some("invalid_api_key".into()))
            }
            Error::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "requests", None, Some("rate_limit_exceeded".into()))
            }
            Error::TooManyOpenBatches(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "invalid_request_error", None, Some("too_many_open_batches".into()))
            }
            Error::TooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", None, Some("file_too_large".into()))
            }
            Error::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", None, Some("timeout".into())),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "invalid_request_error", None, Some("forbidden".into())),
            Error::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", None, Some("method_not_allowed".into()))
            }
            Error::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "server_error", None, Some("insufficient_storage".into()))
            }
            Error::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_error", None, None),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None),
        };
        let message = match &self {
            Error::Internal(detail) => {
                vllm_batch_metrics::metrics().errors.with_label_values(&["api"]).inc();
                tracing::error!(error = %detail, "internal error");
                "The server had an error while processing your request.".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorEnvelope { error: ApiErrorBody { message, kind: kind.into(), param, code } };
        let mut response = (status, Json(body)).into_response();
        if let Error::RateLimited { retry_after } = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
        }
        // Read by the metrics middleware for `vllm_request_errors_total{type}`.
        response.extensions_mut().insert(ErrorType(kind));
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Middleware: an error answer that is not already OpenAI's envelope (axum's own rejections —
/// a path segment that is not UTF-8, a query it cannot parse — are `text/plain`, some empty) is
/// rewritten into one, with the same status and the rejection's text as its message.
pub async fn envelope_every_error(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    };
    let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
    let body = ErrorEnvelope { error: ApiErrorBody { message, kind: kind.into(), param: None, code: None } };
    let mut rewritten = (status, Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name.clone(), value.clone());
        }
    }
    rewritten.extensions_mut().insert(ErrorType(kind));
    rewritten
}
