//! `ConnectPipeline`: the Elastic Transcoder guide's two set-up steps as
//! API calls. "Add the key to the pipeline" is ET `UpdatePipeline` with
//! `AwsKmsKeyArn`; "add the role to the key" is a KMS `CreateGrant` of
//! `Decrypt` to the pipeline's role, constrained to ET's encryption context
//! (`EncryptionContextSubset {"service":"elastictranscoder.amazonaws.com"}`).
//!
//! Owns the plan, its checks before anything changes, and its application.
//! Must never change anything without `apply`, and never start changing
//! when a check that can be made first fails: every refusal comes before
//! the first call that changes something.

use std::collections::BTreeMap;

use aws_sdk_kms::types::{GrantConstraints, GrantOperation};
use serde_json::json;

use super::access::Principal;
use super::facts::{self, KeyLookup};
use super::{AwsAdmin, Preflight, PreflightError, Report, et_context, parse_pipeline_id};
use crate::app::aws::{SdkFailure, sdk_failure};
use crate::custody::field::{FieldError, echo};
use crate::custody::kms::{KeyArn, KmsErrorKind};
use crate::custody::policy::Grant;
use crate::jobs::et::error::map_et_error;

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
    /// `UpdatePipeline` or `CreateGrant`.
    pub action: &'static str,
    /// What it does, in words.
    pub detail: String,
    /// The API request, as JSON.
    pub request_json: String,
    /// Planned, done or already done.
    pub state: ChangeState,
}

/// What `connect` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The changes, in the order they are made.
    pub changes: Vec<Change>,
    /// Whether they were made.
    pub applied: bool,
    /// The check after the changes (with `apply`), or before them.
    pub report: Report,
}

/// The name of the grant connect makes, one per pipeline.
pub fn grant_name(pipeline_id: &str) -> String {
    format!("keybroker-elastictranscoder-{pipeline_id}")
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

impl Preflight {
    /// Plans, and with `apply` makes, the two changes that connect the
    /// pipeline `id` to the key `kms_key_arn`; then checks the pipeline.
    ///
    /// # Errors
    /// [`PreflightError`]: a bad field, outside the grant, no such
    /// pipeline, a change that cannot be made (refused before any change),
    /// or an AWS failure while changing.
    pub async fn connect(
        &self,
        id: &str,
        kms_key_arn: &str,
        apply: bool,
        grant: &Grant,
    ) -> Result<Connection, PreflightError> {
        let id = parse_pipeline_id(id)?;
        let key = parse_key_arn(kms_key_arn)?;
        grant.check_pipeline(id)?;
        grant.check_kms_key(kms_key_arn)?;
        let pipelines = self.transcoder.pipelines();
        let pipeline = pipelines.resolve_fresh(id).await?;
        let configured = pipelines.is_configured(id);
        if let Some(region) = pipeline.region.as_deref().filter(|r| !r.is_empty())
            && region != key.region
        {
            return Err(PreflightError::Precondition(format!(
                "pipeline {id} is in {region} but {kms_key_arn} is in {}: Elastic Transcoder uses a key of its \
                 pipeline's region only; create or pick a key in {region}",
                key.region
            )));
        }
        let role = Principal::parse(&pipeline.role).filter(|p| p.arn.contains(":role/")).ok_or_else(|| {
            PreflightError::Precondition(format!(
                "pipeline {id} has no IAM role ARN to grant the key to (Role is {})",
                echo(&pipeline.role)
            ))
        })?;
        let aws = self.aws.as_ref().ok_or_else(|| {
            PreflightError::Precondition(
                "the broker has no AWS KMS (kms.backend = \"local\"): connect needs kms.backend = \"aws\"".to_owned(),
            )
        })?;
        check_key(aws, kms_key_arn).await?;

        let same_key = pipeline.kms_key_arn.as_deref() == Some(kms_key_arn);
        let update_json = json!({ "Id": id, "AwsKmsKeyArn": kms_key_arn }).to_string();
        let mut update = Change {
            action: "UpdatePipeline",
            detail: if configured {
                format!("pipeline {id} comes from [[transcoder.pipelines]]: set kms_key_arn = \"{kms_key_arn}\" there")
            } else {
                format!("put {kms_key_arn} on pipeline {id} as its AwsKmsKeyArn")
            },
            request_json: update_json,
            state: if same_key { ChangeState::AlreadyDone } else { ChangeState::Planned },
        };
        if apply && configured && !same_key {
            return Err(PreflightError::Precondition(update.detail));
        }
        let existing = facts::grants(&aws.kms(kms_key_arn), kms_key_arn).await.map_err(|failure| {
            PreflightError::Kms { operation: "ListGrants", kind: kind_of(&failure), message: failure.message }
        })?;
        let context = et_context();
        let granted = existing.iter().any(|g| g.allows(&role, "kms:Decrypt", &context));
        let name = grant_name(id);
        let mut create_grant = Change {
            action: "CreateGrant",
            detail: format!(
                "let {} Decrypt with {kms_key_arn} under the Elastic Transcoder encryption context",
                pipeline.role
            ),
            request_json: json!({
                "KeyId": kms_key_arn,
                "GranteePrincipal": pipeline.role,
                "Operations": ["Decrypt"],
                "Constraints": { "EncryptionContextSubset": context },
                "Name": name,
            })
            .to_string(),
            state: if granted { ChangeState::AlreadyDone } else { ChangeState::Planned },
        };
        if !apply {
            let report = self.check_pipeline(pipeline).await;
            return Ok(Connection { changes: vec![update, create_grant], applied: false, report });
        }
        // Whatever can refuse the changes refuses before the first one.
        let et = match update.state {
            ChangeState::Planned => Some(self.transcoder.et().ok_or_else(|| {
                PreflightError::Precondition("no Elastic Transcoder endpoint is configured".to_owned())
            })?),
            _ => None,
        };
        if create_grant.state == ChangeState::Planned {
            make_grant(aws, kms_key_arn, &pipeline.role, &name, context).await?;
            create_grant.state = ChangeState::Done;
            tracing::info!(pipeline_id = %id, kms_key_arn, role = %pipeline.role, "granted the pipeline's role Decrypt");
        }
        if let Some(client) = et {
            client.update_pipeline().id(id).aws_kms_key_arn(kms_key_arn).send().await.map_err(|e| {
                let mut err = map_et_error("UpdatePipeline", &e);
                if create_grant.state == ChangeState::Done {
                    err.message.push_str("; the KMS grant was made: run connect again to finish");
                }
                PreflightError::from(err)
            })?;
            update.state = ChangeState::Done;
            tracing::info!(pipeline_id = %id, kms_key_arn, "put the KMS key on the pipeline");
        }
        let fresh = pipelines.resolve_fresh(id).await?;
        let report = self.check_pipeline(fresh).await;
        Ok(Connection { changes: vec![update, create_grant], applied: true, report })
    }
}

/// The key must exist, be customer-managed, enabled, symmetric and for
/// encryption before anything is changed.
async fn check_key(aws: &AwsAdmin, arn: &str) -> Result<(), PreflightError> {
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
                Err(PreflightError::Precondition(format!("{arn} cannot serve the pipeline: {}", wrong.join("; "))))
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

async fn make_grant(
    aws: &AwsAdmin,
    arn: &str,
    role: &str,
    name: &str,
    context: BTreeMap<String, String>,
) -> Result<(), PreflightError> {
    let constraints =
        GrantConstraints::builder().set_encryption_context_subset(Some(context.into_iter().collect())).build();
    aws.kms(arn)
        .create_grant()
        .key_id(arn)
        .grantee_principal(role)
        .operations(GrantOperation::Decrypt)
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
fn kind_of(failure: &SdkFailure) -> KmsErrorKind {
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
