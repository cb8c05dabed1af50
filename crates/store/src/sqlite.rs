//! What SQLite does differently, for the shared queue (`queue.rs`): how to connect (WAL, a busy
//! timeout), the clock, the write lock, migrations from `migrations/sqlite/`.
//!
//! SQLite serialises writers. Every transaction the queue opens begins `IMMEDIATE`: it takes the
//! write lock up front and waits on the busy timeout instead of failing on a lock upgrade, so
//! several processes (`serve` plus standalone `worker`s) can share one database file. There are
//! no row locks to take (`FOR UPDATE` is empty): the write lock already excludes every other
//! writer.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::Executor;

use crate::model::PoolConfig;
use crate::Result;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The database's clock in Unix milliseconds. SQLite reads the host's clock, which every process
/// sharing the file shares; `'now'` stays the same for the whole of one statement.
pub(crate) const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE";

/// Whether sqlx's migrations table exists (0 or 1).
pub(crate) const HAS_MIGRATIONS_TABLE: &str =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating if needed) the database at `url` (`sqlite://path`).
pub(crate) async fn connect(url: &str, pool: &PoolConfig) -> Result<AnyPool> {
    // Created when missing, unless the URL says otherwise.
    let url = match url.split_once('?') {
        None => format!("{url}?mode=rwc"),
        Some((_, query)) if !query.split('&').any(|p| p.starts_with("mode=")) => format!("{url}&mode=rwc"),
        Some(_) => url.to_string(),
    };
    let pragmas = format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        BUSY_TIMEOUT.as_millis()
    );
    Ok(crate::queue::pool_options(pool, 8)
        .after_connect(move |conn, _| {
            let pragmas = pragmas.clone();
            Box::pin(async move { conn.execute(pragmas.as_str()).await.map(|_| ()) })
        })
        .connect(&url)
        .await?)
}
