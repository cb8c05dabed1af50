//! The store's error type.

/// What can go wrong below the API and the worker.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A local file error, or an object store's missing key (`ErrorKind::NotFound`, as for the
    /// local folder).
    #[error("file storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store error: {0}")]
    ObjectStore(object_store::Error),
    /// Unusable configuration: an unknown database or object-store URL scheme, a missing
    /// bucket, a store that refuses the probe write at startup.
    #[error("{0}")]
    Config(String),
    /// The request conflicts with the current state (e.g. cancelling a finished batch).
    #[error("{0}")]
    Conflict(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database lacks migrations this build needs.
    #[error(
        "the database schema is behind this build of vllm-batch: {0} not applied. \
         Run `vllm-batch migrate` with the same --database-url (DATABASE_URL), then start again"
    )]
    SchemaBehind(String),
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => {
                StoreError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, e))
            }
            other => StoreError::ObjectStore(other),
        }
    }
}
