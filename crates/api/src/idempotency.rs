//! `Idempotency-Key` on `POST /v1/files` and `POST /v1/batches`: a client (or a proxy) that
//! retries a create after a timeout gets the original answer instead of a second file or batch.
//!
//! The key belongs to the caller's owner. The first request with it reserves it in the store,
//! runs, and records its answer; the same request again within 24 hours gets that answer; the
//! same key with a different request is a 409. A retry that arrives while the first request
//! still runs waits for its answer (a few seconds at most).

use std::future::Future;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vllm_batch_store::Idempotent;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::AppState;

pub const HEADER: &str = "idempotency-key";

/// How long a key's answer is kept.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// A reservation whose request recorded no answer for this long died with its process.
const STALE: Duration = Duration::from_secs(60);
/// How long a retry waits for the first request's answer.
const WAIT: Duration = Duration::from_secs(10);
/// Longest key accepted.
const MAX_KEY: usize = 255;

/// A request's `Idempotency-Key`, for its owner.
pub struct Key {
    owner: String,
    key: String,
}

/// Runs `create` once per key: without a key it just runs; with one, a repeat of the same
/// request (its fingerprint from `request`, computed only then) gets the first answer instead,
/// and this run's answer is recorded (or, on an error, the key freed). `create` is not polled
/// for a repeat: whatever it owns (an uncommitted upload) is dropped.
pub async fn once<T: Serialize + DeserializeOwned>(
    st: &AppState,
    key: Option<&Key>,
    request: impl FnOnce() -> String,
    create: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(key) = key else { return create.await };
    if let Begin::Replay(answer) = key.begin(st, &request()).await? {
        return Ok(answer);
    }
    let answer = create.await;
    key.finish(st, &answer).await;
    answer
}

/// Whether to run the request or answer with the recorded answer.
enum Begin<T> {
    Run,
    Replay(T),
}

impl Key {
    /// The key the request carries, if any; a 400 when it is not a short printable string.
    pub fn from_headers(headers: &HeaderMap, caller: &Principal) -> Result<Option<Key>> {
        let Some(value) = headers.get(HEADER) else { return Ok(None) };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Error::invalid(
                    format!("Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters without spaces"),
                    Some("Idempotency-Key"),
                )
            })?;
        Ok(Some(Key { owner: caller.owner.clone().unwrap_or_default(), key: key.to_string() }))
    }

    /// Reserves the key for a request with this fingerprint, or gives the answer recorded for
    /// it; waits while the same request runs elsewhere.
    async fn begin<T: DeserializeOwned>(&self, st: &AppState, fingerprint: &str) -> Result<Begin<T>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ttl = TTL.as_millis() as i64;
            let state = st.store.idempotency_begin(&self.owner, &self.key, fingerprint, ttl, STALE.as_millis() as i64);
            match state.await? {
                Idempotent::Fresh => return Ok(Begin::Run),
                Idempotent::Replay(answer) => {
                    let answer = serde_json::from_str(&answer)
                        .map_err(|e| Error::Internal(format!("recorded idempotent answer: {e}")))?;
                    return Ok(Begin::Replay(answer));
                }
                Idempotent::Mismatch => {
                    return Err(Error::Conflict(format!(
                    "Idempotency-Key {:?} was already used for a different request; use a new key for a new request",
                    self.key
                )))
                }
                Idempotent::InProgress if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Idempotent::InProgress => {
                    return Err(Error::Conflict(format!(
                        "A request with Idempotency-Key {:?} is still being processed; retry in a moment",
                        self.key
                    )))
                }
            }
        }
    }

    /// Records the answer of the request that reserved the key; on an error, frees the key so
    /// that a retry runs again.
    async fn finish<T: Serialize>(&self, st: &AppState, answer: &Result<T>) {
        let outcome = match answer {
            Ok(body) => {
                let body = serde_json::to_string(body).expect("answers serialise");
                st.store.idempotency_finish(&self.owner, &self.key, &body).await
            }
            Err(_) => st.store.idempotency_abandon(&self.owner, &self.key).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not record the answer of an idempotent request");
        }
    }
}

/// A request's fingerprint: SHA-256 over its parts, each length-prefixed.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("{:x}", h.finalize())
}
