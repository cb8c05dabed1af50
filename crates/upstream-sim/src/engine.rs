//! The continuous-batching engine (on when `step_base_ms > 0`): one task runs
//! the [`Scheduler`] of [`crate::cost`] against the clock, step after step,
//! like vLLM's engine loop. Handlers queue a request with a reply channel and
//! wait; the engine answers each one at the end of the step that produced its
//! last token.
//!
//! Steps are timed with absolute deadlines (each one starts where the previous
//! one was due to end), so the timer's granularity and wake-up lateness do not
//! add up over thousands of steps.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::cost::{CostModel, Scheduler};
use crate::state::{SimState, Stats};

/// A queued request: the engine sends `()` when its last token is out. A
/// dropped receiver means the client went away, and the engine aborts it.
type Reply = oneshot::Sender<()>;

/// The engine's shared half: the scheduler and the bell that wakes the loop.
pub(crate) struct Engine {
    scheduler: Mutex<Scheduler<Reply>>,
    arrived: Notify,
}

impl Engine {
    pub(crate) fn new(model: CostModel, max_num_seqs: usize) -> Self {
        Engine { scheduler: Mutex::new(Scheduler::new(model, max_num_seqs)), arrived: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Scheduler<Reply>> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request; the receiver resolves when it has finished (an
    /// error means the engine stopped first).
    pub(crate) fn submit(&self, stats: &Stats, prompt_tokens: u64, completion_tokens: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut scheduler = self.lock();
            scheduler.enqueue(prompt_tokens, completion_tokens, tx);
            publish_gauges(stats, &scheduler);
        }
        // `notify_one` keeps a permit when the loop is not waiting yet, so a
        // request queued just before the loop goes idle still wakes it.
        self.arrived.notify_one();
        rx
    }
}

/// Mirrors the scheduler's sets into the `running` / `waiting` gauges. Called
/// with the scheduler locked, so the gauges never show a state it was not in.
fn publish_gauges(stats: &Stats, scheduler: &Scheduler<Reply>) {
    stats.running.store(scheduler.running() as u64, Ordering::Relaxed);
    stats.waiting.store(scheduler.waiting() as u64, Ordering::Relaxed);
}

/// The engine loop: runs until shutdown, then fails whatever is still queued
/// or running (their handlers answer 503).
pub(crate) async fn run(state: Arc<SimState>, engine: Arc<Engine>) {
    tokio::select! {
        _ = steps(&state, &engine) => {}
        _ = state.shutdown_requested() => {}
    }
    let mut scheduler = engine.lock();
    drop(scheduler.drain());
    publish_gauges(&state.stats, &scheduler);
}

async fn steps(state: &SimState, engine: &Engine) {
    let stats = &state.stats;
    // When the previous step ended (its deadline) if the engine has been busy
    // since; `None` after an idle spell.
    let mut busy_until: Option<Instant> = None;
    let mut finished = Vec::new();
    loop {
        let step = {
            let mut scheduler = engine.lock();
            let step = scheduler.begin_step(|reply| !reply.is_closed());
            publish_gauges(stats, &scheduler);
            step
        };
        let Some(step) = step else {
            busy_until = None;
            engine.arrived.notified().await;
            continue;
        };
        let start = busy_until.unwrap_or_else(Instant::now);
        let deadline = start + step.duration;
        tokio::time::sleep_until(deadline).await;
        {
            let mut scheduler = engine.lock();
            scheduler.end_step(&mut finished);
            publish_gauges(stats, &scheduler);
        }
        let nanos = step.duration.as_nanos() as u64;
        stats.steps.fetch_add(1, Ordering::Relaxed);
        stats.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        stats.seq_nanos.fetch_add(nanos * step.running as u64, Ordering::Relaxed);
        for reply in finished.drain(..) {
            let _ = reply.send(());
        }
        busy_until = Some(deadline);
    }
}
