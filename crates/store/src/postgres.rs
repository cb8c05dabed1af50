//! The PostgreSQL `Store`: the queue of a scale-out deployment, shared by any number of API
//! replicas and workers. Migrations from `migrations/postgres/`.
//!
//! Claims take rows with `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each
//! other's candidates; every worker write is conditioned on the fence of its claim. Transactions
//! that touch a chunk and its batch lock the chunk rows first, then the batch row, in that order
//! everywhere, so they cannot deadlock.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use vllm_batch_core::time::{unix_now, unix_now_ms};
use vllm_batch_core::{Batch, BatchId, BatchStatus, FileId, FileObject};

use crate::model::*;
use crate::rows::{
    batch_from_row, file_from_row, finalize_job_from_rows, job_from_row, key_from_row, lease_from_rows, parse,
    BATCH_COLUMNS,
};
use crate::{Result, Store, StoreError};

/// The scale-out store: one PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Statuses of a batch that has not ended.
const OPEN: &str = "('validating', 'in_progress', 'finalizing', 'cancelling')";

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`, or `?host=/run/postgresql`
    /// for a Unix socket).
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url)?.application_name("vllm-batch");
        if let Some(t) = pool.statement_timeout {
            options = options.options([("statement_timeout", format!("{}", t.as_millis()))]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.unwrap_or(16))
            .min_connections(pool.min_connections)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(pool.idle_timeout)
            .connect_with(options)
            .await?;
        Ok(PgStore { pool })
    }

    async fn fetch_batch(&self, id: &str, scope: Scope<'_>) -> Result<Option<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches b WHERE b.id = $1 AND ($2::text IS NULL OR b.owner = $2::text)"
        );
        let row = sqlx::query(&sql).bind(id).bind(scope).fetch_optional(&self.pool).await?;
        row.map(|r| batch_from_row(&r)).transpose()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn check_schema(&self) -> Result<()> {
        let table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&self.pool).await?;
        let applied: Vec<(i64, bool)> = if table {
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations").fetch_all(&self.pool).await?
        } else {
            Vec::new()
        };
        crate::schema::check(&MIGRATOR, &applied)
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
        let row = sqlx::query("SELECT * FROM files WHERE id = $1 AND ($2::text IS NULL OR owner = $2::text)")
            .bind(id.as_str())
            .bind(scope)
            .fetch_optional(&self.pool)
            .await?;
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
             WHERE ($1::text IS NULL OR purpose = $1::text)
               AND ($2::text IS NULL OR seq {cmp} (SELECT seq FROM files WHERE id = $2::text AND ($4::text IS NULL OR owner = $4::text)))
               AND ($4::text IS NULL OR owner = $4::text)
             ORDER BY seq {order} LIMIT $3"
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
            "SELECT id FROM batches WHERE input_file_id = $1 AND status IN {OPEN} LIMIT 1"
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

    async fn insert_batch(&self, b: &NewBatch) -> Result<Batch> {
        let metadata = b.metadata.as_ref().map(|m| serde_json::to_string(m).expect("metadata serialises"));
        sqlx::query(
            "INSERT INTO batches (id, endpoint, input_file_id, completion_window, status,
                 planned_output_file_id, planned_error_file_id, output_expires_after, metadata,
                 created_at, expires_at, owner)
             VALUES ($1, $2, $3, $4, 'validating', $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(b.id.as_str())
        .bind(b.endpoint.as_str())
        .bind(b.input_file_id.as_str())
        .bind(b.completion_window.as_str())
        .bind(FileId::generate().as_str())
        .bind(FileId::generate().as_str())
        .bind(b.output_expires_after)
        .bind(metadata)
        .bind(b.created_at)
        .bind(b.created_at + b.completion_window.seconds())
        .bind(b.owner.as_deref())
        .execute(&self.pool)
        .await?;
        self.fetch_batch(b.id.as_str(), None)
            .await?
            .ok_or_else(|| StoreError::Corrupt("inserted batch vanished".into()))
    }

    async fn get_batch(&self, id: &BatchId, scope: Scope<'_>) -> Result<Option<Batch>> {
        self.fetch_batch(id.as_str(), scope).await
    }

    async fn list_batches(&self, after: Option<&BatchId>, limit: i64, scope: Scope<'_>) -> Result<Page<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches b
             WHERE ($1::text IS NULL OR b.seq < (SELECT seq FROM batches WHERE id = $1::text AND ($3::text IS NULL OR owner = $3::text)))
               AND ($3::text IS NULL OR b.owner = $3::text)
             ORDER BY b.seq DESC LIMIT $2"
        );
        let rows =
            sqlx::query(&sql).bind(after.map(|a| a.as_str())).bind(limit + 1).bind(scope).fetch_all(&self.pool).await?;
        let items = rows.iter().map(batch_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit))
    }

    async fn count_open_batches(&self, owner: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM batches WHERE owner = $1 AND status IN {OPEN}"))
            .bind(owner)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn request_cancel(&self, id: &BatchId, scope: Scope<'_>) -> Result<Option<(Batch, bool)>> {
        if self.fetch_batch(id.as_str(), scope).await?.is_none() {
            return Ok(None);
        }
        // One statement: a validator finishing at the same moment either sees `cancelled` (its
        // fenced update matches nothing) or has already moved the batch to `in_progress`.
        let changed = sqlx::query(
            "UPDATE batches SET
                 status = CASE status WHEN 'validating' THEN 'cancelled' ELSE 'cancelling' END,
                 cancelling_at = $2,
                 cancelled_at = CASE status WHEN 'validating' THEN $2 ELSE cancelled_at END
             WHERE id = $1 AND status IN ('validating', 'in_progress')",
        )
        .bind(id.as_str())
        .bind(unix_now())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let Some(batch) = self.fetch_batch(id.as_str(), scope).await? else { return Ok(None) };
        match batch.status {
            BatchStatus::Cancelling | BatchStatus::Cancelled => Ok(Some((batch, changed))),
            other => Err(StoreError::Conflict(format!("Cannot cancel a batch with status {other}."))),
        }
    }

    async fn claim_validation(&self, worker: &str, lease_ms: i64) -> Result<Option<BatchJob>> {
        let now = unix_now_ms();
        // SKIP LOCKED: a batch another worker is claiming this instant is passed over; the new
        // fence makes a previous holder's late writes match nothing.
        let row = sqlx::query(
            "UPDATE batches SET job_owner = $1, job_lease_until = $2, job_fence = job_fence + 1
             WHERE id = (SELECT id FROM batches WHERE status = 'validating'
                           AND (job_lease_until IS NULL OR job_lease_until < $3)
                         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, job_fence",
        )
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn extend_job(&self, job: &BatchJob, lease_ms: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE batches SET job_lease_until = $1 WHERE id = $2 AND job_fence = $3")
            .bind(unix_now_ms() + lease_ms)
            .bind(job.batch_id.as_str())
            .bind(job.fence)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_validation(&self, job: &BatchJob, outcome: &ValidationOutcome) -> Result<bool> {
        let now = unix_now();
        let mut tx = self.pool.begin().await?;
        let updated = match outcome {
            ValidationOutcome::Valid { model, total, .. } => sqlx::query(
                "UPDATE batches SET status = 'in_progress', in_progress_at = $1, model = $2, total = $3,
                     job_owner = NULL, job_lease_until = NULL
                 WHERE id = $4 AND job_fence = $5 AND status = 'validating'",
            )
            .bind(now)
            .bind(model)
            .bind(total),
            ValidationOutcome::Invalid { errors } => sqlx::query(
                "UPDATE batches SET status = 'failed', failed_at = $1, errors = $2, job_owner = NULL,
                     job_lease_until = NULL
                 WHERE id = $3 AND job_fence = $4 AND status = 'validating'",
            )
            .bind(now)
            .bind(serde_json::to_string(errors).expect("errors serialise")),
        }
        .bind(job.batch_id.as_str())
        .bind(job.fence)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        if let ValidationOutcome::Valid { chunks, .. } = outcome {
            // One statement for all chunks: arrays unnested into rows.
            let col = |f: fn(&ChunkSpec) -> i64| chunks.iter().map(f).collect::<Vec<i64>>();
            sqlx::query(
                "INSERT INTO chunks (batch_id, idx, first_line, line_count, byte_start, byte_end)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])",
            )
            .bind(job.batch_id.as_str())
            .bind(col(|c| c.idx))
            .bind(col(|c| c.first_line))
            .bind(col(|c| c.line_count))
            .bind(col(|c| c.byte_start))
            .bind(col(|c| c.byte_end))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_chunk(&self, worker: &str, lease_ms: i64) -> Result<Option<ChunkLease>> {
        let now_ms = unix_now_ms();
        let mut tx = self.pool.begin().await?;
        // The claimable chunk of the batch claimed from longest ago (fair rotation), locked with
        // SKIP LOCKED so concurrent claimers each take a different one; the fence increment
        // invalidates whatever a previous holder whose lease expired still tries to write.
        let row = sqlx::query(
            "WITH pick AS (
                 SELECT c.batch_id, c.idx FROM chunks c JOIN batches b ON b.id = c.batch_id
                 WHERE b.status = 'in_progress' AND b.expires_at > $4
                   AND (c.state = 'pending' OR (c.state = 'leased' AND c.lease_until < $3))
                 ORDER BY b.last_claim_ms, b.seq, c.idx
                 LIMIT 1
                 FOR UPDATE OF c SKIP LOCKED)
             UPDATE chunks SET state = 'leased', owner = $1, lease_until = $2, fence = chunks.fence + 1,
                 completed = 0, failed = 0
             FROM pick WHERE chunks.batch_id = pick.batch_id AND chunks.idx = pick.idx
             RETURNING chunks.batch_id, chunks.idx, chunks.first_line, chunks.line_count, chunks.byte_start,
                 chunks.byte_end, chunks.fence",
        )
        .bind(worker)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(unix_now())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let batch_id: String = row.try_get("batch_id")?;
        // The row lock serialises claims of one batch: exactly one sets its first dispatch.
        let first_claim =
            sqlx::query("UPDATE batches SET first_dispatch_at = $1 WHERE id = $2 AND first_dispatch_at IS NULL")
                .bind(now_ms)
                .bind(&batch_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        let batch = sqlx::query(
            "UPDATE batches SET last_claim_ms = GREATEST(last_claim_ms, $1) WHERE id = $2
             RETURNING input_file_id, endpoint, model, expires_at, created_at",
        )
        .bind(now_ms)
        .bind(&batch_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        lease_from_rows(&row, &batch, first_claim).map(Some)
    }

    async fn heartbeat(&self, beats: &[ChunkBeat], lease_ms: i64) -> Result<Vec<BeatAnswer>> {
        let until = unix_now_ms() + lease_ms;
        let mut answers = Vec::with_capacity(beats.len());
        for beat in beats {
            // Fenced: a worker whose chunk was re-claimed extends nothing and learns it is Lost.
            let status: Option<String> = sqlx::query_scalar(
                "UPDATE chunks SET lease_until = $1, completed = $2, failed = $3
                 WHERE batch_id = $4 AND idx = $5 AND fence = $6 AND state = 'leased'
                 RETURNING (SELECT status FROM batches WHERE id = chunks.batch_id)",
            )
            .bind(until)
            .bind(beat.completed)
            .bind(beat.failed)
            .bind(beat.batch_id.as_str())
            .bind(beat.idx)
            .bind(beat.fence)
            .fetch_optional(&self.pool)
            .await?;
            answers.push(match status.as_deref() {
                None => BeatAnswer::Lost,
                Some("in_progress") => BeatAnswer::Held,
                Some(_) => BeatAnswer::Cancelling,
            });
        }
        Ok(answers)
    }

    async fn complete_chunk(&self, lease: &ChunkLease, r: &ChunkOutcome) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE chunks SET state = 'done', done_fence = fence, owner = NULL, lease_until = NULL,
                 completed = $1, failed = $2
             WHERE batch_id = $3 AND idx = $4 AND fence = $5 AND state = 'leased'",
        )
        .bind(r.completed)
        .bind(r.failed)
        .bind(lease.batch_id.as_str())
        .bind(lease.chunk.idx)
        .bind(lease.fence)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let u = &r.usage;
        sqlx::query(
            "UPDATE batches SET completed = completed + $1, failed = failed + $2,
                 input_tokens = input_tokens + $3, cached_tokens = cached_tokens + $4,
                 output_tokens = output_tokens + $5, reasoning_tokens = reasoning_tokens + $6,
                 total_tokens = total_tokens + $7
             WHERE id = $8",
        )
        .bind(r.completed)
        .bind(r.failed)
        .bind(u.input_tokens)
        .bind(u.input_tokens_details.cached_tokens)
        .bind(u.output_tokens)
        .bind(u.output_tokens_details.reasoning_tokens)
        .bind(u.total_tokens)
        .bind(lease.batch_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn release_chunk(&self, lease: &ChunkLease) -> Result<()> {
        sqlx::query(
            "UPDATE chunks SET state = 'pending', owner = NULL, lease_until = NULL, fence = fence + 1,
                 completed = 0, failed = 0
             WHERE batch_id = $1 AND idx = $2 AND fence = $3 AND state = 'leased'",
        )
        .bind(lease.batch_id.as_str())
        .bind(lease.chunk.idx)
        .bind(lease.fence)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_finalization(&self, worker: &str, lease_ms: i64) -> Result<Option<FinalizeJob>> {
        let now_ms = unix_now_ms();
        let now = unix_now();
        // Candidates: every chunk done; or cancelling/expired with no chunk under a live lease
        // (a live holder is still finishing its in-flight requests).
        let candidates: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT b.id, b.status, (b.expires_at <= $2 AND b.completed < b.total) AS late FROM batches b
             WHERE (b.job_lease_until IS NULL OR b.job_lease_until < $1)
               AND (
                 (b.status IN ('in_progress', 'finalizing')
                    AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_id = b.id AND c.state <> 'done'))
                 OR ((b.status = 'cancelling' OR (b.status = 'in_progress' AND b.expires_at <= $2))
                    AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_id = b.id
                                      AND c.state = 'leased' AND c.lease_until >= $1)))
             ORDER BY b.seq LIMIT 8",
        )
        .bind(now_ms)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        for (id, status, late) in candidates {
            let mut tx = self.pool.begin().await?;
            // Chunk rows first, then the batch row: the order every other transaction takes.
            let chunk_rows = sqlx::query(
                "SELECT idx, first_line, line_count, byte_start, byte_end, state, done_fence, lease_until
                 FROM chunks WHERE batch_id = $1 ORDER BY idx FOR UPDATE",
            )
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            // Fenced claim of the batch job; the status check closes the race with a cancel.
            let claimed: Option<i64> = sqlx::query_scalar(
                "UPDATE batches SET job_owner = $1, job_lease_until = $2, job_fence = job_fence + 1
                 WHERE id = $3 AND status = $4 AND (job_lease_until IS NULL OR job_lease_until < $5)
                 RETURNING job_fence",
            )
            .bind(worker)
            .bind(now_ms + lease_ms)
            .bind(&id)
            .bind(&status)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(fence) = claimed else { continue };
            let mut live = 0;
            let mut unfinished = 0;
            for r in &chunk_rows {
                let state: String = r.try_get("state")?;
                let until: Option<i64> = r.try_get("lease_until")?;
                match state.as_str() {
                    "leased" if until.is_some_and(|u| u >= now_ms) => live += 1,
                    "pending" | "leased" | "abandoned" => unfinished += 1,
                    _ => {}
                }
            }
            if live > 0 {
                tx.rollback().await?;
                continue;
            }
            let mode = FinalizeMode::decide(&status, unfinished, late);
            // Chunks nobody holds any more are abandoned under a new fence, so a worker that
            // wakes up late cannot complete them after their lines were written as errors.
            sqlx::query(
                "UPDATE chunks SET state = 'abandoned', fence = fence + 1, owner = NULL
                 WHERE batch_id = $1 AND state IN ('pending', 'leased')",
            )
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            if mode == FinalizeMode::Complete {
                sqlx::query(
                    "UPDATE batches SET status = 'finalizing', finalizing_at = COALESCE(finalizing_at, $1) WHERE id = $2",
                )
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
            let b = sqlx::query(
                "SELECT input_file_id, planned_output_file_id, planned_error_file_id, created_at,
                        output_expires_after FROM batches WHERE id = $1",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return finalize_job_from_rows(BatchJob { batch_id: parse(&id)?, fence }, mode, &b, &chunk_rows).map(Some);
        }
        Ok(None)
    }

    async fn finish_finalization(&self, job: &FinalizeJob, done: &FinalizeOutcome) -> Result<bool> {
        let now = unix_now();
        let (status, stamp) = match job.mode {
            FinalizeMode::Complete => ("completed", "completed_at"),
            FinalizeMode::Cancel => ("cancelled", "cancelled_at"),
            FinalizeMode::Expire => ("expired", "expired_at"),
        };
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE batches SET status = $1, {stamp} = $2, failed = failed + $3,
                 output_file_id = $4, error_file_id = $5, job_owner = NULL, job_lease_until = NULL
             WHERE id = $6 AND job_fence = $7
               AND status IN ('in_progress', 'finalizing', 'cancelling')"
        );
        let updated = sqlx::query(&sql)
            .bind(status)
            .bind(now)
            .bind(done.extra_failed)
            .bind(done.output_bytes.map(|_| job.output_file_id.as_str()))
            .bind(done.error_bytes.map(|_| job.error_file_id.as_str()))
            .bind(job.job.batch_id.as_str())
            .bind(job.job.fence)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
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
        tx.commit().await?;
        Ok(true)
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
        let active: Vec<(String, i64)> =
            sqlx::query_as(&format!("SELECT status, COUNT(*) FROM batches WHERE status IN {OPEN} GROUP BY status"))
                .fetch_all(&self.pool)
                .await?;
        let queue_depth: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(c.line_count - CASE WHEN c.state = 'leased' THEN c.completed + c.failed ELSE 0 END), 0)
                         AS BIGINT)
             FROM chunks c JOIN batches b ON b.id = c.batch_id
             WHERE b.status = 'in_progress' AND c.state IN ('pending', 'leased')",
        )
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
        let row =
            sqlx::query("SELECT * FROM api_keys WHERE prefix = $1").bind(prefix).fetch_optional(&self.pool).await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id").fetch_all(&self.pool).await?;
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
        let now = unix_now();
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND COALESCE(last_used_at, 0) < $1 - 60")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count_active_keys(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?)
    }

    async fn any_key_created(&self) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)").fetch_one(&self.pool).await?)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
