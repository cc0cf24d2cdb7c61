//! `ConnectMediaConvertRole`: the MediaConvert guide's "the job's IAM role
//! needs `kms:Decrypt` on the key" as one API call, a KMS `CreateGrant` of
//! `Decrypt` to the role constrained to MediaConvert's encryption context
//! (`EncryptionContextSubset {"service":"mediaconvert.amazonaws.com"}`).
//!
//! Owns the plan, its checks before anything changes, and its application.
//! Must never change anything without `apply`, and never make the grant
//! when a check that can be made first fails.

use aws_sdk_kms::types::GrantOperation;
use serde_json::json;

use super::{RoleCheck, RoleReport, RoleRequest, mediaconvert_context, parse_role_arn};
use crate::custody::field::FieldError;
use crate::custody::policy::Grant;
use crate::jobs::preflight::PreflightError;
use crate::jobs::preflight::change::{Change, ChangeState, check_key, kind_of, make_grant, parse_key_arn};
use crate::jobs::preflight::facts;

/// What the key is to serve, as a refusal names it.
const SUBJECT_WORDS: &str = "MediaConvert's job role";

/// What `connect` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConnection {
    /// The changes, in the order they are made.
    pub changes: Vec<Change>,
    /// Whether they were made.
    pub applied: bool,
    /// The check after the changes (with `apply`), or before them.
    pub report: RoleReport,
}

/// The name of the grant connect makes, one per role (KMS grant names take
/// `[a-zA-Z0-9:/_-]`; anything else in the role's name becomes `-`).
pub fn grant_name(role_arn: &str) -> String {
    let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-".contains(c) { c } else { '-' }).collect();
    format!("keybroker-mediaconvert-{name}")
}

impl RoleCheck {
    /// Plans, and with `apply` makes, the grant that lets the job role
    /// decrypt the broker's MediaConvert keys with the key; then checks the
    /// role.
    ///
    /// # Errors
    /// [`PreflightError`]: a bad or missing field, a key outside the grant,
    /// a key that cannot serve (refused before any change), or a KMS
    /// failure.
    pub async fn connect(
        &self,
        request: &RoleRequest,
        apply: bool,
        grant: &Grant,
    ) -> Result<RoleConnection, PreflightError> {
        let subject = self.resolve(request)?;
        grant.check_kms_key(&subject.kms_key_arn)?;
        let subject = self.named_key(subject).await;
        let key = parse_key_arn(&subject.kms_key_arn)?;
        let role = parse_role_arn(&subject.role_arn)
            .map_err(|e| FieldError::new("role_arn", format!("{} (mediaconvert.role_arn)", e.rule)))?;
        grant.check_kms_key(&subject.kms_key_arn)?;
        if let Some(region) = self.settings.region.as_deref()
            && region != key.region
        {
            return Err(PreflightError::Precondition(format!(
                "MediaConvert is called in {region} but {} is in {}: a job's inputs are decrypted with a key of its \
                 region (KmsKeyRegion); create or pick a key in {region}",
                subject.kms_key_arn, key.region
            )));
        }
        let aws = self.aws.as_ref().ok_or_else(|| {
            PreflightError::Precondition(
                "the broker has no AWS KMS (kms.backend = \"local\"): connect needs kms.backend = \"aws\"".to_owned(),
            )
        })?;
        let arn = subject.kms_key_arn.clone();
        check_key(aws, &arn, SUBJECT_WORDS).await?;
        let existing = facts::grants(&aws.kms(&arn), &arn).await.map_err(|failure| PreflightError::Kms {
            operation: "ListGrants",
            kind: kind_of(&failure),
            message: failure.message,
        })?;
        let context = mediaconvert_context();
        let granted = existing.iter().any(|g| g.allows(&role, "kms:Decrypt", &context));
        let name = grant_name(&role.arn);
        let mut create_grant = Change {
            action: "CreateGrant",
            detail: format!("let {} Decrypt with {arn} under the MediaConvert encryption context", role.arn),
            request_json: json!({
                "KeyId": arn,
                "GranteePrincipal": role.arn,
                "Operations": ["Decrypt"],
                "Constraints": { "EncryptionContextSubset": context },
                "Name": name,
            })
            .to_string(),
            state: if granted { ChangeState::AlreadyDone } else { ChangeState::Planned },
        };
        if apply && create_grant.state == ChangeState::Planned {
            make_grant(aws, &arn, &role.arn, &[GrantOperation::Decrypt], &name, context).await?;
            create_grant.state = ChangeState::Done;
            tracing::info!(role_arn = %role.arn, kms_key_arn = %arn, "granted the MediaConvert job role Decrypt");
        }
        let report = self.check_subject(subject).await;
        Ok(RoleConnection { changes: vec![create_grant], applied: apply, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_names_keep_only_what_kms_takes() {
        assert_eq!(grant_name("arn:aws:iam::111122223333:role/mc"), "keybroker-mediaconvert-mc");
        assert_eq!(
            grant_name("arn:aws:iam::111122223333:role/media/MC.Role+x@y"),
            "keybroker-mediaconvert-MC-Role-x-y"
        );
    }
}
