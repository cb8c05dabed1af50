//! The worker: validates new batches, claims chunks of work under leases, sends their requests
//! to the upstreams with bounded concurrency and retries, heartbeats, and finalizes batches into
//! their output and error files, and delivers webhooks (`webhooks.rs`). Embedded in
//! `vllm-batch serve` or run alone (`vllm-batch worker`).

mod adaptive;
mod chunk;
mod config;
mod dedup;
mod dispatch;
mod finalize;
mod gc;
mod probe;
mod routing;
mod validate;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};
use vllm_batch_core::time::unix_now_ms;
use vllm_batch_metrics::metrics;
use vllm_batch_metrics::throughput::throughput;
use vllm_batch_store::{BeatAnswer, ChunkBeat, FileStore, Store};
use vllm_batch_upstream::Upstreams;

pub use config::{Concurrency, WorkerConfig};

use chunk::{ChunkState, StopReason};
use routing::Router;

/// Everything a worker's tasks share.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub files: Arc<dyn FileStore>,
    pub config: WorkerConfig,
    pub router: Router,
    /// Lines of held chunks not yet dispatched: the claimer takes a new chunk when this runs
    /// low, so the upstream never idles at chunk edges.
    pub backlog: AtomicI64,
    /// Chunks currently held, for the heartbeat, by batch, index and fence: a chunk this worker
    /// claims again after its own lease lapsed (a pause, a stalled heartbeat) is a second entry,
    /// so the old holder is told it lost the lease and its end does not unregister the new one.
    pub held: Mutex<HashMap<(String, i64, i64), Arc<ChunkState>>>,
    /// Woken when work may be available (the API created or cancelled a batch).
    pub wake: Arc<Notify>,
    /// Wakes the claim loop when there may be room for another chunk: the backlog fell below
    /// the in-flight capacity, a held chunk's last line went on the wire, or a chunk finished.
    pub claim_wake: Notify,
    /// Whether the data folder was last seen under its free-space margin (logged on change).
    pub disk_low: AtomicBool,
}

/// A worker, ready to run.
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// `wake` lets an embedding API nudge the worker when a batch is created or cancelled.
    pub fn new(
        store: Arc<dyn Store>,
        files: Arc<dyn FileStore>,
        upstreams: Upstreams,
        config: WorkerConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let router = Router::new(upstreams, config.max_in_flight);
        Worker {
            shared: Arc::new(Shared {
                store,
                files,
                config,
                router,
                backlog: AtomicI64::new(0),
                held: Mutex::new(HashMap::new()),
                wake,
                claim_wake: Notify::new(),
                disk_low: AtomicBool::new(false),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// Runs until `shutdown` fires, then drains: no new claims, held chunks get
    /// `drain_timeout` to finish and are handed back otherwise.
    pub async fn run(self, shutdown: CancellationToken) {
        let s = self.shared;
        info!(worker = %s.config.worker_id, "worker started");
        let m = metrics();
        m.worker_status.with_label_values(&[&s.config.worker_id]).set(1);
        m.worker_heartbeat.with_label_values(&[&s.config.worker_id]).set(unix_now_ms() as f64 / 1000.0);
        let mut tasks = JoinSet::new();
        tasks.spawn(validate::run_loop(s.clone(), shutdown.clone()).instrument(tracing::info_span!("validator")));
        tasks.spawn(finalize::run_loop(s.clone(), shutdown.clone()).instrument(tracing::info_span!("finalizer")));
        tasks.spawn(gc::run_loop(s.clone(), shutdown.clone()).instrument(tracing::info_span!("gc")));
        tasks.spawn(webhooks::run_loop(s.clone(), shutdown.clone()).instrument(tracing::info_span!("webhooks")));
        // The heartbeat outlives `shutdown`: held chunks keep their leases while they drain.
        let drained = CancellationToken::new();
        tasks.spawn(heartbeat_loop(s.clone(), drained.clone()).instrument(tracing::info_span!("heartbeat")));
        tasks.spawn(s.router.clone().refresh_loop(shutdown.clone()).instrument(tracing::info_span!("routing")));
        vllm_batch_metrics::init_upstreams(s.router.limits().len());
        for (i, limit) in s.router.limits().iter().enumerate() {
            let probe = probe::probe_loop(s.clone(), i, shutdown.clone());
            tasks.spawn(probe.instrument(tracing::info_span!("probe", upstream = i)));
            // Slow start: the upstream's capacity is not known yet.
            probe::restart_low(&s, i);
            let gauge = m.upstream_concurrency_limit.with_label_values(&[&i.to_string()]);
            gauge.set(limit.current() as i64);
            if s.config.background && s.config.concurrency == Concurrency::Fixed {
                warn!("--background needs --concurrency adaptive: with a fixed limit the worker cannot make room for other traffic");
            }
            if let Concurrency::Adaptive { min, ceiling, interval } = s.config.concurrency {
                let run = adaptive::control_loop(
                    limit.clone(),
                    s.router.upstreams.clone(),
                    i,
                    (min, ceiling, interval),
                    s.config.background,
                    shutdown.clone(),
                );
                tasks.spawn(run.instrument(tracing::info_span!("concurrency", upstream = i)));
            }
        }
        let chunks = claim_loop(s.clone(), shutdown.clone()).instrument(tracing::info_span!("claimer")).await;
        m.worker_status.with_label_values(&[&s.config.worker_id]).set(0);
        drain(&s, chunks).await;
        drained.cancel();
        // The other loops watch `shutdown` themselves.
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                error!(error = %e, "worker task failed");
            }
        }
        info!(worker = %s.config.worker_id, "worker stopped");
    }
}

/// What one turn of a poll loop did.
pub(crate) enum Turn {
    /// Took work: look again at once.
    Worked,
    /// Found nothing (or could not look): wait for a wake-up or the poll interval.
    Idle,
}

/// The one claim → work → wait loop of the validator, the finalizer and the chunk claimer:
/// runs `turn` until `shutdown`, again at once after work, otherwise after `Shared::wake` (the
/// API created or cancelled a batch; a chunk finished), `also` or `--poll-interval`. The wake-up
/// is registered before each turn's query, so a batch created while the query runs wakes the
/// next turn at once instead of waiting out the poll interval.
pub(crate) async fn poll_loop<T>(
    s: &Shared,
    shutdown: &CancellationToken,
    also: Option<&Notify>,
    state: &mut T,
    mut turn: impl for<'a> FnMut(&'a mut T) -> Pin<Box<dyn Future<Output = Turn> + Send + 'a>>,
) {
    while !shutdown.is_cancelled() {
        let woken = s.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Turn::Worked = turn(state).await {
            continue;
        }
        // `also` (a `notify_one` target) keeps a wake-up that came during the turn by itself.
        let also_woken = async {
            match also {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = &mut woken => {}
            _ = also_woken => {}
            _ = tokio::time::sleep(s.config.poll_interval) => {}
        }
    }
}

/// Claims chunks while the backlog is short and spawns one task per chunk.
async fn claim_loop(s: Arc<Shared>, shutdown: CancellationToken) -> JoinSet<()> {
    let mut chunks = JoinSet::new();
    poll_loop(&s, &shutdown, Some(&s.claim_wake), &mut chunks, |chunks| Box::pin(claim_turn(s.clone(), chunks))).await;
    chunks
}

async fn claim_turn(s: Arc<Shared>, chunks: &mut JoinSet<()>) -> Turn {
    while let Some(res) = chunks.try_join_next() {
        if let Err(e) = res {
            error!(error = %e, "chunk task failed");
        }
    }
    if !disk_has_room(&s) {
        return Turn::Idle;
    }
    // The limits move under the adaptive controller: so does how far claiming runs ahead.
    let capacity = s.router.total_capacity();
    let room = s.backlog.load(Ordering::Acquire) < capacity as i64
        && dispatching(&s) < s.config.max_held_chunks(capacity)
        && chunks.len() < s.config.max_held_chunks_with_stragglers(capacity);
    if !room {
        return Turn::Idle;
    }
    match s.store.claim_chunk(&s.config.worker_id, s.config.lease_ms()).await {
        Ok(Some(lease)) => {
            if lease.first_claim {
                metrics().queue_wait.observe(lease.queued_ms.max(0) as f64 / 1000.0);
            }
            if !lease.checkpoint.done.is_empty() {
                info!(batch_id = %lease.batch_id, chunk = lease.chunk.idx, answered = lease.checkpoint.done.len(),
                    "resuming a chunk from its checkpoint");
            }
            let state = ChunkState::new(&lease);
            s.backlog.fetch_add(state.lines_to_send(), Ordering::AcqRel);
            s.held.lock().unwrap().insert(state.key(), state.clone());
            let span = tracing::info_span!("chunk", batch_id = %lease.batch_id, chunk = lease.chunk.idx);
            chunks.spawn(chunk::process(s.clone(), lease, state).instrument(span));
            Turn::Worked
        }
        Ok(None) => Turn::Idle,
        Err(e) => {
            warn!(error = %e, "claiming a chunk failed; retrying");
            Turn::Idle
        }
    }
}

/// Whether the data folder has room above its margin for work that writes (a chunk's parts, a
/// batch's output files). Under it, that work waits — it is not failed — and is claimed again
/// once space returns; the change is logged each way.
pub(crate) fn disk_has_room(s: &Shared) -> bool {
    let shortfall = s.config.disk.shortfall(0);
    let low = shortfall.is_some();
    if s.disk_low.swap(low, Ordering::AcqRel) != low {
        match shortfall {
            Some(why) => warn!("{why}: no chunk or finalization is claimed until space returns"),
            None => info!(path = %s.config.disk.path().display(), "the data folder has room again: work resumes"),
        }
    }
    !low
}

/// Held chunks with lines not yet dispatched. Claiming ahead is bounded by these (and the
/// backlog): a chunk whose lines are all on the wire delays no other batch, however long its
/// slowest request takes.
fn dispatching(s: &Shared) -> usize {
    s.held.lock().unwrap().values().filter(|c| c.has_lines_to_send()).count()
}

/// Graceful shutdown: let held chunks finish within the drain timeout, then hand back the rest.
async fn drain(s: &Arc<Shared>, mut chunks: JoinSet<()>) {
    if chunks.is_empty() {
        return;
    }
    info!(held = chunks.len(), "draining held chunks");
    let deadline = tokio::time::sleep(s.config.drain_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = chunks.join_next() => if next.is_none() { return },
            _ = &mut deadline => break,
        }
    }
    let states: Vec<_> = s.held.lock().unwrap().values().cloned().collect();
    for st in &states {
        st.stop(StopReason::Release);
    }
    chunks.abort_all();
    while chunks.join_next().await.is_some() {}
    s.held.lock().unwrap().clear();
    for st in states {
        if let Err(e) = s.store.release_chunk(&st.lease).await {
            warn!(error = %e, batch_id = %st.lease.batch_id, "could not release chunk; its lease will expire");
        }
    }
}

/// Extends the leases of held chunks with their checkpoints (each chunk commits what it wrote
/// since the last beat first); stops chunks whose batch is being cancelled and drops chunks
/// another worker took over.
async fn heartbeat_loop(s: Arc<Shared>, drained: CancellationToken) {
    let every = s.config.heartbeat_interval();
    let heartbeat = metrics().worker_heartbeat.with_label_values(&[&s.config.worker_id]);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = drained.cancelled() => return,
        }
        heartbeat.set(unix_now_ms() as f64 / 1000.0);
        throughput().tick();
        let states: Vec<_> = s.held.lock().unwrap().values().cloned().collect();
        if states.is_empty() {
            continue;
        }
        let beats: Vec<ChunkBeat> = futures_util::future::join_all(states.iter().map(|st| st.beat())).await;
        match s.store.heartbeat(&beats, s.config.lease_ms()).await {
            Ok(answers) => {
                for ((st, beat), answer) in states.iter().zip(&beats).zip(answers) {
                    match answer {
                        BeatAnswer::Held => st.recorded(beat),
                        BeatAnswer::Cancelling => {
                            st.recorded(beat);
                            st.stop(StopReason::Cancelled);
                        }
                        // A chunk that completed since the beat was sent also reads as Lost.
                        BeatAnswer::Lost if s.held.lock().unwrap().contains_key(&st.key()) => {
                            warn!(batch_id = %st.lease.batch_id, chunk = st.lease.chunk.idx, "lease lost; dropping chunk");
                            st.stop(StopReason::Lost);
                        }
                        BeatAnswer::Lost => {}
                    }
                }
            }
            Err(e) => warn!(error = %e, "heartbeat failed; retrying"),
        }
    }
}
