//! The `aws` backend: AWS KMS through aws-sdk-kms.
//!
//! Clients come from `aws_config` (region, credential chain, the standard
//! `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_KMS` variables) with the timeouts and
//! retries of [`crate::app::aws`]. Plaintext from `Decrypt` is moved out of the
//! SDK's blob into zeroizing memory without a copy.

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;

use super::backend::{Described, Kms, KmsError, KmsErrorKind, Rewrapped, Unwrapped, Wrapped};
use super::key::KmsKeyId;
use crate::app::aws::sdk_failure;
use crate::custody::keys::{DataKey, ServiceContext, WrappedKey};

/// AWS KMS.
#[derive(Clone)]
pub struct AwsKms {
    client: Client,
}

impl AwsKms {
    /// A backend over a shared SDK configuration.
    pub fn new(sdk_config: &aws_config::SdkConfig) -> Self {
        AwsKms { client: Client::new(sdk_config) }
    }
}

#[async_trait]
impl Kms for AwsKms {
    fn backend(&self) -> &'static str {
        "aws"
    }

    async fn wrap(&self, key_id: &KmsKeyId, plaintext: &DataKey, context: ServiceContext) -> Result<Wrapped, KmsError> {
        // The SDK takes an owned blob; this copy lives in the SDK's request
        // until it is sent (a limit documented in the README).
        let out = self
            .client
            .encrypt()
            .key_id(key_id.as_str())
            .plaintext(Blob::new(plaintext.expose_secret().to_vec()))
            .set_encryption_context(Some(context.encryption_context()))
            .send()
            .await
            .map_err(|e| map_sdk_error("Encrypt", e))?;
        let key_arn = out.key_id.clone().unwrap_or_default();
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| KmsError::new("Encrypt", KmsErrorKind::Internal, "no CiphertextBlob in the answer"))?;
        Ok(Wrapped { key: WrappedKey::new(blob.into_inner()), key_arn })
    }

    async fn unwrap(
        &self,
        key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        context: ServiceContext,
    ) -> Result<Unwrapped, KmsError> {
        let out = self
            .client
            .decrypt()
            .set_key_id(key_id.map(|k| k.as_str().to_owned()))
            .ciphertext_blob(Blob::new(wrapped.as_bytes().to_vec()))
            .set_encryption_context(Some(context.encryption_context()))
            .send()
            .await
            .map_err(|e| map_sdk_error("Decrypt", e))?;
        let key_arn = out.key_id.unwrap_or_default();
        let blob = out
            .plaintext
            .ok_or_else(|| KmsError::new("Decrypt", KmsErrorKind::Internal, "no Plaintext in the answer"))?;
        let key = DataKey::from_vec(blob.into_inner(), "encryption.key").map_err(|e| {
            KmsError::new(
                "Decrypt",
                KmsErrorKind::InvalidCiphertext,
                format!("the unwrapped key is not an AES key ({e})"),
            )
        })?;
        Ok(Unwrapped { key, key_arn })
    }

    async fn describe(&self, key_id: &KmsKeyId) -> Result<Described, KmsError> {
        let out = self
            .client
            .describe_key()
            .key_id(key_id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk_error("DescribeKey", e))?;
        let meta = out
            .key_metadata
            .ok_or_else(|| KmsError::new("DescribeKey", KmsErrorKind::Internal, "no KeyMetadata in the answer"))?;
        let arn = meta.arn.clone().unwrap_or_else(|| key_id.as_str().to_owned());
        let mut names = vec![key_id.as_str().to_owned(), meta.key_id.clone()];
        // The key's aliases; without kms:ListAliases the key still answers
        // to its id, its ARN and the configured name.
        let mut aliases = self.client.list_aliases().key_id(meta.key_id.as_str()).into_paginator().items().send();
        while let Some(alias) = aliases.next().await {
            match alias {
                Ok(alias) => names.extend(alias.alias_name.into_iter().chain(alias.alias_arn)),
                Err(e) => {
                    tracing::warn!(kms_key = %key_id, error = %map_sdk_error("ListAliases", e), "key aliases not listed");
                    break;
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(Described { arn, names })
    }

    async fn rewrap(
        &self,
        source_key_id: Option<&KmsKeyId>,
        wrapped: &WrappedKey,
        source: ServiceContext,
        destination_key_id: &KmsKeyId,
        destination: ServiceContext,
    ) -> Result<Rewrapped, KmsError> {
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.as_bytes().to_vec()))
            .set_source_key_id(source_key_id.map(|k| k.as_str().to_owned()))
            .set_source_encryption_context(Some(source.encryption_context()))
            .destination_key_id(destination_key_id.as_str())
            .set_destination_encryption_context(Some(destination.encryption_context()))
            .send()
            .await
            .map_err(|e| map_sdk_error("ReEncrypt", e))?;
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| KmsError::new("ReEncrypt", KmsErrorKind::Internal, "no CiphertextBlob in the answer"))?;
        Ok(Rewrapped {
            key: WrappedKey::new(blob.into_inner()),
            source_key_arn: out.source_key_id.unwrap_or_default(),
            key_arn: out.key_id.unwrap_or_default(),
        })
    }
}

/// Maps an SDK failure to a kind a caller can act on, keeping KMS's words.
fn map_sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let failure = sdk_failure(&err);
    let kind = match (&failure.code, failure.transport) {
        (_, true) => KmsErrorKind::Unavailable,
        (Some(code), false) => kind_of_code(code),
        (None, false) => KmsErrorKind::Internal,
    };
    KmsError::new(operation, kind, failure.message)
}

/// The KMS error codes, sorted by what a caller can do about them.
fn kind_of_code(code: &str) -> KmsErrorKind {
    match code {
        "ThrottlingException"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException"
        | "InternalFailure" => KmsErrorKind::Unavailable,
        "NotFoundException"
        | "DisabledException"
        | "KMSInvalidStateException"
        | "InvalidKeyUsageException"
        | "IncorrectKeyException"
        | "InvalidArnException" => KmsErrorKind::KeyUnusable,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => KmsErrorKind::AccessDenied,
        "InvalidCiphertextException" => KmsErrorKind::InvalidCiphertext,
        _ => KmsErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_codes_map_to_actionable_kinds() {
        assert_eq!(kind_of_code("ThrottlingException"), KmsErrorKind::Unavailable);
        assert_eq!(kind_of_code("DisabledException"), KmsErrorKind::KeyUnusable);
        assert_eq!(kind_of_code("NotFoundException"), KmsErrorKind::KeyUnusable);
        assert_eq!(kind_of_code("AccessDeniedException"), KmsErrorKind::AccessDenied);
        assert_eq!(kind_of_code("InvalidCiphertextException"), KmsErrorKind::InvalidCiphertext);
        assert_eq!(kind_of_code("SomethingNew"), KmsErrorKind::Internal);
    }
}
