//! The KMS side of a connection, shared by every transcoder: the change
//! record (planned, done, already done), the key a connection may use, and
//! the `CreateGrant` that lets a transcoder's role use it under its
//! encryption context.
//!
//! Owns the refusal of an unusable key before anything changes, and the
//! grant call. Must never make a grant without its encryption-context
//! constraint.

use std::collections::BTreeMap;

use aws_sdk_kms::types::{GrantConstraints, GrantOperation};

use super::facts::{self, KeyLookup};
use super::{AwsAdmin, PreflightError};
use crate::app::aws::{SdkFailure, sdk_failure};
use crate::custody::field::{FieldError, echo};
use crate::custody::kms::{KeyArn, KmsErrorKind};

/// What happened, or would happen, to one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeState {
    /// Would be made with `apply`.
    Planned,
    /// Made by this call.
    Done,
    /// Nothing to change: it is already so.
    AlreadyDone,
}

impl ChangeState {
    /// `planned`, `done` or `already done`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeState::Planned => "planned",
            ChangeState::Done => "done",
            ChangeState::AlreadyDone => "already done",
        }
    }
}

/// One change of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `UpdatePipeline`, `CreateGrant`, …
    pub action: &'static str,
    /// What it does, in words.
    pub detail: String,
    /// The API request, as JSON.
    pub request_json: String,
    /// Planned, done or already done.
    pub state: ChangeState,
}

/// Parses the key to connect: a KMS key ARN, not an alias, not `aws/s3`.
///
/// # Errors
/// [`FieldError`] naming `kms_key_arn`.
pub fn parse_key_arn(text: &str) -> Result<KeyArn<'_>, FieldError> {
    const FIELD: &str = "kms_key_arn";
    if text.is_empty() {
        return Err(FieldError::new(FIELD, "required"));
    }
    match KeyArn::parse(text) {
        Some(arn)
            if arn.resource.starts_with("key/") && arn.resource.len() > 4 && !text.contains(char::is_whitespace) =>
        {
            Ok(arn)
        }
        _ => Err(FieldError::new(
            FIELD,
            format!("must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY_ID), got {}", echo(text)),
        )),
    }
}

/// The key must exist, be customer-managed, enabled, symmetric and for
/// encryption before anything is changed; `subject` names what it is to
/// serve (`the pipeline`).
///
/// # Errors
/// [`PreflightError::Precondition`] saying what is wrong with the key, or
/// [`PreflightError::Kms`] when KMS cannot say.
pub async fn check_key(aws: &AwsAdmin, arn: &str, subject: &str) -> Result<(), PreflightError> {
    match facts::describe_key(&aws.kms(arn), arn).await {
        KeyLookup::Found(facts) => {
            let mut wrong = Vec::new();
            if !facts.customer_managed {
                wrong.push(format!("it is managed by {}, not by the customer", facts.manager));
            }
            if facts.state != "Enabled" {
                wrong.push(format!("its state is {}", facts.state));
            }
            if facts.spec != "SYMMETRIC_DEFAULT" || facts.usage != "ENCRYPT_DECRYPT" {
                wrong.push(format!("it is {} {}, not SYMMETRIC_DEFAULT ENCRYPT_DECRYPT", facts.spec, facts.usage));
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(PreflightError::Precondition(format!("{arn} cannot serve {subject}: {}", wrong.join("; "))))
            }
        }
        KeyLookup::Missing(message) => Err(PreflightError::Precondition(format!("KMS has no key {arn}: {message}"))),
        KeyLookup::Unreadable(message) => {
            Err(PreflightError::Kms { operation: "DescribeKey", kind: KmsErrorKind::Unavailable, message })
        }
        KeyLookup::NotAsked => Err(PreflightError::Kms {
            operation: "DescribeKey",
            kind: KmsErrorKind::Internal,
            message: "the key was not described".to_owned(),
        }),
    }
}

/// Grants `role` the `operations` on the key `arn`, only under `context`
/// (`EncryptionContextSubset`), as the grant `name`.
///
/// # Errors
/// [`PreflightError::Kms`] with KMS's words.
pub async fn make_grant(
    aws: &AwsAdmin,
    arn: &str,
    role: &str,
    operations: &[GrantOperation],
    name: &str,
    context: BTreeMap<String, String>,
) -> Result<(), PreflightError> {
    let constraints =
        GrantConstraints::builder().set_encryption_context_subset(Some(context.into_iter().collect())).build();
    aws.kms(arn)
        .create_grant()
        .key_id(arn)
        .grantee_principal(role)
        .set_operations(Some(operations.to_vec()))
        .constraints(constraints)
        .name(name)
        .send()
        .await
        .map(drop)
        .map_err(|e| {
            let failure = sdk_failure(&e);
            PreflightError::Kms { operation: "CreateGrant", kind: kind_of(&failure), message: failure.message }
        })
}

/// What a caller can do about a failed KMS call of a change.
pub fn kind_of(failure: &SdkFailure) -> KmsErrorKind {
    match failure.code.as_deref() {
        _ if failure.transport => KmsErrorKind::Unavailable,
        Some(
            "ThrottlingException" | "LimitExceededException" | "KMSInternalException" | "DependencyTimeoutException",
        ) => KmsErrorKind::Unavailable,
        Some("AccessDeniedException") => KmsErrorKind::AccessDenied,
        Some("NotFoundException" | "DisabledException" | "KMSInvalidStateException") => KmsErrorKind::KeyUnusable,
        _ => KmsErrorKind::Internal,
    }
}
