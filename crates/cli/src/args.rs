//! Command-line and environment configuration: one clap struct per concern, every flag also an
//! environment variable (the names are a contract with scripts, docs and `.env.example`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vllm_batch_metrics::LogFormat;
use vllm_batch_store::{FileStoreConfig, S3Options};

#[derive(Parser, Debug)]
#[command(
    name = "vllm-batch",
    version,
    args_override_self = true,
    about = "OpenAI-compatible Batch API server for vLLM and other OpenAI-compatible servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// API and an embedded worker in one process: the one-box default (SQLite, ./data).
    Serve {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        upstream: UpstreamArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        observe: ObserveArgs,
        #[command(flatten)]
        webhooks: WebhookArgs,
    },
    /// The HTTP API alone (workers run elsewhere on the same database).
    Api {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        upstream: UpstreamArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        observe: ObserveArgs,
        #[command(flatten)]
        webhooks: WebhookArgs,
    },
    /// A worker alone: claims chunks from the shared database and sends them upstream.
    Worker {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        upstream: UpstreamArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        observe: ObserveArgs,
        #[command(flatten)]
        metrics: WorkerMetricsArgs,
        #[command(flatten)]
        webhooks: WebhookArgs,
    },
    /// Applies database migrations and exits.
    Migrate {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Create, list and revoke API keys (works on the database directly).
    Keys {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Client: upload a JSONL file, create a batch, follow it, download its results.
    Submit(crate::client::SubmitArgs),
    /// Client: list, show, cancel or follow batches on a server.
    #[command(subcommand)]
    Batches(crate::client::BatchesCommand),
    /// Client: list, show, download or delete files on a server.
    #[command(subcommand)]
    Files(crate::client::FilesCommand),
}

#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// Folder for the SQLite database, (without `--object-store`) file bodies, and validation's
    /// scratch file for inputs over 131,072 lines (24 bytes a line, removed when it ends).
    #[arg(long, env = "VLLM_BATCH_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` (default `sqlite://<data-dir>/vllm-batch.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` for a scale-out deployment.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// How long batch input files (uploads without `expires_after`) and batch output and error
    /// files (batches without `output_expires_after`) are kept before the garbage collector
    /// deletes them; `0` keeps them until deleted. OpenAI keeps them 30 days.
    #[arg(long, env = "VLLM_BATCH_FILE_RETENTION", default_value = "30d", value_parser = retention, global = true)]
    pub file_retention: Retention,
    /// Free space kept on the data folder's volume, as a size (`2GiB`, `500MB`) or a share
    /// (`5%`); `0` turns the guard off. Under it `/ready` fails, uploads get 507, and workers
    /// claim no chunk or finalization until space returns. Enforced when the folder holds file
    /// bodies or the SQLite database.
    #[arg(long, env = "VLLM_BATCH_MIN_FREE_DISK", default_value = "1GiB", global = true)]
    pub min_free_disk: vllm_batch_store::MinFree,
    #[command(flatten)]
    pub pool: PoolArgs,
    #[command(flatten)]
    pub object_store: ObjectStoreArgs,
}

/// The database connection pool of one process.
#[derive(Args, Debug, Clone)]
pub struct PoolArgs {
    /// Most database connections this process opens (default: SQLite 8, PostgreSQL 16).
    #[arg(long, env = "VLLM_BATCH_DB_MAX_CONNECTIONS", global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: Option<u32>,
    /// Connections kept open while idle.
    #[arg(long, env = "VLLM_BATCH_DB_MIN_CONNECTIONS", default_value_t = 0, global = true)]
    pub db_min_connections: u32,
    /// How long a query waits for a free connection (or for the database to answer a connect).
    #[arg(long, env = "VLLM_BATCH_DB_ACQUIRE_TIMEOUT", default_value = "60s", value_parser = duration, global = true)]
    pub db_acquire_timeout: Duration,
    /// Idle connections above the minimum close after this long (0: never).
    #[arg(long, env = "VLLM_BATCH_DB_IDLE_TIMEOUT", default_value = "10m", value_parser = duration, global = true)]
    pub db_idle_timeout: Duration,
    /// PostgreSQL: the server cancels statements running longer than this (0: no limit).
    #[arg(long, env = "VLLM_BATCH_DB_STATEMENT_TIMEOUT", default_value = "60s", value_parser = duration, global = true)]
    pub db_statement_timeout: Duration,
}

impl PoolArgs {
    pub fn config(&self) -> vllm_batch_store::PoolConfig {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        vllm_batch_store::PoolConfig {
            max_connections: self.db_max_connections,
            min_connections: self.db_min_connections,
            acquire_timeout: self.db_acquire_timeout,
            idle_timeout: nonzero(self.db_idle_timeout),
            statement_timeout: nonzero(self.db_statement_timeout),
        }
    }
}

impl StorageArgs {
    /// The data folder's free-space guard: enforced when bodies or the SQLite database live
    /// there; otherwise it only reports readings.
    pub fn disk_guard(&self) -> vllm_batch_store::DiskGuard {
        let local_bodies = self.file_store().object_store.is_none();
        let local_db = self.database_url().starts_with("sqlite:");
        vllm_batch_store::DiskGuard::new(&self.data_dir, self.min_free_disk, local_bodies || local_db)
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("vllm-batch.db").display()))
    }

    pub fn file_store(&self) -> FileStoreConfig {
        // An empty variable (`VLLM_BATCH_OBJECT_STORE=` in an env file) counts as unset.
        let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let o = &self.object_store;
        FileStoreConfig {
            object_store: set(&o.object_store),
            local_root: self.data_dir.join("files"),
            s3: S3Options {
                endpoint: set(&o.s3_endpoint),
                region: set(&o.s3_region),
                virtual_hosted_style: o.s3_virtual_hosted_style,
            },
        }
    }
}

/// Where file bodies live. Credentials of an S3 store come from the standard AWS environment:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
#[derive(Args, Debug, Clone)]
pub struct ObjectStoreArgs {
    /// File bodies in an S3-compatible bucket, `s3://BUCKET[/PREFIX]`; unset: the local folder
    /// `<data-dir>/files`.
    #[arg(long, env = "VLLM_BATCH_OBJECT_STORE", global = true)]
    pub object_store: Option<String>,
    /// URL of the S3-compatible server (`http://` allows plain HTTP); unset: AWS.
    #[arg(long, env = "VLLM_BATCH_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket; unset: `AWS_REGION`, else `us-east-1`.
    #[arg(long, env = "VLLM_BATCH_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// Virtual-hosted-style requests (`BUCKET.host/key`, the endpoint then names the bucket)
    /// instead of the path-style requests (`host/BUCKET/key`) self-hosted servers expect.
    #[arg(long, env = "VLLM_BATCH_S3_VIRTUAL_HOSTED_STYLE", global = true)]
    pub s3_virtual_hosted_style: bool,
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "VLLM_BATCH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "VLLM_BATCH_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Largest file upload accepted, in bytes.
    #[arg(long, env = "VLLM_BATCH_MAX_UPLOAD_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Largest request body of the JSON endpoints, in bytes.
    #[arg(long, env = "VLLM_BATCH_MAX_JSON_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_json_body_bytes: usize,
    /// Unfinished batches one key's owner may have at once.
    #[arg(long, env = "VLLM_BATCH_MAX_OPEN_BATCHES_PER_KEY", default_value_t = 100)]
    pub max_open_batches_per_key: i64,
    /// API requests per second each key may make (token bucket; 0: no limit).
    #[arg(long, env = "VLLM_BATCH_RATE_LIMIT", default_value_t = 50)]
    pub rate_limit: u32,
    /// Burst of the per-key rate limit.
    #[arg(long, env = "VLLM_BATCH_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// On SIGTERM, how long open API requests (e.g. a slow upload) may take before they are cut.
    #[arg(long, env = "VLLM_BATCH_API_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub api_drain_timeout: Duration,
    /// Time a client has to send a whole request head; also how long an idle kept-alive
    /// connection stays open. Slow or silent clients are closed after it.
    #[arg(long, env = "VLLM_BATCH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Longest pause inside a request body (an upload that keeps sending is never cut).
    #[arg(long, env = "VLLM_BATCH_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub body_idle_timeout: Duration,
    /// Connections served at once; past it new clients wait in the listen backlog. Keep it
    /// below the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "VLLM_BATCH_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Answer clients that are not on loopback even when no API key exists. Anyone who reaches
    /// the port can then read, create and cancel everything.
    #[arg(long, env = "VLLM_BATCH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UpstreamArgs {
    /// Upstream base URL(s), comma-separated; `MODEL=URL` pins a model to an upstream.
    #[arg(long, env = "VLLM_BATCH_UPSTREAM", default_value = "http://127.0.0.1:8000/v1")]
    pub upstream: String,
    /// API key sent to the upstream(s) as a bearer token.
    #[arg(long, env = "VLLM_BATCH_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
}

/// How long files are kept: `None` keeps them until deleted.
#[derive(Debug, Clone, Copy)]
pub struct Retention(pub Option<Duration>);

/// A retention: a duration, or `0` for "keep forever".
fn retention(s: &str) -> Result<Retention, String> {
    if s.trim() == "0" {
        return Ok(Retention(None));
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30d, 12h; 0 keeps files forever)"))?;
    Ok(Retention((!d.is_zero()).then_some(d)))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 500ms, 10m)"))
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Unique name of this worker (default: a random one).
    #[arg(long, env = "VLLM_BATCH_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Input lines per chunk, the unit of claiming and retrying.
    #[arg(long, env = "VLLM_BATCH_CHUNK_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
    /// Requests in flight to each upstream at once: the limit with --concurrency fixed, the
    /// starting point with adaptive.
    #[arg(long, env = "VLLM_BATCH_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// `adaptive`: follow the upstream's own load (vLLM's running/waiting requests on its
    /// /metrics, else latency), starting at --max-in-flight; `fixed`: always --max-in-flight.
    #[arg(long, env = "VLLM_BATCH_CONCURRENCY", default_value = "adaptive", value_parser = ["adaptive", "fixed"])]
    pub concurrency: String,
    /// Adaptive concurrency: the lowest in-flight limit per upstream.
    #[arg(long, env = "VLLM_BATCH_MIN_IN_FLIGHT", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_in_flight: u32,
    /// Adaptive concurrency: the highest in-flight limit per upstream.
    #[arg(long, env = "VLLM_BATCH_MAX_IN_FLIGHT_CEILING", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_ceiling: u32,
    /// Adaptive concurrency: how often the upstream's load is read and the limit adjusted.
    #[arg(long, env = "VLLM_BATCH_CONCURRENCY_INTERVAL", default_value = "500ms", value_parser = duration)]
    pub concurrency_interval: Duration,
    /// Background mode: the upstream's other traffic (an interactive product sharing the vLLM)
    /// comes first. The worker reads vLLM's load, keeps its own requests out of vLLM's waiting
    /// queue while others are present, and leaves room for the most others it saw lately;
    /// alone on the upstream it fills it as usual. Needs vLLM's /metrics (adaptive concurrency).
    #[arg(long, env = "VLLM_BATCH_BACKGROUND")]
    pub background: bool,
    /// `priority` written into every request sent upstream (vLLM: lower runs first, default 0;
    /// it orders only a vLLM started with `--scheduling-policy priority`; older releases
    /// without it answer 400, and the worker then sends without it, with one warning). A
    /// batch's own `metadata.priority` takes precedence.
    #[arg(long, env = "VLLM_BATCH_UPSTREAM_PRIORITY", allow_negative_numbers = true)]
    pub upstream_priority: Option<i64>,
    /// Most requests (lines) in one batch input file.
    #[arg(long, env = "VLLM_BATCH_MAX_REQUESTS_PER_BATCH", default_value_t = 1_000_000)]
    pub max_requests_per_batch: u64,
    /// Longest input line accepted, in bytes.
    #[arg(long, env = "VLLM_BATCH_MAX_LINE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_line_bytes: usize,
    /// Time limit of one upstream request.
    #[arg(long, env = "VLLM_BATCH_REQUEST_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub request_timeout: Duration,
    /// Retries of a request after transient failures (connect errors, timeouts, 408, 429, 5xx).
    #[arg(long, env = "VLLM_BATCH_MAX_RETRIES", default_value_t = 8)]
    pub max_retries: u32,
    /// First retry delay; doubles per attempt, with full jitter.
    #[arg(long, env = "VLLM_BATCH_RETRY_BACKOFF_BASE", default_value = "500ms", value_parser = duration)]
    pub retry_backoff_base: Duration,
    /// Longest retry delay (a longer `Retry-After` from the upstream is still honoured).
    #[arg(long, env = "VLLM_BATCH_RETRY_BACKOFF_MAX", default_value = "30s", value_parser = duration)]
    pub retry_backoff_max: Duration,
    /// How long a claimed chunk stays ours without a heartbeat; a crashed worker's chunks are
    /// taken over after this.
    #[arg(long, env = "VLLM_BATCH_LEASE", default_value = "30s", value_parser = duration)]
    pub lease: Duration,
    /// How often an idle worker looks for work.
    #[arg(long, env = "VLLM_BATCH_POLL_INTERVAL", default_value = "500ms", value_parser = duration)]
    pub poll_interval: Duration,
    /// How often the garbage collector looks for expired files (one worker at a time collects).
    #[arg(long, env = "VLLM_BATCH_GC_INTERVAL", default_value = "60s", value_parser = duration)]
    pub gc_interval: Duration,
    /// On SIGTERM, how long held chunks may take to finish before they are handed back.
    #[arg(long, env = "VLLM_BATCH_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// How long a new batch waits for model discovery (an upstream still loading, down, or too
    /// busy to list its models) before it fails with `model_discovery_failed`.
    #[arg(long, env = "VLLM_BATCH_MODEL_DISCOVERY_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub model_discovery_timeout: Duration,
}

/// Webhooks: the operator-level endpoint and what endpoint URLs may be.
#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// An operator-level webhook endpoint: receives every batch's `batch.*` events, whoever owns
    /// the batch (stored as the endpoint `we_operator`, updated at each start with this flag).
    /// Needs --webhook-secret.
    #[arg(long, env = "VLLM_BATCH_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The operator endpoint's signing secret: `whsec_` followed by base64 (at least 16 bytes),
    /// e.g. `echo whsec_$(openssl rand -base64 32)`.
    #[arg(long, env = "VLLM_BATCH_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Accept plain `http://` webhook URLs (for receivers on loopback or a private network);
    /// otherwise only `https://`.
    #[arg(long, env = "VLLM_BATCH_WEBHOOK_ALLOW_HTTP")]
    pub webhook_allow_http: bool,
    /// Time limit of one webhook delivery attempt (redirects are never followed).
    #[arg(long, env = "VLLM_BATCH_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub webhook_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
    /// Folder for daily-rolling log files (`api_server.log.*`, `worker.log.*`); stdout only
    /// when unset.
    #[arg(long, env = "LOG_DIR")]
    pub log_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ObserveArgs {
    /// Bearer token `/metrics` requires (for scraping across networks); open when unset.
    #[arg(long, env = "VLLM_BATCH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Prometheus whose data the web page's system panel reads (PromQL over HTTP); without it
    /// the panel reads this process's own metrics.
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// How often GPUs are read through NVML (`0s` turns the sampler off).
    #[arg(long, env = "VLLM_BATCH_GPU_SAMPLE_INTERVAL", default_value = "5s", value_parser = duration)]
    pub gpu_sample_interval: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerMetricsArgs {
    /// Address a standalone worker serves `/metrics` and `/health` on.
    #[arg(long = "metrics-host", env = "VLLM_BATCH_METRICS_HOST", default_value = "127.0.0.1")]
    pub metrics_host: String,
    /// Port a standalone worker serves `/metrics` and `/health` on (0 picks a free one).
    #[arg(long, env = "VLLM_BATCH_METRICS_PORT", default_value_t = 9091)]
    pub metrics_port: u16,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Creates a key and prints it once; only a salted hash is stored.
    Create {
        /// The key's owner: keys with the same name see the same files and batches.
        #[arg(long)]
        name: String,
        /// An admin key sees and manages every owner's files and batches.
        #[arg(long)]
        admin: bool,
        /// Print the key and its record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists keys: prefix, name, created, last used, revoked.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key, by its id or its prefix (the 8 digits after `sk-vb-`).
    Revoke { key: String },
}
