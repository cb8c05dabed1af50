//! Persistence for vllm-batch: the `Store` trait (batches, files, chunks, leases, fencing), one
//! implementation of it (`queue.rs`) over SQLite or PostgreSQL with thin dialect adapters
//! (`sqlite.rs`, `postgres.rs`), and the `FileStore` that holds file bodies (a local folder or an
//! S3-compatible object store). Only this crate speaks SQL.
//!
//! `api` and `worker` only ever see `dyn Store` and `dyn FileStore`, so a PostgreSQL store or an
//! object-store backend slots in without touching them.

pub mod blob;
pub mod disk;
pub mod error;
pub mod lines;
pub mod location;
pub mod model;
pub mod object;
mod postgres;
mod queue;
mod rows;
pub mod schema;
mod sqlite;
pub mod webhooks;

use async_trait::async_trait;
use vllm_batch_core::{Batch, BatchId, FileId, FileObject};

pub use blob::{BlobMeta, BlobWriter, FileStore, LocalFileStore};
pub use disk::{DiskGuard, MinFree};
pub use error::StoreError;
pub use lines::LineReader;
pub use location::{open_file_store, FileStoreConfig, S3Options};
pub use model::*;
pub use object::ObjectFileStore;
pub use queue::{Dialect, SqlStore};
pub use webhooks::Webhooks;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the database a URL names: `sqlite://PATH` (the embedded default) or
/// `postgres://…` / `postgresql://…` (scale-out). Does not migrate.
pub async fn connect(url: &str, pool: &PoolConfig) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqlStore::connect(url, pool).await?))
}

pub use vllm_batch_core::redact_url;

/// Everything the API and the workers keep in the database.
///
/// Every write a worker makes on a chunk or a batch job is conditioned on the fence it got when
/// claiming (`Fenced`), so a worker that lost its lease can never overwrite newer work. Every
/// lease and deadline is decided on the database's clock, never the caller's. Webhook
/// endpoints and deliveries are the supertrait `Webhooks` (`webhooks.rs`).
#[async_trait]
pub trait Store: Webhooks + Send + Sync + 'static {
    // --- schema ------------------------------------------------------------------------------
    /// Applies the migrations this build carries that the database lacks.
    async fn migrate(&self) -> Result<()>;
    /// `SchemaBehind` when the database lacks a migration this build needs.
    async fn check_schema(&self) -> Result<()>;

    // Reads and writes of files and batches take a `Scope`: `Some(owner)` sees only that owner's
    // objects (another owner's look absent), `None` sees everything (admin keys, no auth, workers).

    // --- files -------------------------------------------------------------------------------
    async fn insert_file(&self, file: &FileObject, owner: Scope<'_>) -> Result<()>;
    /// The file, unless it does not exist, belongs to another owner, or has expired (an expired
    /// file is gone for its users, whether or not the collector has removed it yet).
    async fn get_file(&self, id: &FileId, scope: Scope<'_>) -> Result<Option<FileObject>>;
    async fn list_files(&self, query: &FileListQuery, scope: Scope<'_>) -> Result<Page<FileObject>>;
    /// Deletes the row; refuses (`Conflict`) while a batch that is not terminal reads the file.
    async fn delete_file(&self, id: &FileId, scope: Scope<'_>) -> Result<bool>;

    // --- batches -----------------------------------------------------------------------------
    /// Inserts a batch, unless its input file does not exist or has expired (database time):
    /// then `None`.
    async fn insert_batch(&self, batch: &NewBatch) -> Result<Option<Batch>>;
    async fn get_batch(&self, id: &BatchId, scope: Scope<'_>) -> Result<Option<Batch>>;
    async fn list_batches(&self, after: Option<&BatchId>, limit: i64, scope: Scope<'_>) -> Result<Page<Batch>>;
    /// Batches of `owner` that have not ended.
    async fn count_open_batches(&self, owner: &str) -> Result<i64>;
    /// `validating`/`in_progress` → `cancelling` (a batch still validating is cancelled at
    /// once: nothing was sent). Returns the batch after the change and whether this call made
    /// it; `Conflict` when the batch had ended otherwise.
    async fn request_cancel(&self, id: &BatchId, scope: Scope<'_>) -> Result<Option<(Batch, bool)>>;

    // --- API keys ----------------------------------------------------------------------------
    async fn insert_key(&self, key: &ApiKey) -> Result<()>;
    /// The key with this lookup prefix (revoked ones included: the caller refuses them).
    async fn find_key(&self, prefix: &str) -> Result<Option<ApiKey>>;
    async fn list_keys(&self) -> Result<Vec<ApiKey>>;
    /// Revokes the key with this id or prefix; false when there is none.
    async fn revoke_key(&self, id_or_prefix: &str) -> Result<bool>;
    /// Records a use (at most once a minute per key, to keep writes rare).
    async fn touch_key(&self, id: &str) -> Result<()>;
    /// Keys not revoked: while there is one, every API request needs a key.
    async fn count_active_keys(&self) -> Result<i64>;
    /// Whether a key was ever created, revoked ones included: from then on every API request
    /// needs a valid key (revoking the last key must not reopen the keyless mode).
    async fn any_key_created(&self) -> Result<bool>;

    // --- expiry and garbage collection ---------------------------------------------------------
    /// Takes the lease on the singleton job `name` (the garbage collector) for `lease_ms`, when
    /// nobody holds it or its lease expired (database time). True when this call took it.
    async fn claim_singleton(&self, name: &str, worker: &str, lease_ms: i64) -> Result<bool>;
    /// Up to `limit` files past their `expires_at` (database time) that no unfinished batch
    /// reads, oldest expiry first.
    async fn expired_files(&self, limit: i64) -> Result<Vec<FileObject>>;
    /// Deletes the row of a file that is (still) expired and read by no unfinished batch.
    async fn delete_expired_file(&self, id: &FileId) -> Result<bool>;
    /// The chunks of a batch that has not ended, with their fences and checkpointed parts;
    /// `None` when the batch does not exist or has ended (finalization has read its parts).
    async fn chunk_parts(&self, batch: &BatchId) -> Result<Option<Vec<ChunkParts>>>;
    /// The batch (`None`: absent, or another owner's) with its chunks from index `from_idx` on
    /// and their checkpointed parts; no chunks once the batch has ended. Read-only.
    async fn batch_progress(&self, id: &BatchId, scope: Scope<'_>, from_idx: i64) -> Result<Option<BatchProgress>>;
    /// Which of these file ids have a row (the collector's test for bodies whose row is gone).
    async fn existing_files(&self, ids: &[String]) -> Result<Vec<String>>;
    /// Bytes of the stored files per purpose (expired ones not yet collected included).
    async fn file_bytes(&self) -> Result<Vec<(String, i64)>>;

    // --- idempotency keys --------------------------------------------------------------------
    /// Reserves `key` of `owner` for a request whose fingerprint is `request_hash`, or says why
    /// not. A key lives `ttl_ms` (on the database's clock); a reservation whose request never
    /// recorded an answer within `stale_ms` (its process died) is taken over.
    async fn idempotency_begin(
        &self,
        owner: &str,
        key: &str,
        request_hash: &str,
        ttl_ms: i64,
        stale_ms: i64,
    ) -> Result<Idempotent>;
    /// Records the answer (JSON) of the request that reserved the key.
    async fn idempotency_finish(&self, owner: &str, key: &str, response: &str) -> Result<()>;
    /// Frees a reservation whose request failed, so that a retry runs again.
    async fn idempotency_abandon(&self, owner: &str, key: &str) -> Result<()>;

    // --- validation job ----------------------------------------------------------------------
    async fn claim_validation(&self, worker: &str, lease_ms: i64) -> Result<Option<BatchJob>>;
    async fn extend_job(&self, job: &BatchJob, lease_ms: i64) -> Result<Fenced>;
    /// Records the chunks and moves the batch to `in_progress`, or fails it with its errors.
    async fn finish_validation(&self, job: &BatchJob, outcome: &ValidationOutcome) -> Result<Fenced>;

    // --- chunks ------------------------------------------------------------------------------
    async fn claim_chunk(&self, worker: &str, lease_ms: i64) -> Result<Option<ChunkLease>>;
    /// Extends the leases and records checkpoints; answers, for each lease, whether it is still
    /// held and the batch's status (so the worker learns of cancellation).
    async fn heartbeat(&self, beats: &[ChunkBeat], lease_ms: i64) -> Result<Vec<BeatAnswer>>;
    /// Marks the chunk done with its final checkpoint (every line of it, earlier holders'
    /// included) and adds that to the batch's counts, in one transaction.
    async fn complete_chunk(&self, lease: &ChunkLease, done: &Checkpoint) -> Result<Fenced>;
    /// Hands a chunk back (graceful shutdown): pending again, under a new fence, keeping its
    /// checkpoint.
    async fn release_chunk(&self, lease: &ChunkLease) -> Result<Fenced>;

    // --- finalization ------------------------------------------------------------------------
    async fn claim_finalization(&self, worker: &str, lease_ms: i64) -> Result<Option<FinalizeJob>>;
    async fn finish_finalization(&self, job: &FinalizeJob, done: &FinalizeOutcome) -> Result<Fenced>;
    /// Gives a claimed job back without finishing it.
    async fn release_job(&self, job: &BatchJob) -> Result<()>;

    /// Batches per status (non-terminal ones) and requests of running batches not yet
    /// dispatched, for the queue gauges.
    async fn queue_stats(&self) -> Result<QueueStats>;

    /// Cheap query proving the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// The database's clock, Unix milliseconds: the one every lease decision uses.
    async fn db_now_ms(&self) -> Result<i64>;
}
