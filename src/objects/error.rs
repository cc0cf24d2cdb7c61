//! Why an object could not be encrypted or decrypted: the one error of the
//! object sessions and their S3 mode.
//!
//! Owns [`ObjectError`] and the conversions into it. Must never carry key
//! bytes in a message, and knows no protobuf and no `tonic::Status` (the
//! edge maps it).

use crate::custody::broker::BrokerError;
use crate::custody::field::echo;
use crate::custody::keys::KeyError;
use crate::objects::cipher::CipherError;
use crate::objects::s3::{S3ErrorKind, S3Location};

/// Why an object could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A key could not be made, wrapped or unwrapped, or the grant refused.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The cipher refused the bytes: for a decryption, a damaged, truncated
    /// or forged object.
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// S3 refused or failed.
    #[error("S3 {operation} {location}: {message}")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// The object it was about.
        location: S3Location,
        /// What kind of failure.
        kind: S3ErrorKind,
        /// S3's or the transport's words.
        message: String,
    },
    /// The server has no S3 client.
    #[error("S3 mode is not available on this server: {0}")]
    S3Unavailable(&'static str),
    /// The caller went away or broke the stream; the transfer stopped.
    #[error("the transfer was cancelled")]
    Cancelled,
    /// The key ledger could not record or read: nothing was released.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The caller used the request token before, for another request.
    #[error("start.request_token {}: already used by this caller for a different request", echo(.0))]
    TokenReused(String),
    /// The first call with the request token is still running.
    #[error(
        "start.request_token {}: the first call with this token is still running; it was not run again, \
         retry once it has ended",
        echo(.0)
    )]
    TokenInFlight(String),
    /// A fault of the broker's.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::custody::policy::Denial> for ObjectError {
    fn from(denial: crate::custody::policy::Denial) -> Self {
        ObjectError::Broker(BrokerError::Denied(denial))
    }
}

impl From<KeyError> for ObjectError {
    fn from(err: KeyError) -> Self {
        ObjectError::Broker(BrokerError::Invalid(err))
    }
}
