-- Webhooks: endpoints (OpenAI's `webhook_endpoint` objects), the events batches send when they
-- end, and their deliveries — an outbox: an event and one delivery per subscribed endpoint are
-- inserted in the transaction that ends the batch, and the worker's deliverer sends them with
-- retries. `*_ms` columns are Unix milliseconds on the database's clock.

CREATE TABLE webhook_endpoints (
    seq                       BIGSERIAL PRIMARY KEY,
    id                        TEXT    NOT NULL UNIQUE,
    -- NULL: an operator-level endpoint (created without a key, or `--webhook-url`): it
    -- receives every batch's events.
    owner                     TEXT,
    name                      TEXT    NOT NULL,
    url                       TEXT    NOT NULL,
    -- JSON array of event types, e.g. ["batch.completed","batch.failed"].
    event_types               TEXT    NOT NULL,
    secret                    TEXT    NOT NULL,
    -- Kept for 24 hours after a rotation with `keep_old_secret_active_for_24_hours`:
    -- deliveries are signed with both until then.
    previous_secret           TEXT,
    previous_secret_until_ms  BIGINT,
    created_at                BIGINT  NOT NULL,
    updated_at                BIGINT  NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner, seq);

CREATE TABLE webhook_events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    batch_id    TEXT    NOT NULL,
    owner       TEXT,
    created_at  BIGINT  NOT NULL,
    -- The JSON body exactly as it is sent.
    body        TEXT    NOT NULL
);
CREATE INDEX webhook_events_batch ON webhook_events (batch_id);

CREATE TABLE webhook_deliveries (
    -- The `webhook-id` header, the same on every attempt, so receivers can deduplicate.
    id               TEXT    PRIMARY KEY,
    event_id         TEXT    NOT NULL,
    endpoint_id      TEXT    NOT NULL,
    -- pending | delivered | failed
    state            TEXT    NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    created_ms       BIGINT  NOT NULL,
    next_attempt_ms  BIGINT  NOT NULL,
    -- Held by one deliverer at a time (as chunks are), under a fence.
    lease_owner      TEXT,
    lease_until      BIGINT,
    fence            BIGINT  NOT NULL DEFAULT 0,
    last_status      BIGINT,
    last_error       TEXT,
    delivered_ms     BIGINT 
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_ms);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, state);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- Every attempt of every delivery, with the receiver's status code or the error.
CREATE TABLE webhook_attempts (
    delivery_id  TEXT    NOT NULL,
    attempt      BIGINT  NOT NULL,
    at_ms        BIGINT  NOT NULL,
    status_code  BIGINT,
    error        TEXT,
    duration_ms  BIGINT  NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
