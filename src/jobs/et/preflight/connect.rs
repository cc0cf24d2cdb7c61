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

use aws_sdk_kms::types::GrantOperation;
use serde_json::json;

use super::{Preflight, PreflightError, Report, et_context, parse_pipeline_id};
use crate::custody::field::echo;
use crate::custody::policy::Grant;
use crate::jobs::et::error::map_et_error;
use crate::jobs::preflight::access::Principal;
pub use crate::jobs::preflight::change::{Change, ChangeState, parse_key_arn};
use crate::jobs::preflight::change::{check_key, kind_of, make_grant};
use crate::jobs::preflight::facts;

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
        check_key(aws, kms_key_arn, "the pipeline").await?;

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
            make_grant(aws, kms_key_arn, &pipeline.role, &[GrantOperation::Decrypt], &name, context).await?;
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
