//! What can go wrong with a MediaConvert job, one enum the edge maps to
//! gRPC codes. Must never carry key bytes: messages name paths and rules.

use crate::custody::broker::BrokerError;
use crate::custody::field::FieldError;
use crate::custody::policy::Denial;
use crate::custody::records::RecordsError;
use crate::ledger::LedgerError;

/// How MediaConvert (or the way to it) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceFailure {
    /// MediaConvert refused the job (`BadRequestException`, `ConflictException`).
    Rejected,
    /// Unreachable, throttled or failing on its side.
    Unavailable,
    /// `ForbiddenException`: the broker's credentials may not create jobs.
    AccessDenied,
    /// No MediaConvert is configured (`mediaconvert.submit = false`).
    NotConfigured,
    /// An answer the broker cannot read.
    Internal,
}

/// A MediaConvert job's failure.
#[derive(Debug, thiserror::Error)]
pub enum McError {
    /// Bad input, naming the JSON path or request field.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The request cannot be served as it stands (an Elastic Transcoder
    /// key that needs `RewrapKeys`, an unknown fingerprint).
    #[error("{0}")]
    Precondition(String),
    /// The policy refused part of the job.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// A KMS call for the key at `path` failed.
    #[error("{path}: {source}")]
    Key {
        /// The JSON path of the key's block.
        path: String,
        /// The broker's error.
        source: BrokerError,
    },
    /// A rewrap of an input's key failed.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The key ledger failed: nothing was released.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// MediaConvert failed or refused.
    #[error("MediaConvert CreateJob: {message}")]
    Service {
        /// What kind of failure.
        kind: ServiceFailure,
        /// MediaConvert's words (or the transport's).
        message: String,
    },
    /// The request token was first used with another request.
    #[error("request_token: {0:?} was first used with another request; use a new token")]
    TokenReused(String),
    /// Another call is still submitting under the token.
    #[error("request_token: {0:?} is being submitted by another call; retry shortly")]
    TokenInFlight(String),
    /// A document could not be written or read back.
    #[error("job document: {0}")]
    Serialise(#[from] serde_json::Error),
}

impl McError {
    /// Whether MediaConvert certainly has no job of the failed call: it
    /// failed before the POST, or MediaConvert refused the job. False when
    /// the POST's outcome is unknown (unreachable, throttled, an answer
    /// the broker cannot read).
    pub fn nothing_submitted(&self) -> bool {
        !matches!(self, McError::Service { kind: ServiceFailure::Unavailable | ServiceFailure::Internal, .. })
    }
}

impl crate::jobs::ticket::ClaimError for McError {
    fn reused(token: &str) -> Self {
        McError::TokenReused(token.to_owned())
    }

    fn in_flight(token: &str) -> Self {
        McError::TokenInFlight(token.to_owned())
    }
}
