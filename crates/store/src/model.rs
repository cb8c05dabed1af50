//! Records passed between the store and its callers: pages, new batches, claimed work.

use serde::{Deserialize, Serialize};
use vllm_batch_core::{Batch, BatchError, BatchId, BatchStatus, CompletionWindow, Endpoint, FileId, Metadata, Usage};

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
    /// `metadata.priority`, parsed (lower runs first); `None` when unset.
    pub priority: Option<i64>,
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

/// What the collector needs to tell a running batch's live part segments from garbage.
#[derive(Debug, Clone)]
pub struct ChunkParts {
    pub idx: i64,
    /// The chunk's current fence: segments written under an older one that its checkpoint
    /// does not list were left by a holder that lost the chunk, and nothing will ever read them.
    pub fence: i64,
    /// The part keys its checkpoint lists (read by the next holder and by finalization).
    pub parts: Vec<String>,
}

/// A batch and its results so far, as `GET /v1/batches/{id}/output` reads them.
#[derive(Debug, Clone)]
pub struct BatchProgress {
    pub batch: Batch,
    /// The chunks from the asked index on, in order; empty once the batch has ended (its final
    /// files hold everything, and its parts are gone or going).
    pub chunks: Vec<ChunkProgress>,
}

/// One chunk's committed results: its checkpointed parts, in the order written. The list only
/// ever grows (a new holder starts from the stored checkpoint and appends), so what a reader
/// has seen of it stays a prefix of what finalization concatenates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProgress {
    pub idx: i64,
    /// Completed: its parts are final. Otherwise more may follow (or, for a chunk abandoned to
    /// cancel or expiry, finalization's `batch_cancelled` / `batch_expired` lines).
    pub done: bool,
    pub parts: Vec<String>,
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
    /// Milliseconds from the batch's creation to this claim, on the database's clock.
    pub queued_ms: i64,
    /// Milliseconds left, at the claim, before the batch's completion window closes — on the
    /// database's clock; the worker counts it down on its monotonic clock.
    pub expires_in_ms: i64,
    /// What earlier holders of the chunk made durable: the new holder keeps it and sends only
    /// the lines it lacks.
    pub checkpoint: Checkpoint,
    /// The batch's priority (`metadata.priority`), if it set one.
    pub priority: Option<i64>,
}

/// What a heartbeat reports of one held chunk.
#[derive(Debug, Clone)]
pub struct ChunkBeat {
    pub batch_id: BatchId,
    pub idx: i64,
    pub fence: i64,
    /// The chunk's progress when it moved since the last beat (its parts are committed);
    /// `None` only extends the lease.
    pub checkpoint: Option<Checkpoint>,
}

/// A chunk's durable progress: the part files committed so far, which of the chunk's lines
/// they answer, and their counts and usage. Recorded with every heartbeat (fenced) and at
/// completion; the batch's visible counts include it, so they never go back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Storage keys of the committed parts (`part_key`), in the order written.
    pub parts: Vec<String>,
    /// Offsets (0-based, within the chunk's non-blank lines) of the lines answered in `parts`.
    pub done: LineSet,
    pub completed: i64,
    pub failed: i64,
    pub usage: Usage,
}

impl Checkpoint {
    /// Decodes the stored form; `None` (no checkpoint yet) is the empty one.
    pub fn from_column(json: Option<&str>) -> crate::Result<Checkpoint> {
        match json {
            None => Ok(Checkpoint::default()),
            Some(j) => {
                serde_json::from_str(j).map_err(|e| crate::StoreError::Corrupt(format!("chunk checkpoint: {e}")))
            }
        }
    }

    pub fn to_column(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint serialises")
    }
}

/// A set of line offsets, as a bitmap (64 lines a word).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LineSet(Vec<u64>);

impl LineSet {
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn insert(&mut self, i: usize) {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an `Idempotency-Key` says about a request that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotent {
    /// The key is new (or its last use expired): this request runs, and its answer is recorded.
    Fresh,
    /// The same request came with this key before: its answer (JSON).
    Replay(String),
    /// The same request with this key is running right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// A chunk's state in the queue: `pending → leased → done`; `leased → pending` when handed
/// back (or re-claimed by another worker after its lease expired, under a new fence);
/// `pending/leased → abandoned` when cancellation or expiry takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    Pending,
    Leased,
    Done,
    Abandoned,
}

impl ChunkState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChunkState::Pending => "pending",
            ChunkState::Leased => "leased",
            ChunkState::Done => "done",
            ChunkState::Abandoned => "abandoned",
        }
    }
}

impl std::str::FromStr for ChunkState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [ChunkState::Pending, ChunkState::Leased, ChunkState::Done, ChunkState::Abandoned]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown chunk state {s:?}"))
    }
}

/// What became of a write conditioned on a fence.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// The fence still held: the write is in.
    Applied,
    /// Another holder took the job or chunk (or the batch moved on): nothing was written.
    Lost,
}

impl Fenced {
    pub fn from_rows(rows: u64) -> Fenced {
        if rows > 0 {
            Fenced::Applied
        } else {
            Fenced::Lost
        }
    }

    pub fn applied(self) -> bool {
        self == Fenced::Applied
    }
}

/// Statuses of a batch that has not ended, as an SQL list: `('validating', …)`.
pub fn open_statuses_sql() -> String {
    let open: Vec<String> =
        BatchStatus::ALL.iter().filter(|s| !s.is_terminal()).map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", open.join(", "))
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
    /// How a batch that is ready to finalize ends. `unfinished` counts chunks not done (taken
    /// by cancel or expiry); `late` says the batch is past its completion window with lines
    /// that did not complete (chunks that ran into the deadline wrote them `batch_expired`,
    /// e.g. an upstream outage that outlasted the window).
    pub fn decide(status: BatchStatus, unfinished: i64, late: bool) -> FinalizeMode {
        match status {
            BatchStatus::Cancelling => FinalizeMode::Cancel,
            _ if unfinished == 0 && !late => FinalizeMode::Complete,
            _ => FinalizeMode::Expire,
        }
    }

    /// The batch's terminal status and the column that stamps it.
    pub fn end(self) -> (BatchStatus, &'static str) {
        match self {
            FinalizeMode::Complete => (BatchStatus::Completed, "completed_at"),
            FinalizeMode::Cancel => (BatchStatus::Cancelled, "cancelled_at"),
            FinalizeMode::Expire => (BatchStatus::Expired, "expired_at"),
        }
    }
}

/// One chunk as finalization sees it.
#[derive(Debug, Clone)]
pub struct FinalChunk {
    pub spec: ChunkSpec,
    /// Completed by its holder (its counts are in the batch); otherwise abandoned to cancel or
    /// expiry: its checkpointed answers are kept, its other lines written as errors.
    pub done: bool,
    pub checkpoint: Checkpoint,
}

/// A finalization claimed by a worker, with every chunk in order.
#[derive(Debug, Clone)]
pub struct FinalizeJob {
    pub job: BatchJob,
    pub mode: FinalizeMode,
    pub input_file_id: FileId,
    pub output_file_id: FileId,
    pub error_file_id: FileId,
    pub output_expires_at: Option<i64>,
    pub created_at: i64,
    pub chunks: Vec<FinalChunk>,
}

/// The files finalization wrote, and what it adds to the batch's counts: the checkpoints of
/// abandoned chunks and the lines it wrote as `batch_cancelled` / `batch_expired`.
#[derive(Debug, Clone, Default)]
pub struct FinalizeOutcome {
    pub output_bytes: Option<i64>,
    pub error_bytes: Option<i64>,
    pub extra_completed: i64,
    pub extra_failed: i64,
    pub extra_usage: Usage,
}

/// Storage key of a file's body.
pub fn file_key(id: &FileId) -> String {
    format!("files/{id}")
}

/// Storage key of one chunk's output (`out`) or error (`err`) part under one fence, as written
/// before checkpoints (a finished chunk of a batch that ran across the upgrade has these).
pub fn part_key(batch: &BatchId, idx: i64, fence: i64, kind: &str) -> String {
    format!("parts/{batch}/{idx:08}-{fence}.{kind}.jsonl")
}

/// Storage key of segment `seg` of one chunk's output (`out`) or error (`err`) under one fence:
/// each checkpoint commits one.
pub fn segment_key(batch: &BatchId, idx: i64, fence: i64, seg: u32, kind: &str) -> String {
    format!("parts/{batch}/{idx:08}-{fence}-{seg:04}.{kind}.jsonl")
}

/// The chunk index and fence a segment key (`segment_key`) names, or `None` for any other key
/// (the pre-checkpoint `part_key` form included).
pub fn parse_segment_key(key: &str) -> Option<(i64, i64)> {
    let name = key.rsplit('/').next()?;
    let stem = name.split('.').next()?;
    let mut fields = stem.split('-');
    let (idx, fence, seg) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || seg.parse::<u32>().is_err() {
        return None;
    }
    Some((idx.parse().ok()?, fence.parse().ok()?))
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
