//! `/v1/webhook_endpoints` and `/v1/webhook_event_types`: OpenAI's webhook endpoints API, as
//! the official Python SDK's `client.webhooks.*` speaks it — create (the signing secret is
//! shown once), retrieve, list, update, delete, rotate the secret, send a test event.
//!
//! Endpoints belong to the caller's owner, as files and batches do: another owner's endpoint
//! is a 404, admin keys see all. An endpoint created without a key (owner NULL) is
//! operator-level and receives every batch's events. Deliveries themselves are the worker's
//! (`vllm_batch_worker`'s `webhooks.rs`).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vllm_batch_core::time::unix_now;
use vllm_batch_core::webhook::{event_body, new_delivery_id, new_event_id, EventType, Secret};
use vllm_batch_core::{BatchId, ErrorEnvelope, List};
use vllm_batch_store::webhooks::{WebhookEndpoint as Stored, WebhookEndpointUpdate};
use vllm_batch_upstream::webhook::{check_url, WebhookClient};

use crate::auth::Principal;
use crate::batches::{page_limit, parse_body};
use crate::error::{Error, Result};
use crate::AppState;

/// What the API needs for webhooks.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Accept `http://` endpoint URLs (`--webhook-allow-http`); otherwise only `https://`.
    pub allow_http: bool,
    /// The client of `/test` (no redirects, the per-attempt timeout).
    pub client: WebhookClient,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { allow_http: false, client: WebhookClient::new(vllm_batch_upstream::webhook::DEFAULT_TIMEOUT) }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook_endpoints", get(list_endpoints).post(create_endpoint))
        .route(
            "/v1/webhook_endpoints/{webhook_endpoint_id}",
            get(get_endpoint).post(update_endpoint).delete(delete_endpoint),
        )
        .route("/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret", post(rotate_secret))
        .route("/v1/webhook_endpoints/{webhook_endpoint_id}/test", post(test_endpoint))
        .route("/v1/webhook_event_types", get(list_event_types))
}

/// A webhook endpoint (OpenAI's `webhook_endpoint` object).
#[derive(Serialize, ToSchema)]
pub struct WebhookEndpoint {
    pub id: String,
    /// Always `webhook_endpoint`.
    #[schema(pattern = "^webhook_endpoint$")]
    pub object: &'static str,
    pub name: String,
    /// The URL that receives deliveries.
    pub url: String,
    /// The event types that trigger deliveries to this endpoint.
    pub event_types: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last configuration or signing-secret change; tests and unchanged
    /// updates do not advance it.
    pub updated_at: i64,
    /// A masked form of the signing secret.
    pub signing_secret_hint: String,
    /// The signing secret (`whsec_…`): only in the answers of create and rotate_secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

impl WebhookEndpoint {
    fn from_stored(e: Stored, show_secret: bool) -> Self {
        let hint = Secret::parse(&e.secret).map(|s| s.hint()).unwrap_or_else(|_| "whsec_…".into());
        WebhookEndpoint {
            id: e.id,
            object: "webhook_endpoint",
            name: e.name,
            url: e.url,
            event_types: e.event_types,
            created_at: e.created_at,
            updated_at: e.updated_at,
            signing_secret_hint: hint,
            signing_secret: show_secret.then_some(e.secret),
        }
    }
}

/// `List<WebhookEndpoint>`, by the name the OpenAPI document gives it.
pub type WebhookEndpointList = List<WebhookEndpoint>;

/// The body of `POST /v1/webhook_endpoints`.
#[derive(Deserialize, ToSchema)]
struct CreateEndpoint {
    /// A human-readable name (1 to 256 characters).
    name: String,
    /// The HTTPS URL that receives deliveries (`http://` only on a server started with
    /// `--webhook-allow-http`).
    url: String,
    /// Event types to deliver: `batch.completed`, `batch.failed`, `batch.expired`,
    /// `batch.cancelled`.
    event_types: Vec<String>,
}

/// The body of `POST /v1/webhook_endpoints/{id}`: fields left out stay as they are.
#[derive(Deserialize, ToSchema)]
struct UpdateEndpoint {
    name: Option<String>,
    url: Option<String>,
    /// The complete new set of event types.
    event_types: Option<Vec<String>>,
}

/// The body of `POST /v1/webhook_endpoints/{id}/rotate_secret`.
#[derive(Deserialize, ToSchema, Default)]
struct RotateSecret {
    /// Keep signing with the previous secret too for 24 hours (default false: it stops at once).
    #[serde(default)]
    keep_old_secret_active_for_24_hours: Option<bool>,
}

/// The body of `POST /v1/webhook_endpoints/{id}/test`.
#[derive(Deserialize, ToSchema)]
struct TestEndpoint {
    /// The type of the sample event to send.
    event_type: String,
}

/// The result of a test delivery.
#[derive(Serialize, ToSchema)]
struct TestResult {
    /// Always `webhook_endpoint.test`.
    #[schema(pattern = "^webhook_endpoint\\.test$")]
    object: &'static str,
    webhook_endpoint_id: String,
    event_type: String,
    /// The receiver's HTTP status code (a 3xx is not followed).
    status_code: u16,
    /// Always true: the receiver answered (see `status_code`).
    success: bool,
}

/// The answer of `DELETE /v1/webhook_endpoints/{id}`.
#[derive(Serialize, ToSchema)]
struct DeletedEndpoint {
    id: String,
    /// Always `webhook_endpoint.deleted`.
    #[schema(pattern = "^webhook_endpoint\\.deleted$")]
    object: &'static str,
    deleted: bool,
}

/// The event types this server sends.
#[derive(Serialize, ToSchema)]
struct EventTypeList {
    /// Always `list`.
    #[schema(pattern = "^list$")]
    object: &'static str,
    data: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Page size; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// Cursor: the `last_id` of the previous page.
    #[param(pattern = "^we_[A-Za-z0-9_]{1,64}$")]
    after: Option<String>,
}

fn not_found(id: &str) -> Error {
    Error::NotFound { kind: "webhook_endpoint", id: id.to_string() }
}

/// Whether `id` has the form of an endpoint id (`we_` and up to 64 letters, digits or `_`):
/// anything else names no endpoint, and never reaches the database (PostgreSQL refuses a NUL in
/// a text parameter with an error, not an empty answer).
fn is_endpoint_id(id: &str) -> bool {
    id.strip_prefix("we_").is_some_and(|rest| {
        (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// The path's endpoint id, or the 404 an unknown id gets.
fn endpoint_id(id: String) -> Result<String> {
    if is_endpoint_id(&id) {
        Ok(id)
    } else {
        Err(not_found(&id))
    }
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(Error::invalid("name must be 1 to 256 characters", Some("name")));
    }
    Ok(name.to_string())
}

fn check_endpoint_url(st: &AppState, url: &str) -> Result<String> {
    if url.len() > 2048 {
        return Err(Error::invalid("url must be at most 2048 characters", Some("url")));
    }
    check_url(url, st.webhooks.allow_http).map_err(|m| Error::invalid(m, Some("url")))?;
    Ok(url.to_string())
}

/// At least one type, each one this server sends; duplicates dropped, order kept.
fn check_event_types(types: &[String]) -> Result<Vec<String>> {
    if types.is_empty() {
        return Err(Error::invalid(
            format!("event_types must name at least one event type: {}", EventType::supported_list()),
            Some("event_types"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        let parsed: EventType = t.parse().map_err(|m: String| Error::invalid(m, Some("event_types")))?;
        if !out.iter().any(|o| o == parsed.as_str()) {
            out.push(parsed.as_str().to_string());
        }
    }
    Ok(out)
}

/// Create a webhook endpoint.
///
/// The answer carries the signing secret; it is not shown again (rotate it to get a new one).
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints",
    tag = "Webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 200, description = "The endpoint, with its `signing_secret`", body = WebhookEndpoint),
        (status = 400, description = "A missing or invalid field: an `http://` URL without `--webhook-allow-http`, an unsupported event type", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn create_endpoint(State(st): State<AppState>, caller: Principal, body: Bytes) -> Result<Json<WebhookEndpoint>> {
    let req: CreateEndpoint = parse_body(&body)?;
    let now = unix_now();
    let endpoint = Stored {
        id: format!("we_{}", uuid::Uuid::new_v4().simple()),
        owner: caller.owner.clone(),
        name: check_name(&req.name)?,
        url: check_endpoint_url(&st, &req.url)?,
        event_types: check_event_types(&req.event_types)?,
        secret: Secret::generate().expose().to_string(),
        created_at: now,
        updated_at: now,
    };
    st.store.insert_webhook_endpoint(&endpoint).await?;
    tracing::info!(webhook_endpoint = %endpoint.id, "webhook endpoint created");
    Ok(Json(WebhookEndpoint::from_stored(endpoint, true)))
}

/// Retrieve a webhook endpoint.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{webhook_endpoint_id}",
    tag = "Webhooks",
    params(("webhook_endpoint_id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint (with `signing_secret_hint`, not the secret)", body = WebhookEndpoint),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn get_endpoint(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpoint>> {
    let id = endpoint_id(id)?;
    let e = st.store.get_webhook_endpoint(&id, caller.scope()).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(WebhookEndpoint::from_stored(e, false)))
}

/// List webhook endpoints, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints",
    tag = "Webhooks",
    params(ListParams),
    responses(
        (status = 200, description = "A page of endpoints", body = WebhookEndpointList),
        (status = 400, description = "An invalid query parameter", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn list_endpoints(
    State(st): State<AppState>,
    caller: Principal,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<List<WebhookEndpoint>>> {
    let Query(p) = params.map_err(|e| Error::invalid(e.body_text(), None))?;
    let limit = page_limit(p.limit, 20, 100)?;
    if let Some(a) = p.after.as_deref().filter(|a| !is_endpoint_id(a)) {
        return Err(Error::invalid(format!("Invalid 'after' cursor {a:?}"), Some("after")));
    }
    let page = st.store.list_webhook_endpoints(p.after.as_deref(), limit, caller.scope()).await?;
    let items = page.items.into_iter().map(|e| WebhookEndpoint::from_stored(e, false)).collect();
    Ok(Json(List::new(items, page.has_more, |e| e.id.clone())))
}

/// Update a webhook endpoint.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{webhook_endpoint_id}",
    tag = "Webhooks",
    params(("webhook_endpoint_id" = String, Path, description = "The endpoint's id")),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The endpoint as updated", body = WebhookEndpoint),
        (status = 400, description = "An invalid field", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn update_endpoint(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WebhookEndpoint>> {
    let id = endpoint_id(id)?;
    let req: UpdateEndpoint = parse_body(&body)?;
    let update = WebhookEndpointUpdate {
        name: req.name.as_deref().map(check_name).transpose()?,
        url: req.url.as_deref().map(|u| check_endpoint_url(&st, u)).transpose()?,
        event_types: req.event_types.as_deref().map(check_event_types).transpose()?,
    };
    let e = st
        .store
        .update_webhook_endpoint(&id, caller.scope(), &update, unix_now())
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(WebhookEndpoint::from_stored(e, false)))
}

/// Delete a webhook endpoint.
///
/// Its deliveries not yet made are dropped.
#[utoipa::path(
    delete,
    path = "/v1/webhook_endpoints/{webhook_endpoint_id}",
    tag = "Webhooks",
    params(("webhook_endpoint_id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint is gone", body = DeletedEndpoint),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn delete_endpoint(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeletedEndpoint>> {
    let id = endpoint_id(id)?;
    if !st.store.delete_webhook_endpoint(&id, caller.scope()).await? {
        return Err(not_found(&id));
    }
    tracing::info!(webhook_endpoint = %id, "webhook endpoint deleted");
    Ok(Json(DeletedEndpoint { id, object: "webhook_endpoint.deleted", deleted: true }))
}

/// Rotate a webhook endpoint's signing secret.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret",
    tag = "Webhooks",
    params(("webhook_endpoint_id" = String, Path, description = "The endpoint's id")),
    request_body(content = RotateSecret, description = "Optional"),
    responses(
        (status = 200, description = "The endpoint, with its new `signing_secret`", body = WebhookEndpoint),
        (status = 400, description = "An invalid field", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn rotate_secret(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WebhookEndpoint>> {
    let id = endpoint_id(id)?;
    let req: RotateSecret =
        if body.iter().all(u8::is_ascii_whitespace) { RotateSecret::default() } else { parse_body(&body)? };
    let secret = Secret::generate();
    let keep = req.keep_old_secret_active_for_24_hours.unwrap_or(false);
    let e = st
        .store
        .rotate_webhook_secret(&id, caller.scope(), secret.expose(), keep, unix_now())
        .await?
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(webhook_endpoint = %id, keep_old = keep, "webhook signing secret rotated");
    Ok(Json(WebhookEndpoint::from_stored(e, true)))
}

/// Send a sample event to a webhook endpoint.
///
/// A signed event of the requested type about a made-up batch, sent at once (no retries, no
/// redirects followed); the answer carries the receiver's status code.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{webhook_endpoint_id}/test",
    tag = "Webhooks",
    params(("webhook_endpoint_id" = String, Path, description = "The endpoint's id")),
    request_body = TestEndpoint,
    responses(
        (status = 200, description = "The receiver answered", body = TestResult),
        (status = 400, description = "An unsupported event type", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
        (status = 502, description = "The receiver could not be reached or did not answer in time", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn test_endpoint(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TestResult>> {
    let id = endpoint_id(id)?;
    let req: TestEndpoint = parse_body(&body)?;
    let kind: EventType = req.event_type.parse().map_err(|m: String| Error::invalid(m, Some("event_type")))?;
    let e = st.store.get_webhook_endpoint(&id, caller.scope()).await?.ok_or_else(|| not_found(&id))?;
    let secret = Secret::parse(&e.secret).map_err(|m| Error::Internal(format!("endpoint {id}'s secret: {m}")))?;
    let body = event_body(&new_event_id(), kind, unix_now(), BatchId::generate().as_str());
    let sent = st.webhooks.client.send(&e.url, &new_delivery_id(), &body, &[&secret]).await;
    let Some(status_code) = sent.status_code else {
        return Err(Error::Upstream(format!(
            "The test event could not be delivered to {}: {}",
            e.url,
            sent.error.unwrap_or_default()
        )));
    };
    Ok(Json(TestResult {
        object: "webhook_endpoint.test",
        webhook_endpoint_id: id,
        event_type: kind.as_str().to_string(),
        status_code,
        success: true,
    }))
}

/// List the webhook event types this server sends.
#[utoipa::path(
    get,
    path = "/v1/webhook_event_types",
    tag = "Webhooks",
    responses(
        (status = 200, description = "The event types", body = EventTypeList),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn list_event_types() -> Json<EventTypeList> {
    Json(EventTypeList { object: "list", data: EventType::ALL.iter().map(|t| t.as_str().to_string()).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_have_one_form() {
        for ok in ["we_operator", "we_0123456789abcdef0123456789abcdef", "we_a_b"] {
            assert!(is_endpoint_id(ok), "{ok}");
        }
        for bad in ["", "we_", "we", "wh_x", "we_x\0y", "we_x y", "we_x/y", &format!("we_{}", "a".repeat(65))] {
            assert!(!is_endpoint_id(bad), "{bad:?}");
        }
    }
}
