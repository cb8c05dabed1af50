//! Validation: streams a new batch's input file once, checks every line, splits it into chunks
//! and moves the batch to `in_progress` — or fails it with `errors.data[]` carrying each error's
//! code, message and line number. Nothing already stored is touched either way.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use vllm_batch_core::line::{is_blank, parse_line, trim_line};
use vllm_batch_core::{BatchError, Endpoint, FileId, LineErrorCode};
use vllm_batch_store::{file_key, BatchJob, ChunkSpec, Fenced, LineReader, ValidationOutcome};

use crate::dedup::{DigestLog, Repeat, IN_MEMORY};
use crate::{Shared, Turn};

/// Most errors recorded for one file; reading stops there.
const MAX_ERRORS: usize = 100;

pub(crate) async fn run_loop(s: Arc<Shared>, shutdown: CancellationToken) {
    crate::poll_loop(&s, &shutdown, None, &mut (), |_| Box::pin(turn(s.clone()))).await
}

async fn turn(s: Arc<Shared>) -> Turn {
    match s.store.claim_validation(&s.config.worker_id, s.config.lease_ms()).await {
        Ok(Some(job)) => {
            let span = tracing::info_span!("validate", batch_id = %job.batch_id);
            validate_and_record(&s, &job).instrument(span).await;
            Turn::Worked
        }
        Ok(None) => Turn::Idle,
        Err(e) => {
            warn!(error = %e, "claiming a validation failed; retrying");
            Turn::Idle
        }
    }
}

async fn validate_and_record(s: &Shared, job: &BatchJob) {
    let outcome = match validate(s, job).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // Transient (storage or upstream unreachable): hand the job back and try later.
            warn!(error = %e, "validation could not run; will retry");
            let _ = s.store.release_job(job).await;
            tokio::time::sleep(s.config.poll_interval * 4).await;
            return;
        }
    };
    match s.store.finish_validation(job, &outcome).await {
        Ok(Fenced::Applied) => match &outcome {
            ValidationOutcome::Valid { total, chunks, .. } => {
                info!(total, chunks = chunks.len(), "batch validated");
                s.wake.notify_waiters();
                s.claim_wake.notify_one();
            }
            ValidationOutcome::Invalid { errors } => {
                info!(errors = errors.len(), "batch failed validation");
                if let Ok(Some(b)) = s.store.get_batch(&job.batch_id, None).await {
                    crate::finalize::record_terminal("failed", b.created_at);
                }
            }
        },
        Ok(Fenced::Lost) => info!("batch changed during validation (cancelled or taken over); result dropped"),
        Err(e) => warn!(error = %e, "recording validation failed; will retry"),
    }
}

fn err(code: LineErrorCode, message: impl Into<String>, param: Option<&str>, line: Option<u64>) -> BatchError {
    BatchError { code: code.as_str().into(), message: message.into(), param: param.map(str::to_string), line }
}

async fn validate(s: &Shared, job: &BatchJob) -> Result<ValidationOutcome, String> {
    let batch = s.store.get_batch(&job.batch_id, None).await.map_err(|e| e.to_string())?.ok_or("batch vanished")?;
    let endpoint: Endpoint = batch.endpoint.parse()?;
    let file_id: FileId = batch.input_file_id.parse().map_err(|e| format!("{e}"))?;
    let invalid = |e: BatchError| Ok(ValidationOutcome::Invalid { errors: vec![e] });
    // The row, expired or not: a file that expires after its batch was created stays for the
    // batch (the collector keeps every file an open batch reads), so only a deleted one fails it.
    let exists = s.store.existing_files(&[file_id.to_string()]).await.map_err(|e| e.to_string())?;
    if exists.is_empty() {
        return invalid(err(
            LineErrorCode::EmptyFile,
            format!("Input file {file_id} no longer exists"),
            Some("input_file_id"),
            None,
        ));
    }
    let mut lines = input_lines(s, &file_id).await?;

    // Errors other than duplicate custom_ids, which are known only once every line is read.
    let mut errors = Vec::new();
    let mut ids = DigestLog::new(s.config.scratch_dir.clone(), IN_MEMORY);
    let mut model: Option<(String, u64)> = None;
    let mut chunks = Vec::new();
    let mut total: u64 = 0;
    let mut open: Option<ChunkSpec> = None;
    let mut last_beat = Instant::now();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        if last_beat.elapsed() > s.config.heartbeat_interval() {
            last_beat = Instant::now();
            if s.store.extend_job(job, s.config.lease_ms()).await.map_err(|e| e.to_string())? == Fenced::Lost {
                return Err("validation lease lost".into());
            }
        }
        let (number, end) = (line.number, (line.offset + line.len) as i64);
        let Some(content) = line.content else {
            errors.push(err(
                LineErrorCode::LineTooLong,
                format!("Line is longer than {} bytes", s.config.max_line_bytes),
                None,
                Some(number),
            ));
            if errors.len() >= MAX_ERRORS {
                break;
            }
            continue;
        };
        let content = trim_line(content, number == 1);
        if is_blank(content) {
            if let Some(c) = open.as_mut() {
                c.byte_end = end;
            }
            continue;
        }
        total += 1;
        if total > s.config.max_lines {
            errors.push(err(
                LineErrorCode::TooManyLines,
                format!("The file has more than {} requests, the most one batch accepts", s.config.max_lines),
                None,
                Some(number),
            ));
            break;
        }
        match parse_line(content, endpoint) {
            Err(e) => errors.push(err(e.code, e.message, e.param, Some(number))),
            Ok(p) => {
                ids.push(&p.custom_id, number).await.map_err(|e| e.to_string())?;
                match &model {
                    None => model = Some((p.model.into_owned(), number)),
                    Some((m, first)) if *m != p.model => errors.push(err(
                        LineErrorCode::MismatchedModel,
                        format!(
                            "body.model {:?} differs from {:?} (line {first}); a batch file must use one model",
                            p.model, m
                        ),
                        Some("body.model"),
                        Some(number),
                    )),
                    Some(_) => {}
                }
            }
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let c = open.get_or_insert(ChunkSpec {
            idx: chunks.len() as i64,
            first_line: number as i64,
            line_count: 0,
            byte_start: line.offset as i64,
            byte_end: end,
        });
        c.line_count += 1;
        c.byte_end = end;
        if c.line_count as usize >= s.config.chunk_size {
            chunks.push(open.take().expect("open chunk"));
        }
    }
    chunks.extend(open.take());
    let repeats = ids.finish(MAX_ERRORS).await.map_err(|e| e.to_string())?;
    if !repeats.is_empty() {
        // The first errors of the file by line, duplicates among them: reading stopped at the
        // hundredth other error, so no duplicate found can lie past the last error kept.
        errors.extend(duplicate_errors(s, &file_id, endpoint, &repeats).await?);
        errors.sort_by_key(|e| e.line);
        errors.truncate(MAX_ERRORS);
    }
    if !errors.is_empty() {
        return Ok(ValidationOutcome::Invalid { errors });
    }
    let Some((model, first_line)) = model else {
        return invalid(err(LineErrorCode::EmptyFile, "The input file has no requests", Some("input_file_id"), None));
    };
    // A model missing from the lists is "not found" only when every upstream answered: while one
    // is down or too slow to list its models, the batch waits (the job is handed back and tried
    // again) until the discovery deadline, and then fails saying discovery failed.
    let served = s.router.discover().await;
    let failing = s.router.upstreams.discovery_failing();
    if served.as_ref().is_ok_and(|m| m.routes.contains_key(&model)) {
        return Ok(ValidationOutcome::Valid { model, total: total as i64, chunks });
    }
    if let Some(failing) = failing {
        let age = batch_age(s, job).await;
        if age < s.config.model_discovery_timeout {
            return Err(format!(
                "model {model:?} is not in the model lists known so far and discovery failed ({failing}); \
                 waiting for the upstreams (batch age {} s)",
                age.as_secs()
            ));
        }
        return invalid(err(
            LineErrorCode::ModelDiscoveryFailed,
            format!(
                "Model discovery failed for {} s, so no upstream is known to serve {model:?}: {failing}",
                age.as_secs()
            ),
            Some("body.model"),
            Some(first_line),
        ));
    }
    let known: Vec<_> = served.map(|m| m.routes.into_keys().collect()).unwrap_or_default();
    invalid(err(
        LineErrorCode::ModelNotFound,
        format!("Model {model:?} is not served by any upstream (served: {})", known.join(", ")),
        Some("body.model"),
        Some(first_line),
    ))
}

/// How long ago the batch was created, on the database's clock (zero if it cannot be read).
async fn batch_age(s: &Shared, job: &BatchJob) -> std::time::Duration {
    match (s.store.get_batch(&job.batch_id, None).await, s.store.db_now_ms().await) {
        (Ok(Some(b)), Ok(now)) => std::time::Duration::from_millis((now - b.created_at * 1000).max(0) as u64),
        _ => std::time::Duration::ZERO,
    }
}

/// The input file's lines, as validation reads them.
async fn input_lines(
    s: &Shared,
    file_id: &FileId,
) -> Result<LineReader<BufReader<Box<dyn AsyncRead + Send + Unpin>>>, String> {
    let reader = s.files.reader(&file_key(file_id)).await.map_err(|e| e.to_string())?;
    Ok(LineReader::new(BufReader::with_capacity(256 * 1024, reader), s.config.max_line_bytes))
}

/// Errors for repeated custom_ids, found by digest: the lines involved are read again for their
/// ids, which the messages name, and a repeat whose ids differ (a digest collision) is dropped.
async fn duplicate_errors(
    s: &Shared,
    file_id: &FileId,
    endpoint: Endpoint,
    repeats: &[Repeat],
) -> Result<Vec<BatchError>, String> {
    let wanted: BTreeSet<u64> = repeats.iter().flat_map(|r| [r.line, r.first]).collect();
    let last = *wanted.last().expect("repeats are not empty");
    let mut lines = input_lines(s, file_id).await?;
    let mut found = HashMap::with_capacity(wanted.len());
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        if wanted.contains(&line.number) {
            if let Some(p) = line.content.and_then(|c| parse_line(trim_line(c, line.number == 1), endpoint).ok()) {
                found.insert(line.number, p.custom_id.into_owned());
            }
        }
        if line.number >= last {
            break;
        }
    }
    Ok(repeats
        .iter()
        .filter_map(|r| {
            let id = found.get(&r.line)?;
            (found.get(&r.first) == Some(id)).then(|| {
                err(
                    LineErrorCode::DuplicateCustomId,
                    format!(
                        "custom_id {id:?} appears more than once (first on line {}); custom_id must be unique within the file",
                        r.first
                    ),
                    Some("custom_id"),
                    Some(r.line),
                )
            })
        })
        .collect())
}
