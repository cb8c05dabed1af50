//! What PostgreSQL does differently, for the shared queue (`queue.rs`): how to connect (a
//! statement timeout), the clock, row locks, migrations from `migrations/postgres/`.
//!
//! Claims take rows with `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each
//! other's candidates. Transactions that touch a chunk and its batch lock the chunk rows first,
//! then the batch row, in that order everywhere, so they cannot deadlock.

use sqlx::AnyPool;
use sqlx::Executor;

use crate::model::PoolConfig;
use crate::Result;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The database server's clock in Unix milliseconds: one clock for every worker and API replica,
/// whatever their own say. `now()` is the transaction's start, the same for all its statements.
pub(crate) const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)";

pub(crate) const BEGIN: &str = "BEGIN";

/// Whether sqlx's migrations table exists (0 or 1).
pub(crate) const HAS_MIGRATIONS_TABLE: &str =
    "SELECT CASE WHEN to_regclass('_sqlx_migrations') IS NULL THEN 0 ELSE 1 END";

/// Connects to `url` (`postgres://user:password@host:port/db`, or `?host=/run/postgresql` for a
/// Unix socket).
pub(crate) async fn connect(url: &str, pool: &PoolConfig) -> Result<AnyPool> {
    let mut settings = "SET application_name = 'vllm-batch';".to_string();
    if let Some(t) = pool.statement_timeout {
        settings.push_str(&format!(" SET statement_timeout = {};", t.as_millis()));
    }
    Ok(crate::queue::pool_options(pool, 16)
        .after_connect(move |conn, _| {
            let settings = settings.clone();
            Box::pin(async move { conn.execute(settings.as_str()).await.map(|_| ()) })
        })
        .connect(url)
        .await?)
}
