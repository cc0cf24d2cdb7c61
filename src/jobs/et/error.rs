//! Elastic Transcoder failures, sorted by what a caller can do about them.

use aws_sdk_elastictranscoder::error::{ProvideErrorMetadata, SdkError};

use crate::app::aws::sdk_failure;
use crate::custody::broker::BrokerError;
use crate::custody::field::{FieldError, echo};
use crate::custody::policy::Denial;

/// What kind of ET failure happened; decides the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtErrorKind {
    /// Throttled, down or unreachable (`UNAVAILABLE`).
    Unavailable,
    /// The pipeline or job does not exist (`FAILED_PRECONDITION`).
    NotFound,
    /// The broker has no Elastic Transcoder to call: a configuration
    /// matter, not one a retry fixes (`FAILED_PRECONDITION`).
    NotConfigured,
    /// The broker's credentials may not do this (`PERMISSION_DENIED`).
    AccessDenied,
    /// ET refused the job as invalid (`INVALID_ARGUMENT`).
    Rejected,
    /// Anything else (`INTERNAL`).
    Internal,
}

/// A failed ET operation; messages are ET's or the transport's.
#[derive(Debug, thiserror::Error)]
#[error("Elastic Transcoder {operation} failed: {message}")]
pub struct EtError {
    /// `ReadPipeline`, `CreateJob`.
    pub operation: &'static str,
    /// What kind of failure.
    pub kind: EtErrorKind,
    /// ET's or the transport's words.
    pub message: String,
}

impl EtError {
    pub(crate) fn new(operation: &'static str, kind: EtErrorKind, message: impl Into<String>) -> Self {
        EtError { operation, kind, message: message.into() }
    }
}

/// Maps an SDK failure, keeping ET's words.
pub fn map_et_error<E, R>(operation: &'static str, err: &SdkError<E, R>) -> EtError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let failure = sdk_failure(err);
    let kind = match (failure.code.as_deref(), failure.transport) {
        (_, true) => EtErrorKind::Unavailable,
        (Some("ValidationException"), _) => EtErrorKind::Rejected,
        (Some("ResourceNotFoundException"), _) => EtErrorKind::NotFound,
        (Some("AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException"), _) => {
            EtErrorKind::AccessDenied
        }
        (
            Some(
                "LimitExceededException"
                | "ThrottlingException"
                | "InternalServiceException"
                | "ServiceUnavailableException"
                | "ServiceUnavailable"
                | "InternalFailure",
            ),
            _,
        ) => EtErrorKind::Unavailable,
        _ => EtErrorKind::Internal,
    };
    EtError::new(operation, kind, failure.message)
}

/// Why a job was not assembled or submitted.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The request breaks an ET model rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The caller's grant does not cover this job.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// The pipeline cannot take this job; the message says how to fix it.
    #[error("{0}")]
    Precondition(String),
    /// A key could not be made, wrapped or verified.
    #[error("{path}: {source}")]
    Key {
        /// The block's v1 API path.
        path: String,
        /// The cause.
        source: BrokerError,
    },
    /// The job's KMS calls did not finish within the job deadline.
    #[error("the job's KMS calls did not finish within {0:?}")]
    Deadline(std::time::Duration),
    /// Elastic Transcoder failed or refused.
    #[error(transparent)]
    Et(#[from] EtError),
    /// Serialising the body failed.
    #[error("cannot serialise the CreateJob body: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The job's keys could not be recorded; nothing was submitted.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The caller used the request token before, for another request.
    #[error("request_token {}: already used by this caller for a different request", echo(.0))]
    TokenReused(String),
    /// The first call with this request token is still submitting.
    #[error("request_token {}: the first submission with this token is still in flight; retry later", echo(.0))]
    TokenInFlight(String),
}

impl JobError {
    /// Whether the job surely did not reach Elastic Transcoder as a job:
    /// every failure but an answer that leaves it unknown (unavailable,
    /// throttled or unreadable).
    pub fn nothing_submitted(&self) -> bool {
        !matches!(self, JobError::Et(EtError { kind: EtErrorKind::Unavailable | EtErrorKind::Internal, .. }))
    }
}

/// The refusal of a job to submit by a broker that submits none.
pub(crate) fn no_submission() -> JobError {
    EtError::new(
        "CreateJob",
        EtErrorKind::NotConfigured,
        "this broker submits no jobs (transcoder.submit = false, as with --dev): send validate_only, or run \
         with transcoder.submit = true and kms.backend = \"aws\" (Elastic Transcoder cannot unwrap the local \
         keyring's keys)",
    )
    .into()
}

impl crate::jobs::ticket::ClaimError for JobError {
    fn reused(token: &str) -> Self {
        JobError::TokenReused(token.to_owned())
    }

    fn in_flight(token: &str) -> Self {
        JobError::TokenInFlight(token.to_owned())
    }
}
