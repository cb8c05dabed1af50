//! The one `Store`: files, batches, chunks and leases in SQL that SQLite and PostgreSQL both run,
//! through sqlx's `Any` driver. Every decision — which chunk to claim, when a lease has expired,
//! how a batch ends, fair rotation, expiry — is made here, once. What the two databases do
//! differently is a handful of fragments, in `sqlite.rs` and `postgres.rs` (`Dialect`).
//!
//! Every lease and deadline is decided on the database's clock (`Dialect::now_ms`), never on
//! the calling process's: a worker whose clock is off neither steals a live lease nor keeps an
//! expired one. Timestamps users see (`created_at`, `in_progress_at`, …) are the process's.
//!
//! Every write a worker makes on a chunk or a batch job is conditioned on the fence it got when
//! claiming (`Fenced`), so a worker that lost its lease can never overwrite newer work.

use async_trait::async_trait;
use sqlx::AnyPool;
use sqlx::{Any, Row, Transaction};
use vllm_batch_core::time::unix_now;
use vllm_batch_core::{Batch, BatchId, BatchStatus, FileId, FileObject};

use crate::model::*;
use crate::rows::{
    batch_from_row, chunk_state, file_from_row, final_checkpoint, finalize_job_from_rows, job_from_row, key_from_row,
    lease_from_rows, parse, BATCH_COLUMNS, CHUNK_COLUMNS, KEY_COLUMNS,
};
use crate::webhooks::record_batch_end;
use crate::{postgres, sqlite, Result, Store, StoreError};

/// Which database a store speaks to, and the few SQL fragments that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database's clock, Unix milliseconds, as an SQL expression.
    fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::NOW_MS,
            Dialect::Postgres => postgres::NOW_MS,
        }
    }

    /// Row locks of a claim that pass over rows another claim holds (none on SQLite, whose
    /// write lock already excludes every other writer).
    fn skip_locked(self, table: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => format!("FOR UPDATE OF {table} SKIP LOCKED"),
        }
    }

    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE",
        }
    }

    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::BEGIN,
            Dialect::Postgres => postgres::BEGIN,
        }
    }

    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Dialect::Sqlite => &sqlite::MIGRATOR,
            Dialect::Postgres => &postgres::MIGRATOR,
        }
    }
}

/// Pool settings (`--db-*`) for either database; `default_max` connections unless set.
pub(crate) fn pool_options(cfg: &PoolConfig, default_max: u32) -> sqlx::any::AnyPoolOptions {
    sqlx::any::AnyPoolOptions::new()
        .max_connections(cfg.max_connections.unwrap_or(default_max))
        .min_connections(cfg.min_connections)
        .acquire_timeout(cfg.acquire_timeout)
        .idle_timeout(cfg.idle_timeout)
}

/// The store: a database (SQLite file or PostgreSQL) holding the whole queue.
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

const PENDING: &str = ChunkState::Pending.as_str();
const LEASED: &str = ChunkState::Leased.as_str();
const DONE: &str = ChunkState::Done.as_str();
const ABANDONED: &str = ChunkState::Abandoned.as_str();

/// Chunks inserted per statement (6 parameters each: far below either database's limit).
const CHUNKS_PER_INSERT: usize = 500;

impl SqlStore {
    /// Opens the database a URL names: `sqlite://PATH` (created if missing) or
    /// `postgres://…` / `postgresql://…`. Does not migrate.
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let (dialect, pool) = if url.starts_with("sqlite:") {
            (Dialect::Sqlite, sqlite::connect(url, pool).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Dialect::Postgres, postgres::connect(url, pool).await?)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                crate::redact_url(url)
            )));
        };
        Ok(SqlStore { pool, dialect })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn now(&self) -> &'static str {
        self.dialect.now_ms()
    }

    /// The database's clock in Unix seconds.
    fn now_s(&self) -> String {
        format!("({} / 1000)", self.now())
    }

    /// The condition on a `files` row that the collector may delete it: expired (database
    /// time) and the input of no unfinished batch.
    fn collectable(&self) -> String {
        format!(
            "files.expires_at IS NOT NULL AND files.expires_at <= {now_s}
               AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.input_file_id = files.id AND b.status IN {open})",
            now_s = self.now_s(),
            open = open_statuses_sql()
        )
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.pool.begin_with(self.dialect.begin()).await?)
    }

    // For the other modules of this crate that speak SQL (`webhooks.rs`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn now_ms_sql(&self) -> &'static str {
        self.now()
    }

    pub(crate) fn skip_locked_sql(&self, table: &str) -> String {
        self.dialect.skip_locked(table)
    }

    pub(crate) async fn begin_tx(&self) -> Result<Transaction<'static, Any>> {
        self.begin().await
    }

    /// The batch row with its live counts.
    async fn fetch_batch(&self, id: &str, scope: Scope<'_>) -> Result<Option<Batch>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batches b WHERE b.id = $1 AND ($2 IS NULL OR b.owner = $2)");
        let row = sqlx::query(&sql).bind(id).bind(scope).fetch_optional(&self.pool).await?;
        row.map(|r| batch_from_row(&r)).transpose()
    }

    /// Records a validated batch's chunks, a few hundred rows per statement.
    async fn insert_chunks(tx: &mut Transaction<'static, Any>, batch: &BatchId, chunks: &[ChunkSpec]) -> Result<()> {
        for group in chunks.chunks(CHUNKS_PER_INSERT) {
            let rows: Vec<String> = (0..group.len())
                .map(|i| {
                    let p = 2 + 5 * i;
                    format!("($1, ${p}, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4)
                })
                .collect();
            let sql = format!(
                "INSERT INTO chunks (batch_id, idx, first_line, line_count, byte_start, byte_end) VALUES {}",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(batch.as_str());
            for c in group {
                q = q.bind(c.idx).bind(c.first_line).bind(c.line_count).bind(c.byte_start).bind(c.byte_end);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Claims one finalization candidate, or `None` when it is no longer ready (a chunk is
    /// still under a live lease, or another worker got there first).
    async fn try_claim_finalization(
        &self,
        id: &str,
        status: BatchStatus,
        late: bool,
        worker: &str,
        lease_ms: i64,
    ) -> Result<Option<FinalizeJob>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        // Chunk rows first, then the batch row: the order every other transaction takes.
        let chunk_rows = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS}, state, done_fence, checkpoint,
                    CASE WHEN state = '{LEASED}' AND lease_until >= {now} THEN 1 ELSE 0 END AS live
             FROM chunks WHERE batch_id = $1 ORDER BY idx {}",
            self.dialect.for_update()
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        // Fenced claim of the batch job; the status check closes the race with a cancel.
        let fence: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE batches SET job_owner = $1, job_lease_until = {now} + $2, job_fence = job_fence + 1
             WHERE id = $3 AND status = $4 AND (job_lease_until IS NULL OR job_lease_until < {now})
             RETURNING job_fence"
        ))
        .bind(worker)
        .bind(lease_ms)
        .bind(id)
        .bind(status.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(fence) = fence else { return Ok(None) };
        let mut unfinished = 0;
        for r in &chunk_rows {
            // A live holder is still finishing its in-flight requests: not yet.
            if r.try_get::<i64, _>("live")? != 0 {
                return Ok(None);
            }
            if chunk_state(r)? != ChunkState::Done {
                unfinished += 1;
            }
        }
        let mode = FinalizeMode::decide(status, unfinished, late);
        // Chunks nobody holds any more are abandoned under a new fence, so a worker that wakes
        // up late cannot complete them after their lines were written as errors.
        sqlx::query(&format!(
            "UPDATE chunks SET state = '{ABANDONED}', fence = fence + 1, owner = NULL
             WHERE batch_id = $1 AND state IN ('{PENDING}', '{LEASED}')"
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if mode == FinalizeMode::Complete {
            sqlx::query("UPDATE batches SET status = $1, finalizing_at = COALESCE(finalizing_at, $2) WHERE id = $3")
                .bind(BatchStatus::Finalizing.as_str())
                .bind(unix_now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let b = sqlx::query(
            "SELECT input_file_id, planned_output_file_id, planned_error_file_id, created_at, output_expires_after
             FROM batches WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        finalize_job_from_rows(BatchJob { batch_id: parse(id)?, fence }, mode, &b, &chunk_rows).map(Some)
    }
}

fn counts_and_usage<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    completed: i64,
    failed: i64,
    u: &vllm_batch_core::Usage,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    q.bind(completed)
        .bind(failed)
        .bind(u.input_tokens)
        .bind(u.input_tokens_details.cached_tokens)
        .bind(u.output_tokens)
        .bind(u.output_tokens_details.reasoning_tokens)
        .bind(u.total_tokens)
}

/// `SET` of a batch's counts and usage, adding parameters `$first` … `$first + 6`
/// (as bound by `counts_and_usage`).
fn add_counts_sql(first: usize) -> String {
    let cols =
        ["completed", "failed", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens"];
    cols.iter().enumerate().map(|(i, c)| format!("{c} = {c} + ${}", first + i)).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl Store for SqlStore {
    async fn migrate(&self) -> Result<()> {
        self.dialect.migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn check_schema(&self) -> Result<()> {
        let probe = match self.dialect {
            Dialect::Sqlite => sqlite::HAS_MIGRATIONS_TABLE,
            Dialect::Postgres => postgres::HAS_MIGRATIONS_TABLE,
        };
        let table: i64 = sqlx::query_scalar(probe).fetch_one(&self.pool).await?;
        let applied: Vec<(i64, bool)> = if table == 0 {
            Vec::new()
        } else {
            let rows: Vec<(i64, i64)> =
                sqlx::query_as("SELECT version, CASE WHEN success THEN 1 ELSE 0 END FROM _sqlx_migrations")
                    .fetch_all(&self.pool)
                    .await?;
            rows.into_iter().map(|(v, ok)| (v, ok != 0)).collect()
        };
        crate::schema::check(self.dialect.migrator(), &applied)
    }

    async fn insert_file(&self, f: &FileObject, owner: Scope<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO files (id, bytes, created_at, expires_at, filename, purpose, status, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&f.id)
        .bind(f.bytes)
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(&f.filename)
        .bind(&f.purpose)
        .bind(&f.status)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_file(&self, id: &FileId, scope: Scope<'_>) -> Result<Option<FileObject>> {
        let sql = format!(
            "SELECT * FROM files WHERE id = $1 AND ($2 IS NULL OR owner = $2)
               AND (expires_at IS NULL OR expires_at > {})",
            self.now_s()
        );
        let row = sqlx::query(&sql).bind(id.as_str()).bind(scope).fetch_optional(&self.pool).await?;
        row.map(|r| file_from_row(&r)).transpose()
    }

    async fn list_files(&self, q: &FileListQuery, scope: Scope<'_>) -> Result<Page<FileObject>> {
        // PostgreSQL text cannot hold NUL, so no stored purpose has one: nothing matches.
        if q.purpose.as_deref().is_some_and(|p| p.contains('\0')) {
            return Ok(Page { items: Vec::new(), has_more: false });
        }
        let (cmp, order) = if q.ascending { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT * FROM files
             WHERE ($1 IS NULL OR purpose = $1)
               AND ($2 IS NULL OR seq {cmp} (SELECT seq FROM files WHERE id = $2 AND ($4 IS NULL OR owner = $4)))
               AND ($4 IS NULL OR owner = $4)
               AND (expires_at IS NULL OR expires_at > {now_s})
             ORDER BY seq {order} LIMIT $3",
            now_s = self.now_s()
        );
        let rows = sqlx::query(&sql)
            .bind(q.purpose.as_deref())
            .bind(q.after.as_ref().map(|a| a.as_str()))
            .bind(q.limit + 1)
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(file_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, q.limit))
    }

    async fn delete_file(&self, id: &FileId, scope: Scope<'_>) -> Result<bool> {
        if self.get_file(id, scope).await?.is_none() {
            return Ok(false);
        }
        let busy: Option<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM batches WHERE input_file_id = $1 AND status IN {} LIMIT 1",
            open_statuses_sql()
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(batch) = busy {
            return Err(StoreError::Conflict(format!(
                "File {id} is the input of batch {batch}, which has not finished; cancel it or wait for it to end first"
            )));
        }
        let done = sqlx::query("DELETE FROM files WHERE id = $1").bind(id.as_str()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_batch(&self, b: &NewBatch) -> Result<Option<Batch>> {
        let metadata = b.metadata.as_ref().map(|m| serde_json::to_string(m).expect("metadata serialises"));
        // Only while the input file exists and has not expired (database time), decided in the
        // statement itself: the collector removes a file only once it is expired and no open
        // batch reads it, so a batch never starts on a file being collected.
        let inserted = sqlx::query(&format!(
            "INSERT INTO batches (id, endpoint, input_file_id, completion_window, status,
                 planned_output_file_id, planned_error_file_id, output_expires_after, metadata,
                 created_at, expires_at, owner, priority)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
             WHERE EXISTS (SELECT 1 FROM files WHERE id = $3 AND (expires_at IS NULL OR expires_at > {}))",
            self.now_s()
        ))
        .bind(b.id.as_str())
        .bind(b.endpoint.as_str())
        .bind(b.input_file_id.as_str())
        .bind(b.completion_window.as_str())
        .bind(BatchStatus::Validating.as_str())
        .bind(FileId::generate().as_str())
        .bind(FileId::generate().as_str())
        .bind(b.output_expires_after)
        .bind(metadata)
        .bind(b.created_at)
        .bind(b.created_at + b.completion_window.seconds())
        .bind(b.owner.as_deref())
        .bind(b.priority)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        let batch = self.fetch_batch(b.id.as_str(), None).await?;
        batch.ok_or_else(|| StoreError::Corrupt("inserted batch vanished".into())).map(Some)
    }

    async fn get_batch(&self, id: &BatchId, scope: Scope<'_>) -> Result<Option<Batch>> {
        self.fetch_batch(id.as_str(), scope).await
    }

    async fn list_batches(&self, after: Option<&BatchId>, limit: i64, scope: Scope<'_>) -> Result<Page<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches b
             WHERE ($1 IS NULL OR b.seq < (SELECT seq FROM batches WHERE id = $1 AND ($3 IS NULL OR owner = $3)))
               AND ($3 IS NULL OR b.owner = $3)
             ORDER BY b.seq DESC LIMIT $2"
        );
        let rows =
            sqlx::query(&sql).bind(after.map(|a| a.as_str())).bind(limit + 1).bind(scope).fetch_all(&self.pool).await?;
        let items = rows.iter().map(batch_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit))
    }

    async fn count_open_batches(&self, owner: &str) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM batches WHERE owner = $1 AND status IN {}", open_statuses_sql());
        Ok(sqlx::query_scalar(&sql).bind(owner).fetch_one(&self.pool).await?)
    }

    async fn request_cancel(&self, id: &BatchId, scope: Scope<'_>) -> Result<Option<(Batch, bool)>> {
        if self.fetch_batch(id.as_str(), scope).await?.is_none() {
            return Ok(None);
        }
        let now = unix_now();
        let mut tx = self.begin().await?;
        // One statement, so a validator finishing at the same moment either sees `cancelled`
        // (its fenced update matches nothing) or has already moved the batch to `in_progress`.
        let changed = sqlx::query(
            "UPDATE batches SET
                 status = CASE status WHEN $3 THEN $5 ELSE $6 END,
                 cancelling_at = $2,
                 cancelled_at = CASE status WHEN $3 THEN $2 ELSE cancelled_at END
             WHERE id = $1 AND status IN ($3, $4)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(BatchStatus::Validating.as_str())
        .bind(BatchStatus::InProgress.as_str())
        .bind(BatchStatus::Cancelled.as_str())
        .bind(BatchStatus::Cancelling.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            // A batch still validating ended here: its event goes out with the change.
            let status: String = sqlx::query_scalar("SELECT status FROM batches WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await?;
            if status == BatchStatus::Cancelled.as_str() {
                record_batch_end(&mut tx, self.now(), id.as_str(), BatchStatus::Cancelled, now).await?;
            }
        }
        tx.commit().await?;
        let Some(batch) = self.fetch_batch(id.as_str(), scope).await? else { return Ok(None) };
        match batch.status {
            BatchStatus::Cancelling | BatchStatus::Cancelled => Ok(Some((batch, changed))),
            other => Err(StoreError::Conflict(format!("Cannot cancel a batch with status {other}."))),
        }
    }

    async fn claim_singleton(&self, name: &str, worker: &str, lease_ms: i64) -> Result<bool> {
        let now = self.now();
        sqlx::query("INSERT INTO job_leases (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&self.pool)
            .await?;
        let taken = sqlx::query(&format!(
            "UPDATE job_leases SET owner = $1, lease_until = {now} + $2
             WHERE name = $3 AND (lease_until < {now} OR owner = $1)"
        ))
        .bind(worker)
        .bind(lease_ms)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    async fn expired_files(&self, limit: i64) -> Result<Vec<FileObject>> {
        let sql = format!("SELECT * FROM files WHERE {} ORDER BY expires_at LIMIT $1", self.collectable());
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(file_from_row).collect()
    }

    async fn delete_expired_file(&self, id: &FileId) -> Result<bool> {
        let sql = format!("DELETE FROM files WHERE id = $1 AND {}", self.collectable());
        Ok(sqlx::query(&sql).bind(id.as_str()).execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn chunk_parts(&self, batch: &BatchId) -> Result<Option<Vec<ChunkParts>>> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM batches WHERE id = $1")
            .bind(batch.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(status) = status else { return Ok(None) };
        if status.parse::<BatchStatus>().map_err(StoreError::Corrupt)?.is_terminal() {
            return Ok(None);
        }
        let rows: Vec<(i64, i64, Option<String>)> =
            sqlx::query_as("SELECT idx, fence, checkpoint FROM chunks WHERE batch_id = $1 ORDER BY idx")
                .bind(batch.as_str())
                .fetch_all(&self.pool)
                .await?;
        let chunks = rows
            .into_iter()
            .map(|(idx, fence, checkpoint)| {
                Ok(ChunkParts { idx, fence, parts: Checkpoint::from_column(checkpoint.as_deref())?.parts })
            })
            .collect::<Result<_>>()?;
        Ok(Some(chunks))
    }

    async fn batch_progress(&self, id: &BatchId, scope: Scope<'_>, from_idx: i64) -> Result<Option<BatchProgress>> {
        let Some(batch) = self.fetch_batch(id.as_str(), scope).await? else { return Ok(None) };
        if batch.status.is_terminal() {
            return Ok(Some(BatchProgress { batch, chunks: Vec::new() }));
        }
        // Read after the batch row: if finalization ends the batch in between, these are its
        // final checkpoints (chunks keep them), and a part it has since deleted sends the reader
        // to the final file.
        let rows = sqlx::query(
            "SELECT idx, state, done_fence, checkpoint FROM chunks WHERE batch_id = $1 AND idx >= $2 ORDER BY idx",
        )
        .bind(id.as_str())
        .bind(from_idx)
        .fetch_all(&self.pool)
        .await?;
        let chunks = rows
            .iter()
            .map(|r| {
                let idx: i64 = r.try_get("idx")?;
                let done = chunk_state(r)? == ChunkState::Done;
                // The parts finalization will copy, in its order.
                Ok(ChunkProgress { idx, done, parts: final_checkpoint(r, id, idx, done)?.parts })
            })
            .collect::<Result<_>>()?;
        Ok(Some(BatchProgress { batch, chunks }))
    }

    async fn existing_files(&self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT id FROM files WHERE id IN ({})", marks.join(", "));
        let mut query = sqlx::query_scalar(&sql);
        for id in ids {
            query = query.bind(id);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn file_bytes(&self) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("SELECT purpose, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM files GROUP BY purpose")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn idempotency_begin(
        &self,
        owner: &str,
        key: &str,
        request_hash: &str,
        ttl_ms: i64,
        stale_ms: i64,
    ) -> Result<Idempotent> {
        let now = self.now();
        // Keys past their lifetime go (every owner's: the table holds a day of keys), and so
        // does this key's reservation if its request died before answering.
        sqlx::query(&format!(
            "DELETE FROM idempotency_keys WHERE created_ms < {now} - $1
                 OR (owner = $2 AND key = $3 AND response IS NULL AND created_ms < {now} - $4)"
        ))
        .bind(ttl_ms)
        .bind(owner)
        .bind(key)
        .bind(stale_ms)
        .execute(&self.pool)
        .await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO idempotency_keys (owner, key, request_hash, created_ms) VALUES ($1, $2, $3, {now})
             ON CONFLICT (owner, key) DO NOTHING"
        ))
        .bind(owner)
        .bind(key)
        .bind(request_hash)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Idempotent::Fresh);
        }
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT request_hash, response FROM idempotency_keys WHERE owner = $1 AND key = $2")
                .bind(owner)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            // Deleted between the two statements (it expired): the caller asks again.
            None => Idempotent::InProgress,
            Some((hash, _)) if hash != request_hash => Idempotent::Mismatch,
            Some((_, Some(response))) => Idempotent::Replay(response),
            Some((_, None)) => Idempotent::InProgress,
        })
    }

    async fn idempotency_finish(&self, owner: &str, key: &str, response: &str) -> Result<()> {
        sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE owner = $2 AND key = $3")
            .bind(response)
            .bind(owner)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn idempotency_abandon(&self, owner: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND response IS NULL")
            .bind(owner)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_validation(&self, worker: &str, lease_ms: i64) -> Result<Option<BatchJob>> {
        let now = self.now();
        // The sub-select and the update are one statement (and the row lock passes over a
        // batch another worker is claiming this instant); the new fence makes a previous
        // holder's late writes match nothing.
        let row = sqlx::query(&format!(
            "UPDATE batches SET job_owner = $1, job_lease_until = {now} + $2, job_fence = job_fence + 1
             WHERE id = (SELECT id FROM batches WHERE status = $3
                           AND (job_lease_until IS NULL OR job_lease_until < {now})
                         ORDER BY seq LIMIT 1 {})
             RETURNING id, job_fence",
            self.dialect.skip_locked("batches")
        ))
        .bind(worker)
        .bind(lease_ms)
        .bind(BatchStatus::Validating.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn extend_job(&self, job: &BatchJob, lease_ms: i64) -> Result<Fenced> {
        let sql = format!("UPDATE batches SET job_lease_until = {} + $1 WHERE id = $2 AND job_fence = $3", self.now());
        let done =
            sqlx::query(&sql).bind(lease_ms).bind(job.batch_id.as_str()).bind(job.fence).execute(&self.pool).await?;
        Ok(Fenced::from_rows(done.rows_affected()))
    }

    async fn finish_validation(&self, job: &BatchJob, outcome: &ValidationOutcome) -> Result<Fenced> {
        let now = unix_now();
        let mut tx = self.begin().await?;
        let updated = match outcome {
            ValidationOutcome::Valid { model, total, .. } => sqlx::query(
                "UPDATE batches SET status = $1, in_progress_at = $2, model = $3, total = $4,
                     job_owner = NULL, job_lease_until = NULL
                 WHERE id = $5 AND job_fence = $6 AND status = $7",
            )
            .bind(BatchStatus::InProgress.as_str())
            .bind(now)
            .bind(model)
            .bind(total),
            ValidationOutcome::Invalid { errors } => sqlx::query(
                "UPDATE batches SET status = $1, failed_at = $2, errors = $3, job_owner = NULL,
                     job_lease_until = NULL
                 WHERE id = $4 AND job_fence = $5 AND status = $6",
            )
            .bind(BatchStatus::Failed.as_str())
            .bind(now)
            .bind(serde_json::to_string(errors).expect("errors serialise")),
        }
        .bind(job.batch_id.as_str())
        .bind(job.fence)
        .bind(BatchStatus::Validating.as_str())
        .execute(&mut *tx)
        .await?;
        let fenced = Fenced::from_rows(updated.rows_affected());
        if !fenced.applied() {
            return Ok(fenced);
        }
        match outcome {
            ValidationOutcome::Valid { chunks, .. } => Self::insert_chunks(&mut tx, &job.batch_id, chunks).await?,
            ValidationOutcome::Invalid { .. } => {
                record_batch_end(&mut tx, self.now(), job.batch_id.as_str(), BatchStatus::Failed, now).await?
            }
        }
        tx.commit().await?;
        Ok(fenced)
    }

    async fn claim_chunk(&self, worker: &str, lease_ms: i64) -> Result<Option<ChunkLease>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        // The claimable chunk of the batch claimed from longest ago (fair rotation): pending, or
        // leased under a lease the database's clock says has expired. One statement (and, on
        // PostgreSQL, a row lock that passes over chunks other claimers hold), so two workers
        // never take one chunk; the fence increment invalidates whatever a previous holder
        // still tries to write. The checkpoint stays: the new holder resumes from it.
        let row = sqlx::query(&format!(
            "WITH pick AS (
                 SELECT c.batch_id AS pick_batch, c.idx AS pick_idx FROM chunks c JOIN batches b ON b.id = c.batch_id
                 WHERE b.status = $3 AND b.expires_at > {now_s}
                   AND (c.state = '{PENDING}' OR (c.state = '{LEASED}' AND c.lease_until < {now}))
                 ORDER BY COALESCE(b.priority, 0), b.last_claim_ms, b.seq, c.idx
                 LIMIT 1 {lock})
             UPDATE chunks SET state = '{LEASED}', owner = $1, lease_until = {now} + $2, fence = fence + 1
             FROM pick WHERE batch_id = pick_batch AND idx = pick_idx
             RETURNING batch_id, {CHUNK_COLUMNS}, fence, checkpoint",
            now_s = self.now_s(),
            lock = self.dialect.skip_locked("c"),
        ))
        .bind(worker)
        .bind(lease_ms)
        .bind(BatchStatus::InProgress.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let batch_id: String = row.try_get("batch_id")?;
        // Claims of one batch serialise (SQLite's write lock, PostgreSQL's row lock on the
        // batch): exactly one sets its first dispatch.
        let first_claim = sqlx::query(&format!(
            "UPDATE batches SET first_dispatch_at = {now} WHERE id = $1 AND first_dispatch_at IS NULL"
        ))
        .bind(&batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // Strictly after every running batch's last claim, even within one millisecond, so
        // that the rotation never ties.
        let batch = sqlx::query(&format!(
            "UPDATE batches SET last_claim_ms = {greatest}({now},
                 (SELECT COALESCE(MAX(x.last_claim_ms), 0) + 1 FROM batches x WHERE x.status = $2))
             WHERE id = $1
             RETURNING input_file_id, endpoint, model, expires_at, created_at, priority,
                 {now} - created_at * 1000 AS queued_ms, expires_at * 1000 - {now} AS expires_in_ms",
            greatest = self.dialect.greatest(),
        ))
        .bind(&batch_id)
        .bind(BatchStatus::InProgress.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        lease_from_rows(&row, &batch, first_claim).map(Some)
    }

    async fn heartbeat(&self, beats: &[ChunkBeat], lease_ms: i64) -> Result<Vec<BeatAnswer>> {
        // Fenced: a worker whose chunk was re-claimed extends nothing and learns it is Lost.
        // A checkpoint, when the beat carries one, lands with the extension.
        let sql = format!(
            "UPDATE chunks SET lease_until = {} + $1,
                 completed = CASE WHEN $4 IS NULL THEN completed ELSE $2 END,
                 failed = CASE WHEN $4 IS NULL THEN failed ELSE $3 END,
                 checkpoint = COALESCE($4, checkpoint)
             WHERE batch_id = $5 AND idx = $6 AND fence = $7 AND state = '{LEASED}'
             RETURNING (SELECT status FROM batches WHERE id = chunks.batch_id) AS status",
            self.now()
        );
        let mut answers = Vec::with_capacity(beats.len());
        for beat in beats {
            let cp = beat.checkpoint.as_ref();
            let status: Option<String> = sqlx::query_scalar(&sql)
                .bind(lease_ms)
                .bind(cp.map_or(0, |c| c.completed))
                .bind(cp.map_or(0, |c| c.failed))
                .bind(cp.map(Checkpoint::to_column))
                .bind(beat.batch_id.as_str())
                .bind(beat.idx)
                .bind(beat.fence)
                .fetch_optional(&self.pool)
                .await?;
            answers.push(match status.map(|s| s.parse::<BatchStatus>()) {
                None => BeatAnswer::Lost,
                Some(Ok(BatchStatus::InProgress)) => BeatAnswer::Held,
                Some(_) => BeatAnswer::Cancelling,
            });
        }
        Ok(answers)
    }

    async fn complete_chunk(&self, lease: &ChunkLease, done: &Checkpoint) -> Result<Fenced> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE chunks SET state = '{DONE}', done_fence = fence, owner = NULL, lease_until = NULL,
                 completed = $1, failed = $2, checkpoint = $3
             WHERE batch_id = $4 AND idx = $5 AND fence = $6 AND state = '{LEASED}'"
        ))
        .bind(done.completed)
        .bind(done.failed)
        .bind(done.to_column())
        .bind(lease.batch_id.as_str())
        .bind(lease.chunk.idx)
        .bind(lease.fence)
        .execute(&mut *tx)
        .await?;
        let fenced = Fenced::from_rows(updated.rows_affected());
        if !fenced.applied() {
            return Ok(fenced);
        }
        // The checkpoint holds every line of the chunk, earlier holders' included: none of
        // them is in the batch's counts yet.
        let sql = format!("UPDATE batches SET {} WHERE id = $8", add_counts_sql(1));
        counts_and_usage(sqlx::query(&sql), done.completed, done.failed, &done.usage)
            .bind(lease.batch_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(fenced)
    }

    async fn release_chunk(&self, lease: &ChunkLease) -> Result<Fenced> {
        // Pending again under a new fence; its checkpoint stays for the next holder.
        let done = sqlx::query(&format!(
            "UPDATE chunks SET state = '{PENDING}', owner = NULL, lease_until = NULL, fence = fence + 1
             WHERE batch_id = $1 AND idx = $2 AND fence = $3 AND state = '{LEASED}'"
        ))
        .bind(lease.batch_id.as_str())
        .bind(lease.chunk.idx)
        .bind(lease.fence)
        .execute(&self.pool)
        .await?;
        Ok(Fenced::from_rows(done.rows_affected()))
    }

    async fn claim_finalization(&self, worker: &str, lease_ms: i64) -> Result<Option<FinalizeJob>> {
        let now = self.now();
        let now_s = self.now_s();
        // Candidates: every chunk done; or cancelling/expired with no chunk under a live lease
        // (a live holder is still finishing its in-flight requests).
        let candidates: Vec<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT b.id, b.status, CASE WHEN b.expires_at <= {now_s} AND b.completed < b.total THEN 1 ELSE 0 END
             FROM batches b
             WHERE (b.job_lease_until IS NULL OR b.job_lease_until < {now})
               AND (
                 (b.status IN ($1, $2)
                    AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_id = b.id AND c.state <> '{DONE}'))
                 OR ((b.status = $3 OR (b.status = $1 AND b.expires_at <= {now_s}))
                    AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_id = b.id
                                      AND c.state = '{LEASED}' AND c.lease_until >= {now})))
             ORDER BY b.seq LIMIT 8"
        ))
        .bind(BatchStatus::InProgress.as_str())
        .bind(BatchStatus::Finalizing.as_str())
        .bind(BatchStatus::Cancelling.as_str())
        .fetch_all(&self.pool)
        .await?;
        for (id, status, late) in candidates {
            let status: BatchStatus = status.parse().map_err(StoreError::Corrupt)?;
            if let Some(job) = self.try_claim_finalization(&id, status, late != 0, worker, lease_ms).await? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn finish_finalization(&self, job: &FinalizeJob, done: &FinalizeOutcome) -> Result<Fenced> {
        let now = unix_now();
        let (status, stamp) = job.mode.end();
        let mut tx = self.begin().await?;
        // The abandoned chunks' checkpoints move into the batch's counts (with this update):
        // chunk rows first, then the batch row.
        sqlx::query(&format!(
            "UPDATE chunks SET completed = 0, failed = 0 WHERE batch_id = $1 AND state = '{ABANDONED}'"
        ))
        .bind(job.job.batch_id.as_str())
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "UPDATE batches SET {}, status = $8, {stamp} = $9, output_file_id = $10, error_file_id = $11,
                 job_owner = NULL, job_lease_until = NULL
             WHERE id = $12 AND job_fence = $13 AND status IN ($14, $15, $16)",
            add_counts_sql(1)
        );
        let updated = counts_and_usage(sqlx::query(&sql), done.extra_completed, done.extra_failed, &done.extra_usage)
            .bind(status.as_str())
            .bind(now)
            .bind(done.output_bytes.map(|_| job.output_file_id.as_str()))
            .bind(done.error_bytes.map(|_| job.error_file_id.as_str()))
            .bind(job.job.batch_id.as_str())
            .bind(job.job.fence)
            .bind(BatchStatus::InProgress.as_str())
            .bind(BatchStatus::Finalizing.as_str())
            .bind(BatchStatus::Cancelling.as_str())
            .execute(&mut *tx)
            .await?;
        let fenced = Fenced::from_rows(updated.rows_affected());
        if !fenced.applied() {
            return Ok(fenced);
        }
        let outputs =
            [(&job.output_file_id, done.output_bytes, "output"), (&job.error_file_id, done.error_bytes, "error")];
        for (id, bytes, kind) in outputs {
            let Some(bytes) = bytes else { continue };
            // The batch's owner owns its output files.
            sqlx::query(
                "INSERT INTO files (id, bytes, created_at, expires_at, filename, purpose, status, owner)
                 VALUES ($1, $2, $3, $4, $5, 'batch_output', 'processed', (SELECT owner FROM batches WHERE id = $6))
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(bytes)
            .bind(now)
            .bind(job.output_expires_at)
            .bind(format!("{}_{kind}.jsonl", job.job.batch_id))
            .bind(job.job.batch_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        record_batch_end(&mut tx, self.now(), job.job.batch_id.as_str(), status, now).await?;
        tx.commit().await?;
        Ok(fenced)
    }

    async fn release_job(&self, job: &BatchJob) -> Result<()> {
        sqlx::query("UPDATE batches SET job_owner = NULL, job_lease_until = NULL WHERE id = $1 AND job_fence = $2")
            .bind(job.batch_id.as_str())
            .bind(job.fence)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        let active: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT status, COUNT(*) FROM batches WHERE status IN {} GROUP BY status",
            open_statuses_sql()
        ))
        .fetch_all(&self.pool)
        .await?;
        // Lines not yet answered: a chunk's checkpoint counts what it already has.
        let queue_depth: i64 = sqlx::query_scalar(&format!(
            "SELECT CAST(COALESCE(SUM(c.line_count - c.completed - c.failed), 0) AS BIGINT)
             FROM chunks c JOIN batches b ON b.id = c.batch_id
             WHERE b.status = $1 AND c.state IN ('{PENDING}', '{LEASED}')"
        ))
        .bind(BatchStatus::InProgress.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats { active, queue_depth })
    }

    async fn insert_key(&self, k: &ApiKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, salt, hash, admin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.salt)
        .bind(&k.hash)
        .bind(k.admin)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_key(&self, prefix: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1");
        let row = sqlx::query(&sql).bind(prefix).fetch_optional(&self.pool).await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id_or_prefix: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 OR prefix = $2")
                .bind(unix_now())
                .bind(id_or_prefix)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_key(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND COALESCE(last_used_at, 0) < $1 - 60")
            .bind(unix_now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count_active_keys(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?)
    }

    async fn any_key_created(&self) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM api_keys LIMIT 1) k").fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn db_now_ms(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT {}", self.now())).fetch_one(&self.pool).await?)
    }
}
