//! Every domain error to its gRPC status: the one exhaustive mapping.
//!
//! Bad input is `INVALID_ARGUMENT` naming the field, a refusal
//! `PERMISSION_DENIED` (or `RESOURCE_EXHAUSTED` for a spent rate limit), an
//! outage of KMS, S3 or Elastic Transcoder `UNAVAILABLE`. Internal faults
//! answer an opaque message with an incident id; the whole cause goes to
//! the server log. Must never put key bytes in a message.

use tonic::{Code, Status};

use crate::custody::broker::BrokerError;
use crate::custody::keys::KeyError;
use crate::custody::kms::KmsErrorKind;
use crate::custody::policy::Denial;
use crate::custody::records::RecordsError;
use crate::jobs::et::JobError;
use crate::jobs::et::error::EtErrorKind;
use crate::jobs::mediaconvert::{McError, ServiceFailure};
use crate::jobs::preflight::PreflightError;
use crate::ledger::LedgerError;
use crate::objects::cipher::CipherError;
use crate::objects::{ObjectError, S3ErrorKind};

/// The longest status message the broker answers, logs or audits, in
/// bytes: a backstop behind [`crate::custody::field::echo`], so that no
/// path can turn a caller's input into an unbounded answer or record.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `status` with its message cut to [`MAX_MESSAGE_BYTES`] (on a character
/// boundary, saying how long it was).
pub fn bounded(status: Status) -> Status {
    let message = status.message();
    if message.len() <= MAX_MESSAGE_BYTES {
        return status;
    }
    let cut = (0..=MAX_MESSAGE_BYTES).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
    Status::new(status.code(), format!("{}… (message cut; {} bytes in all)", &message[..cut], message.len()))
}

/// The status of a request body (or stream message) that could not be
/// read, as the caller should see it: the body's fault is the caller's.
///
/// tonic answers a message over `limits.max_message_bytes` with
/// `OUT_OF_RANGE` and a bad compression flag with `INTERNAL`; here they are
/// `RESOURCE_EXHAUSTED` naming the limit and `INVALID_ARGUMENT`. A body
/// that is not protobuf is already `INVALID_ARGUMENT`
/// ([`crate::edge::codec`]); its mark is dropped here.
pub fn unreadable_body(status: &Status, max_message_bytes: usize) -> Status {
    match status.code() {
        Code::OutOfRange => Status::resource_exhausted(format!(
            "the request message is larger than the server's limit of {max_message_bytes} bytes \
             (limits.max_message_bytes)"
        )),
        Code::Internal if status.message().starts_with("protocol error") => {
            Status::invalid_argument(format!("the request body is not valid gRPC framing: {}", status.message()))
        }
        _ => bounded(Status::new(status.code(), status.message())),
    }
}

/// The status of a denial.
pub fn denial_status(denial: &Denial) -> Status {
    match denial {
        Denial::Forbidden(_) => Status::permission_denied(denial.to_string()),
        Denial::RateLimited { .. } => Status::resource_exhausted(denial.to_string()),
    }
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Self {
        status_of(&err)
    }
}

/// The status of a broker failure.
pub fn status_of(err: &BrokerError) -> Status {
    match err {
        BrokerError::Invalid(KeyError::Invalid(_)) | BrokerError::KeyId(_) | BrokerError::NoDefaultKey => {
            Status::invalid_argument(err.to_string())
        }
        BrokerError::KeyMd5Mismatch { .. } => Status::invalid_argument(err.to_string()),
        BrokerError::Denied(denial) => denial_status(denial),
        BrokerError::KmsDeadline { .. } => Status::unavailable(err.to_string()),
        BrokerError::Kms(kms) => match kms.kind {
            KmsErrorKind::Unavailable => Status::unavailable(err.to_string()),
            KmsErrorKind::KeyUnusable => Status::failed_precondition(err.to_string()),
            KmsErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
            KmsErrorKind::InvalidCiphertext => {
                Status::invalid_argument(format!("encryption.key: KMS could not decrypt it under this context ({err})"))
            }
            KmsErrorKind::Internal => internal(err),
        },
        BrokerError::Invalid(KeyError::Random) => internal(err),
    }
}

impl From<JobError> for Status {
    fn from(err: JobError) -> Self {
        match &err {
            JobError::Invalid(_) => Status::invalid_argument(err.to_string()),
            JobError::Precondition(_) => Status::failed_precondition(err.to_string()),
            JobError::Denied(denial) => denial_status(denial),
            JobError::Key { path, source } => {
                let status = status_of(source);
                Status::new(status.code(), format!("{path}: {}", status.message()))
            }
            JobError::Deadline(_) => Status::deadline_exceeded(err.to_string()),
            JobError::Et(et) => match et.kind {
                EtErrorKind::Unavailable => Status::unavailable(err.to_string()),
                EtErrorKind::NotFound | EtErrorKind::NotConfigured => Status::failed_precondition(err.to_string()),
                EtErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
                EtErrorKind::Rejected => Status::invalid_argument(err.to_string()),
                EtErrorKind::Internal => internal(&err),
            },
            JobError::Serialise(_) => internal(&err),
            JobError::Ledger(ledger) => ledger_status(ledger),
            JobError::TokenReused(_) => Status::already_exists(err.to_string()),
            JobError::TokenInFlight(_) => Status::aborted(err.to_string()),
        }
    }
}

impl From<McError> for Status {
    fn from(err: McError) -> Self {
        match &err {
            McError::Invalid(_) => Status::invalid_argument(err.to_string()),
            McError::Precondition(_) => Status::failed_precondition(err.to_string()),
            McError::Denied(denial) => denial_status(denial),
            McError::Key { path, source } => {
                let status = status_of(source);
                Status::new(status.code(), format!("{path}: {}", status.message()))
            }
            McError::Records(records) => records_status(records),
            McError::Ledger(ledger) => ledger_status(ledger),
            McError::Service { kind, .. } => match kind {
                ServiceFailure::Rejected => Status::invalid_argument(err.to_string()),
                ServiceFailure::Unavailable => Status::unavailable(err.to_string()),
                ServiceFailure::AccessDenied => Status::permission_denied(err.to_string()),
                ServiceFailure::NotConfigured => Status::failed_precondition(err.to_string()),
                ServiceFailure::Internal => internal(&err),
            },
            McError::TokenReused(_) => Status::already_exists(err.to_string()),
            McError::TokenInFlight(_) => Status::aborted(err.to_string()),
            McError::Serialise(_) => internal(&err),
        }
    }
}

impl From<RecordsError> for Status {
    fn from(err: RecordsError) -> Self {
        records_status(&err)
    }
}

/// The status of a lookup or rewrap failure.
pub fn records_status(err: &RecordsError) -> Status {
    match err {
        RecordsError::Invalid(_) => Status::invalid_argument(err.to_string()),
        RecordsError::NotFound(_) => Status::not_found(err.to_string()),
        RecordsError::Precondition(_) | RecordsError::NoLedger => Status::failed_precondition(err.to_string()),
        RecordsError::Denied(denial) => denial_status(denial),
        RecordsError::Ledger(ledger) => ledger_status(ledger),
        RecordsError::Key { place, source } => {
            let status = status_of(source);
            Status::new(status.code(), format!("{place}: {}", status.message()))
        }
    }
}

impl From<PreflightError> for Status {
    fn from(err: PreflightError) -> Self {
        match &err {
            PreflightError::Invalid(_) => Status::invalid_argument(err.to_string()),
            PreflightError::Denied(denial) => denial_status(denial),
            PreflightError::NotFound(_) => Status::not_found(err.to_string()),
            PreflightError::Precondition(_) => Status::failed_precondition(err.to_string()),
            PreflightError::Et(et) => match et.kind {
                EtErrorKind::Unavailable => Status::unavailable(err.to_string()),
                EtErrorKind::NotFound => Status::not_found(err.to_string()),
                EtErrorKind::NotConfigured => Status::failed_precondition(err.to_string()),
                EtErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
                EtErrorKind::Rejected => Status::invalid_argument(err.to_string()),
                EtErrorKind::Internal => internal(&err),
            },
            PreflightError::Kms { kind, .. } => match kind {
                KmsErrorKind::Unavailable => Status::unavailable(err.to_string()),
                KmsErrorKind::KeyUnusable | KmsErrorKind::InvalidCiphertext => {
                    Status::failed_precondition(err.to_string())
                }
                KmsErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
                KmsErrorKind::Internal => internal(&err),
            },
        }
    }
}

impl From<LedgerError> for Status {
    fn from(err: LedgerError) -> Self {
        ledger_status(&err)
    }
}

/// The status of a ledger failure: the call released nothing, and may be
/// retried once the database is back.
pub fn ledger_status(err: &LedgerError) -> Status {
    match err {
        LedgerError::Corrupt(_) => internal(err),
        LedgerError::Disabled => Status::failed_precondition(err.to_string()),
        LedgerError::Database(_)
        | LedgerError::Migrate(_)
        | LedgerError::File { .. }
        | LedgerError::Commit(_)
        | LedgerError::Stopped => Status::unavailable(format!("{err}; nothing was released, retry later")),
    }
}

/// Which object RPC an error belongs to: the same cipher refusal is a bad
/// request when encrypting and lost data when decrypting.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `EncryptObject`.
    Encrypt,
    /// `DecryptObject`.
    Decrypt,
}

/// The status of an object failure.
pub fn object_status(err: &ObjectError, direction: Direction) -> Status {
    match err {
        ObjectError::Broker(broker) => status_of(broker),
        ObjectError::Cipher(cipher) => match cipher {
            CipherError::Truncated { .. } | CipherError::Padding | CipherError::Authentication => {
                Status::data_loss(err.to_string())
            }
            CipherError::TooLong => match direction {
                Direction::Encrypt => Status::invalid_argument(format!("chunk: {err}")),
                Direction::Decrypt => Status::data_loss(err.to_string()),
            },
            CipherError::UnsupportedMode { .. } => Status::invalid_argument(format!("start: {err}")),
            CipherError::KeyLength { .. } | CipherError::Backend(_) => internal(err),
        },
        ObjectError::S3 { kind, .. } => match kind {
            S3ErrorKind::NotFound | S3ErrorKind::Rejected => Status::failed_precondition(err.to_string()),
            S3ErrorKind::AccessDenied => Status::permission_denied(err.to_string()),
            S3ErrorKind::Unavailable => Status::unavailable(err.to_string()),
            S3ErrorKind::Invalid => Status::invalid_argument(err.to_string()),
        },
        ObjectError::S3Unavailable(_) => Status::failed_precondition(err.to_string()),
        ObjectError::Cancelled => Status::cancelled(err.to_string()),
        ObjectError::Ledger(ledger) => ledger_status(ledger),
        ObjectError::TokenReused(_) => Status::already_exists(err.to_string()),
        ObjectError::TokenInFlight(_) => Status::aborted(err.to_string()),
        ObjectError::Internal(_) => internal(err),
    }
}

/// An opaque `INTERNAL` for the client, the whole cause in the server log.
pub fn internal(err: &dyn std::error::Error) -> Status {
    let incident = uuid::Uuid::new_v4();
    tracing::error!(%incident, error = %crate::app::aws::error_chain(err), "internal error");
    Status::internal(format!("internal error (incident {incident})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary_and_short_ones_kept() {
        let short = Status::invalid_argument("mode: must be aes-gcm");
        assert_eq!(bounded(short).message(), "mode: must be aes-gcm");
        let long = Status::invalid_argument("é".repeat(2000));
        let cut = bounded(long);
        assert_eq!(cut.code(), tonic::Code::InvalidArgument);
        assert!(cut.message().len() < MAX_MESSAGE_BYTES + 64, "{}", cut.message().len());
        assert!(cut.message().ends_with("… (message cut; 4000 bytes in all)"), "{}", cut.message());
    }
}
