//! Webhooks in the database: endpoints (owner-scoped like files and batches), the outbox of
//! events and their deliveries, and the deliverer's claims. The `Webhooks` trait is part of
//! every `Store` (a supertrait), implemented here once for both databases.
//!
//! **Outbox.** `record_batch_end` runs inside the transaction that moves a batch to its end
//! (`completed`, `failed`, `expired`, `cancelled`): it inserts the event and one delivery per
//! subscribed endpoint, so an event exists exactly when the batch ended, whatever crashes
//! follow. Deliveries are claimed under a lease with a fence (as chunks are), on the database's
//! clock; every attempt is recorded.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
/// What one attempt got (the sender's record, stored as it is).
pub use vllm_batch_core::webhook::AttemptRecord;
use vllm_batch_core::webhook::{event_body, new_delivery_id, new_event_id, EventType};
use vllm_batch_core::BatchStatus;

use crate::model::{Page, Scope};
use crate::queue::SqlStore;
use crate::{Result, StoreError};

/// The fixed id of the operator-level endpoint (`--webhook-url`).
pub const OPERATOR_ENDPOINT_ID: &str = "we_operator";

/// How long a rotated-out secret keeps signing with `keep_old_secret_active_for_24_hours`.
const OLD_SECRET_MS: i64 = 24 * 3600 * 1000;

/// A stored webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    /// `None`: operator-level (receives every batch's events).
    pub owner: Option<String>,
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// The current signing secret (`whsec_…`).
    pub secret: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes of `POST /v1/webhook_endpoints/{id}`; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointUpdate {
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The `webhook-id` header.
    pub id: String,
    pub fence: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub endpoint_id: String,
    pub url: String,
    /// The event's JSON, exactly as stored.
    pub body: String,
    /// Secrets to sign with: the current one, and the previous one while it is still active.
    pub secrets: Vec<String>,
}

/// When deliveries are retried: `base`, doubling per failed attempt, at most `max`; a delivery
/// whose next attempt would fall later than `horizon` after it was created is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub base_ms: i64,
    pub max_ms: i64,
    pub horizon_ms: i64,
}

impl RetrySchedule {
    /// 5 s, 10 s, 20 s, … capped at 1 h, for 24 h: about 32 attempts.
    pub const DEFAULT: RetrySchedule = RetrySchedule { base_ms: 5_000, max_ms: 3_600_000, horizon_ms: 24 * 3_600_000 };

    /// The same shape from another first delay (tests shrink it): cap and horizon scale along.
    pub fn from_base_ms(base_ms: i64) -> RetrySchedule {
        let d = RetrySchedule::DEFAULT;
        RetrySchedule {
            base_ms,
            max_ms: base_ms * (d.max_ms / d.base_ms),
            horizon_ms: base_ms * (d.horizon_ms / d.base_ms),
        }
    }

    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn delay_ms(&self, failures: i64) -> i64 {
        let doublings = (failures - 1).clamp(0, 40) as u32;
        self.base_ms.saturating_mul(1i64 << doublings.min(40)).min(self.max_ms)
    }
}

/// What became of a delivery after an attempt.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed, and the schedule is spent: the delivery is `failed` for good.
    Exhausted,
    /// Another deliverer took it over (the lease lapsed), or the endpoint was deleted.
    Lost,
}

/// State of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown delivery state {s:?}"))
    }
}

/// A delivery and its event, for inspection.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub state: DeliveryState,
    pub attempts: i64,
    /// `(attempt, status_code, error)` of each attempt, in order.
    pub history: Vec<(i64, Option<i64>, Option<String>)>,
}

const PENDING: &str = DeliveryState::Pending.as_str();
const DELIVERED: &str = DeliveryState::Delivered.as_str();
const FAILED: &str = DeliveryState::Failed.as_str();

/// Webhook endpoints and deliveries: part of every `Store`.
#[async_trait]
pub trait Webhooks: Send + Sync {
    async fn insert_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<()>;
    async fn get_webhook_endpoint(&self, id: &str, scope: Scope<'_>) -> Result<Option<WebhookEndpoint>>;
    /// Newest first.
    async fn list_webhook_endpoints(
        &self,
        after: Option<&str>,
        limit: i64,
        scope: Scope<'_>,
    ) -> Result<Page<WebhookEndpoint>>;
    /// Applies the changes; `updated_at` moves only when something changed.
    async fn update_webhook_endpoint(
        &self,
        id: &str,
        scope: Scope<'_>,
        update: &WebhookEndpointUpdate,
        now: i64,
    ) -> Result<Option<WebhookEndpoint>>;
    /// Replaces the secret; with `keep_old` the old one keeps signing for 24 hours (database
    /// time).
    async fn rotate_webhook_secret(
        &self,
        id: &str,
        scope: Scope<'_>,
        secret: &str,
        keep_old: bool,
        now: i64,
    ) -> Result<Option<WebhookEndpoint>>;
    /// Deletes the endpoint and its pending deliveries; false when there is none.
    async fn delete_webhook_endpoint(&self, id: &str, scope: Scope<'_>) -> Result<bool>;
    /// Creates or updates the operator-level endpoint (`we_operator`, every event type).
    async fn upsert_operator_endpoint(&self, url: &str, secret: &str, now: i64) -> Result<()>;

    /// Claims up to `limit` due deliveries for `lease_ms` (database time).
    async fn claim_webhook_deliveries(&self, worker: &str, lease_ms: i64, limit: i64) -> Result<Vec<DueDelivery>>;
    /// Records an attempt of a claimed delivery and schedules the next one (or ends it).
    async fn record_webhook_attempt(
        &self,
        delivery: &DueDelivery,
        attempt: &AttemptRecord,
        schedule: &RetrySchedule,
    ) -> Result<DeliveryOutcome>;
    /// Deliveries not yet delivered nor given up.
    async fn pending_webhook_deliveries(&self) -> Result<i64>;
    /// Removes the history of deliveries that ended (delivered or given up) more than `keep_ms`
    /// ago (database time) — their attempts, and events left without deliveries. Returns the
    /// deliveries removed.
    async fn prune_webhook_history(&self, keep_ms: i64) -> Result<u64>;
    /// The types of the events a batch sent, oldest first.
    async fn batch_webhook_events(&self, batch_id: &str) -> Result<Vec<String>>;
    /// The deliveries of a batch's events, with their attempts.
    async fn batch_webhook_deliveries(&self, batch_id: &str) -> Result<Vec<DeliveryInfo>>;
}

const ENDPOINT_COLUMNS: &str = "id, owner, name, url, event_types, secret, created_at, updated_at";

fn endpoint_from_row(r: &AnyRow) -> Result<WebhookEndpoint> {
    let types: String = r.try_get("event_types")?;
    Ok(WebhookEndpoint {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        event_types: serde_json::from_str(&types).map_err(|e| StoreError::Corrupt(format!("event_types: {e}")))?,
        secret: r.try_get("secret")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn types_column(types: &[String]) -> String {
    serde_json::to_string(types).expect("strings serialise")
}

/// The outbox write of a batch that just ended with `status`, inside the transaction that
/// ended it: the event, and one pending delivery per endpoint subscribed to its type whose
/// owner is the batch's owner, plus every operator-level endpoint (owner NULL). `now_ms` is
/// the database clock's SQL expression. Statuses that are not an end record nothing.
pub(crate) async fn record_batch_end(
    tx: &mut Transaction<'static, Any>,
    now_ms: &str,
    batch_id: &str,
    status: BatchStatus,
    created_at: i64,
) -> Result<()> {
    let Some(kind) = EventType::for_status(status) else { return Ok(()) };
    let owner: Option<String> =
        sqlx::query_scalar("SELECT owner FROM batches WHERE id = $1").bind(batch_id).fetch_one(&mut **tx).await?;
    let event_id = new_event_id();
    sqlx::query(
        "INSERT INTO webhook_events (id, type, batch_id, owner, created_at, body) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event_id)
    .bind(kind.as_str())
    .bind(batch_id)
    .bind(owner.as_deref())
    .bind(created_at)
    .bind(event_body(&event_id, kind, created_at, batch_id))
    .execute(&mut **tx)
    .await?;
    let endpoints: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE (owner IS NULL OR owner = $1) AND event_types LIKE $2 ORDER BY seq",
    )
    .bind(owner.as_deref())
    .bind(format!("%\"{}\"%", kind.as_str()))
    .fetch_all(&mut **tx)
    .await?;
    let sql = format!(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, state, created_ms, next_attempt_ms)
         VALUES ($1, $2, $3, '{PENDING}', {now_ms}, {now_ms})"
    );
    for endpoint in endpoints {
        sqlx::query(&sql).bind(new_delivery_id()).bind(&event_id).bind(endpoint).execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl Webhooks for SqlStore {
    async fn insert_webhook_endpoint(&self, e: &WebhookEndpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, owner, name, url, event_types, secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&e.id)
        .bind(e.owner.as_deref())
        .bind(&e.name)
        .bind(&e.url)
        .bind(types_column(&e.event_types))
        .bind(&e.secret)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn get_webhook_endpoint(&self, id: &str, scope: Scope<'_>) -> Result<Option<WebhookEndpoint>> {
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND ($2 IS NULL OR owner = $2)");
        let row = sqlx::query(&sql).bind(id).bind(scope).fetch_optional(self.pool()).await?;
        row.map(|r| endpoint_from_row(&r)).transpose()
    }

    async fn list_webhook_endpoints(
        &self,
        after: Option<&str>,
        limit: i64,
        scope: Scope<'_>,
    ) -> Result<Page<WebhookEndpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE ($1 IS NULL OR seq < (SELECT seq FROM webhook_endpoints WHERE id = $1 AND ($3 IS NULL OR owner = $3)))
               AND ($3 IS NULL OR owner = $3)
             ORDER BY seq DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(after).bind(limit + 1).bind(scope).fetch_all(self.pool()).await?;
        let items = rows.iter().map(endpoint_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit))
    }

    async fn update_webhook_endpoint(
        &self,
        id: &str,
        scope: Scope<'_>,
        u: &WebhookEndpointUpdate,
        now: i64,
    ) -> Result<Option<WebhookEndpoint>> {
        let Some(old) = self.get_webhook_endpoint(id, scope).await? else { return Ok(None) };
        let new = WebhookEndpoint {
            name: u.name.clone().unwrap_or_else(|| old.name.clone()),
            url: u.url.clone().unwrap_or_else(|| old.url.clone()),
            event_types: u.event_types.clone().unwrap_or_else(|| old.event_types.clone()),
            ..old.clone()
        };
        if new == old {
            return Ok(Some(old));
        }
        sqlx::query(
            "UPDATE webhook_endpoints SET name = $1, url = $2, event_types = $3, updated_at = $4
             WHERE id = $5 AND ($6 IS NULL OR owner = $6)",
        )
        .bind(&new.name)
        .bind(&new.url)
        .bind(types_column(&new.event_types))
        .bind(now)
        .bind(id)
        .bind(scope)
        .execute(self.pool())
        .await?;
        self.get_webhook_endpoint(id, scope).await
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        scope: Scope<'_>,
        secret: &str,
        keep_old: bool,
        now: i64,
    ) -> Result<Option<WebhookEndpoint>> {
        let sql = format!(
            "UPDATE webhook_endpoints SET
                 previous_secret = CASE WHEN $1 = 1 THEN secret ELSE NULL END,
                 previous_secret_until_ms = CASE WHEN $1 = 1 THEN {} + $2 ELSE NULL END,
                 secret = $3, updated_at = $4
             WHERE id = $5 AND ($6 IS NULL OR owner = $6)",
            self.now_ms_sql()
        );
        let done = sqlx::query(&sql)
            .bind(i64::from(keep_old))
            .bind(OLD_SECRET_MS)
            .bind(secret)
            .bind(now)
            .bind(id)
            .bind(scope)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_webhook_endpoint(id, scope).await
    }

    async fn delete_webhook_endpoint(&self, id: &str, scope: Scope<'_>) -> Result<bool> {
        let mut tx = self.begin_tx().await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND ($2 IS NULL OR owner = $2)")
            .bind(id)
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // Nothing is sent to an endpoint that no longer exists; past deliveries stay recorded.
        sqlx::query(&format!("DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND state = '{PENDING}'"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn upsert_operator_endpoint(&self, url: &str, secret: &str, now: i64) -> Result<()> {
        let types: Vec<String> = EventType::ALL.iter().map(|t| t.as_str().to_string()).collect();
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, owner, name, url, event_types, secret, created_at, updated_at)
             VALUES ($1, NULL, 'operator (--webhook-url)', $2, $3, $4, $5, $5)
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret,
                 event_types = excluded.event_types, previous_secret = NULL, previous_secret_until_ms = NULL,
                 updated_at = CASE WHEN webhook_endpoints.url = excluded.url AND webhook_endpoints.secret = excluded.secret
                                   THEN webhook_endpoints.updated_at ELSE excluded.updated_at END",
        )
        .bind(OPERATOR_ENDPOINT_ID)
        .bind(url)
        .bind(types_column(&types))
        .bind(secret)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn claim_webhook_deliveries(&self, worker: &str, lease_ms: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let now = self.now_ms_sql();
        // Due (database time), not held under a live lease: one statement (and on PostgreSQL a
        // row lock that passes over rows another deliverer is claiming), so two deliverers
        // never send one delivery at once; the new fence voids a previous holder's late record.
        let claimed: Vec<(String, i64)> = sqlx::query_as(&format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = {now} + $2, fence = fence + 1
             WHERE id IN (SELECT id FROM webhook_deliveries
                          WHERE state = '{PENDING}' AND next_attempt_ms <= {now}
                            AND (lease_until IS NULL OR lease_until < {now})
                          ORDER BY next_attempt_ms LIMIT $3 {lock})
             RETURNING id, fence",
            lock = self.skip_locked_sql("webhook_deliveries"),
        ))
        .bind(worker)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let sql = format!(
            "SELECT d.id, d.fence, d.attempts, ep.id AS endpoint_id, ep.url, e.body, ep.secret,
                    CASE WHEN ep.previous_secret_until_ms > {now} THEN ep.previous_secret ELSE NULL END AS previous
             FROM webhook_deliveries d
             JOIN webhook_events e ON e.id = d.event_id
             JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
             WHERE d.id = $1 AND d.fence = $2"
        );
        let mut due = Vec::with_capacity(claimed.len());
        for (id, fence) in claimed {
            let Some(r) = sqlx::query(&sql).bind(&id).bind(fence).fetch_optional(self.pool()).await? else {
                // Its endpoint is gone (deleted while the batch that made it was ending, so the
                // delete did not see it): nothing will ever receive it.
                sqlx::query(&format!(
                    "UPDATE webhook_deliveries SET state = '{FAILED}', last_error = 'endpoint deleted',
                         lease_owner = NULL, lease_until = NULL
                     WHERE id = $1 AND fence = $2 AND state = '{PENDING}'"
                ))
                .bind(&id)
                .bind(fence)
                .execute(self.pool())
                .await?;
                continue;
            };
            let previous: Option<String> = r.try_get("previous")?;
            due.push(DueDelivery {
                id: r.try_get("id")?,
                fence: r.try_get("fence")?,
                attempts: r.try_get("attempts")?,
                endpoint_id: r.try_get("endpoint_id")?,
                url: r.try_get("url")?,
                body: r.try_get("body")?,
                secrets: std::iter::once(r.try_get("secret")?).chain(previous).collect(),
            });
        }
        Ok(due)
    }

    async fn record_webhook_attempt(
        &self,
        d: &DueDelivery,
        a: &AttemptRecord,
        schedule: &RetrySchedule,
    ) -> Result<DeliveryOutcome> {
        let now = self.now_ms_sql();
        let attempt = d.attempts + 1;
        let delay = schedule.delay_ms(attempt);
        let mut tx = self.begin_tx().await?;
        // Fenced, and once per claim: a deliverer whose lease lapsed (and whose delivery another
        // one took) records nothing. Given up once the next attempt would come later than the horizon.
        let state: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE webhook_deliveries SET attempts = $1, last_status = $2, last_error = $3,
                 lease_owner = NULL, lease_until = NULL,
                 state = CASE WHEN $4 = 1 THEN '{DELIVERED}'
                              WHEN {now} + $5 > created_ms + $6 THEN '{FAILED}' ELSE '{PENDING}' END,
                 next_attempt_ms = {now} + $5,
                 delivered_ms = CASE WHEN $4 = 1 THEN {now} ELSE NULL END
             WHERE id = $7 AND fence = $8 AND state = '{PENDING}' AND lease_owner IS NOT NULL
             RETURNING state"
        ))
        .bind(attempt)
        .bind(a.status_code.map(i64::from))
        .bind(a.error.as_deref())
        .bind(i64::from(a.succeeded()))
        .bind(delay)
        .bind(schedule.horizon_ms)
        .bind(&d.id)
        .bind(d.fence)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(state) = state else { return Ok(DeliveryOutcome::Lost) };
        sqlx::query(&format!(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at_ms, status_code, error, duration_ms)
             VALUES ($1, $2, {now}, $3, $4, $5)"
        ))
        .bind(&d.id)
        .bind(attempt)
        .bind(a.status_code.map(i64::from))
        .bind(a.error.as_deref())
        .bind(a.duration_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match state.parse::<DeliveryState>().map_err(StoreError::Corrupt)? {
            DeliveryState::Delivered => DeliveryOutcome::Delivered,
            DeliveryState::Failed => DeliveryOutcome::Exhausted,
            DeliveryState::Pending => DeliveryOutcome::Retrying,
        })
    }

    async fn pending_webhook_deliveries(&self) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM webhook_deliveries WHERE state = '{PENDING}'");
        Ok(sqlx::query_scalar(&sql).fetch_one(self.pool()).await?)
    }

    async fn prune_webhook_history(&self, keep_ms: i64) -> Result<u64> {
        let now = self.now_ms_sql();
        let old = format!("state <> '{PENDING}' AND next_attempt_ms < {now} - $1");
        let mut tx = self.begin_tx().await?;
        sqlx::query(&format!(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE {old})"
        ))
        .bind(keep_ms)
        .execute(&mut *tx)
        .await?;
        let removed =
            sqlx::query(&format!("DELETE FROM webhook_deliveries WHERE {old}")).bind(keep_ms).execute(&mut *tx).await?;
        sqlx::query(&format!(
            "DELETE FROM webhook_events WHERE created_at < ({now} - $1) / 1000
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)"
        ))
        .bind(keep_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(removed.rows_affected())
    }

    async fn batch_webhook_events(&self, batch_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT type FROM webhook_events WHERE batch_id = $1 ORDER BY seq")
            .bind(batch_id)
            .fetch_all(self.pool())
            .await?)
    }

    async fn batch_webhook_deliveries(&self, batch_id: &str) -> Result<Vec<DeliveryInfo>> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.type, d.endpoint_id, d.state, d.attempts
             FROM webhook_events e JOIN webhook_deliveries d ON d.event_id = e.id
             WHERE e.batch_id = $1 ORDER BY e.seq, d.endpoint_id",
        )
        .bind(batch_id)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            let history: Vec<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT attempt, status_code, error FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(self.pool())
            .await?;
            let state: String = r.try_get("state")?;
            out.push(DeliveryInfo {
                id,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("type")?,
                endpoint_id: r.try_get("endpoint_id")?,
                state: state.parse().map_err(StoreError::Corrupt)?,
                attempts: r.try_get("attempts")?,
                history,
            });
        }
        Ok(out)
    }
}
