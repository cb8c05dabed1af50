//! `upstream-sim`: a simulated vLLM OpenAI-compatible server for tests and
//! benchmarks.
//!
//! It serves `/v1/models`, `/metrics` (vLLM metric names) and the inference
//! endpoints `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/score` and `/v1/rerank` with deterministic bodies derived from each
//! request, a vLLM-like latency model and seeded fault injection. The latency
//! model is either a fixed time per request (at most `max_num_seqs` requests
//! run at once, the rest wait FIFO) or, when `step_base_ms > 0`, a
//! continuous-batching engine stepping like vLLM's scheduler ([`cost`]).
//!
//! This file holds the public API: [`SimConfig`], [`FaultRates`],
//! [`SimStats`], [`SimHandle`], [`spawn`] and [`serve`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod bodies;
pub mod cost;
pub mod det;
mod engine;
mod faults;
mod handlers;
mod metrics;
mod state;

pub use cost::{ideal_seconds, CostModel};
pub use faults::{MARKER_400, MARKER_500};

use state::SimState;

/// How long [`SimHandle::shutdown`] waits for in-flight requests before it
/// aborts the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Configuration of a simulated server.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Served model names; requests naming another model get a 404.
    /// The first one labels `/metrics`. Default `["sim-model"]`.
    pub models: Vec<String>,
    /// At most this many requests run at once; the rest wait in FIFO order.
    /// Default 256 (values below 1 act as 1).
    pub max_num_seqs: usize,
    /// Fixed time per request once running, in milliseconds. Default 0.
    pub base_latency_ms: u64,
    /// Extra time per completion token once running, in milliseconds. Default 0.
    pub per_token_ms: f64,
    /// Continuous-batching mode: fixed time of every engine step, in
    /// milliseconds. Above 0 it replaces the fixed-latency model (and
    /// `base_latency_ms` / `per_token_ms` are ignored). Default 0.
    pub step_base_ms: f64,
    /// Continuous-batching mode: extra step time per running sequence, in
    /// milliseconds. Default 0.
    pub step_per_seq_ms: f64,
    /// Continuous-batching mode: extra step time per prompt token of the
    /// requests admitted in that step, in milliseconds. Default 0.
    pub prefill_ms_per_token: f64,
    /// Fault-injection probabilities. Default all zero.
    pub faults: FaultRates,
    /// Seed of the fault-injection RNG. Default 42.
    pub seed: u64,
    /// A single-threaded server (llama.cpp's, llama-cpp-python's): `GET /v1/models` takes a
    /// scheduler slot like an inference request, so it answers only between generations and
    /// queues behind every waiting request. Fixed-latency mode only. Default off.
    pub models_wait_for_slot: bool,
    /// Serve vLLM's `/metrics`; off: `/metrics` answers 404, as another OpenAI-compatible
    /// server (llama.cpp, TGI's OpenAI layer) may. Default on.
    pub serve_metrics: bool,
    /// vLLM's `--scheduling-policy priority`: requests' `priority` (lower first) orders the
    /// engine's waiting queue. Off (vLLM's `fcfs`), a `priority` is taken and ignored, as vLLM
    /// 0.32 does. Default off.
    pub priority_scheduling: bool,
    /// Under `fcfs`, answer a nonzero `priority` with the 400 older vLLM releases gave ("Got
    /// priority N but Priority scheduling is not enabled."). Default off.
    pub refuse_priority_without_policy: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            models: vec!["sim-model".into()],
            max_num_seqs: 256,
            base_latency_ms: 0,
            per_token_ms: 0.0,
            step_base_ms: 0.0,
            step_per_seq_ms: 0.0,
            prefill_ms_per_token: 0.0,
            faults: FaultRates::default(),
            seed: 42,
            models_wait_for_slot: false,
            serve_metrics: true,
            priority_scheduling: false,
            refuse_priority_without_policy: false,
        }
    }
}

impl SimConfig {
    /// The engine's step-time parameters; [`CostModel::is_enabled`] says
    /// whether the continuous-batching mode is on.
    pub fn cost_model(&self) -> CostModel {
        CostModel {
            step_base_ms: self.step_base_ms,
            step_per_seq_ms: self.step_per_seq_ms,
            prefill_ms_per_token: self.prefill_ms_per_token,
        }
    }
}

/// Per-request fault probabilities (each in `[0, 1]`), applied to the five
/// inference endpoints only, in this order of precedence.
#[derive(Clone, Default, Debug)]
pub struct FaultRates {
    /// Probability of a 500 `InternalServerError`.
    pub error_500: f64,
    /// Probability of a 429 with `Retry-After: 1`.
    pub error_429: f64,
    /// Probability of a 200 whose body breaks off (connection aborted).
    pub reset: f64,
    /// Probability of never answering (until shutdown).
    pub hang: f64,
    /// Fraction of request bodies that get vLLM's context-length 400; decided
    /// from a hash of the body, so identical requests get the same answer.
    pub error_400: f64,
}

/// A snapshot of the simulator's counters and gauges (also served as JSON at
/// `GET /sim/stats`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimStats {
    /// Inference requests received (any outcome).
    pub requests_received: u64,
    /// Inference requests answered with 200.
    pub responses_ok: u64,
    /// Requests answered with an injected fault (including marker hooks).
    pub faults_injected: u64,
    /// Requests currently running (holding one of `max_num_seqs` slots, or in
    /// the engine's running set).
    pub running: u64,
    /// Requests currently waiting for a slot (or in the engine's queue).
    pub waiting: u64,
    /// Engine steps taken (0 in the fixed-latency mode).
    pub steps: u64,
    /// Engine time with at least one running request, in seconds.
    pub busy_seconds: f64,
    /// Σ step time × running / `max_num_seqs`, in seconds: divided by the
    /// elapsed time it is the mean occupancy of the engine.
    pub occupancy_seconds: f64,
    /// When the first inference request arrived (ms since the Unix epoch; 0: none yet).
    pub first_arrival_unix_ms: u64,
    /// When the latest 200 answer was sent (ms since the Unix epoch; 0: none yet).
    pub last_finish_unix_ms: u64,
    /// Prompt tokens of successful requests.
    pub prompt_tokens: u64,
    /// Completion tokens of successful requests.
    pub generation_tokens: u64,
    /// Arrivals of each served model, in the order of `models`.
    #[serde(default)]
    pub models: Vec<ModelArrivals>,
    /// `GET /metrics` requests received (answered or 404).
    #[serde(default)]
    pub metrics_requests: u64,
    /// When the latest inference request arrived (µs since the Unix epoch; 0: none yet). In
    /// microseconds, unlike the other times, so that one request's arrival can be timed against
    /// a client's clock to better than a millisecond (`vllm-batch-bench start-latency`).
    #[serde(default)]
    pub last_arrival_unix_us: u64,
    /// Engine steps scheduled while an interactive request (one with `"stream": true`) was
    /// running or waiting.
    #[serde(default)]
    pub interactive_steps: u64,
    /// Of those, steps that left a non-streaming (batch) request in the waiting queue.
    #[serde(default)]
    pub batch_waiting_steps: u64,
    /// Steps that left an interactive request in the waiting queue (no slot for it).
    #[serde(default)]
    pub interactive_waiting_steps: u64,
    /// Requests that carried a nonzero `priority`.
    #[serde(default)]
    pub prioritized_requests: u64,
    /// Tokens produced by engine steps (Σ running per step), and Σ step time × running, in
    /// seconds: `vllm:inter_token_latency_seconds`'s count and sum.
    #[serde(default)]
    pub token_steps: u64,
    #[serde(default)]
    pub token_step_seconds: f64,
}

/// Requests naming one served model, and where they fell in the order of all arrivals (the
/// n-th request received is arrival n, counted from 1 as in `requests_received`): tells which
/// of two batches on different models the upstream was sent first, without a clock.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelArrivals {
    pub model: String,
    /// Requests received for this model (any outcome after the model was recognised).
    pub requests: u64,
    /// Arrival number of its first request (0: none yet).
    pub first_arrival: u64,
    /// Arrival number of its latest request (0: none yet).
    pub last_arrival: u64,
}

impl SimStats {
    /// The arrivals of `model` (all zero when it has none or is not served).
    pub fn model(&self, model: &str) -> ModelArrivals {
        self.models
            .iter()
            .find(|m| m.model == model)
            .cloned()
            .unwrap_or_else(|| ModelArrivals { model: model.to_string(), ..Default::default() })
    }
}

/// A running simulator. Dropping it does not stop the server (it then lives
/// until the runtime ends); call [`SimHandle::shutdown`] to stop it.
pub struct SimHandle {
    /// The address the server listens on.
    pub addr: SocketAddr,
    state: Arc<SimState>,
    shutdown_tx: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1` (an unspecified
    /// bind address is reported as loopback).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
        }
        format!("http://{addr}/v1")
    }

    /// A snapshot of the current statistics.
    pub fn stats(&self) -> SimStats {
        self.state.snapshot()
    }

    /// Replaces the fault rates; applies to requests received from now on.
    pub fn set_faults(&self, f: FaultRates) {
        let mut faults = self.state.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.rates = f;
    }

    /// Stops accepting connections, lets in-flight requests finish (hung ones
    /// are cut off) and returns; after a 1 s grace the server is aborted.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let mut task = self.task;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "upstream-sim server error"),
            Ok(_) => {}
            Err(_) => {
                tracing::debug!("upstream-sim: grace period over, aborting server");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Binds `127.0.0.1:0` and serves the simulator there.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    serve(listener, config).await
}

/// Serves the simulator on `listener` in a background task.
pub async fn serve(listener: tokio::net::TcpListener, config: SimConfig) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(SimState::new(config, shutdown_rx.clone()));
    if let Some(engine) = state.engine.clone() {
        tokio::spawn(engine::run(state.clone(), engine));
    }
    let app = handlers::router(state.clone());
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let mut signal = shutdown_rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(SimHandle { addr, state, shutdown_tx, task })
}
