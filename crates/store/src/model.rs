//! Records passed between the store and its callers: pages, new batches, claimed work.

use vllm_batch_core::{BatchError, BatchId, CompletionWindow, Endpoint, FileId, Metadata, Usage};

/// Which owner's objects a call sees: `Some(owner)` only theirs, `None` all.
pub type Scope<'a> = Option<&'a str>;

/// A stored API key (never the key itself: a salted hash of it).
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    /// Who owns what the key creates; keys with the same name share their objects.
    pub name: String,
    pub prefix: String,
    pub salt: String,
    pub hash: String,
    /// Sees and manages every owner's objects.
    pub admin: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// One page of a cursor-paginated list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A page from `limit + 1` rows fetched: the extra row, when there, only says more follow.
    pub fn from_overfetch(mut items: Vec<T>, limit: i64) -> Self {
        let has_more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        Page { items, has_more }
    }
}

/// `GET /v1/files` parameters.
#[derive(Debug, Clone)]
pub struct FileListQuery {
    pub purpose: Option<String>,
    pub limit: i64,
    pub after: Option<FileId>,
    /// true: oldest first.
    pub ascending: bool,
}

/// A batch as `POST /v1/batches` creates it.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: BatchId,
    pub endpoint: Endpoint,
    pub input_file_id: FileId,
    pub completion_window: CompletionWindow,
    pub metadata: Option<Metadata>,
    pub output_expires_after: Option<i64>,
    pub created_at: i64,
    /// The creating key's owner; `None` without auth.
    pub owner: Option<String>,
}

/// A validation or finalization job held on a batch.
#[derive(Debug, Clone)]
pub struct BatchJob {
    pub batch_id: BatchId,
    pub fence: i64,
}

/// One contiguous range of input lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    pub idx: i64,
    pub first_line: i64,
    pub line_count: i64,
    pub byte_start: i64,
    pub byte_end: i64,
}

/// The result of validating an input file.
#[derive(Debug, Clone)]
pub enum ValidationOutcome {
    Valid { model: String, total: i64, chunks: Vec<ChunkSpec> },
    Invalid { errors: Vec<BatchError> },
}

/// What the queue gauges show.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// (status, number of batches) for every non-terminal status.
    pub active: Vec<(String, i64)>,
    /// Lines of pending chunks plus the unfinished lines of leased ones.
    pub queue_depth: i64,
}

/// A chunk claimed by a worker: its lines, the batch's context and the fence of this claim.
#[derive(Debug, Clone)]
pub struct ChunkLease {
    pub batch_id: BatchId,
    pub input_file_id: FileId,
    pub endpoint: Endpoint,
    pub model: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub chunk: ChunkSpec,
    pub fence: i64,
    /// This claim is the batch's first dispatch (for the queue-wait histogram).
    pub first_claim: bool,
}

/// What a heartbeat reports of one held chunk.
#[derive(Debug, Clone)]
pub struct ChunkBeat {
    pub batch_id: BatchId,
    pub idx: i64,
    pub fence: i64,
    pub completed: i64,
    pub failed: i64,
}

/// Whether a lease is still ours, and whether its batch should stop dispatching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatAnswer {
    Held,
    /// Held, but the batch is being cancelled: stop sending its lines.
    Cancelling,
    /// Another worker took the chunk (or it was abandoned): drop it.
    Lost,
}

/// A finished chunk's counts and usage (its parts are already in the file store).
#[derive(Debug, Clone, Default)]
pub struct ChunkOutcome {
    pub completed: i64,
    pub failed: i64,
    pub usage: Usage,
}

/// How a batch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizeMode {
    /// Every chunk is done.
    Complete,
    /// Cancelled: unfinished lines become `batch_cancelled`.
    Cancel,
    /// The completion window passed: unfinished lines become `batch_expired`.
    Expire,
}

impl FinalizeMode {
    /// How a batch that is ready to finalize ends — the one rule both backends apply.
    /// `unfinished` counts chunks not done (taken by cancel or expiry); `late` says the batch is
    /// past its completion window with lines that did not complete (chunks that ran into the
    /// deadline wrote them `batch_expired`, e.g. an upstream outage that outlasted the window).
    pub fn decide(status: &str, unfinished: i64, late: bool) -> FinalizeMode {
        match status {
            "cancelling" => FinalizeMode::Cancel,
            _ if unfinished == 0 && !late => FinalizeMode::Complete,
            _ => FinalizeMode::Expire,
        }
    }
}

/// A finalization claimed by a worker. `chunks` lists every chunk in order with the fence of
/// its stored parts (`None` for a chunk abandoned to cancellation or expiry).
#[derive(Debug, Clone)]
pub struct FinalizeJob {
    pub job: BatchJob,
    pub mode: FinalizeMode,
    pub input_file_id: FileId,
    pub output_file_id: FileId,
    pub error_file_id: FileId,
    pub output_expires_at: Option<i64>,
    pub created_at: i64,
    pub chunks: Vec<(ChunkSpec, Option<i64>)>,
}

/// The files finalization wrote, and the counts of lines it turned into errors.
#[derive(Debug, Clone, Default)]
pub struct FinalizeOutcome {
    pub output_bytes: Option<i64>,
    pub error_bytes: Option<i64>,
    pub extra_failed: i64,
}

/// Storage key of a file's body.
pub fn file_key(id: &FileId) -> String {
    format!("files/{id}")
}

/// Storage key of one chunk's output (`out`) or error (`err`) part under one fence.
pub fn part_key(batch: &BatchId, idx: i64, fence: i64, kind: &str) -> String {
    format!("parts/{batch}/{idx:08}-{fence}.{kind}.jsonl")
}

/// Database connection pool settings (`--db-*` flags).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections a process opens; `None`: the backend's default (SQLite 8, PostgreSQL 16).
    pub max_connections: Option<u32>,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: std::time::Duration,
    /// Idle connections above `min_connections` close after this long.
    pub idle_timeout: Option<std::time::Duration>,
    /// PostgreSQL: statements running longer are cancelled by the server (`statement_timeout`).
    pub statement_timeout: Option<std::time::Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: None,
            min_connections: 0,
            acquire_timeout: std::time::Duration::from_secs(60),
            idle_timeout: Some(std::time::Duration::from_secs(600)),
            statement_timeout: Some(std::time::Duration::from_secs(60)),
        }
    }
}
