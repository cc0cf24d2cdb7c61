//! What a job came to: the files whose keys the broker made or checked, and
//! the answer a caller gets (and a repeat with the same request token gets
//! again), and the ledger rows of its files. Wrapped keys only.

use crate::custody::keys::{EncryptionText, ServiceContext};
use crate::ledger::{KeyRow, Usage, Wrapping};

/// A file whose key the broker made or checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtectedFile {
    /// JSON path in the CreateJob body, e.g. `Outputs[3].ThumbnailEncryption`.
    pub path: String,
    /// The object key, pattern or playlist name the block protects.
    pub object_key: String,
    /// The block as it stands in the body (`Mode` is `aes-128` for HLS, the
    /// DRM format for PlayReady).
    pub encryption: EncryptionText,
    /// Whether the broker made the key (or wrapped a PlayReady content key).
    pub issued_by_broker: bool,
    /// The key's length in bits.
    pub key_bits: u32,
    /// The keyed hash of the wrapped key.
    pub fingerprint: String,
}

/// The outcome of a job (what a repeat with the same request token is
/// answered, so wrapped keys only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssembledJob {
    /// ET's job id; `None` with `validate_only`.
    pub job_id: Option<String>,
    /// The rest-json body POSTed (or that would be) to `/2012-09-25/jobs`.
    pub request_json: String,
    /// The job as ET answered it; `None` with `validate_only`.
    pub job_json: Option<String>,
    /// Every protected file.
    pub protected_files: Vec<ProtectedFile>,
    /// The pipeline's KMS key, when the job has AES blocks.
    pub kms_key_arn: String,
}

/// The ledger rows of a job's protected files, before ET has named the job.
pub(super) fn ledger_rows(files: &[ProtectedFile], key_arn: &str) -> Vec<KeyRow> {
    files
        .iter()
        .map(|file| {
            let wrapping = Wrapping {
                kms_key_arn: key_arn.to_owned(),
                context: ServiceContext::ElasticTranscoder,
                key_bits: Some(file.key_bits),
            };
            let usage = Usage::Job { job_id: None, place: file.path.clone() };
            KeyRow::from_block(file.encryption.clone(), wrapping, file.fingerprint.clone(), usage)
        })
        .collect()
}
