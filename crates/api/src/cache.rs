//! A very short-lived per-process cache of `GET /v1/batches/{id}` answers.
//!
//! Clients poll a running batch, often many at once (dashboards, `--wait` loops, SDK scripts);
//! each poll would otherwise be a database query. An answer is reused for at most `ttl`, and a
//! cancel through this process drops it at once, so a client never sees its own change late.
//! Progress written by workers shows up within `ttl` (100 ms by default).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vllm_batch_core::{Batch, BatchId};

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 4096;

pub struct BatchCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// (batch id, scope) → when fetched, the batch.
    answers: HashMap<(BatchId, Option<String>), (Instant, Batch)>,
    /// When each batch was last changed through this process: answers fetched before then are
    /// not kept.
    changed: HashMap<BatchId, Instant>,
}

impl Default for BatchCache {
    fn default() -> Self {
        BatchCache::new(Duration::from_millis(100))
    }
}

impl BatchCache {
    /// `ttl` zero turns the cache off.
    pub fn new(ttl: Duration) -> Self {
        BatchCache { ttl, entries: Mutex::default() }
    }

    pub(crate) fn get(&self, id: &BatchId, scope: Option<&str>) -> Option<Batch> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap();
        let (at, batch) = entries.answers.get(&(id.clone(), scope.map(str::to_string)))?;
        (at.elapsed() < self.ttl).then(|| batch.clone())
    }

    pub(crate) fn put(&self, id: &BatchId, scope: Option<&str>, batch: &Batch, fetched: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap();
        if entries.changed.get(id).is_some_and(|&at| fetched <= at) {
            return;
        }
        if entries.answers.len() + entries.changed.len() >= SWEEP_AT {
            let ttl = self.ttl;
            entries.answers.retain(|_, (at, _)| at.elapsed() < ttl);
            entries.changed.retain(|_, at| at.elapsed() < ttl);
        }
        entries.answers.insert((id.clone(), scope.map(str::to_string)), (fetched, batch.clone()));
    }

    /// Drops every cached answer about `id` (whatever the scope), including answers being
    /// fetched right now.
    pub(crate) fn forget(&self, id: &BatchId) {
        let mut entries = self.entries.lock().unwrap();
        entries.answers.retain(|(cached, _), _| cached != id);
        entries.changed.insert(id.clone(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(status: &str) -> Batch {
        serde_json::from_value(serde_json::json!({
            "id": "batch_0123456789abcdef0123456789abcdef", "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": null, "input_file_id": "file-0123456789abcdef0123456789abcdef", "completion_window": "24h",
            "status": status, "output_file_id": null, "error_file_id": null, "created_at": 1, "in_progress_at": null,
            "expires_at": 2, "finalizing_at": null, "completed_at": null, "failed_at": null, "expired_at": null,
            "cancelling_at": null, "cancelled_at": null, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": null, "model": null,
            "usage": {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}
        }))
        .unwrap()
    }

    #[test]
    fn answers_live_for_the_ttl_per_scope_and_a_change_drops_them() {
        let cache = BatchCache::new(Duration::from_secs(60));
        let b = batch("in_progress");
        let id = b.id.parse::<BatchId>().unwrap();
        assert!(cache.get(&id, None).is_none());
        cache.put(&id, Some("alice"), &b, Instant::now());
        assert_eq!(cache.get(&id, Some("alice")).unwrap().status.to_string(), "in_progress");
        assert!(cache.get(&id, Some("bob")).is_none(), "another owner's view is not shared");
        // A change through this process drops the answer, and one fetched before it is not kept.
        let before = Instant::now();
        cache.forget(&id);
        assert!(cache.get(&id, Some("alice")).is_none());
        cache.put(&id, Some("alice"), &b, before);
        assert!(cache.get(&id, Some("alice")).is_none());
        cache.put(&id, Some("alice"), &batch("cancelling"), Instant::now());
        assert_eq!(cache.get(&id, Some("alice")).unwrap().status.to_string(), "cancelling");
        // Expired answers are not served; a zero TTL keeps nothing.
        let short = BatchCache::new(Duration::from_millis(1));
        short.put(&id, None, &b, Instant::now() - Duration::from_millis(5));
        assert!(short.get(&id, None).is_none());
        let off = BatchCache::new(Duration::ZERO);
        off.put(&id, None, &b, Instant::now());
        assert!(off.get(&id, None).is_none());
    }
}
