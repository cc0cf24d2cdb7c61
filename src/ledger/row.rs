//! What one ledger row says about one key: the wrapped key exactly as it
//! left the broker, how it was wrapped, who asked for it, and where it is
//! used.
//!
//! Owns the row's shape. Must never hold plaintext key material or
//! anything plaintext follows from: every field here is as public as the
//! `Encryption` block the caller was answered.

use crate::custody::keys::{EncryptionText, ServiceContext};
use crate::custody::rpc::Rpc;

/// One key, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The KMS-wrapped key, base64, exactly as handed out.
    pub wrapped_key: String,
    /// The ARN of the KMS key that wrapped it.
    pub kms_key_arn: String,
    /// The encryption context it was wrapped under.
    pub context: ServiceContext,
    /// The block's `Mode` (`aes-cbc-pkcs7`, ..., `aes-128` for HLS, the DRM
    /// format for PlayReady).
    pub mode: String,
    /// The key length, where the broker knows it.
    pub key_bits: Option<u32>,
    /// The block's `InitializationVector`, base64, where it has one.
    pub iv: Option<String>,
    /// The block's `KeyMd5`, base64.
    pub key_md5: String,
    /// The keyed fingerprint the audit log names the key by.
    pub fingerprint: String,
    /// Where the key is used.
    pub usage: Usage,
    /// For a key rewrapped to another KMS key or context: the fingerprint of
    /// the key it came from.
    pub rewrapped_from: Option<String>,
}

impl KeyRow {
    /// The row of an `Encryption` block in ET's text form (an empty IV is
    /// none).
    pub fn from_block(block: EncryptionText, wrapping: Wrapping, fingerprint: String, usage: Usage) -> KeyRow {
        let EncryptionText { mode, key, key_md5, initialization_vector } = block;
        KeyRow {
            wrapped_key: key,
            kms_key_arn: wrapping.kms_key_arn,
            context: wrapping.context,
            mode,
            key_bits: wrapping.key_bits,
            iv: Some(initialization_vector).filter(|iv| !iv.is_empty()),
            key_md5,
            fingerprint,
            usage,
            rewrapped_from: None,
        }
    }
}

/// How a key was wrapped: what the `Encryption` block itself does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapping {
    /// The ARN of the KMS key that wrapped it.
    pub kms_key_arn: String,
    /// The encryption context it was wrapped under.
    pub context: ServiceContext,
    /// The key length, where the broker knows it.
    pub key_bits: Option<u32>,
}

/// Where a recorded key is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Usage {
    /// Handed to the caller alone (`IssueDataKey`, `WrapKey`).
    #[default]
    Unattached,
    /// A block of an Elastic Transcoder job.
    Job {
        /// ET's job id; `None` until ET has answered.
        job_id: Option<String>,
        /// The block's place in the CreateJob body, e.g. `Outputs[3].Encryption`.
        place: String,
    },
    /// The key of an S3 object the broker wrote.
    Object(S3Object),
}

/// An S3 object version the broker wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3Object {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The version S3 made, on a versioned bucket.
    pub version_id: Option<String>,
    /// The ETag S3 answered.
    pub etag: Option<String>,
}

/// Who made the call that recorded keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The caller's identity (SPIFFE ID, `dns:NAME` or `anonymous`).
    pub identity: String,
    /// The RPC.
    pub rpc: Rpc,
    /// The call's request id, as the audit log records it.
    pub request_id: String,
}

/// The name a service context is recorded by: the value of its one
/// context entry (`elastictranscoder.amazonaws.com`, ...).
pub(crate) fn context_name(context: ServiceContext) -> &'static str {
    context.entry().1
}

/// The service context a recorded name stands for.
pub(crate) fn context_of(name: &str) -> Option<ServiceContext> {
    [ServiceContext::ElasticTranscoder, ServiceContext::MediaConvert, ServiceContext::AuditChain]
        .into_iter()
        .find(|c| context_name(*c) == name)
}
