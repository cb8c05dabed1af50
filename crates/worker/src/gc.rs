//! The garbage collector: removes what nothing will read again. It runs in every deployment
//! shape (embedded in `serve`, or in each standalone `worker`), one at a time: each pass first
//! takes the `gc` lease (database time), so in scale-out exactly one worker collects.
//!
//! A pass removes, at most `MAX_PER_PASS` objects in all:
//! - expired files (past their `expires_at`, read by no unfinished batch): row first, then body;
//!   and bodies left without a row for an hour (a process killed between the two, or between an
//!   upload's body and its row);
//! - part segments nothing will read: every part of a batch that has ended (finalization read
//!   them; a holder that lost its lease may have written more after) or no longer exists, and
//!   in a running batch the segments of earlier holders of a chunk that its checkpoint does not
//!   list (a holder fenced out can never add them to it);
//! - uploads abandoned by a killed process (`FileStore::collect_abandoned`: local temporary
//!   files idle for an hour, multipart uploads of an object store older than a day).
//!
//! and then measures what is stored (`vllm_storage_bytes{kind}`).
//!
//! Safe to kill at any point: every step is idempotent, and what it removes was unreachable
//! before it started (a body whose row was deleted is found by the sweep of bodies without rows;
//! deleting a missing body is not an error).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vllm_batch_core::time::unix_now_ms;
use vllm_batch_core::BatchId;
use vllm_batch_metrics::metrics;
use vllm_batch_store::{file_key, parse_segment_key, BlobMeta, ChunkParts, StoreError};

use crate::Shared;

/// Objects removed at most per pass (files in batches of `PAGE`).
const MAX_PER_PASS: usize = 1000;
const PAGE: i64 = 100;
/// How long a file body without a row waits before it is removed (unless the configuration's
/// abandonment age says otherwise).
const BODY_WITHOUT_ROW_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

pub(crate) async fn run_loop(s: Arc<Shared>, shutdown: CancellationToken) {
    let every = s.config.gc_interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Held for two intervals: a collector that dies leaves it to another at the next but one.
        let lease_ms = 2 * every.as_millis() as i64;
        match s.store.claim_singleton("gc", &s.config.worker_id, lease_ms).await {
            Ok(true) => {
                if let Err(e) = pass(&s).await {
                    warn!(error = %e, "garbage collection pass failed; the next one retries");
                }
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "could not take the garbage collector's lease"),
        }
    }
}

/// One pass. Each step runs whatever the others met (a bucket refusing one abort must not stop
/// expired files from going); the first failure is returned once all have run.
async fn pass(s: &Shared) -> Result<(), StoreError> {
    let mut budget = MAX_PER_PASS;
    let files = expired_files(s, &mut budget).await;
    let bodies = bodies_without_rows(s, &mut budget).await;
    let parts = parts(s, &mut budget).await;
    let uploads = abandoned_uploads(s, budget).await;
    let measured = measure(s, parts.as_ref().ok().copied()).await;
    metrics().gc_last_run.set(unix_now_ms() as f64 / 1000.0);
    files.and(bodies).and(parts.map(drop)).and(uploads).and(measured)
}

async fn abandoned_uploads(s: &Shared, budget: usize) -> Result<(), StoreError> {
    if budget == 0 {
        return Ok(());
    }
    let removed = s.files.collect_abandoned(s.config.gc_abandoned_after, budget).await?;
    if removed > 0 {
        metrics().gc_deleted.with_label_values(&["upload"]).inc_by(removed as u64);
        info!(removed, "abandoned uploads removed");
    }
    Ok(())
}

async fn expired_files(s: &Shared, budget: &mut usize) -> Result<(), StoreError> {
    while *budget > 0 {
        let files = s.store.expired_files(PAGE.min(*budget as i64)).await?;
        if files.is_empty() {
            break;
        }
        let mut progressed = false;
        for f in files {
            let Ok(id) = f.id.parse() else { continue };
            // The row first, on the condition that it is still collectable (a batch created on
            // it since the listing keeps it); then the body. Killed in between, the body is one
            // without a row, which `bodies_without_rows` removes.
            if s.store.delete_expired_file(&id).await? {
                s.files.delete(&file_key(&id)).await?;
                removed(s, "file").await;
                *budget = budget.saturating_sub(1);
                progressed = true;
                info!(file_id = %f.id, bytes = f.bytes, expired_at = ?f.expires_at, "expired file deleted");
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(())
}

/// Removes file bodies whose row is gone and that have not been written to for the abandonment
/// age: a collector killed between deleting an expired file's row and its body, or an upload
/// killed between storing its body and recording its row. (A body younger than that may be an
/// upload about to record its row.)
async fn bodies_without_rows(s: &Shared, budget: &mut usize) -> Result<(), StoreError> {
    let cutoff = unix_now_ms() - s.config.gc_abandoned_after.unwrap_or(BODY_WITHOUT_ROW_AFTER).as_millis() as i64;
    let old: Vec<BlobMeta> = s.files.list("files").await?.into_iter().filter(|b| b.modified_ms < cutoff).collect();
    for page in old.chunks(PAGE as usize) {
        let ids: Vec<String> = page.iter().filter_map(|b| b.key.strip_prefix("files/").map(str::to_string)).collect();
        let existing = s.store.existing_files(&ids).await?;
        for blob in page {
            let Some(id) = blob.key.strip_prefix("files/") else { continue };
            if *budget == 0 {
                return Ok(());
            }
            if existing.iter().any(|e| e == id) {
                continue;
            }
            s.files.delete(&blob.key).await?;
            *budget -= 1;
            removed(s, "file").await;
            info!(key = %blob.key, bytes = blob.bytes, "file body without a row deleted");
        }
    }
    Ok(())
}

/// Removes the part segments nothing will read; returns the bytes of those that stay.
async fn parts(s: &Shared, budget: &mut usize) -> Result<u64, StoreError> {
    let listed = s.files.list("parts").await?;
    // Keys are `parts/{batch}/{name}`.
    let mut by_batch: BTreeMap<&str, Vec<&BlobMeta>> = BTreeMap::new();
    for blob in &listed {
        if let Some(batch) = blob.key.split('/').nth(1) {
            by_batch.entry(batch).or_default().push(blob);
        }
    }
    let mut kept = 0;
    for (batch, blobs) in by_batch {
        // Not a batch id: not ours to judge.
        let owners = match batch.parse::<BatchId>() {
            Ok(id) => Some(s.store.chunk_parts(&id).await?),
            Err(_) => None,
        };
        for blob in blobs {
            let garbage = match &owners {
                Some(None) => true,
                Some(Some(chunks)) => superseded(&blob.key, chunks),
                None => false,
            };
            if !garbage || *budget == 0 {
                kept += blob.bytes;
                continue;
            }
            s.files.delete(&blob.key).await?;
            *budget -= 1;
            debug!(key = %blob.key, bytes = blob.bytes, "part segment nothing reads deleted");
            removed(s, "part").await;
        }
    }
    Ok(kept)
}

/// Whether `key` is a segment of an earlier holder of its chunk that the chunk's checkpoint
/// does not list. Anything else (the current holder's segments, listed ones, keys of another
/// form) stays.
fn superseded(key: &str, chunks: &[ChunkParts]) -> bool {
    let Some((idx, fence)) = parse_segment_key(key) else { return false };
    let Some(chunk) = chunks.iter().find(|c| c.idx == idx) else { return false };
    fence < chunk.fence && !chunk.parts.iter().any(|p| p == key)
}

async fn removed(s: &Shared, kind: &str) {
    metrics().gc_deleted.with_label_values(&[kind]).inc();
    if !s.config.gc_step_delay.is_zero() {
        tokio::time::sleep(s.config.gc_step_delay).await;
    }
}

/// Sets `vllm_storage_bytes{kind}`: files by purpose from the database, parts as listed (left
/// as they were when the listing failed).
async fn measure(s: &Shared, parts_bytes: Option<u64>) -> Result<(), StoreError> {
    let mut bytes: BTreeMap<&str, i64> = BTreeMap::new();
    for (purpose, n) in s.store.file_bytes().await? {
        let kind = match purpose.as_str() {
            "batch" => "input",
            "batch_output" => "output",
            _ => "other",
        };
        *bytes.entry(kind).or_default() += n;
    }
    let gauge = &metrics().storage_bytes;
    for kind in ["input", "output", "other"] {
        gauge.with_label_values(&[kind]).set(bytes.get(kind).copied().unwrap_or(0) as f64);
    }
    if let Some(parts_bytes) = parts_bytes {
        gauge.with_label_values(&["parts"]).set(parts_bytes as f64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unlisted_segments_of_earlier_holders_are_superseded() {
        let chunks = [ChunkParts { idx: 3, fence: 5, parts: vec!["parts/b/00000003-4-0000.out.jsonl".into()] }];
        // Listed in the checkpoint (inherited from holder 4): read by the next holder.
        assert!(!superseded("parts/b/00000003-4-0000.out.jsonl", &chunks));
        // Holder 4's segment written after its last checkpoint: nothing reads it.
        assert!(superseded("parts/b/00000003-4-0001.out.jsonl", &chunks));
        // The current holder's, not yet checkpointed: live.
        assert!(!superseded("parts/b/00000003-5-0000.err.jsonl", &chunks));
        // Another chunk, a pre-checkpoint part, a foreign name: left alone.
        assert!(!superseded("parts/b/00000004-1-0000.out.jsonl", &chunks));
        assert!(!superseded("parts/b/00000003-1.out.jsonl", &chunks));
        assert!(!superseded("parts/b/notes.txt", &chunks));
    }
}
