//! The continuous-batching engine (on when `step_base_ms > 0`): one task runs
//! the [`Scheduler`] of [`crate::cost`] against the clock, step after step,
//! like vLLM's engine loop. Handlers queue a request with a reply channel and
//! wait; the engine answers each one at the end of the step that produced its
//! last token.
//!
//! As in vLLM's engine core, a request that arrives during a step sits in an
//! input queue until the step ends; the engine moves the input queue into the
//! scheduler's waiting queue just before it schedules the next step. The
//! `running` / `waiting` gauges are read from the scheduler's sets under its
//! lock ([`Engine::gauges`]), so a scrape reads what vLLM's
//! `vllm:num_requests_*` read: the state after the latest scheduling, where a
//! waiting request is one the engine had no room for.
//!
//! Steps are timed with absolute deadlines (each one starts where the previous
//! one was due to end), so the timer's granularity and wake-up lateness do not
//! add up over thousands of steps.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::cost::{CostModel, Scheduler};
use crate::state::SimState;

/// A queued request: the engine signals `first` when its first token is out
/// (streaming answers send their first chunk then) and `done` when its last
/// one is. A dropped `done` receiver means the client went away, and the
/// engine aborts it.
pub(crate) struct Reply {
    first: Option<oneshot::Sender<()>>,
    done: oneshot::Sender<()>,
    /// A streaming (interactive) request, for the statistics.
    interactive: bool,
}

/// What the handler waits on: the first token, then the last.
pub(crate) struct Pending {
    pub(crate) first: oneshot::Receiver<()>,
    pub(crate) done: oneshot::Receiver<()>,
}

/// A request that arrived since the engine last scheduled:
/// `(prompt_tokens, completion_tokens, priority, reply)`.
type Arrival = (u64, u64, i64, Reply);

/// What the engine lock guards: the scheduler and its input queue.
struct Inner {
    scheduler: Scheduler<Reply>,
    inbox: Vec<Arrival>,
}

/// The engine's shared half: the scheduler, its input queue and the bell that
/// wakes the loop.
pub(crate) struct Engine {
    inner: Mutex<Inner>,
    arrived: Notify,
}

impl Engine {
    pub(crate) fn new(model: CostModel, max_num_seqs: usize, priority: bool) -> Self {
        let inner = Inner { scheduler: Scheduler::with_policy(model, max_num_seqs, priority), inbox: Vec::new() };
        Engine { inner: Mutex::new(inner), arrived: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request; the receiver resolves when it has finished (an
    /// error means the engine stopped first).
    pub(crate) fn submit(
        &self,
        prompt_tokens: u64,
        completion_tokens: u64,
        priority: i64,
        interactive: bool,
    ) -> Pending {
        let (first_tx, first) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let reply = Reply { first: Some(first_tx), done: done_tx, interactive };
        self.lock().inbox.push((prompt_tokens, completion_tokens, priority, reply));
        // `notify_one` keeps a permit when the loop is not waiting yet, so a
        // request queued just before the loop goes idle still wakes it.
        self.arrived.notify_one();
        Pending { first, done }
    }

    /// `(running, waiting)`: the scheduler's running set and waiting queue,
    /// read together under its lock (never a state it was not in).
    pub(crate) fn gauges(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.scheduler.running() as u64, inner.scheduler.waiting() as u64)
    }
}

/// The engine loop: runs until shutdown, then fails whatever is still queued
/// or running (their handlers answer 503).
pub(crate) async fn run(state: Arc<SimState>, engine: Arc<Engine>) {
    tokio::select! {
        _ = steps(&state, &engine) => {}
        _ = state.shutdown_requested() => {}
    }
    let mut inner = engine.lock();
    drop(inner.scheduler.drain());
    inner.inbox.clear();
}

/// Counts, for a step just scheduled, whether interactive requests were present and who was
/// left waiting.
fn count_queues(stats: &crate::state::Stats, scheduler: &Scheduler<Reply>) {
    let interactive_running = scheduler.running_payloads().any(|r| r.interactive);
    let (mut interactive_waiting, mut batch_waiting) = (false, false);
    for r in scheduler.waiting_payloads() {
        if r.interactive {
            interactive_waiting = true;
        } else {
            batch_waiting = true;
        }
    }
    if interactive_running || interactive_waiting {
        stats.interactive_steps.fetch_add(1, Ordering::Relaxed);
        if batch_waiting {
            stats.batch_waiting_steps.fetch_add(1, Ordering::Relaxed);
        }
    }
    if interactive_waiting {
        stats.interactive_waiting_steps.fetch_add(1, Ordering::Relaxed);
    }
}

async fn steps(state: &SimState, engine: &Engine) {
    let stats = &state.stats;
    // When the previous step ended (its deadline) if the engine has been busy
    // since; `None` after an idle spell.
    let mut busy_until: Option<Instant> = None;
    let mut finished = Vec::new();
    loop {
        let step = {
            let mut inner = engine.lock();
            let Inner { scheduler, inbox } = &mut *inner;
            for (prompt_tokens, completion_tokens, priority, reply) in inbox.drain(..) {
                scheduler.enqueue_with_priority(prompt_tokens, completion_tokens, priority, reply);
            }
            let step = scheduler.begin_step(|reply| !reply.done.is_closed());
            if step.is_some() {
                count_queues(stats, scheduler);
            }
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
        engine.lock().scheduler.end_step_with(&mut finished, |reply| {
            if let Some(first) = reply.first.take() {
                let _ = first.send(());
            }
        });
        let nanos = step.duration.as_nanos() as u64;
        stats.steps.fetch_add(1, Ordering::Relaxed);
        stats.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        stats.seq_nanos.fetch_add(nanos * step.running as u64, Ordering::Relaxed);
        stats.seq_steps.fetch_add(step.running as u64, Ordering::Relaxed);
        for reply in finished.drain(..) {
            let _ = reply.done.send(());
        }
        busy_until = Some(deadline);
    }
}
