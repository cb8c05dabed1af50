//! `/v1/files`: upload (multipart, streamed to storage, never buffered whole), list, retrieve,
//! download (streamed) and delete — OpenAI's Files API.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use vllm_batch_core::time::unix_now;
use vllm_batch_core::{DeletedFile, ErrorEnvelope, FileId, FileObject, FilePurpose, List};
use vllm_batch_store::{file_key, FileListQuery};

use multer::Field;

use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::idempotency;
use crate::multipart::{self, FormError, PartGuard};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/files", get(list_files).post(upload_file).layer(DefaultBodyLimit::disable()))
        .route("/v1/files/{file_id}", get(get_file).delete(delete_file))
        .route("/v1/files/{file_id}/content", get(file_content))
}

/// Parses a path or query id; a malformed id cannot name any object, so it is a 404.
pub(crate) fn parse_file_id(id: &str) -> Result<FileId> {
    id.parse().map_err(|_| Error::NotFound { kind: "File", id: id.to_string() })
}

/// The client's file name, reduced to its last path component so it can never name a path.
fn clean_filename(name: Option<&str>) -> String {
    let base = name.unwrap_or("file").rsplit(['/', '\\']).next().unwrap_or("");
    let base: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    if base.is_empty() || base == "." || base == ".." {
        "file".into()
    } else {
        base
    }
}

/// Reads a small text field (multer bounds it at `MAX_FIELD_BYTES`).
async fn small_text(mut field: Field<'_>, name: &'static str, max: u64) -> Result<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| form_error(e, max))? {
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| Error::invalid(format!("{name} is not valid UTF-8"), Some(name)))
}

/// The boundary of a `multipart/form-data` request, or OpenAI's 400.
struct FormStart {
    boundary: String,
    max_file_bytes: u64,
}

fn open_form(req: &Request, max_file_bytes: u64) -> Result<FormStart> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        Error::invalid(
            format!(
                "Expected a multipart/form-data upload with a boundary (Content-Type was {content_type:?}); \
                 send the fields `file` and `purpose`."
            ),
            None,
        )
    })?;
    Ok(FormStart { boundary, max_file_bytes })
}

impl FormStart {
    /// The form's fields, read through the part guard under the upload's constraints.
    fn into_form(self, body: Body) -> multer::Multipart<'static> {
        let guarded = PartGuard::new(body.into_data_stream(), &self.boundary);
        multer::Multipart::with_constraints(guarded, self.boundary, multipart::constraints(self.max_file_bytes))
    }
}

/// OpenAI's error for a form multer or the part guard refused.
fn form_error(e: multer::Error, max_file_bytes: u64) -> Error {
    match e {
        multer::Error::UnknownField { field_name } => Error::invalid(
            format!(
                "Unrecognized request argument supplied: {}. An upload takes `file` and `purpose` \
                 (and optionally `expires_after`).",
                field_name.as_deref().unwrap_or("(a part without a name)")
            ),
            None,
        ),
        multer::Error::FieldSizeExceeded { field_name, .. } if field_name.as_deref() == Some("file") => {
            Error::TooLarge(format!("File is larger than the {max_file_bytes} bytes this server accepts"))
        }
        multer::Error::FieldSizeExceeded { field_name, limit } => Error::invalid(
            format!("Field {} is longer than {limit} bytes", field_name.as_deref().unwrap_or("(unnamed)")),
            None,
        ),
        multer::Error::StreamSizeExceeded { .. } => {
            Error::TooLarge(format!("File is larger than the {max_file_bytes} bytes this server accepts"))
        }
        multer::Error::StreamReadFailed(source) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                if let Some(refused) = c.downcast_ref::<FormError>() {
                    return Error::invalid(refused.to_string(), None);
                }
                if c.is::<tower_http::timeout::TimeoutError>() {
                    return Error::Timeout("The upload stalled: no bytes arrived for too long.".into());
                }
                cause = c.source();
            }
            Error::invalid(format!("Upload interrupted: {source}"), Some("file"))
        }
        other => Error::invalid(format!("Malformed multipart body: {other}"), None),
    }
}

// Only documents the form: the handler streams the fields as they come instead of
// deserializing them.

/// The multipart form of an upload.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The file's content; for purpose `batch`, JSONL of requests.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    #[schema(value_type = FilePurpose)]
    purpose: String,
    /// What the expiry counts from: only `created_at`.
    #[schema(rename = "expires_after[anchor]", pattern = "^created_at$")]
    expires_after_anchor: Option<String>,
    /// Seconds after `created_at` when the file expires (3600 to 2592000). Without it, files of
    /// purpose `batch` expire after the server's `--file-retention` (30 days by default).
    #[schema(rename = "expires_after[seconds]", minimum = 3600, maximum = 2592000)]
    expires_after_seconds: Option<i64>,
}

/// Upload a file.
#[utoipa::path(
    post,
    path = "/v1/files",
    tag = "Files",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes the upload safe to retry: the same key with the same form (fields and content) within 24 hours answers the file it stored instead of storing another; with another form, 409. 1 to 255 printable ASCII characters.")
    ),
    responses(
        (status = 200, description = "The stored file (or, for a repeated `Idempotency-Key`, the file first stored)", body = FileObject),
        (status = 400, description = "A missing or invalid field, or a malformed form", body = ErrorEnvelope),
        (status = 408, description = "The upload stalled (no bytes for --body-idle-timeout)", body = ErrorEnvelope),
        (status = 409, description = "The `Idempotency-Key` was used for a different upload, or its first upload is still being stored", body = ErrorEnvelope),
        (status = 413, description = "The file is larger than the server accepts", body = ErrorEnvelope),
        (status = 507, description = "The server keeps too little free space to store it (`--min-free-disk`); try later", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn upload_file(State(st): State<AppState>, caller: Principal, req: Request) -> Result<Json<FileObject>> {
    let idem = idempotency::Key::from_headers(req.headers(), &caller)?;
    // Refused before a byte is stored when it would leave the data folder under its margin (a
    // body without a length is checked as it arrives: a full volume answers 507 too).
    let announced =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    if let Some(why) = st.disk.shortfall(announced) {
        return Err(Error::InsufficientStorage(format!("Cannot store this upload now: {why}.")));
    }
    // With an Idempotency-Key, the request's fingerprint: its fields and its content's digest.
    let mut content = idem.as_ref().map(|_| Sha256::new());
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut form = open_form(&req, st.limits.max_upload_bytes)?.into_form(req.into_body());
    let id = FileId::generate();
    let key = file_key(&id);
    let mut purpose = None;
    // The body stays an uncommitted temporary file until every field was read and checked: a
    // request dropped half-way (client gone, server shutting down) leaves nothing behind.
    let mut stored: Option<(Box<dyn vllm_batch_store::BlobWriter>, u64, String)> = None;
    let max = st.limits.max_upload_bytes;
    let result: Result<()> = async {
        while let Some(mut field) = form.next_field().await.map_err(|e| form_error(e, max))? {
            match field.name() {
                Some("purpose") => {
                    let value = small_text(field, "purpose", max).await?;
                    fields.push(("purpose".into(), value.clone()));
                    purpose = Some(value);
                }
                Some("file") if stored.is_some() => {
                    return Err(Error::invalid("The form has more than one 'file' part.", Some("file")))
                }
                Some("file") => {
                    let filename = clean_filename(field.file_name());
                    let mut writer = st.files.writer(&key).await?;
                    let mut size: u64 = 0;
                    while let Some(chunk) = field.chunk().await.map_err(|e| form_error(e, max))? {
                        size += chunk.len() as u64;
                        if let Some(h) = content.as_mut() {
                            h.update(&chunk);
                        }
                        writer.write(&chunk).await?;
                    }
                    stored = Some((writer, size, filename));
                }
                // OpenAI's `expires_after[anchor]` and `expires_after[seconds]`.
                Some(name) => {
                    let name = crate::multipart::FIELDS.into_iter().find(|f| *f == name).unwrap_or("field");
                    let value = small_text(field, name, max).await?;
                    fields.push((name.into(), value));
                }
                None => return Err(Error::invalid("A form part has no field name.", None)),
            }
        }
        Ok(())
    }
    .await;
    let checked = result.and_then(|()| {
        let purpose: FilePurpose = purpose
            .as_deref()
            .ok_or_else(|| Error::invalid("Missing required parameter: 'purpose'.", Some("purpose")))?
            .parse()
            .map_err(|m: String| Error::invalid(m, Some("purpose")))?;
        if !purpose.uploadable() {
            return Err(Error::invalid(
                format!(
                    "Invalid purpose {:?}: it is the purpose of files the server writes; upload with one of: {}",
                    purpose.as_str(),
                    FilePurpose::ALL
                        .into_iter()
                        .filter(|p| p.uploadable())
                        .map(FilePurpose::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some("purpose"),
            ));
        }
        let stored = stored.ok_or_else(|| Error::invalid("Missing required parameter: 'file'.", Some("file")))?;
        Ok((purpose, stored))
    });
    // On error the uncommitted writer is dropped here, and its temporary file with it.
    let (purpose, (writer, _, filename)) = checked?;
    // Batch inputs without their own expiry keep the server's retention; other files stay.
    let retention = if purpose == FilePurpose::Batch { st.limits.file_retention_s } else { None };
    let expires_after = expires_after(&fields, &st.limits)?.or(retention);
    // The fingerprint: the content's digest and every field. A repeat's body is dropped
    // uncommitted, and the first upload's file answers.
    let request = || {
        fields.sort();
        let digest = content.map(|h| h.finalize().to_vec()).unwrap_or_default();
        let mut parts: Vec<&[u8]> = vec![b"POST /v1/files", &digest, filename.as_bytes()];
        for (name, value) in &fields {
            parts.extend([name.as_bytes(), value.as_bytes()]);
        }
        idempotency::fingerprint(parts)
    };
    let store = store_file(&st, &caller, id, writer, filename.clone(), purpose, expires_after);
    idempotency::once(&st, idem.as_ref(), request, store).await.map(Json)
}

/// The upload's `expires_after[anchor]` / `expires_after[seconds]` (OpenAI's expiry): seconds
/// after `created_at`, or `None` when the form sets none.
fn expires_after(fields: &[(String, String)], limits: &crate::ApiLimits) -> Result<Option<i64>> {
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    if let Some(anchor) = field("expires_after[anchor]") {
        if anchor != "created_at" {
            return Err(Error::invalid(
                format!("expires_after[anchor] must be 'created_at', not {anchor:?}"),
                Some("expires_after[anchor]"),
            ));
        }
    }
    let Some(seconds) = field("expires_after[seconds]") else { return Ok(None) };
    let (min, max) = (limits.min_file_expiry_s, 2_592_000);
    let parsed = seconds
        .parse::<i64>()
        .ok()
        .or_else(|| seconds.parse::<f64>().ok().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64));
    match parsed {
        Some(s) if (min..=max).contains(&s) => Ok(Some(s)),
        _ => Err(Error::invalid(
            format!(
                "expires_after[seconds] must be a whole number of seconds between {min} and {max}, not {seconds:?}"
            ),
            Some("expires_after[seconds]"),
        )),
    }
}

/// Commits an upload's body and records the file.
async fn store_file(
    st: &AppState,
    caller: &Principal,
    id: FileId,
    writer: Box<dyn vllm_batch_store::BlobWriter>,
    filename: String,
    purpose: FilePurpose,
    expires_after: Option<i64>,
) -> Result<FileObject> {
    let key = file_key(&id);
    let bytes = writer.commit().await?;
    let created_at = unix_now();
    let file = FileObject {
        id: id.to_string(),
        object: "file".into(),
        bytes: bytes as i64,
        created_at,
        expires_at: expires_after.map(|s| created_at + s),
        filename,
        purpose: purpose.as_str().into(),
        status: "processed".into(),
        status_details: None,
    };
    if let Err(e) = st.store.insert_file(&file, caller.owner.as_deref()).await {
        let _ = st.files.delete(&key).await;
        return Err(e.into());
    }
    tracing::info!(file_id = %file.id, bytes = file.bytes, "file uploaded");
    let m = vllm_batch_metrics::metrics();
    m.files_uploaded.inc();
    m.files_bytes_uploaded.inc_by(file.bytes as u64);
    Ok(file)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only files of this purpose.
    purpose: Option<String>,
    /// Page size; default 10000.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    /// Cursor: the `last_id` of the previous page.
    #[param(pattern = "^file-[0-9a-f]{32}$")]
    after: Option<String>,
    #[param(schema_with = crate::openapi::sort_order)]
    order: Option<String>,
}

/// List files.
#[utoipa::path(
    get,
    path = "/v1/files",
    tag = "Files",
    params(ListParams),
    responses(
        (status = 200, description = "A page of files", body = vllm_batch_core::FileList),
        (status = 400, description = "An invalid query parameter", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn list_files(
    State(st): State<AppState>,
    caller: Principal,
    params: std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<FileObject>>> {
    let Query(p) = params.map_err(|e| Error::invalid(e.body_text(), None))?;
    let limit = crate::batches::page_limit(p.limit, 10_000, 10_000)?;
    let ascending = match p.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(Error::invalid("order must be 'asc' or 'desc'", Some("order"))),
    };
    let after = p
        .after
        .map(|a| {
            a.parse::<FileId>().map_err(|_| Error::invalid(format!("Invalid 'after' cursor {a:?}"), Some("after")))
        })
        .transpose()?;
    let query = FileListQuery { purpose: p.purpose, limit, after, ascending };
    let page = st.store.list_files(&query, caller.scope()).await?;
    Ok(Json(List::new(page.items, page.has_more, |f| f.id.clone())))
}

async fn find(st: &AppState, caller: &Principal, id: &str) -> Result<(FileId, FileObject)> {
    let id = parse_file_id(id)?;
    let file = st
        .store
        .get_file(&id, caller.scope())
        .await?
        .ok_or_else(|| Error::NotFound { kind: "File", id: id.to_string() })?;
    Ok((id, file))
}

/// Retrieve a file.
#[utoipa::path(
    get,
    path = "/v1/files/{file_id}",
    tag = "Files",
    params(("file_id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file", body = FileObject),
        (status = 404, description = "No such file", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn get_file(State(st): State<AppState>, caller: Principal, Path(id): Path<String>) -> Result<Json<FileObject>> {
    Ok(Json(find(&st, &caller, &id).await?.1))
}

/// Download a file's content.
#[utoipa::path(
    get,
    path = "/v1/files/{file_id}/content",
    tag = "Files",
    params(("file_id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file's bytes, streamed", content_type = "application/octet-stream", body = crate::openapi::Binary),
        (status = 404, description = "No such file", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn file_content(State(st): State<AppState>, caller: Principal, Path(id): Path<String>) -> Result<Response> {
    let (id, file) = find(&st, &caller, &id).await?;
    let stream = st.files.stream(&file_key(&id)).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, file.bytes)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", file.filename.replace('"', "")))
        .body(Body::from_stream(stream))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Delete a file.
#[utoipa::path(
    delete,
    path = "/v1/files/{file_id}",
    tag = "Files",
    params(("file_id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file is deleted", body = DeletedFile),
        (status = 404, description = "No such file", body = ErrorEnvelope),
        (status = 409, description = "A running batch reads the file", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn delete_file(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeletedFile>> {
    let id = parse_file_id(&id)?;
    if !st.store.delete_file(&id, caller.scope()).await? {
        return Err(Error::NotFound { kind: "File", id: id.to_string() });
    }
    st.files.delete(&file_key(&id)).await?;
    Ok(Json(DeletedFile::new(id.to_string())))
}
