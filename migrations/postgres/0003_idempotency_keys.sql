-- `Idempotency-Key` of POST /v1/files and POST /v1/batches: the first request with a key
-- reserves it (response NULL while it runs) and records its answer; a retry with the same key
-- and the same request gets that answer again, for 24 hours. Owner '' = created without a key.
CREATE TABLE idempotency_keys (
    owner         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    response      TEXT,
    created_ms    BIGINT  NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_ms);
