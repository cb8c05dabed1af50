-- vllm-batch schema, SQLite flavour. Rows grow with files, batches and chunks, never with requests.

CREATE TABLE files (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    filename    TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'processed'
);
CREATE INDEX files_purpose ON files (purpose, seq);

CREATE TABLE batches (
    seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
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
    output_expires_after    INTEGER,
    errors                  TEXT,
    metadata                TEXT,
    created_at              INTEGER NOT NULL,
    in_progress_at          INTEGER,
    expires_at              INTEGER NOT NULL,
    finalizing_at           INTEGER,
    completed_at            INTEGER,
    failed_at               INTEGER,
    expired_at              INTEGER,
    cancelling_at           INTEGER,
    cancelled_at            INTEGER,
    first_dispatch_at       INTEGER,
    total                   INTEGER NOT NULL DEFAULT 0,
    completed               INTEGER NOT NULL DEFAULT 0,
    failed                  INTEGER NOT NULL DEFAULT 0,
    input_tokens            INTEGER NOT NULL DEFAULT 0,
    cached_tokens           INTEGER NOT NULL DEFAULT 0,
    output_tokens           INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens        INTEGER NOT NULL DEFAULT 0,
    total_tokens            INTEGER NOT NULL DEFAULT 0,
    -- The one job (validation or finalization) a worker holds on the batch: owner, lease, fence.
    job_owner               TEXT,
    job_lease_until         INTEGER,
    job_fence               INTEGER NOT NULL DEFAULT 0,
    -- When a chunk of this batch was last claimed: claims go to the batch waiting longest.
    last_claim_ms           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX batches_status ON batches (status);
CREATE INDEX batches_input_file ON batches (input_file_id);

CREATE TABLE chunks (
    batch_id      TEXT    NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    first_line    INTEGER NOT NULL,
    line_count    INTEGER NOT NULL,
    byte_start    INTEGER NOT NULL,
    byte_end      INTEGER NOT NULL,
    -- pending → leased → done; pending/leased → abandoned when cancel or expiry takes it.
    state         TEXT    NOT NULL DEFAULT 'pending',
    owner         TEXT,
    lease_until   INTEGER,
    fence         INTEGER NOT NULL DEFAULT 0,
    done_fence    INTEGER,
    completed     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX chunks_state ON chunks (batch_id, state, idx);
