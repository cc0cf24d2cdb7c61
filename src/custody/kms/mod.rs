//! KMS backends behind one trait: wrapping and unwrapping data keys under a
//! service's encryption context.
//!
//! Owns the key-id grammar and the mapping of KMS failures to kinds a caller
//! can act on. Backends receive plaintext only as a borrowed [`DataKey`] and
//! return it only as an owned one; they must never log key bytes.

use std::fmt;

use async_trait::async_trait;

use crate::custody::field::FieldError;
use crate::custody::keys::{DataKey, ServiceContext, WrappedKey};

pub mod aws;
pub mod local;

pub use aws::AwsKms;
pub use local::LocalKeyring;

/// The most characters a key id may have (the KMS API's limit).
pub const MAX_KEY_ID_LEN: usize = 2048;

/// A KMS key as a caller names it: key id, key ARN, alias name or alias ARN.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KmsKeyId(String);

impl KmsKeyId {
    /// Parses a key id from a request field.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` when empty, longer than 2,048
    /// characters, or holding whitespace or control characters.
    pub fn parse(text: &str, field: &str) -> Result<Self, FieldError> {
        let rule = if text.is_empty() {
            Some("must not be empty".to_owned())
        } else if text.chars().count() > MAX_KEY_ID_LEN {
            Some(format!("must be at most {MAX_KEY_ID_LEN} characters, got {}", text.chars().count()))
        } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("must be a key id, key ARN, alias name or alias ARN without whitespace".to_owned())
        } else if text.starts_with("arn:") && KeyArn::parse(text).is_none() {
            Some("must be an ARN of the form arn:PARTITION:kms:REGION:ACCOUNT:key/ID or …:alias/NAME".to_owned())
        } else {
            None
        };
        match rule {
            Some(rule) => Err(FieldError::new(field, rule)),
            None => Ok(KmsKeyId(text.to_owned())),
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ARN's parts, when the id is an ARN.
    pub fn arn(&self) -> Option<KeyArn<'_>> {
        KeyArn::parse(&self.0)
    }
}

impl fmt::Debug for KmsKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KmsKeyId({})", self.0)
    }
}

impl fmt::Display for KmsKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parts of a KMS key or alias ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyArn<'a> {
    /// `aws`, `aws-cn`, …
    pub partition: &'a str,
    /// The key's region.
    pub region: &'a str,
    /// The owning account.
    pub account: &'a str,
    /// `key/ID` or `alias/NAME`.
    pub resource: &'a str,
}

impl<'a> KeyArn<'a> {
    /// Splits `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` (or `alias/NAME`).
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(6, ':');
        let (arn, partition, service, region, account, resource) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let resource_ok = resource
            .strip_prefix("key/")
            .or_else(|| resource.strip_prefix("alias/"))
            .is_some_and(|rest| !rest.is_empty());
        (arn == "arn" && service == "kms" && !partition.is_empty() && !region.is_empty() && resource_ok)
            .then_some(KeyArn { partition, region, account, resource })
    }
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_of_every_form_parse() {
        for id in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/media",
            "arn:aws:kms:us-east-2:111122223333:alias/media",
        ] {
            assert!(KmsKeyId::parse(id, "kms_key_id").is_ok(), "{id}");
        }
    }

    #[test]
    fn bad_key_ids_name_field_and_rule() {
        let long = "k".repeat(2049);
        for (id, rule) in [
            ("", "must not be empty"),
            (long.as_str(), "at most 2048"),
            ("alias/a b", "without whitespace"),
            ("arn:aws:s3:::bucket", "must be an ARN"),
        ] {
            let err = KmsKeyId::parse(id, "kms_key_id").unwrap_err().to_string();
            assert!(err.starts_with("kms_key_id: ") && err.contains(rule), "{err}");
        }
        assert!(KmsKeyId::parse(&"k".repeat(2048), "kms_key_id").is_ok());
    }

    #[test]
    fn arn_parts() {
        let arn = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/abc").unwrap();
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.account, "111122223333");
        assert_eq!(arn.resource, "key/abc");
    }
}
