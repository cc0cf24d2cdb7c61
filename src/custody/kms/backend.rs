//! The one trait every KMS backend implements, what it answers, and the
//! kinds of KMS failure a caller can act on. Backends receive plaintext only
//! as a borrowed [`DataKey`] and return it only as an owned one; they must
//! never log key bytes.

use async_trait::async_trait;

use super::key::KmsKeyId;
use crate::custody::keys::{DataKey, ServiceContext, WrappedKey};

/// What kind of KMS failure happened; decides the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsErrorKind {
    /// Throttling, outage, timeout: retry later (`UNAVAILABLE`).
    Unavailable,
    /// The key is missing, disabled, in the wrong state or cannot decrypt this
    /// ciphertext (`FAILED_PRECONDITION`).
    KeyUnusable,
    /// The broker's credentials may not use the key (`PERMISSION_DENIED`).
    AccessDenied,
    /// The ciphertext is corrupt or was wrapped under another context.
    InvalidCiphertext,
    /// Anything else (`INTERNAL`, details in the server log only).
    Internal,
}

/// A failed KMS operation. Messages come from KMS or the transport and
/// never contain key material.
#[derive(Debug, thiserror::Error)]
#[error("KMS {operation} failed: {message}")]
pub struct KmsError {
    /// `Encrypt`, `Decrypt`, …
    pub operation: &'static str,
    /// What kind of failure.
    pub kind: KmsErrorKind,
    /// KMS's or the transport's words.
    pub message: String,
}

impl KmsError {
    pub(crate) fn new(operation: &'static str, kind: KmsErrorKind, message: impl Into<String>) -> Self {
        KmsError { operation, kind, message: message.into() }
    }
}

/// A key KMS wrapped, with the ARN of the key that wrapped it.
#[derive(Debug)]
pub struct Wrapped {
    /// The ciphertext blob.
    pub key: WrappedKey,
    /// The resolved key ARN.
    pub key_arn: String,
}

/// A key KMS unwrapped, with the ARN of the key that had wrapped it.
#[derive(Debug)]
pub struct Unwrapped {
    /// The plaintext, in zeroizing memory.
    pub key: DataKey,
    /// The resolved key ARN.
    pub key_arn: String,
}

/// A key KMS re-encrypted, with the ARNs of the key that had wrapped it
/// and the key that wraps it now.
#[derive(Debug)]
pub struct Rewrapped {
    /// The new ciphertext blob.
    pub key: WrappedKey,
    /// The resolved ARN of the key that had wrapped it.
    pub source_key_arn: String,
    /// The resolved ARN of the key that wraps it now.
    pub key_arn: String,
}

/// What KMS knows a key by: its ARN and every other name that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The key's ARN.
    pub arn: String,
    /// Its other names: key id, aliases, alias ARNs.
    pub names: Vec<String>,
}

/// A KMS that wraps data keys under an encryption context.
#[async_trait]
pub trait Kms: Send + Sync + 'static {
    /// The backend's name for logs (`aws`, `local`).
    fn backend(&self) -> &'static str;

    /// Encrypts `plaintext` with `key_id` under `context`.
    ///
    /// # Errors
    /// [`KmsError`] with the kind of failure.
    async fn wrap(&self, key_id: &KmsKeyId, plaintext: &DataKey, context: ServiceContext) -> Result<Wrapped, KmsError>;

    /// The key `key_id` names: its ARN and its other names (AWS KMS
    /// `DescribeKey` and `ListAliases`). A backend that cannot tell answers
    /// the name as given.
    ///
    /// # Errors
    /// [`KmsError`] with the kind of failure.
    async fn describe(&self, key_id: &KmsKeyId) -> Result<Described, KmsError> {
        Ok(Described { arn: key_id.as_str().to_owned(), names: Vec::new() })
    }

    /// Decrypts `wrapped` under `context`; with `key_id`, only if that key
    /// wrapped it.
    ///
    /// # Errors
    /// [`KmsError`] with the kind of failure.
    async fn unwrap(
        &self,
        key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        context: ServiceContext,
    ) -> Result<Unwrapped, KmsError>;

    /// Re-encrypts `wrapped` from the `source` context (and, with
    /// `source_key_id`, only if that key wrapped it) to `destination_key_id`
    /// under the `destination` context, the plaintext never leaving KMS
    /// (AWS KMS `ReEncrypt`). A backend that cannot answers an error.
    ///
    /// # Errors
    /// [`KmsError`] with the kind of failure.
    async fn rewrap(
        &self,
        source_key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        source: ServiceContext,
        destination_key_id: &KmsKeyId,
        destination: ServiceContext,
    ) -> Result<Rewrapped, KmsError> {
        let _ = (source_key_id, wrapped, source, destination_key_id, destination);
        Err(KmsError::new(
            "ReEncrypt",
            KmsErrorKind::Internal,
            format!("the {} KMS backend cannot re-encrypt keys", self.backend()),
        ))
    }
}
