//! The in-flight limit of one upstream, and the controller that adapts it to the upstream.
//!
//! vLLM publishes how many requests it runs and how many wait (`vllm:num_requests_running`,
//! `vllm:num_requests_waiting` on its `/metrics`). The controller keeps the waiting queue short
//! but non-empty: while nothing waits and every slot of ours is taken, the upstream has room and
//! the limit doubles — as long as the upstream runs about as many as are in flight, so
//! requests held up on the way do not count as room, and by an eighth only once the limit is
//! above what the upstream ran in its last few reports; while more wait than the target, it
//! shrinks to the most it ran in those reports plus the target. An upstream without those metrics gets latency-based AIMD instead: the limit grows
//! by an eighth while latency stays near its best, and drops by a fifth when latency doubles
//! (requests queueing).
//!
//! Start (and restart after an outage): the limit begins at `--min-in-flight`, because nothing is
//! known of the upstream yet. The controller looks at once; an upstream with vLLM's metrics moves
//! straight to `--max-in-flight` and is followed by its load from there, any other doubles while
//! latency holds, up to `--max-in-flight` (slow start), before the additive increase.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the in-flight limit of each upstream is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Concurrency {
    /// `max_in_flight`, always.
    Fixed,
    /// Starts at `min` and doubles while latency holds up to `max_in_flight` (slow start) —
    /// unless the upstream publishes vLLM's load metrics, which it then follows from
    /// `max_in_flight` — within `min..=ceiling`; after an outage it starts again the same way.
    Adaptive { min: usize, ceiling: usize, interval: Duration },
}

/// A resizable in-flight limit: a semaphore whose size can shrink while permits are out (the
/// shortfall is taken from permits as they come back).
pub(crate) struct Limit {
    sem: Arc<Semaphore>,
    limit: AtomicUsize,
    /// Permits still to be retired when they come back (a shrink below what was out).
    debt: AtomicUsize,
    latency_us: AtomicU64,
    completed: AtomicU64,
    /// Doubling while latency holds (the latency fallback's slow start), until it first rises.
    slow_start: AtomicBool,
    /// Where slow start ends (`--max-in-flight`).
    slow_start_until: AtomicUsize,
}

/// One in-flight slot; dropping it gives the slot back (or retires it after a shrink).
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<Limit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let permit = self.permit.take().expect("slot holds its permit");
        let retire = self.limit.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)).is_ok();
        if retire {
            permit.forget();
        }
    }
}

impl Limit {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Limit {
            sem: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            slow_start: AtomicBool::new(false),
            slow_start_until: AtomicUsize::new(limit),
        })
    }

    /// Back to `floor` with slow start up to `until`: at start, and when an upstream comes back
    /// from an outage (its capacity is unknown again).
    pub(crate) fn restart(&self, floor: usize, until: usize) {
        self.set(floor.max(1));
        self.slow_start_until.store(until.max(floor), Ordering::Release);
        self.slow_start.store(true, Ordering::Release);
    }

    pub(crate) fn current(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Slots taken now.
    pub(crate) fn in_flight(&self) -> usize {
        (self.current() + self.debt.load(Ordering::Acquire)).saturating_sub(self.sem.available_permits())
    }

    /// Free slots now (for choosing among upstreams).
    pub(crate) fn available(&self) -> usize {
        self.sem.available_permits().saturating_sub(self.debt.load(Ordering::Acquire))
    }

    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = self.sem.clone().acquire_owned().await.expect("semaphores are never closed");
        Slot { permit: Some(permit), limit: self.clone() }
    }

    /// Records a finished request's time on the wire (for the latency fallback).
    pub(crate) fn record(&self, took: Duration) {
        self.latency_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Mean latency of the requests finished since the last call, if any.
    fn take_mean_latency(&self) -> Option<Duration> {
        let n = self.completed.swap(0, Ordering::AcqRel);
        let total = self.latency_us.swap(0, Ordering::AcqRel);
        (n > 0).then(|| Duration::from_micros(total / n))
    }

    /// Resizes the limit. Only the controller calls this (one task per upstream).
    pub(crate) fn set(&self, new: usize) {
        let old = self.limit.swap(new, Ordering::AcqRel);
        if new > old {
            let mut grow = new - old;
            // Cancel retirements still pending before adding permits.
            while grow > 0 {
                let d = self.debt.load(Ordering::Acquire);
                if d == 0 {
                    break;
                }
                let take = d.min(grow);
                if self.debt.compare_exchange(d, d - take, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    grow -= take;
                }
            }
            self.sem.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let retired = self.sem.forget_permits(shrink);
            self.debt.fetch_add(shrink - retired, Ordering::AcqRel);
        }
    }
}

/// What the upstream reported on its `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Load {
    pub running: f64,
    pub waiting: f64,
}

/// Sums `vllm:num_requests_running` and `vllm:num_requests_waiting` over their label sets;
/// `None` when the page has neither (not a vLLM).
pub(crate) fn parse_load(page: &str) -> Option<Load> {
    let mut load = Load { running: 0.0, waiting: 0.0 };
    let mut seen = false;
    for line in page.lines() {
        let (slot, rest) = if let Some(r) = line.strip_prefix("vllm:num_requests_running") {
            (&mut load.running, r)
        } else if let Some(r) = line.strip_prefix("vllm:num_requests_waiting") {
            (&mut load.waiting, r)
        } else {
            continue;
        };
        // `{labels} value [timestamp]` or ` value`.
        let rest = match rest.strip_prefix('{') {
            Some(r) => match r.find('}') {
                Some(end) => &r[end + 1..],
                None => continue,
            },
            None if rest.starts_with(' ') => rest,
            None => continue,
        };
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *slot += v;
            seen = true;
        }
    }
    seen.then_some(load)
}

/// The sum and count of vLLM's inter-token latency histogram (`vllm:inter_token_latency_seconds`,
/// or `vllm:time_per_output_token_seconds` before vLLM 0.11), over its label sets; `None` when
/// the page has neither.
pub(crate) fn parse_itl(page: &str) -> Option<(f64, f64)> {
    let (mut sum, mut count, mut seen) = (0.0, 0.0, false);
    for line in page.lines() {
        for family in ["vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"] {
            let Some(rest) = line.strip_prefix(family) else { continue };
            let slot = if rest.starts_with("_sum") {
                &mut sum
            } else if rest.starts_with("_count") {
                &mut count
            } else {
                continue;
            };
            let value = rest.rsplit_once('}').map_or(rest, |(_, v)| v).split_whitespace().last();
            if let Some(v) = value.and_then(|v| v.parse::<f64>().ok()) {
                *slot += v;
                seen = true;
            }
        }
    }
    seen.then_some((sum, count))
}

/// The waiting queue the controller aims for: short, never empty while the upstream is full.
fn target_waiting(running: f64) -> f64 {
    (running / 16.0).clamp(2.0, 32.0)
}

/// How many of the controller's looks [`Lately::running`] covers (4 s at the default 500 ms).
const PEAK_LOOKS: usize = 8;
/// How many looks [`Lately::queued`] covers (30 s at the default 500 ms).
const QUEUE_LOOKS: usize = 60;

/// What the upstream's last reports say beyond the latest one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Lately {
    /// The most it ran in its last [`PEAK_LOOKS`] reports.
    pub running: f64,
    /// Whether it queued requests (`waiting` ≥ 1) in any of its last [`QUEUE_LOOKS`] reports:
    /// it has shown where its capacity is.
    pub queued: bool,
}

/// The upstream's last reports.
#[derive(Debug)]
struct Recent {
    running: [f64; PEAK_LOOKS],
    next: usize,
    looks_since_queue: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent { running: [0.0; PEAK_LOOKS], next: 0, looks_since_queue: usize::MAX }
    }
}

impl Recent {
    /// Records one report and returns what the reports up to it say.
    fn record(&mut self, load: Load) -> Lately {
        self.running[self.next % PEAK_LOOKS] = load.running;
        self.next += 1;
        self.looks_since_queue = if load.waiting >= 1.0 { 0 } else { self.looks_since_queue.saturating_add(1) };
        Lately {
            running: self.running.iter().copied().fold(load.running, f64::max),
            queued: self.looks_since_queue < QUEUE_LOOKS,
        }
    }
}

/// The next limit from the upstream's own load and its last few reports (`lately`, which
/// includes `load`).
///
/// The shrink is to the most it ran lately, not to this report's `running`: real vLLM finishes
/// requests in waves (requests of like length end in the same engine step) and counts the ones we
/// send in their place as waiting until its next step schedules them, so a single report can read
/// "7 running, 25 waiting" from an engine that runs 32 — shrinking to 7 + 2 starved it (seen
/// against vLLM 0.32 with `--max-num-seqs 32`: the limit fell to 9–20). For the same reason a
/// report with nothing queued from an upstream that queued in the last 30 s is room for a few more
/// (an eighth), not for twice as many (it doubled from 34 to 68, and from 32 to 64 after 4 s
/// without a queue at exactly its 32 slots); an upstream that queued nothing in that time has not
/// shown its capacity, and the limit doubles (the ramp toward a large engine stays fast).
pub(crate) fn from_load(
    limit: usize,
    in_flight: usize,
    load: Load,
    lately: Lately,
    min: usize,
    ceiling: usize,
) -> usize {
    let runs = lately.running.max(load.running);
    let target = target_waiting(runs);
    let next = if load.waiting > 2.0 * target {
        // Too much queued upstream: hold what it runs plus the target.
        (runs + target).ceil() as usize
    } else if load.waiting < 1.0 && in_flight * 10 >= limit * 9 && load.running * 10.0 >= in_flight as f64 * 9.0 {
        // Nothing queued, all our slots out, and the upstream runs what we sent (nothing stuck on
        // the way): it has room.
        if lately.queued {
            // It queued lately: its capacity is near (see above).
            limit + (limit / 8).max(1)
        } else {
            limit + limit.max(8)
        }
    } else {
        limit
    };
    next.clamp(min, ceiling)
}

/// How many looks the background mode remembers others' requests for (4 s at the default
/// 500 ms): the room it keeps is for the most it saw in that time.
const OTHERS_LOOKS: usize = 8;

/// What the background mode (`--background`) knows of the upstream: its capacity, and the
/// requests of others (the interactive traffic it shares the upstream with).
#[derive(Debug, Default)]
pub(crate) struct Background {
    /// The most the upstream ran while requests waited: its capacity (max-num-seqs, or what
    /// its KV cache holds). `None` until a queue has shown it.
    capacity: Option<f64>,
    /// Others' requests (running or waiting) in the last [`OTHERS_LOOKS`] looks.
    others: [f64; OTHERS_LOOKS],
    next: usize,
    /// The last reading of vLLM's inter-token latency histogram (sum, count).
    itl_seen: Option<(f64, f64)>,
    /// The best mean inter-token latency seen: what a token costs on a lightly loaded engine
    /// (forgotten by 1 % a look only while the engine runs at most [`LIGHT`] sequences, so that
    /// a long busy spell does not make busy look normal).
    itl_best: Option<f64>,
    /// While others are present: our limit as the latency guard sets it.
    guard: Option<usize>,
}

/// Others' tokens may take this much longer than on a lightly loaded engine while the batch runs
/// beside them; beyond it the background batch backs off. (1.2 also backed it off on a
/// GPU-like engine, where a full batch of decodes plus the prefills of new requests costs about
/// 1.5x a lone decode step: `vllm-batch-bench coexist` gave the batch 47 % of the capacity left
/// instead of 97 %, for a TTFT p90 of 1.54x idle instead of 1.84x.)
const ITL_SLACK: f64 = 1.5;

/// Sequences an engine runs "lightly loaded".
const LIGHT: f64 = 4.0;

impl Background {
    /// Records one look: the upstream's `load` and `ours`, the fewest of our requests in flight
    /// around the scrape (so that ours are never counted as others'). Returns others' requests
    /// now, and the most in the last looks.
    pub(crate) fn observe(&mut self, load: Load, lately: Lately, ours: usize) -> (f64, f64) {
        if load.waiting >= 1.0 {
            // Full: what it runs (at its most lately: vLLM finishes requests in waves) is its
            // capacity.
            self.capacity = Some(lately.running.max(load.running));
        }
        let now = (load.running + load.waiting - ours as f64).max(0.0);
        self.others[self.next % OTHERS_LOOKS] = now;
        self.next += 1;
        (now, self.others.iter().copied().fold(0.0, f64::max))
    }

    /// Records the inter-token latency histogram's reading, taken while the engine ran
    /// `running` sequences; returns the mean since the last one (`None` without tokens in
    /// between) relative to the best seen.
    pub(crate) fn observe_itl(&mut self, reading: Option<(f64, f64)>, running: f64) -> Option<f64> {
        let (sum, count) = reading?;
        let mean = match self.itl_seen.replace((sum, count)) {
            Some((s0, c0)) if count > c0 && sum >= s0 => (sum - s0) / (count - c0),
            _ => return None,
        };
        let forget = if running <= LIGHT { 1.01 } else { 1.0 };
        let best = self.itl_best.map_or(mean, |b| (b * forget).min(mean));
        self.itl_best = Some(best);
        Some(mean / best)
    }

    /// The latency guard, while others are present: our limit shrinks by a quarter while
    /// tokens take more than [`ITL_SLACK`] times the best, and grows by one while they do not
    /// (AIMD); `None` once the others have gone. A compute-bound engine (a CPU, a small GPU)
    /// slows every token with each sequence added, and backs the batch off to a few sequences;
    /// a memory-bound one (a large GPU) barely does, and keeps it near the capacity.
    pub(crate) fn guard(&mut self, others_peak: f64, itl_ratio: Option<f64>, limit: usize) -> Option<usize> {
        if others_peak < 1.0 {
            self.guard = None;
            return None;
        }
        let current = self.guard.unwrap_or(limit).min(limit.max(1));
        let next = match itl_ratio {
            Some(r) if r > ITL_SLACK => (current * 3 / 4).max(1),
            Some(_) => current + 1,
            None => current,
        };
        self.guard = Some(next);
        Some(next)
    }
}

/// The next limit in background mode: the upstream's other traffic comes first.
///
/// Until the upstream has shown its capacity (a queue formed), the ordinary controller's
/// `normal` limit: from `--min-in-flight`, doubling while nothing waits, until one does. Then
/// at most that capacity, less room for others: the most others had lately plus half as much
/// again (at least one more), so that an interactive request finds a free slot instead of
/// waiting behind ours; and while anything waits with others present, below what the upstream
/// runs, so none of ours stay in its queue.
/// Alone on the upstream, the whole capacity — without the ordinary controller's short queue,
/// which would put an arriving interactive request behind ours — and, once 30 s passed without
/// a queue, an eighth more to learn whether it grew.
pub(crate) fn background_limit(
    normal: usize,
    limit: usize,
    load: Load,
    lately: Lately,
    (capacity, others_now, others_peak): (Option<f64>, f64, f64),
    ceiling: usize,
) -> usize {
    let Some(capacity) = capacity else { return normal };
    let next = if others_peak >= 1.0 {
        let room = others_peak + (others_peak / 2.0).max(1.0);
        let mut next = capacity - room;
        if load.waiting >= 1.0 {
            // Something waits: ours must not be among it.
            next = next.min(load.running - others_now - 1.0);
        }
        next
    } else if !lately.queued && load.waiting < 1.0 && limit as f64 >= capacity {
        // Alone, all of it used, no queue for a while: probe for more.
        capacity + (capacity / 8.0).max(1.0)
    } else {
        capacity
    };
    (next.floor().max(1.0) as usize).min(ceiling)
}

/// The next limit from latency alone (an upstream without vLLM's metrics): additive increase
/// while latency stays within twice its best, multiplicative decrease beyond.
pub(crate) fn from_latency(
    limit: usize,
    in_flight: usize,
    mean: Duration,
    best: Duration,
    (min, ceiling): (usize, usize),
    slow_start_until: Option<usize>,
) -> usize {
    let next = if mean > best * 2 {
        limit * 4 / 5
    } else if in_flight * 10 >= limit * 9 {
        // Slow start doubles (up to its end) until latency first rises; then the increase is
        // additive.
        match slow_start_until {
            Some(until) if limit < until => (limit * 2).min(until),
            _ => limit + (limit / 8).max(1),
        }
    } else {
        limit
    };
    next.clamp(min, ceiling)
}

/// After this many failed reads of an upstream's `/metrics` in a row it is asked again only
/// every [`METRICS_RETRY`] (another OpenAI-compatible server has none; a 404 every 500 ms helps
/// nobody).
const METRICS_MISSES: u32 = 3;
const METRICS_RETRY: Duration = Duration::from_secs(300);

/// Runs the controller of one upstream until `shutdown`; `background`: `--background`.
pub(crate) async fn control_loop(
    limit: Arc<Limit>,
    upstreams: vllm_batch_upstream::Upstreams,
    index: usize,
    (min, ceiling, interval): (usize, usize, Duration),
    background: bool,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut bg = background.then(Background::default);
    let base = upstreams.specs()[index].base_url.trim_end_matches('/').trim_end_matches("/v1").to_string();
    let url = format!("{base}/metrics");
    let gauge = vllm_batch_metrics::metrics().upstream_concurrency_limit.with_label_values(&[&index.to_string()]);
    gauge.set(limit.current() as i64);
    let others_gauge = vllm_batch_metrics::metrics().upstream_other_requests.with_label_values(&[&index.to_string()]);
    let mut best: Option<Duration> = None;
    let mut recent = Recent::default();
    let mut reported_fallback = false;
    let (mut misses, mut metrics_again) = (0u32, tokio::time::Instant::now());
    // The first look is at once: a vLLM is recognised (and its slow start skipped) before the
    // first batch's requests go out.
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        let page = async {
            let resp = upstreams.authorize(upstreams.client().get(&url)).timeout(interval).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.text().await.ok()
        };
        // Ours in flight on both sides of the scrape: the fewer is never counted as others'.
        let ours_before = limit.in_flight();
        let mut itl = None;
        let load = if tokio::time::Instant::now() >= metrics_again {
            let page = page.await;
            itl = page.as_deref().and_then(parse_itl);
            let load = page.as_deref().and_then(parse_load);
            if load.is_some() {
                misses = 0;
            } else {
                misses += 1;
                if misses >= METRICS_MISSES {
                    metrics_again = tokio::time::Instant::now() + METRICS_RETRY;
                }
            }
            load
        } else {
            None
        };
        let mean = limit.take_mean_latency();
        let now = limit.current();
        let next = match (load, mean) {
            (Some(load), _) => {
                let lately = recent.record(load);
                let in_flight = limit.in_flight();
                let next = from_load(now, in_flight, load, lately, min, ceiling);
                // A vLLM says how loaded it is, so its queue, not a slow start, guards it: start
                // from `--max-in-flight` as before and follow its load from there.
                // In the background, not: requests already in vLLM's queue cannot be called back
                // when others arrive, so it grows from `--min-in-flight` until a queue shows the
                // capacity (`from_load` doubles while there is room).
                let next = if limit.slow_start.swap(false, Ordering::AcqRel) && !background {
                    next.max(limit.slow_start_until.load(Ordering::Acquire)).min(ceiling)
                } else {
                    next
                };
                match bg.as_mut() {
                    Some(bg) => {
                        let (others_now, others_peak) = bg.observe(load, lately, ours_before.min(in_flight));
                        others_gauge.set(others_now);
                        let itl = bg.observe_itl(itl, load.running);
                        let next =
                            background_limit(next, now, load, lately, (bg.capacity, others_now, others_peak), ceiling);
                        let guarded = bg.guard(others_peak, itl, now).map_or(next, |g| g.min(next));
                        tracing::debug!(upstream = index, others_now, others_peak, capacity = ?bg.capacity, ?itl, next, guarded, "background");
                        guarded
                    }
                    None => next,
                }
            }
            (None, Some(mean)) => {
                if !reported_fallback {
                    tracing::info!(upstream = index, url = %vllm_batch_core::redact_url(&url), "no vLLM load metrics; adapting concurrency to latency");
                    if background {
                        tracing::warn!(upstream = index, "--background needs vLLM's /metrics to see the upstream's other traffic; without them this upstream is used as usual");
                    }
                    reported_fallback = true;
                }
                // The best latency seen, forgotten slowly so that a changed workload can reset it.
                let b = best.map_or(mean, |b| (b + b / 100).min(mean));
                best = Some(b);
                let until = limit.slow_start_until.load(Ordering::Acquire);
                let slow = limit.slow_start.load(Ordering::Acquire).then_some(until);
                let next = from_latency(now, limit.in_flight(), mean, b, (min, ceiling), slow);
                if next < now || next >= until {
                    limit.slow_start.store(false, Ordering::Release);
                }
                next
            }
            (None, None) => now,
        };
        if next != now {
            tracing::debug!(upstream = index, from = now, to = next, ?load, "in-flight limit changed");
            limit.set(next);
            gauge.set(next as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_load_summed_over_label_sets() {
        let page = "# HELP vllm:num_requests_running x\n\
                    vllm:num_requests_running{model_name=\"a\",engine=\"0\"} 200.0\n\
                    vllm:num_requests_running{model_name=\"b\"} 56\n\
                    vllm:num_requests_waiting{model_name=\"a\"} 12.0 1700000000000\n\
                    vllm:num_requests_waiting_by_reason{reason=\"x\"} 99\n";
        assert_eq!(parse_load(page), Some(Load { running: 256.0, waiting: 12.0 }));
        assert_eq!(parse_load("vllm:num_requests_running 3\n"), Some(Load { running: 3.0, waiting: 0.0 }));
        assert_eq!(parse_load("other_metric 1\n"), None);
        assert_eq!(parse_load(""), None);
    }

    /// `from_load` with bounds 8..=4096, a report of `(running, waiting)` and `lately` as
    /// `(most run lately, queued lately)`.
    fn next(limit: usize, in_flight: usize, (running, waiting): (f64, f64), (most, queued): (f64, bool)) -> usize {
        from_load(limit, in_flight, Load { running, waiting }, Lately { running: most, queued }, 8, 4096)
    }

    #[test]
    fn grows_while_the_upstream_has_room_and_shrinks_to_a_short_queue() {
        // All 256 slots out, nothing waiting, no queue lately: double.
        assert_eq!(next(256, 256, (256.0, 0.0), (256.0, false)), 512);
        // Room but our slots are not all used (a chunk edge): hold.
        assert_eq!(next(256, 100, (100.0, 0.0), (100.0, false)), 256);
        // Our slots are out but the upstream sees few of them (stuck on the way): hold.
        assert_eq!(next(256, 256, (120.0, 0.0), (120.0, false)), 256);
        // 192 queued behind 64 running: shrink to 64 + 4.
        assert_eq!(next(256, 256, (64.0, 192.0), (64.0, true)), 68);
        // A short queue is what we want: hold.
        assert_eq!(next(68, 68, (64.0, 4.0), (64.0, true)), 68);
        // Bounds.
        assert_eq!(next(4000, 4000, (4000.0, 0.0), (4000.0, false)), 4096);
        assert_eq!(next(16, 16, (1.0, 50.0), (1.0, true)), 8);
        // A wave of finished requests (7 run, 25 just sent wait for the next engine step) from an
        // engine that ran 32 a moment ago: hold what it runs, not what this report says.
        assert_eq!(next(34, 34, (7.0, 25.0), (32.0, true)), 34);
        // Room for a moment from an upstream that queued lately: an eighth more, not double.
        assert_eq!(next(34, 32, (31.0, 0.0), (32.0, true)), 38);
    }

    #[test]
    fn lately_covers_the_last_few_reports() {
        let mut recent = Recent::default();
        let load = |running, waiting| Load { running, waiting };
        let lately = |running, queued| Lately { running, queued };
        assert_eq!(recent.record(load(20.0, 0.0)), lately(20.0, false), "no queue seen yet");
        assert_eq!(recent.record(load(32.0, 4.0)), lately(32.0, true));
        assert_eq!(recent.record(load(7.0, 25.0)), lately(32.0, true));
        for _ in 0..PEAK_LOOKS - 2 {
            assert_eq!(recent.record(load(5.0, 0.0)), lately(32.0, true));
        }
        // The 32 was PEAK_LOOKS reports ago: forgotten, and then the 7; the queue is remembered.
        assert_eq!(recent.record(load(6.0, 0.0)), lately(7.0, true));
        assert_eq!(recent.record(load(6.0, 0.0)), lately(6.0, true));
        // The last queue QUEUE_LOOKS reports ago: forgotten.
        for _ in 0..QUEUE_LOOKS - PEAK_LOOKS - 1 {
            assert_eq!(recent.record(load(6.0, 0.0)), lately(6.0, true));
        }
        assert_eq!(recent.record(load(6.0, 0.0)), lately(6.0, false));
    }

    #[test]
    fn parses_the_inter_token_latency_histogram() {
        let page = "vllm:inter_token_latency_seconds_bucket{engine=\"0\",le=\"+Inf\"} 10.0\n\
                    vllm:inter_token_latency_seconds_count{engine=\"0\",model_name=\"m\"} 10.0\n\
                    vllm:inter_token_latency_seconds_sum{engine=\"0\",model_name=\"m\"} 0.5\n\
                    vllm:inter_token_latency_seconds_created{engine=\"0\"} 1.7e9\n";
        assert_eq!(parse_itl(page), Some((0.5, 10.0)));
        let old = "vllm:time_per_output_token_seconds_sum 2\nvllm:time_per_output_token_seconds_count 4\n";
        assert_eq!(parse_itl(old), Some((2.0, 4.0)));
        assert_eq!(parse_itl("vllm:num_requests_running 3\n"), None);
    }

    #[test]
    fn the_latency_guard_backs_off_while_tokens_slow_down() {
        let mut bg = Background::default();
        assert_eq!(bg.observe_itl(Some((0.0, 0.0)), 2.0), None, "a first reading is no mean yet");
        // 10 ms a token: the best so far.
        assert_eq!(bg.observe_itl(Some((1.0, 100.0)), 2.0), Some(1.0));
        // 30 ms a token since, busy: the best stays.
        let slow = bg.observe_itl(Some((4.0, 200.0)), 32.0).unwrap();
        assert!((slow - 3.0).abs() < 1e-9, "{slow}");
        // Lightly loaded, the best is forgotten by 1 % a look (a changed workload resets it).
        let light = bg.observe_itl(Some((7.0, 300.0)), 2.0).unwrap();
        assert!((light - 3.0 / 1.01).abs() < 1e-9, "{light}");
        // Nobody else: no guard.
        assert_eq!(bg.guard(0.0, Some(slow), 32), None);
        // Others present and tokens 3x slower: a quarter off, look after look.
        assert_eq!(bg.guard(2.0, Some(slow), 32), Some(24));
        assert_eq!(bg.guard(2.0, Some(slow), 24), Some(18));
        // Back within the slack: one more at a time.
        assert_eq!(bg.guard(2.0, Some(1.1), 18), Some(19));
        assert_eq!(bg.guard(2.0, None, 19), Some(19));
        // They go: the guard lets go.
        assert_eq!(bg.guard(0.0, Some(3.0), 19), None);
    }

    #[test]
    fn background_keeps_room_for_others_and_takes_it_back_when_they_go() {
        let load = |running, waiting| Load { running, waiting };
        let calm = Lately { running: 32.0, queued: true };
        let mut bg = Background::default();
        // Until a queue shows the capacity: the ordinary controller's limit.
        assert_eq!(bg.observe(load(20.0, 0.0), calm, 20), (0.0, 0.0));
        assert_eq!(background_limit(40, 20, load(20.0, 0.0), calm, (bg.capacity, 0.0, 0.0), 4096), 40);
        // 32 run, 3 wait, 35 of ours in flight: capacity 32, no others.
        assert_eq!(bg.observe(load(32.0, 3.0), calm, 35), (0.0, 0.0));
        assert_eq!(bg.capacity, Some(32.0));
        // Alone: the whole capacity, no queue of ours.
        assert_eq!(background_limit(40, 35, load(32.0, 3.0), calm, (bg.capacity, 0.0, 0.0), 4096), 32);
        // Two interactive requests appear (34 at the upstream, 32 ours): room for 2 + 1.
        let (now, peak) = bg.observe(load(32.0, 2.0), calm, 32);
        assert_eq!((now, peak), (2.0, 2.0));
        // Something waits while others are present: below what runs, less others, less one.
        assert_eq!(background_limit(32, 32, load(32.0, 2.0), calm, (bg.capacity, now, peak), 4096), 29);
        // They finish; their peak is remembered for OTHERS_LOOKS looks, then the room returns.
        for _ in 0..OTHERS_LOOKS - 1 {
            let (now, peak) = bg.observe(load(29.0, 0.0), calm, 29);
            assert_eq!((now, peak), (0.0, 2.0));
            assert_eq!(background_limit(32, 29, load(29.0, 0.0), calm, (bg.capacity, now, peak), 4096), 29);
        }
        let (now, peak) = bg.observe(load(29.0, 0.0), calm, 29);
        assert_eq!(background_limit(32, 29, load(29.0, 0.0), calm, (bg.capacity, now, peak), 4096), 32);
        // Alone and no queue for 30 s with every slot used: probe an eighth more.
        let quiet = Lately { running: 32.0, queued: false };
        assert_eq!(background_limit(32, 32, load(32.0, 0.0), quiet, (Some(32.0), 0.0, 0.0), 4096), 36);
    }

    #[test]
    fn latency_fallback_is_aimd() {
        let ms = Duration::from_millis;
        assert_eq!(from_latency(100, 100, ms(30), ms(20), (8, 4096), None), 112);
        assert_eq!(from_latency(100, 100, ms(50), ms(20), (8, 4096), None), 80);
        assert_eq!(from_latency(100, 10, ms(20), ms(20), (8, 4096), None), 100);
        // Slow start doubles while latency holds, up to its end, and stops when latency rises.
        assert_eq!(from_latency(8, 8, ms(20), ms(20), (8, 4096), Some(256)), 16);
        assert_eq!(from_latency(200, 200, ms(20), ms(20), (8, 4096), Some(256)), 256);
        assert_eq!(from_latency(256, 256, ms(20), ms(20), (8, 4096), Some(256)), 288);
        assert_eq!(from_latency(16, 16, ms(50), ms(20), (8, 4096), Some(256)), 12);
    }

    #[tokio::test]
    async fn shrinking_below_what_is_out_retires_permits_as_they_return() {
        let limit = Limit::new(4);
        let slots: Vec<Slot> = futures_util::future::join_all((0..4).map(|_| limit.acquire())).await;
        assert_eq!(limit.in_flight(), 4);
        limit.set(2);
        assert_eq!(limit.available(), 0);
        drop(slots);
        // Two came back to the pool, two were retired.
        assert_eq!(limit.available(), 2);
        assert_eq!(limit.in_flight(), 0);
        limit.set(5);
        assert_eq!(limit.available(), 5);
        let _a = limit.acquire().await;
        limit.set(1);
        assert_eq!(limit.available(), 0);
        assert_eq!(limit.in_flight(), 1);
    }
}
