//! The one error type of the storage layer; it keeps every cause.

use leeway_domain::DomainError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// No connection could be had from the pool.
    #[error("connection pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// A connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored row does not parse into the domain.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The domain refused the change.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No such exception, or the caller may not see it.
    #[error("not found")]
    NotFound,
    /// `If-Match` names another version.
    #[error("the exception is at version {current}")]
    PreconditionFailed {
        /// The version now stored.
        current: u64,
    },
    /// The same idempotency key came with another body.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// Another exception holds this external reference.
    #[error("external reference ({system}, {id}) belongs to another exception")]
    DuplicateExternalRef {
        /// System of the reference.
        system: String,
        /// Id of the reference.
        id: String,
        /// Key of the exception holding it, when the caller may see every exception.
        holder: Option<String>,
    },
    /// Another exception holds one of these references. The repository turns this into
    /// [`StoreError::DuplicateExternalRef`] before it returns; it never leaves the crate.
    #[error("an external reference belongs to another exception")]
    RefsTaken(Vec<leeway_domain::record::ExternalRef>),
    /// What a change was judged on moved before it was written; the repository judges it
    /// again. It never leaves the crate.
    #[error("the exception changed while the change was judged")]
    Stale,
}

impl StoreError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}
