//! The `vllm-batch` binary: parses configuration, sets up logging, Sentry and the GPU sampler,
//! opens the store and the file store, and runs the API, a worker, or both (`serve`), until
//! SIGTERM or Ctrl-C.

mod args;
mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;
use vllm_batch_api::auth::Auth;
use vllm_batch_api::server::ServerLimits;
use vllm_batch_api::{ApiLimits, AppState};
use vllm_batch_metrics::gpu::GpuSampler;
use vllm_batch_metrics::{init_logging, LogGuard, LogOptions, Service};
use vllm_batch_store::{open_file_store, redact_url, FileStore, Store};
use vllm_batch_upstream::{parse_upstreams, Upstreams};
use vllm_batch_worker::{Concurrency, Worker, WorkerConfig};

use args::{
    Cli, Command, HttpArgs, KeysCommand, LogArgs, ObserveArgs, StorageArgs, UpstreamArgs, WebhookArgs, WorkerArgs,
    WorkerMetricsArgs,
};

/// jemalloc rather than glibc's malloc: with glibc the resident size crept up by about 2 MiB per
/// million requests processed while the live heap stayed flat (fragmentation across its arenas,
/// even with fixed mmap/trim thresholds); jemalloc's stays flat and costs less CPU per request
/// (bench/README.md, benchmark 4).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { storage, http, upstream, worker, log, observe, webhooks } => {
            let _log = logging(&log, Service::Both);
            let (store, files) = open_storage(&storage, Schema::Migrate).await?;
            operator_webhook(&webhooks, store.as_ref()).await?;
            let upstreams = upstreams(&upstream)?;
            let wake = Arc::new(Notify::new());
            let shutdown = shutdown_signal();
            let gpus = gpu_sampler(&observe, &shutdown);
            tokio::spawn(disk_sampler(storage.disk_guard(), shutdown.clone()));
            let worker = Worker::new(
                store.clone(),
                files.clone(),
                upstreams.clone(),
                worker_config(&worker, &storage, &webhooks),
                wake.clone(),
            );
            let worker = tokio::spawn(worker.run(shutdown.clone()));
            let st = state((store, files), upstreams, &http, &storage, wake, gpus, &observe, &webhooks);
            let api_result = serve_api(&http, st, shutdown.clone()).await;
            // If the API could not start, the worker must not outlive it.
            shutdown.cancel();
            worker.await.context("worker task")?;
            api_result
        }
        Command::Api { storage, http, upstream, log, observe, webhooks } => {
            let _log = logging(&log, Service::Api);
            let (store, files) = open_storage(&storage, Schema::Require).await?;
            operator_webhook(&webhooks, store.as_ref()).await?;
            let upstreams = upstreams(&upstream)?;
            let shutdown = shutdown_signal();
            let gpus = gpu_sampler(&observe, &shutdown);
            tokio::spawn(disk_sampler(storage.disk_guard(), shutdown.clone()));
            let wake = Arc::new(Notify::new());
            let st = state((store, files), upstreams, &http, &storage, wake, gpus, &observe, &webhooks);
            serve_api(&http, st, shutdown).await
        }
        Command::Worker { storage, upstream, worker, log, observe, metrics, webhooks } => {
            let _log = logging(&log, Service::Worker);
            let (store, files) = open_storage(&storage, Schema::Require).await?;
            operator_webhook(&webhooks, store.as_ref()).await?;
            let shutdown = shutdown_signal();
            let _gpus = gpu_sampler(&observe, &shutdown);
            tokio::spawn(disk_sampler(storage.disk_guard(), shutdown.clone()));
            let endpoint = serve_worker_metrics(&metrics, observe.metrics_token.clone(), shutdown.clone()).await?;
            let worker = Worker::new(
                store,
                files,
                upstreams(&upstream)?,
                worker_config(&worker, &storage, &webhooks),
                Arc::new(Notify::new()),
            );
            worker.run(shutdown.clone()).await;
            shutdown.cancel();
            endpoint.await.context("metrics endpoint")?
        }
        Command::Keys { storage, command } => keys(&storage, command).await,
        Command::Submit(args) => client::submit(args).await,
        Command::Batches(cmd) => client::batches(cmd).await,
        Command::Files(cmd) => client::files(cmd).await,
        Command::Migrate { storage, log } => {
            let _log = logging(&log, Service::Api);
            let store = connect(&storage).await?;
            store.migrate().await.context("applying migrations")?;
            info!(database = %redact_url(&storage.database_url()), "migrations applied");
            Ok(())
        }
    }
}

/// `vllm-batch keys …`: straight on the database, so it works before any key exists.
async fn keys(storage: &StorageArgs, command: KeysCommand) -> Result<()> {
    use vllm_batch_core::apikey;
    let store = connect(storage).await?;
    store.migrate().await.context("applying migrations")?;
    match command {
        KeysCommand::Create { name, admin, json } => {
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 64 {
                bail!("--name must be 1 to 64 characters");
            }
            let generated = apikey::generate();
            let key = vllm_batch_store::ApiKey {
                id: format!("key_{}", uuid::Uuid::new_v4().simple()),
                name,
                prefix: generated.prefix.clone(),
                salt: generated.salt,
                hash: generated.hash,
                admin,
                created_at: vllm_batch_core::time::unix_now(),
                last_used_at: None,
                revoked_at: None,
            };
            store.insert_key(&key).await.context("storing the key")?;
            if json {
                let out = serde_json::json!({"id": key.id, "name": key.name, "prefix": apikey::display(&key.prefix), "admin": key.admin, "created_at": key.created_at, "key": generated.secret});
                println!("{out}");
            } else {
                println!("{}", generated.secret);
                eprintln!(
                    "Created {} key {} for {:?} ({}). It is shown only this once: store it now.",
                    if key.admin { "an admin" } else { "a" },
                    key.id,
                    key.name,
                    apikey::display(&key.prefix)
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "name": k.name, "prefix": apikey::display(&k.prefix), "admin": k.admin, "created_at": k.created_at, "last_used_at": k.last_used_at, "revoked_at": k.revoked_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<38} {:<18} {:<20} {:<6} {:<12} {:<12} REVOKED",
                    "ID", "PREFIX", "NAME", "ADMIN", "CREATED", "LAST USED"
                );
                for k in keys {
                    let when = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<38} {:<18} {:<20} {:<6} {:<12} {:<12} {}",
                        k.id,
                        apikey::display(&k.prefix),
                        k.name,
                        k.admin,
                        k.created_at,
                        when(k.last_used_at),
                        when(k.revoked_at)
                    );
                }
            }
        }
        KeysCommand::Revoke { key } => {
            let needle = key
                .strip_prefix(apikey::KEY_PREFIX)
                .map(|b| b.trim_end_matches('…').chars().take(8).collect())
                .unwrap_or(key);
            if !store.revoke_key(&needle).await? {
                bail!("no key with id or prefix {needle:?}");
            }
            eprintln!("Revoked {needle}.");
        }
    }
    Ok(())
}

fn logging(log: &LogArgs, service: Service) -> LogGuard {
    init_logging(&LogOptions { format: log.log_format, dir: log.log_dir.clone(), service })
}

fn gpu_sampler(observe: &ObserveArgs, shutdown: &CancellationToken) -> GpuSampler {
    if observe.gpu_sample_interval.is_zero() {
        GpuSampler::disabled()
    } else {
        GpuSampler::start(observe.gpu_sample_interval, shutdown.clone())
    }
}

/// Keeps `vllm_disk_free_bytes`, `vllm_disk_total_bytes` and `vllm_disk_min_free_bytes` current
/// (every 5 s; the guard itself reads the volume afresh at each check).
async fn disk_sampler(guard: vllm_batch_store::DiskGuard, shutdown: CancellationToken) {
    let m = vllm_batch_metrics::metrics();
    loop {
        match guard.space() {
            Ok(space) => {
                m.disk_free.set(space.free as f64);
                m.disk_total.set(space.total as f64);
                m.disk_min_free.set(space.min_free as f64);
            }
            Err(e) => {
                tracing::debug!(error = %e, path = %guard.path().display(), "cannot read the data folder's volume")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Opens the database the URL names (creating the data folder the default SQLite file lives in).
async fn connect(storage: &StorageArgs) -> Result<Arc<dyn Store>> {
    let url = storage.database_url();
    tokio::fs::create_dir_all(&storage.data_dir)
        .await
        .with_context(|| format!("creating data folder {}", storage.data_dir.display()))?;
    vllm_batch_store::connect(&url, &storage.pool.config())
        .await
        .with_context(|| format!("opening database {}", redact_url(&url)))
}

/// What a process does about the database schema when it starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Apply pending migrations (`serve`: the one-box deployment upgrades itself).
    Migrate,
    /// Refuse to start when migrations are missing (`api`, `worker`: `vllm-batch migrate` first).
    Require,
}

/// Opens the file store (the folder `<data-dir>/files` or an object store) and the database,
/// migrating it or checking its schema.
async fn open_storage(storage: &StorageArgs, schema: Schema) -> Result<(Arc<dyn Store>, Arc<dyn FileStore>)> {
    let file_store = storage.file_store();
    let files = open_file_store(&file_store).await.context("opening file storage")?;
    let store = connect(storage).await?;
    match schema {
        Schema::Migrate => store.migrate().await.context("applying migrations")?,
        Schema::Require => store.check_schema().await?,
    }
    let database = redact_url(&storage.database_url());
    info!(%database, data_dir = %storage.data_dir.display(), files = %file_store, "storage ready");
    Ok((store, files))
}

fn upstreams(args: &UpstreamArgs) -> Result<Upstreams> {
    let specs = parse_upstreams(&args.upstream).map_err(anyhow::Error::msg).context("--upstream")?;
    Ok(Upstreams::new(specs, args.upstream_api_key.clone()))
}

/// The operator-level webhook endpoint of `--webhook-url`: checked, then stored (as
/// `we_operator`) so its deliveries are durable like any endpoint's. Without the flag nothing
/// changes: an endpoint stored by an earlier start stays until deleted through the API (other
/// processes of a deployment may still be configured with it).
async fn operator_webhook(args: &WebhookArgs, store: &dyn Store) -> Result<()> {
    let set = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let (url, secret) = match (set(&args.webhook_url), set(&args.webhook_secret)) {
        (None, None) => return Ok(()),
        (None, Some(_)) => bail!("--webhook-secret (VLLM_BATCH_WEBHOOK_SECRET) is set without --webhook-url"),
        (Some(_), None) => bail!(
            "--webhook-url needs --webhook-secret (VLLM_BATCH_WEBHOOK_SECRET): a signing secret `whsec_<base64>`, \
             e.g. `echo whsec_$(openssl rand -base64 32)`"
        ),
        (Some(url), Some(secret)) => (url, secret),
    };
    vllm_batch_upstream::webhook::check_url(&url, args.webhook_allow_http)
        .map_err(anyhow::Error::msg)
        .context("--webhook-url")?;
    let secret = vllm_batch_core::webhook::Secret::parse(secret.trim())
        .map_err(anyhow::Error::msg)
        .context("--webhook-secret must be `whsec_` followed by base64")?;
    store
        .upsert_operator_endpoint(&url, secret.expose(), vllm_batch_core::time::unix_now())
        .await
        .context("storing the operator webhook endpoint")?;
    info!(url = %redact_url(&url), "operator webhook endpoint configured (we_operator)");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn state(
    (store, files): (Arc<dyn Store>, Arc<dyn FileStore>),
    upstreams: Upstreams,
    http: &HttpArgs,
    storage: &StorageArgs,
    wake: Arc<Notify>,
    gpus: GpuSampler,
    observe: &ObserveArgs,
    webhooks: &WebhookArgs,
) -> AppState {
    let auth = Auth::new(http.insecure_no_auth, observe.metrics_token.clone(), http.rate_limit, http.rate_limit_burst);
    AppState {
        store,
        files,
        upstreams,
        limits: ApiLimits {
            max_upload_bytes: http.max_upload_bytes,
            max_json_body_bytes: http.max_json_body_bytes,
            max_open_batches_per_key: http.max_open_batches_per_key,
            file_retention_s: storage.file_retention.0.map(|d| d.as_secs() as i64),
            // OpenAI's shortest expiry; the test suite lowers it to see files expire.
            min_file_expiry_s: test_hook("VLLM_BATCH_TEST_MIN_FILE_EXPIRY_SECONDS").unwrap_or(3600),
        },
        wake,
        gpus,
        started: Instant::now(),
        prometheus_url: observe.prometheus_url.clone(),
        auth: Arc::new(auth),
        batch_cache: Arc::default(),
        disk: storage.disk_guard(),
        webhooks: vllm_batch_api::WebhookSettings {
            allow_http: webhooks.webhook_allow_http,
            client: vllm_batch_upstream::webhook::WebhookClient::new(webhooks.webhook_timeout),
        },
    }
}

fn worker_config(w: &WorkerArgs, storage: &StorageArgs, webhooks: &WebhookArgs) -> WorkerConfig {
    let chunk_size = w.chunk_size as usize;
    let max_in_flight = w.max_in_flight as usize;
    WorkerConfig {
        worker_id: w.worker_id.clone().unwrap_or_else(|| WorkerConfig::default().worker_id),
        chunk_size,
        max_in_flight,
        concurrency: match w.concurrency.as_str() {
            "fixed" => Concurrency::Fixed,
            _ => Concurrency::Adaptive {
                min: w.min_in_flight as usize,
                ceiling: (w.max_in_flight_ceiling.max(w.min_in_flight)) as usize,
                interval: w.concurrency_interval,
            },
        },
        max_lines: w.max_requests_per_batch,
        max_line_bytes: w.max_line_bytes,
        request_timeout: w.request_timeout,
        max_retries: w.max_retries,
        backoff_base: w.retry_backoff_base,
        backoff_max: w.retry_backoff_max,
        lease: w.lease,
        poll_interval: w.poll_interval,
        drain_timeout: w.drain_timeout,
        model_discovery_timeout: w.model_discovery_timeout,
        scratch_dir: storage.data_dir.clone(),
        file_retention: storage.file_retention.0,
        gc_interval: w.gc_interval,
        disk: storage.disk_guard(),
        upstream_priority: w.upstream_priority,
        background: w.background,
        // Test hooks: a shorter age for abandoned uploads, a pause per object collected.
        gc_abandoned_after: test_hook("VLLM_BATCH_TEST_ABANDONED_UPLOAD_SECONDS").map(Duration::from_secs),
        gc_step_delay: test_hook("VLLM_BATCH_TEST_GC_STEP_DELAY_MS").map(Duration::from_millis).unwrap_or_default(),
        webhook_timeout: webhooks.webhook_timeout,
        // Test hook: a shorter first retry delay (the cap and the give-up horizon scale along).
        webhook_retry: test_hook("VLLM_BATCH_TEST_WEBHOOK_RETRY_BASE_MS")
            .map(vllm_batch_store::webhooks::RetrySchedule::from_base_ms)
            .unwrap_or(vllm_batch_store::webhooks::RetrySchedule::DEFAULT),
    }
}

/// A hidden test hook: the environment variable `name`, when set and parsable (tests/README.md
/// lists them).
fn test_hook<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

async fn serve_api(http: &HttpArgs, state: AppState, shutdown: CancellationToken) -> Result<()> {
    let addr = format!("{}:{}", http.host, http.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    info!(address = %format!("http://{local}"), "vllm-batch API listening");
    warn_about_auth(&state, local).await;
    let limits = ServerLimits {
        header_read_timeout: http.header_read_timeout,
        body_idle_timeout: http.body_idle_timeout,
        max_connections: connection_bound(http.max_connections as usize),
        drain_timeout: http.api_drain_timeout,
    };
    vllm_batch_api::server::serve(listener, vllm_batch_api::router(state), limits, shutdown).await;
    Ok(())
}

/// `--max-connections`, kept 64 below the process's open-file limit (the database, files and
/// upstream connections need descriptors too): past the limit `accept` fails and nothing is
/// answered, where below the bound new clients merely wait in the backlog.
fn connection_bound(configured: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    match soft {
        Some(soft) if configured + 64 > soft => {
            let bound = soft.saturating_sub(64).max(16);
            tracing::warn!(
                configured,
                open_file_limit = soft,
                bound,
                "--max-connections is above what the open-file limit allows; serving at most {bound} connections"
            );
            bound
        }
        _ => configured,
    }
}

/// A standalone worker's own `/metrics` and `/health`, on its metrics port.
/// Says loudly when the API is open to the network, and when it will refuse remote clients.
async fn warn_about_auth(state: &AppState, local: std::net::SocketAddr) {
    let keys = state.store.count_active_keys().await.unwrap_or(0);
    if keys > 0 || state.store.any_key_created().await.unwrap_or(false) {
        info!(keys, "API keys required on every request");
    } else if state.auth.insecure_no_auth {
        tracing::warn!(
            "--insecure-no-auth: no API key exists and every client that reaches {local} can read, create and \
             cancel every file and batch; create keys with `vllm-batch keys create` instead"
        );
    } else if !local.ip().is_loopback() {
        tracing::warn!(
            "no API key exists, so only clients on loopback are answered; create one with \
             `vllm-batch keys create --name NAME` to serve {local}"
        );
    }
}

async fn serve_worker_metrics(
    args: &WorkerMetricsArgs,
    token: Option<String>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    use axum::routing::get;
    let addr = format!("{}:{}", args.metrics_host, args.metrics_port);
    let listener =
        tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding metrics port {addr}"))?;
    info!(address = %format!("http://{}", listener.local_addr()?), "worker metrics listening");
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| async move {
                use axum::response::IntoResponse;
                if let Some(token) = &token {
                    if !vllm_batch_api::auth::bearer_matches(&headers, token) {
                        return (axum::http::StatusCode::UNAUTHORIZED, "/metrics needs its bearer token")
                            .into_response();
                    }
                }
                (
                    [(axum::http::header::CONTENT_TYPE, vllm_batch_metrics::CONTENT_TYPE)],
                    vllm_batch_metrics::metrics().encode(),
                )
                    .into_response()
            }),
        )
        .route("/health", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }));
    let limits = ServerLimits { drain_timeout: std::time::Duration::from_secs(5), ..ServerLimits::default() };
    Ok(tokio::spawn(async move {
        vllm_batch_api::server::serve(listener, app, limits, shutdown).await;
        Ok(())
    }))
}

/// A token cancelled on SIGTERM or Ctrl-C.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutdown requested; draining");
        t.cancel();
    });
    token
}
