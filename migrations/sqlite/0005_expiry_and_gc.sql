-- File expiry and the garbage collector. Expired files are found by `expires_at`; the
-- collector runs in one process at a time, under a lease on its row here (database time).
CREATE INDEX files_expires ON files (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE job_leases (
    name         TEXT    PRIMARY KEY,
    owner        TEXT,
    lease_until  INTEGER NOT NULL DEFAULT 0
);
