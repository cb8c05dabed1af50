//! Shared server state: configuration, atomic statistics, the scheduler that
//! limits concurrently running requests (vLLM's `max_num_seqs`: a semaphore in
//! the fixed-latency mode, the [`Engine`] in the continuous-batching mode), the
//! seeded fault RNG, and the shutdown signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Semaphore, SemaphorePermit};

use crate::engine::Engine;
use crate::{FaultRates, SimConfig, SimStats};

/// Counters and gauges behind [`SimStats`].
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) requests_received: AtomicU64,
    pub(crate) responses_ok: AtomicU64,
    pub(crate) faults_injected: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) waiting: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) generation_tokens: AtomicU64,
    /// Engine steps taken (engine mode only).
    pub(crate) steps: AtomicU64,
    /// Σ step time, in nanoseconds (every step has at least one running).
    pub(crate) busy_nanos: AtomicU64,
    /// Σ step time × running sequences, in nanoseconds.
    pub(crate) seq_nanos: AtomicU64,
    /// Σ running sequences over steps: tokens produced (each one's inter-token latency is its
    /// step's time, which `seq_nanos` sums).
    pub(crate) seq_steps: AtomicU64,
    /// Wall-clock time of the first inference request (0 before it).
    pub(crate) first_arrival_unix_ms: AtomicU64,
    /// Wall-clock time of the latest 200 answer (0 before it).
    pub(crate) last_finish_unix_ms: AtomicU64,
    /// `GET /metrics` requests received.
    pub(crate) metrics_requests: AtomicU64,
    /// Wall-clock time of the latest inference request, in µs (0 before it).
    pub(crate) last_arrival_unix_us: AtomicU64,
    /// See [`SimStats::interactive_steps`] and the two after it.
    pub(crate) interactive_steps: AtomicU64,
    pub(crate) batch_waiting_steps: AtomicU64,
    pub(crate) interactive_waiting_steps: AtomicU64,
    pub(crate) prioritized_requests: AtomicU64,
}

impl Stats {
    /// A consistent-enough snapshot (each field is read atomically);
    /// `max_num_seqs` turns sequence-time into occupancy.
    pub(crate) fn snapshot(&self, max_num_seqs: usize) -> SimStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            requests_received: r(&self.requests_received),
            responses_ok: r(&self.responses_ok),
            faults_injected: r(&self.faults_injected),
            running: r(&self.running),
            waiting: r(&self.waiting),
            prompt_tokens: r(&self.prompt_tokens),
            generation_tokens: r(&self.generation_tokens),
            steps: r(&self.steps),
            busy_seconds: r(&self.busy_nanos) as f64 / 1e9,
            occupancy_seconds: r(&self.seq_nanos) as f64 / 1e9 / max_num_seqs as f64,
            token_steps: r(&self.seq_steps),
            token_step_seconds: r(&self.seq_nanos) as f64 / 1e9,
            first_arrival_unix_ms: r(&self.first_arrival_unix_ms),
            last_finish_unix_ms: r(&self.last_finish_unix_ms),
            models: Vec::new(),
            metrics_requests: r(&self.metrics_requests),
            last_arrival_unix_us: r(&self.last_arrival_unix_us),
            interactive_steps: r(&self.interactive_steps),
            batch_waiting_steps: r(&self.batch_waiting_steps),
            interactive_waiting_steps: r(&self.interactive_waiting_steps),
            prioritized_requests: r(&self.prioritized_requests),
        }
    }

    /// Records an inference request's arrival and returns its arrival number (from 1).
    pub(crate) fn arrived(&self) -> u64 {
        let n = self.requests_received.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.first_arrival_unix_ms.compare_exchange(0, unix_ms(), Ordering::Relaxed, Ordering::Relaxed);
        self.last_arrival_unix_us.fetch_max(unix_us(), Ordering::Relaxed);
        n
    }

    /// Records a 200 answer and the tokens it carried.
    pub(crate) fn succeeded(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
        self.generation_tokens.fetch_add(completion_tokens, Ordering::Relaxed);
        self.responses_ok.fetch_add(1, Ordering::Relaxed);
        self.last_finish_unix_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Microseconds since the Unix epoch.
fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Increments a gauge on creation and decrements it on drop, so a request
/// whose future is dropped (client went away) leaves the gauge correct.
pub(crate) struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Arrivals of one served model (see [`crate::ModelArrivals`]).
pub(crate) struct ModelCounters {
    requests: AtomicU64,
    /// `u64::MAX` until the first arrival, so that `fetch_min` keeps the earliest.
    first_arrival: AtomicU64,
    last_arrival: AtomicU64,
}

impl ModelCounters {
    fn new() -> Self {
        ModelCounters {
            requests: AtomicU64::new(0),
            first_arrival: AtomicU64::new(u64::MAX),
            last_arrival: AtomicU64::new(0),
        }
    }

    fn record(&self, arrival: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.first_arrival.fetch_min(arrival, Ordering::Relaxed);
        self.last_arrival.fetch_max(arrival, Ordering::Relaxed);
    }

    fn snapshot(&self, model: &str) -> crate::ModelArrivals {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let first = r(&self.first_arrival);
        crate::ModelArrivals {
            model: model.to_string(),
            requests: r(&self.requests),
            first_arrival: if first == u64::MAX { 0 } else { first },
            last_arrival: r(&self.last_arrival),
        }
    }
}

/// A scheduler slot held while a request "runs".
pub(crate) struct RunningSlot<'a> {
    _permit: SemaphorePermit<'a>,
    _running: GaugeGuard<'a>,
}

/// The fault RNG and the current rates, locked together so that a request's
/// draws and the rates they are compared with are consistent.
pub(crate) struct FaultState {
    pub(crate) rates: FaultRates,
    pub(crate) rng: StdRng,
}

/// Everything the handlers share.
pub(crate) struct SimState {
    pub(crate) models: Vec<String>,
    /// Arrivals per model, in the order of `models`.
    model_arrivals: Vec<ModelCounters>,
    pub(crate) max_num_seqs: usize,
    pub(crate) base_latency_ms: u64,
    pub(crate) per_token_ms: f64,
    /// The continuous-batching engine, when `step_base_ms > 0`.
    pub(crate) engine: Option<Arc<Engine>>,
    /// `GET /v1/models` waits for a scheduler slot (a single-threaded server).
    pub(crate) models_wait_for_slot: bool,
    /// `/metrics` answers (else 404).
    pub(crate) serve_metrics: bool,
    /// vLLM's priority scheduling policy is on.
    pub(crate) priority_scheduling: bool,
    /// Under fcfs, a nonzero priority gets older vLLM's 400.
    pub(crate) refuse_priority_without_policy: bool,
    pub(crate) stats: Stats,
    pub(crate) faults: Mutex<FaultState>,
    slots: Semaphore,
    shutdown: watch::Receiver<bool>,
}

impl SimState {
    /// Builds the state from `config`; `shutdown` flips to `true` on shutdown.
    pub(crate) fn new(config: SimConfig, shutdown: watch::Receiver<bool>) -> Self {
        let max_num_seqs = config.max_num_seqs.clamp(1, Semaphore::MAX_PERMITS);
        let cost = config.cost_model();
        let engine = cost.is_enabled().then(|| Arc::new(Engine::new(cost, max_num_seqs, config.priority_scheduling)));
        let models = if config.models.is_empty() { SimConfig::default().models } else { config.models };
        let model_arrivals = models.iter().map(|_| ModelCounters::new()).collect();
        SimState {
            models,
            model_arrivals,
            max_num_seqs,
            base_latency_ms: config.base_latency_ms,
            per_token_ms: config.per_token_ms.max(0.0),
            engine,
            models_wait_for_slot: config.models_wait_for_slot,
            serve_metrics: config.serve_metrics,
            priority_scheduling: config.priority_scheduling,
            refuse_priority_without_policy: config.refuse_priority_without_policy,
            stats: Stats::default(),
            faults: Mutex::new(FaultState { rates: config.faults, rng: StdRng::seed_from_u64(config.seed) }),
            slots: Semaphore::new(max_num_seqs),
            shutdown,
        }
    }

    /// A snapshot of the statistics (in the engine mode, `running` and
    /// `waiting` are the engine's sets).
    pub(crate) fn snapshot(&self) -> SimStats {
        let mut s = self.stats.snapshot(self.max_num_seqs);
        s.models = self.models.iter().zip(&self.model_arrivals).map(|(m, c)| c.snapshot(m)).collect();
        if let Some(engine) = &self.engine {
            (s.running, s.waiting) = engine.gauges();
        }
        s
    }

    /// Counts arrival number `arrival` against the served model at `index` of `models`.
    pub(crate) fn model_arrived(&self, index: usize, arrival: u64) {
        self.model_arrivals[index].record(arrival);
    }

    /// Waits (counted as "waiting", FIFO) for one of `max_num_seqs` slots,
    /// then returns it counted as "running" until dropped.
    pub(crate) async fn schedule(&self) -> RunningSlot<'_> {
        let waiting = GaugeGuard::new(&self.stats.waiting);
        let permit = self.slots.acquire().await.expect("the scheduler semaphore is never closed");
        let running = GaugeGuard::new(&self.stats.running);
        drop(waiting);
        RunningSlot { _permit: permit, _running: running }
    }

    /// Time a running request takes: `base + per_token * completion_tokens`.
    pub(crate) fn run_time(&self, completion_tokens: u64) -> std::time::Duration {
        let ms = self.base_latency_ms as f64 + self.per_token_ms * completion_tokens as f64;
        std::time::Duration::from_secs_f64((ms / 1000.0).max(0.0))
    }

    /// Resolves once shutdown has been requested.
    pub(crate) async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means "shut down".
        let _ = rx.wait_for(|stop| *stop).await;
    }
}
