-- vllm-batch schema, PostgreSQL flavour: the same tables and columns as migrations/sqlite
-- (0001 + 0002), so one row mapping serves both. Rows grow with files, batches and chunks,
-- never with requests. Times are Unix seconds, `*_ms` columns Unix milliseconds.

CREATE TABLE files (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    bytes       BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT,
    filename    TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'processed',
    -- NULL: created without a key (loopback or --insecure-no-auth).
    owner       TEXT
);
CREATE INDEX files_purpose ON files (purpose, seq);
CREATE INDEX files_owner ON files (owner, seq);

CREATE TABLE batches (
    seq                     BIGSERIAL PRIMARY KEY,
    id                      TEXT    NOT NULL UNIQUE,
    endpoint                TEXT    NOT NULL,
    model                   TEXT,
    input_file_id           TEXT    NOT NULL,
    completion_window       TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    output_file_id          TEXT,
    error_file_id           TEXT,
    planned_output_file_id  TEXT    NOT NULL,
    planned_error_file_id   TEXT    NOT NULL,
    output_expires_after    BIGINT,
    errors                  TEXT,
    metadata                TEXT,
    created_at              BIGINT  NOT NULL,
    in_progress_at          BIGINT,
    expires_at              BIGINT  NOT NULL,
    finalizing_at           BIGINT,
    completed_at            BIGINT,
    failed_at               BIGINT,
    expired_at              BIGINT,
    cancelling_at           BIGINT,
    cancelled_at            BIGINT,
    first_dispatch_at       BIGINT,
    total                   BIGINT  NOT NULL DEFAULT 0,
    completed               BIGINT  NOT NULL DEFAULT 0,
    failed                  BIGINT  NOT NULL DEFAULT 0,
    input_tokens            BIGINT  NOT NULL DEFAULT 0,
    cached_tokens           BIGINT  NOT NULL DEFAULT 0,
    output_tokens           BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens        BIGINT  NOT NULL DEFAULT 0,
    total_tokens            BIGINT  NOT NULL DEFAULT 0,
    -- The one job (validation or finalization) a worker holds on the batch: owner, lease, fence.
    job_owner               TEXT,
    job_lease_until         BIGINT,
    job_fence               BIGINT  NOT NULL DEFAULT 0,
    -- When a chunk of this batch was last claimed: claims go to the batch waiting longest.
    last_claim_ms           BIGINT  NOT NULL DEFAULT 0,
    owner                   TEXT
);
CREATE INDEX batches_status ON batches (status, last_claim_ms, seq);
CREATE INDEX batches_input_file ON batches (input_file_id);
CREATE INDEX batches_owner ON batches (owner, status);

CREATE TABLE chunks (
    batch_id      TEXT    NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx           BIGINT  NOT NULL,
    first_line    BIGINT  NOT NULL,
    line_count    BIGINT  NOT NULL,
    byte_start    BIGINT  NOT NULL,
    byte_end      BIGINT  NOT NULL,
    -- pending → leased → done; pending/leased → abandoned when cancel or expiry takes it.
    state         TEXT    NOT NULL DEFAULT 'pending',
    owner         TEXT,
    lease_until   BIGINT,
    fence         BIGINT  NOT NULL DEFAULT 0,
    done_fence    BIGINT,
    completed     BIGINT  NOT NULL DEFAULT 0,
    failed        BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX chunks_state ON chunks (batch_id, state, idx);
-- Claims look for claimable chunks across every running batch.
CREATE INDEX chunks_claimable ON chunks (state, lease_until) WHERE state IN ('pending', 'leased');

-- API keys: only a salted hash of each key is stored.
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL UNIQUE,
    salt          TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
