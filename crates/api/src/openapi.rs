//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`. It is generated with
//! `utoipa` from the handlers' `#[utoipa::path]` attributes and the wire types' `ToSchema`
//! derives, so it changes with the code; tests/e2e/openapi.rs checks live answers against it.

use std::sync::LazyLock;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vllm-batch",
        description = "OpenAI's Files and Batches API in front of vLLM (or any OpenAI-compatible server). \
                       Every error answers OpenAI's envelope `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`."
    ),
    paths(
        crate::files::upload_file,
        crate::files::list_files,
        crate::files::get_file,
        crate::files::file_content,
        crate::files::delete_file,
        crate::batches::create_batch,
        crate::batches::list_batches,
        crate::batches::get_batch,
        crate::batches::cancel_batch,
        crate::retry::retry_batch,
        crate::results::output,
        crate::results::errors,
        crate::models::list_models,
        crate::webhooks::create_endpoint,
        crate::webhooks::list_endpoints,
        crate::webhooks::get_endpoint,
        crate::webhooks::update_endpoint,
        crate::webhooks::delete_endpoint,
        crate::webhooks::rotate_secret,
        crate::webhooks::test_endpoint,
        crate::webhooks::list_event_types,
        crate::health::health,
        crate::health::verbose_health,
        crate::health::ready,
        crate::health::prometheus_metrics,
        openapi_json,
    ),
    modifiers(&Security),
    tags(
        (name = "Files", description = "Upload batch input, download output and error files"),
        (name = "Batches", description = "Create, follow, list and cancel batches"),
        (name = "Models", description = "What the upstreams serve"),
        (name = "Webhooks", description = "Endpoints that receive signed events when batches end"),
        (name = "Health", description = "Liveness, readiness and Prometheus metrics"),
        (name = "Meta", description = "This document"),
    )
)]
struct ApiDoc;

/// API keys in the document: a bearer scheme, optional on every `/v1/` operation (a server
/// without keys answers loopback clients without one), and the 401 and 429 answers keys bring.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sk-vb-…")
                    .description(Some("An API key made with `vllm-batch keys create`, as OpenAI's SDKs send it"))
                    .build(),
            ),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let protected = path.starts_with("/v1/") && path != "/v1/health";
            let metrics = path == "/metrics";
            for op in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
                if protected {
                    op.security = Some(vec![
                        SecurityRequirement::default(),
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                    ]);
                    op.responses.responses.entry("401".into()).or_insert_with(|| error("No valid API key").into());
                    op.responses
                        .responses
                        .entry("429".into())
                        .or_insert_with(|| error("The key's rate or open-batch limit is reached").into());
                }
                if metrics {
                    op.responses
                        .responses
                        .entry("401".into())
                        .or_insert_with(|| error("The metrics token is missing or wrong").into());
                }
            }
        }
    }
}

/// The document, built once.
static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes"));

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "Meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn openapi_json() -> Json<Value> {
    Json(DOCUMENT.clone())
}

/// A body of raw bytes (`application/octet-stream`).
pub(crate) struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// `order` of `GET /v1/files`: `asc` or `desc` (a plain string in the handler, so that a bad
/// value gets the handler's own message).
pub(crate) fn sort_order() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["asc", "desc"]))
        .description(Some("Sort by creation time; default `desc`."))
        .into()
}
