//! Worker settings (filled from the CLI's flags).

use std::path::PathBuf;
use std::time::Duration;

pub use crate::adaptive::Concurrency;
use vllm_batch_store::webhooks::RetrySchedule;
use vllm_batch_store::DiskGuard;

/// How a worker claims, sends and retries.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per process: recorded as the owner of its leases.
    pub worker_id: String,
    /// Lines per chunk, fixed at validation.
    pub chunk_size: usize,
    /// Requests in flight to one upstream at once with `Concurrency::Fixed` (the adaptive
    /// controller starts at its `min` and ramps).
    pub max_in_flight: usize,
    pub concurrency: Concurrency,
    /// Most lines in one input file.
    pub max_lines: u64,
    /// Longest input line in bytes.
    pub max_line_bytes: usize,
    pub request_timeout: Duration,
    /// Retries after the first attempt, for transient failures.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    pub poll_interval: Duration,
    pub drain_timeout: Duration,
    /// How long validation waits for model discovery (an upstream down or too busy to list its
    /// models) before it fails a batch whose model no upstream is known to serve.
    pub model_discovery_timeout: Duration,
    /// `priority` written into every forwarded body (vLLM's field: lower runs first; it orders
    /// only a vLLM started with `--scheduling-policy priority`) unless the batch sets its own
    /// (`metadata.priority`); `None`: none.
    pub upstream_priority: Option<i64>,
    /// Background mode (`--background`): the upstream's other traffic comes first (see
    /// `adaptive::background_limit`).
    pub background: bool,
    /// How long batch output and error files are kept when the batch set no
    /// `output_expires_after` (`--file-retention`); `None` keeps them until deleted.
    pub file_retention: Option<Duration>,
    /// How often the garbage collector looks for expired files.
    pub gc_interval: Duration,
    /// How long an unfinished upload must be idle before the collector removes it (`None`: the
    /// file store's default — an hour locally, a day for multipart uploads). Tests shorten it.
    pub gc_abandoned_after: Option<Duration>,
    /// A pause after each object the collector removes (tests: to kill it mid-pass).
    pub gc_step_delay: Duration,
    /// Where validation spills sorted custom_id digests of files over 131,072 lines (24 bytes a
    /// line, in an anonymous file removed when validation ends).
    pub scratch_dir: PathBuf,
    /// The free-space guard of the data folder: under its margin no chunk or finalization is
    /// claimed (they write parts and output files) until space returns.
    pub disk: DiskGuard,
    /// Time limit of one webhook delivery attempt.
    pub webhook_timeout: Duration,
    /// When failed webhook deliveries are retried, and when they are given up.
    pub webhook_retry: RetrySchedule,
}

impl WorkerConfig {
    pub fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Most held chunks with lines still to dispatch, with `capacity` requests allowed in flight:
    /// enough to cover it twice over, so claiming runs ahead of the chunk edges. (More would let
    /// a long batch's queued lines delay a newly arrived short batch further.)
    pub fn max_held_chunks(&self, capacity: usize) -> usize {
        (2 * capacity).div_ceil(self.chunk_size).max(2) + 1
    }

    /// Most chunks held at all: twice the above, for chunks whose lines are all on the wire but
    /// whose slowest requests have not answered yet. Without this room, a few long requests in
    /// each of the older chunks stopped claiming until one of them answered, and the upstream
    /// ran dry meanwhile (dips to 53–85 % occupancy at `max_num_seqs` 1024, bench/README.md).
    pub fn max_held_chunks_with_stragglers(&self, capacity: usize) -> usize {
        2 * self.max_held_chunks(capacity)
    }

    /// Three beats per lease, and at least one a second so progress stays live.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease / 3).min(Duration::from_secs(1))
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            chunk_size: 500,
            max_in_flight: 256,
            concurrency: Concurrency::Adaptive { min: 8, ceiling: 4096, interval: Duration::from_millis(500) },
            max_lines: 1_000_000,
            max_line_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(600),
            max_retries: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(30),
            model_discovery_timeout: Duration::from_secs(600),
            scratch_dir: std::env::temp_dir(),
            disk: DiskGuard::off(),
            upstream_priority: None,
            background: false,
            gc_abandoned_after: None,
            gc_step_delay: Duration::ZERO,
            file_retention: Some(Duration::from_secs(30 * 86_400)),
            gc_interval: Duration::from_secs(60),
            webhook_timeout: vllm_batch_upstream::webhook::DEFAULT_TIMEOUT,
            webhook_retry: RetrySchedule::DEFAULT,
        }
    }
}
