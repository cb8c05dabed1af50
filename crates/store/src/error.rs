//! The store's error type.

/// What can go wrong below the API and the worker.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("file storage error: {0}")]
    Io(#[from] std::io::Error),
    /// The request conflicts with the current state (e.g. cancelling a finished batch).
    #[error("{0}")]
    Conflict(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Unusable configuration (an unknown database URL scheme, say).
    #[error("{0}")]
    Config(String),
    /// The database lacks migrations this build needs.
    #[error(
        "the database schema is behind this build of vllm-batch: {0} not applied. \
         Run `vllm-batch migrate` with the same --database-url (DATABASE_URL), then start again"
    )]
    SchemaBehind(String),
}
