-- API keys (only a salted hash of each key is stored) and the owner of every file and batch.
-- A NULL owner means the object was created without a key (loopback or --insecure-no-auth).

CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL UNIQUE,
    salt          TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

ALTER TABLE files ADD COLUMN owner TEXT;
ALTER TABLE batches ADD COLUMN owner TEXT;
CREATE INDEX files_owner ON files (owner, seq);
CREATE INDEX batches_owner ON batches (owner, status);
