//! `GET /v1/batches/{batch_id}/output` and `/errors` (an extension of OpenAI's API): the lines
//! of a batch's output (error) file that exist so far, while it runs, as JSONL in that file's
//! own format and order; OpenAI's Batch object is unchanged (`output_file_id` appears when the
//! batch ends).
//!
//! While the batch runs, the answer comes from the chunks' checkpointed part segments: every
//! part of the chunks that are done, in chunk order, and the parts its checkpoint lists of the
//! first chunk that is not, and no further — a later chunk's lines come after an earlier one's
//! in the final file. A chunk's checkpoint only ever grows, and finalization concatenates those
//! same parts in the same order, so everything sent is a byte-exact prefix of the final file.
//! Once the batch has ended, the final file is served from the byte offset the client reached.
//!
//! The cursor (`after`, answered in `x-next-cursor`) is `CHUNK.PARTS.BYTES`: the chunk index
//! reached, the parts of that chunk consumed (of both kinds: an output part and an error part
//! are committed together), and the bytes of this file sent so far — the offset into the final
//! file. Answers are bounded (`MAX_ANSWER`, but at least one whole part or line), cut at part or
//! line boundaries. `x-incomplete: false` only once the batch has ended and the cursor reached
//! the end of its final file. `wait` long-polls until there are new lines or the batch ends.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use utoipa::IntoParams;
use vllm_batch_core::{Batch, BatchId, ErrorEnvelope, FileId};
use vllm_batch_store::{file_key, ChunkProgress, FileStore};

use crate::auth::Principal;
use crate::batches::parse_batch_id;
use crate::error::{Error, Result};
use crate::AppState;

/// Bytes an answer grows to before it stops at the next part or line boundary.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// The longest `wait`; longer ones are shortened to it.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a long poll looks for new lines.
const POLL: Duration = Duration::from_millis(250);
/// Parts read ahead while an answer is built (on an object store each is a request).
const PARTS_READ_AHEAD: usize = 8;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches/{batch_id}/output", get(output))
        .route("/v1/batches/{batch_id}/errors", get(errors))
}

/// Which of the batch's two files an answer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output,
    Errors,
}

impl Kind {
    /// Whether a part segment belongs to this file (the rule finalization copies by).
    fn owns(self, key: &str) -> bool {
        key.ends_with(".err.jsonl") == (self == Kind::Errors)
    }

    fn final_file(self, batch: &Batch) -> Option<&str> {
        match self {
            Kind::Output => batch.output_file_id.as_deref(),
            Kind::Errors => batch.error_file_id.as_deref(),
        }
    }
}

/// Where a reader stands: see the module comment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    chunk: i64,
    parts: usize,
    bytes: u64,
}

impl std::str::FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cursor> {
        let bad = || {
            Error::invalid(format!("Invalid 'after' cursor {s:?}: pass back an x-next-cursor header"), Some("after"))
        };
        // Digits only (`str::parse` would also take a sign): what the documented pattern says.
        let fields: Vec<&str> = s.split('.').collect();
        if fields.len() != 3 || fields.iter().any(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad());
        }
        Ok(Cursor {
            chunk: fields[0].parse().map_err(|_| bad())?,
            parts: fields[1].parse().map_err(|_| bad())?,
            bytes: fields[2].parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.chunk, self.parts, self.bytes)
    }
}

/// A `wait` duration: `30s`, `500ms`, `1m` or plain seconds (`30`, `2.5`).
fn parse_wait(s: &str) -> Result<Duration> {
    let bad =
        || Error::invalid(format!("Invalid 'wait' {s:?}: a duration such as 30s, 500ms or 30 (seconds)"), Some("wait"));
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    // `[0-9]+(\.[0-9]+)?`, as the documented pattern says (`str::parse` would take `1.` and `.5`).
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    if whole.is_empty() || fraction.is_empty() || fraction.contains('.') {
        return Err(bad());
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ResultsParams {
    /// Resume after what an earlier answer returned: its `x-next-cursor` header. Absent: from
    /// the start.
    #[param(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+$")]
    after: Option<String>,
    /// Long-poll: while there is nothing new and the batch has not ended, wait up to this long
    /// (`30s`, `500ms`, or seconds; at most 60 s) for new lines.
    #[param(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m)?$")]
    wait: Option<String>,
}

/// One answer: the bytes, where they end, and whether more may come.
struct Answer {
    body: Vec<u8>,
    next: Cursor,
    incomplete: bool,
}

/// Output lines so far.
///
/// An extension of OpenAI's API: the lines of the batch's output file that exist so far, in
/// the final file's order, from the `after` cursor on. When the batch has ended, the bodies of
/// every answer concatenated equal the output file byte for byte.
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}/output",
    tag = "Batches",
    params(("batch_id" = String, Path, description = "The batch's id"), ResultsParams),
    responses(
        (status = 200, description = "JSONL lines of the output file, possibly none", content_type = "application/jsonl", body = String,
            headers(
                ("x-next-cursor" = String, description = "Pass back as `after` to resume after these lines"),
                ("x-incomplete" = String, description = "`true` while more lines may come; `false` once the batch has ended and everything was returned"),
            )),
        (status = 400, description = "An invalid `after` or `wait`", body = ErrorEnvelope),
        (status = 404, description = "No such batch", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn output(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    params: std::result::Result<Query<ResultsParams>, QueryRejection>,
) -> Result<Response> {
    results(&st, &caller, &id, Kind::Output, params).await
}

/// Error lines so far.
///
/// An extension of OpenAI's API: as `/output`, for the batch's error file (lines written as
/// `batch_cancelled` or `batch_expired` appear once the batch has ended).
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}/errors",
    tag = "Batches",
    params(("batch_id" = String, Path, description = "The batch's id"), ResultsParams),
    responses(
        (status = 200, description = "JSONL lines of the error file, possibly none", content_type = "application/jsonl", body = String,
            headers(
                ("x-next-cursor" = String, description = "Pass back as `after` to resume after these lines"),
                ("x-incomplete" = String, description = "`true` while more lines may come; `false` once the batch has ended and everything was returned"),
            )),
        (status = 400, description = "An invalid `after` or `wait`", body = ErrorEnvelope),
        (status = 404, description = "No such batch", body = ErrorEnvelope),
        (status = 500, description = "Internal error", body = ErrorEnvelope),
    )
)]
async fn errors(
    State(st): State<AppState>,
    caller: Principal,
    Path(id): Path<String>,
    params: std::result::Result<Query<ResultsParams>, QueryRejection>,
) -> Result<Response> {
    results(&st, &caller, &id, Kind::Errors, params).await
}

async fn results(
    st: &AppState,
    caller: &Principal,
    id: &str,
    kind: Kind,
    params: std::result::Result<Query<ResultsParams>, QueryRejection>,
) -> Result<Response> {
    let Query(p) = params.map_err(|e| Error::invalid(e.body_text(), None))?;
    let id = parse_batch_id(id)?;
    let mut after: Cursor = p.after.as_deref().map(str::parse).transpose()?.unwrap_or_default();
    let wait = p.wait.as_deref().map(parse_wait).transpose()?.unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + wait;
    loop {
        let answer = read(st, caller, &id, kind, after).await?;
        if !answer.body.is_empty() || !answer.incomplete || Instant::now() >= deadline {
            return respond(answer);
        }
        // Parts of the other file may have moved the cursor: keep it, wait for lines of ours.
        after = answer.next;
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

fn respond(answer: Answer) -> Result<Response> {
    let next = HeaderValue::from_str(&answer.next.to_string()).expect("a cursor is ASCII");
    Response::builder()
        .header(header::CONTENT_TYPE, "application/jsonl")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-next-cursor", next)
        .header("x-incomplete", if answer.incomplete { "true" } else { "false" })
        .body(Body::from(answer.body))
        .map_err(|e| Error::Internal(e.to_string()))
}

fn not_found(id: &BatchId) -> Error {
    Error::NotFound { kind: "Batch", id: id.to_string() }
}

/// What there is after `after` now.
async fn read(st: &AppState, caller: &Principal, id: &BatchId, kind: Kind, after: Cursor) -> Result<Answer> {
    let progress = st.store.batch_progress(id, caller.scope(), after.chunk).await?.ok_or_else(|| not_found(id))?;
    if progress.batch.status.is_terminal() {
        return read_final(st, caller, &progress.batch, kind, after).await;
    }
    match read_parts(st, &progress.chunks, kind, after).await {
        Ok(answer) => Ok(answer),
        Err(e) => {
            // Finalization removes the parts once the final files are in: if the batch ended
            // meanwhile, the same bytes are in its final file at the same offset.
            let batch = st.store.get_batch(id, caller.scope()).await?.ok_or_else(|| not_found(id))?;
            if batch.status.is_terminal() {
                let why = "the batch ended while its parts were read; answering from its final file";
                tracing::info!(batch_id = %id, error = %e, "{why}");
                read_final(st, caller, &batch, kind, after).await
            } else {
                Err(e)
            }
        }
    }
}

/// The parts after `after` of a running batch: those of done chunks, and those checkpointed of
/// the first chunk that is not done, then nothing (final-file order).
async fn read_parts(st: &AppState, chunks: &[ChunkProgress], kind: Kind, after: Cursor) -> Result<Answer> {
    let stale = || {
        Error::invalid(format!("Invalid 'after' cursor \"{after}\": this batch has no such position"), Some("after"))
    };
    // The cursor's own chunk must list at least the parts it says were consumed.
    if after.parts > 0 && !chunks.first().is_some_and(|c| c.idx == after.chunk && c.parts.len() >= after.parts) {
        return Err(stale());
    }
    // Every part ahead, each with the cursor just past it, up to the first chunk not done.
    let mut plan: Vec<(Option<String>, Cursor)> = Vec::new();
    let mut at = after;
    for chunk in chunks {
        let skip = if chunk.idx == after.chunk { after.parts } else { 0 };
        at = Cursor { chunk: chunk.idx, parts: skip, bytes: at.bytes };
        for key in &chunk.parts[skip..] {
            at.parts += 1;
            plan.push((kind.owns(key).then(|| key.clone()), at));
        }
        if !chunk.done {
            break;
        }
        at = Cursor { chunk: chunk.idx + 1, parts: 0, bytes: at.bytes };
        // A done chunk with parts of neither kind left still moves the cursor on.
        plan.push((None, at));
    }
    let mut reads = futures_util::stream::iter(plan)
        .map(|(key, at)| {
            let files = st.files.clone();
            async move {
                let Some(key) = key else { return Ok::<_, Error>((Vec::new(), at)) };
                Ok((read_part(files.as_ref(), &key).await?, at))
            }
        })
        .buffered(PARTS_READ_AHEAD);
    let mut answer = Answer { body: Vec::new(), next: after, incomplete: true };
    while let Some(read) = reads.next().await {
        let (body, mut at) = read?;
        answer.body.extend_from_slice(&body);
        at.bytes = after.bytes + answer.body.len() as u64;
        answer.next = at;
        if answer.body.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok(answer)
}

async fn read_part(files: &dyn FileStore, key: &str) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    files.reader(key).await?.read_to_end(&mut body).await.map_err(|e| Error::Internal(format!("{key}: {e}")))?;
    Ok(body)
}

/// An ended batch's final file from the cursor's byte offset, whole lines only.
async fn read_final(st: &AppState, caller: &Principal, batch: &Batch, kind: Kind, after: Cursor) -> Result<Answer> {
    let beyond = |size: u64| {
        Error::invalid(
            format!("Invalid 'after' cursor \"{after}\": it is past the end of the file ({size} bytes)"),
            Some("after"),
        )
    };
    let done = |next: Cursor| Answer { body: Vec::new(), next, incomplete: false };
    let Some(file_id) = kind.final_file(batch) else {
        return if after.bytes == 0 { Ok(done(after)) } else { Err(beyond(0)) };
    };
    let file_id: FileId = file_id.parse().map_err(|_| Error::Internal(format!("stored file id {file_id:?}")))?;
    // The file is the batch owner's; expired or deleted, it is gone for its users too.
    let file = st
        .store
        .get_file(&file_id, caller.scope())
        .await?
        .ok_or_else(|| Error::NotFound { kind: "File", id: file_id.to_string() })?;
    let (key, size) = (file_key(&file_id), file.bytes as u64);
    if after.bytes > size {
        return Err(beyond(size));
    }
    if after.bytes == size {
        return Ok(done(after));
    }
    // A cursor points just after a line (or at the start): the first read takes the byte
    // before it too, to check.
    let mut end = after.bytes.saturating_sub(1);
    let mut body = st.files.read_range(&key, end, size.min(after.bytes + MAX_ANSWER as u64)).await?;
    end += body.len() as u64;
    if after.bytes > 0 {
        if body.first() != Some(&b'\n') {
            return Err(Error::invalid(
                format!("Invalid 'after' cursor \"{after}\": it is not at a line boundary"),
                Some("after"),
            ));
        }
        body.remove(0);
    }
    while end < size && memchr::memrchr(b'\n', &body).is_none() {
        // At least one whole line, however long.
        let to = size.min(end + MAX_ANSWER as u64);
        body.extend_from_slice(&st.files.read_range(&key, end, to).await?);
        end = to;
    }
    if end < size {
        let cut = memchr::memrchr(b'\n', &body).expect("the loop stops at a newline") + 1;
        body.truncate(cut);
    }
    let next = Cursor { bytes: after.bytes + body.len() as u64, ..after };
    Ok(Answer { body, next, incomplete: next.bytes < size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c: Cursor = "3.2.10240".parse().unwrap();
        assert_eq!(c, Cursor { chunk: 3, parts: 2, bytes: 10240 });
        assert_eq!(c.to_string(), "3.2.10240");
        for bad in ["", "3", "3.2", "3.2.1.0", "-1.0.0", "a.b.c", "3.2.-1", "+3.2.1", "3..1", " 3.2.1"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn waits_parse_and_are_capped() {
        assert_eq!(parse_wait("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_wait("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_wait("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_wait("10m").unwrap(), MAX_WAIT);
        for bad in ["", "soon", "-1s", "5h", "1..2s", "1.s", ".5s", " 5s", "5 s", "+5"] {
            assert!(parse_wait(bad).is_err(), "{bad:?}");
        }
    }
}
