//! The garbage collector: removes what has expired. It runs in every deployment shape (embedded
//! in `serve`, or in each standalone `worker`), one at a time: each pass first takes the `gc`
//! lease (database time), so in scale-out exactly one worker collects.
//!
//! A pass deletes expired files — past their `expires_at`, read by no unfinished batch — body
//! first, then row, at most `MAX_PER_PASS`. Safe to kill at any point: a body deleted whose row
//! remains is an expired row (404 already) whose next pass deletes it; deleting a missing body is
//! not an error.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vllm_batch_core::time::unix_now_ms;
use vllm_batch_metrics::metrics;
use vllm_batch_store::{file_key, StoreError};

use crate::Shared;

/// Files removed at most per pass (in batches of `PAGE`).
const MAX_PER_PASS: usize = 1000;
const PAGE: i64 = 100;

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

async fn pass(s: &Shared) -> Result<(), StoreError> {
    let m = metrics();
    let mut removed = 0;
    while removed < MAX_PER_PASS {
        let files = s.store.expired_files(PAGE).await?;
        if files.is_empty() {
            break;
        }
        let mut progressed = false;
        for f in files {
            let Ok(id) = f.id.parse() else { continue };
            s.files.delete(&file_key(&id)).await?;
            if s.store.delete_expired_file(&id).await? {
                m.gc_deleted.with_label_values(&["file"]).inc();
                removed += 1;
                progressed = true;
                info!(file_id = %f.id, bytes = f.bytes, expired_at = ?f.expires_at, "expired file deleted");
            }
        }
        if !progressed {
            break;
        }
    }
    m.gc_last_run.set(unix_now_ms() as f64 / 1000.0);
    Ok(())
}
