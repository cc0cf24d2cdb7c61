//! Why the ledger could not record or read: one type for every ledger
//! failure, which the edge answers `UNAVAILABLE` (nothing was released)
//! unless a stored row is unreadable.

use std::path::PathBuf;

/// Why the ledger could not record or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed or is unreachable.
    #[error("key ledger database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("key ledger migrations: {0}")]
    Migrate(Box<sqlx::migrate::MigrateError>),
    /// The SQLite file's directory could not be made.
    #[error("key ledger {}: {source}", path.display())]
    File {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A commit failed; the rows were not recorded.
    #[error("key ledger commit failed: {0}")]
    Commit(String),
    /// The writer has stopped.
    #[error("key ledger writer has stopped")]
    Stopped,
    /// A stored row does not parse.
    #[error("key ledger row: {0}")]
    Corrupt(String),
    /// The server records no keys, so it cannot keep request tokens.
    #[error("request_token needs the key ledger, and this server has none (ledger.enabled = false)")]
    Disabled,
}
