//! The webhook deliverer: sends the outbox's deliveries (recorded with the batch's end, see
//! `vllm_batch_store::webhooks`) to their endpoints. It runs in every worker (embedded in
//! `serve` or standalone); deliveries are claimed under a lease on the database's clock, so
//! several workers share the work and none sends a delivery another holds.
//!
//! Its own task, its own HTTP client (no redirects, `webhook_timeout` per attempt) and at most
//! `MAX_IN_FLIGHT` sends at once: a slow or dead receiver never holds up chunk work. A 2xx
//! delivers; anything else is a failed attempt, retried on `WorkerConfig::webhook_retry`
//! (5 s doubling to 1 h, given up 24 h after the event). Every attempt is recorded; the
//! `webhook-id` stays the delivery's own on every attempt, the signature is made afresh. The
//! history of ended deliveries is kept 30 days.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};
use vllm_batch_core::webhook::Secret;
use vllm_batch_metrics::metrics;
use vllm_batch_store::webhooks::{AttemptRecord, DeliveryOutcome, DueDelivery};
use vllm_batch_upstream::webhook::WebhookClient;

use crate::Shared;

/// Deliveries sent at once by one worker.
const MAX_IN_FLIGHT: usize = 16;
/// How often the pending-deliveries gauge is read from the database.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// How long the history of ended deliveries (and their events) is kept, and how often it is
/// pruned.
const HISTORY_KEPT: Duration = Duration::from_secs(30 * 86_400);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub(crate) async fn run_loop(s: Arc<Shared>, shutdown: CancellationToken) {
    let client = WebhookClient::new(s.config.webhook_timeout);
    // Held while one attempt may last, and then some: a worker that dies mid-send leaves the
    // delivery to another after this.
    let lease_ms = (s.config.webhook_timeout + Duration::from_secs(30)).as_millis() as i64;
    // Once a second (a fifth of the first retry delay when tests shrink it): a new event waits
    // at most that long, and an idle worker costs the database one cheap query a second, not
    // one per `--poll-interval` (the chunk loops' tempo, 50 ms in tests).
    let tick = Duration::from_millis((s.config.webhook_retry.base_ms / 5).clamp(50, 1000) as u64);
    let mut sending: JoinSet<()> = JoinSet::new();
    let mut gauge_due = tokio::time::Instant::now();
    let mut prune_due = tokio::time::Instant::now();
    while !shutdown.is_cancelled() {
        while let Some(done) = sending.try_join_next() {
            if let Err(e) = done {
                error!(error = %e, "webhook delivery task failed");
            }
        }
        let room = MAX_IN_FLIGHT - sending.len();
        if room > 0 {
            match s.store.claim_webhook_deliveries(&s.config.worker_id, lease_ms, room as i64).await {
                Ok(due) => {
                    for delivery in due {
                        let span =
                            tracing::info_span!("webhook", delivery = %delivery.id, endpoint = %delivery.endpoint_id);
                        sending.spawn(deliver(s.clone(), client.clone(), delivery).instrument(span));
                    }
                }
                Err(e) => warn!(error = %e, "could not claim webhook deliveries"),
            }
        }
        if tokio::time::Instant::now() >= gauge_due {
            gauge_due += GAUGE_EVERY;
            match s.store.pending_webhook_deliveries().await {
                Ok(n) => metrics().webhook_pending.set(n),
                Err(e) => debug!(error = %e, "could not count pending webhook deliveries"),
            }
        }
        if tokio::time::Instant::now() >= prune_due {
            prune_due += PRUNE_EVERY;
            match s.store.prune_webhook_history(HISTORY_KEPT.as_millis() as i64).await {
                Ok(0) => {}
                Ok(n) => info!(deliveries = n, "pruned webhook delivery history older than 30 days"),
                Err(e) => debug!(error = %e, "could not prune webhook history"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    // Sends under way end within their timeout; their outcomes are recorded.
    while let Some(done) = sending.join_next().await {
        if let Err(e) = done {
            error!(error = %e, "webhook delivery task failed");
        }
    }
}

/// One attempt of one claimed delivery, recorded.
async fn deliver(s: Arc<Shared>, client: WebhookClient, d: DueDelivery) {
    let secrets: Result<Vec<Secret>, String> = d.secrets.iter().map(|t| Secret::parse(t)).collect();
    let attempt = match secrets {
        Ok(secrets) => {
            let refs: Vec<&Secret> = secrets.iter().collect();
            client.send(&d.url, &d.id, &d.body, &refs).await
        }
        Err(e) => {
            AttemptRecord { status_code: None, error: Some(format!("unusable signing secret: {e}")), duration_ms: 0 }
        }
    };
    let m = metrics();
    match s.store.record_webhook_attempt(&d, &attempt, &s.config.webhook_retry).await {
        Ok(DeliveryOutcome::Delivered) => {
            m.webhook_deliveries.with_label_values(&["delivered"]).inc();
            info!(attempt = d.attempts + 1, status = attempt.status_code, "webhook delivered");
        }
        Ok(DeliveryOutcome::Retrying) => {
            m.webhook_deliveries.with_label_values(&["error"]).inc();
            let next = s.config.webhook_retry.delay_ms(d.attempts + 1);
            warn!(
                attempt = d.attempts + 1,
                error = attempt.error.as_deref().unwrap_or(""),
                retry_in_ms = next,
                "webhook delivery failed; retrying"
            );
        }
        Ok(DeliveryOutcome::Exhausted) => {
            m.webhook_deliveries.with_label_values(&["exhausted"]).inc();
            warn!(
                attempt = d.attempts + 1,
                error = attempt.error.as_deref().unwrap_or(""),
                "webhook delivery failed; retries spent, giving up"
            );
        }
        Ok(DeliveryOutcome::Lost) => debug!("webhook delivery taken over (lease lapsed) or its endpoint deleted"),
        Err(e) => warn!(error = %e, "could not record a webhook attempt; the delivery is retried after its lease"),
    }
}
