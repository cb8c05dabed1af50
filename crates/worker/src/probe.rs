//! Bringing a down upstream back: while an upstream is down (see `vllm_batch_upstream::health`)
//! nothing is sent to it, and this loop asks it `GET …/models` with backoff (0.5 s doubling to
//! 10 s). The first answer marks it up; the adaptive in-flight limit then restarts low and ramps
//! as at start, so a server that just loaded is not hit with the whole backlog at once. Time
//! spent down is counted in `vllm_upstream_down_seconds_total`. A *suspect* upstream (up, one
//! or two outage failures) is probed too, every 0.5 s: failed probes count like failed requests,
//! so a dead server takes about a second to be marked down even when no traffic goes to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vllm_batch_metrics::metrics;
use vllm_batch_upstream::UpstreamError;

use crate::{Concurrency, Shared};

const FIRST_PROBE: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes upstream `i` whenever it is down or suspect, until `shutdown`.
pub(crate) async fn probe_loop(s: Arc<Shared>, i: usize, shutdown: CancellationToken) {
    let health = s.router.upstreams.health().clone();
    let label = i.to_string();
    let mut suspect_wait = FIRST_PROBE;
    loop {
        // Wait for the upstream to become suspect or go down.
        let mut changed = health.subscribe();
        changed.borrow_and_update();
        if health.is_up(i) && !health.is_suspect(i) {
            suspect_wait = FIRST_PROBE;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.changed() => continue,
            }
        }
        if health.is_suspect(i) {
            // A request met an outage failure there. Its retry went to another server, and
            // so may every later request (routing prefers free room), so the server's own
            // traffic may never say it is gone: the probe does. Failed probes count like failed
            // requests; an answer clears the suspicion.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(suspect_wait) => {}
            }
            if health.is_suspect(i) {
                let sent = Instant::now();
                match s.router.upstreams.models_within(i, PROBE_TIMEOUT).await {
                    Ok(_) => health.record_answer(i, sent),
                    Err(e) if e.is_outage() => {
                        health.record_outage(i, &e.to_string());
                    }
                    // Any other status is an answer: the server is there.
                    Err(UpstreamError::Status { .. }) => health.record_answer(i, sent),
                    // Too busy to answer in time: neither evidence; ask again later.
                    Err(_) => suspect_wait = (suspect_wait * 2).min(LONGEST_WAIT),
                }
            }
            continue;
        }
        let mut wait = FIRST_PROBE;
        let mut counted = Instant::now();
        while !health.is_up(i) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                // Another change of state (a fresh answer) may have brought it back.
                _ = changed.changed() => {}
            }
            metrics().upstream_down_seconds.with_label_values(&[&label]).inc_by(counted.elapsed().as_secs_f64());
            counted = Instant::now();
            if health.is_up(i) {
                break;
            }
            health.probing(i);
            let sent = Instant::now();
            match s.router.upstreams.models_within(i, PROBE_TIMEOUT).await {
                Ok(_) => health.record_answer(i, sent),
                Err(e) => {
                    tracing::debug!(upstream = i, error = %e, ?wait, "upstream still down");
                    health.probe_failed(i, &e.to_string());
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
            }
        }
        metrics().upstream_down_seconds.with_label_values(&[&label]).inc_by(counted.elapsed().as_secs_f64());
        restart_low(&s, i);
        // The routes may have changed while it was down (a new model version).
        if let Err(e) = s.router.discover().await {
            tracing::warn!(error = %e, "model discovery after the upstream came back failed");
        }
    }
}

/// At start and after an outage, the adaptive limit starts from its floor and ramps (slow
/// start): the upstream's capacity is not known.
pub(crate) fn restart_low(s: &Shared, i: usize) {
    if let Concurrency::Adaptive { min, .. } = s.config.concurrency {
        let limit = &s.router.limits()[i];
        limit.restart(min, s.config.max_in_flight);
        metrics().upstream_concurrency_limit.with_label_values(&[&i.to_string()]).set(limit.current() as i64);
    }
}
