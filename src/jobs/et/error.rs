//! Elastic Transcoder failures, sorted by what a caller can do about them.

use aws_sdk_elastictranscoder::error::{ProvideErrorMetadata, SdkError};

use crate::app::aws::sdk_failure;

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
