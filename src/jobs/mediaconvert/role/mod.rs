//! The MediaConvert job role check: what MediaConvert needs of the IAM role
//! a job runs as and of the KMS key the broker wraps its keys with, checked
//! one requirement at a time ([`RoleCheck::check`]), and the grant that lets
//! the role decrypt them ([`RoleCheck::connect`], in [`connect`]).
//!
//! The role needs `kms:Decrypt` on the key for inputs the broker encrypted
//! (under `{"service":"mediaconvert.amazonaws.com"}`), and `kms:Encrypt` and
//! `kms:GenerateDataKey` for SSE-KMS outputs. Owns these requirements, their
//! order and their fix texts; the key, access and probe parts are
//! [`crate::jobs::preflight`]'s. Must never fail for what it cannot see
//! (that is "unknown"), never call an `Allow` to the account root a pass,
//! and never let the probe key's bytes out.

pub mod connect;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::custody::broker::Broker;
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::ServiceContext;
use crate::custody::kms::KeyArn;
use crate::custody::policy::Grant;
use crate::jobs::preflight::access::Principal;
use crate::jobs::preflight::change::parse_key_arn;
use crate::jobs::preflight::facts::{self, KeyLookup};
use crate::jobs::preflight::{
    AwsAdmin, KeyAccess, Outcome, PreflightError, Requirement, both, context_map, customer_managed, key_usable,
    one_region_outcome,
};

/// How details name who uses the key.
const SUBJECT: &str = "MediaConvert";

/// What the configuration says of MediaConvert's role, key and buckets.
#[derive(Debug, Clone, Default)]
pub struct RoleSettings {
    /// `mediaconvert.role_arn`: the role jobs run as, checked at start.
    pub role_arn: Option<String>,
    /// The key the broker wraps MediaConvert keys with:
    /// `mediaconvert.output_kms_key_arn`, else `kms.default_key_id`.
    pub kms_key_arn: Option<String>,
    /// `mediaconvert.input_bucket`.
    pub input_bucket: Option<String>,
    /// `mediaconvert.output_bucket`.
    pub output_bucket: Option<String>,
    /// The region MediaConvert is called in, when known.
    pub region: Option<String>,
}

impl RoleSettings {
    /// What the check reads of the configuration: the job role, the key the
    /// broker wraps MediaConvert keys with, the buckets; MediaConvert is
    /// called in its client's region, else the SDK's.
    pub fn from_config(
        config: &crate::app::config::Config,
        client: Option<&aws_sdk_mediaconvert::Client>,
        aws: Option<&AwsAdmin>,
    ) -> Self {
        let region = client.and_then(|c| c.config().region().map(ToString::to_string)).or_else(|| aws?.region());
        let mc = &config.mediaconvert;
        RoleSettings {
            role_arn: mc.role_arn.clone(),
            kms_key_arn: mc.output_kms_key_arn.clone().or_else(|| config.kms.default_key_id.clone()),
            input_bucket: mc.input_bucket.clone(),
            output_bucket: mc.output_bucket.clone(),
            region,
        }
    }
}

/// What a caller asks to check; an empty field is the configuration's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRequest {
    /// The job role's IAM ARN.
    pub role_arn: String,
    /// The KMS key ARN.
    pub kms_key_arn: String,
    /// A bucket jobs read inputs from.
    pub input_bucket: String,
    /// A bucket jobs write outputs to.
    pub output_bucket: String,
}

/// What was checked, resolved against the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The job role's IAM ARN.
    pub role_arn: String,
    /// The KMS key.
    pub kms_key_arn: String,
    /// The input bucket, if any.
    pub input_bucket: Option<String>,
    /// The output bucket, if any.
    pub output_bucket: Option<String>,
    /// `configuration` when the role is the configured one, else `request`.
    pub source: &'static str,
}

/// A job role's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    /// What was checked.
    pub subject: Subject,
    /// MediaConvert's region, when known.
    pub region: Option<String>,
    /// Each requirement, in a fixed order.
    pub requirements: Vec<Requirement>,
}

impl RoleReport {
    /// Whether every requirement passed.
    pub fn ready(&self) -> bool {
        self.requirements.iter().all(|r| r.outcome == Outcome::Pass)
    }
}

/// The MediaConvert role check over the broker's KMS, S3 and STS.
pub struct RoleCheck {
    broker: Arc<Broker>,
    aws: Option<AwsAdmin>,
    settings: RoleSettings,
}

/// Parses a job role ARN: an IAM role, as MediaConvert's `Role` takes it.
///
/// # Errors
/// [`FieldError`] naming `role_arn`.
pub fn parse_role_arn(text: &str) -> Result<Principal, FieldError> {
    match Principal::parse(text) {
        Some(role) if role.arn == text && super::validate::is_role_arn(text) => Ok(role),
        _ => Err(FieldError::new(
            "role_arn",
            format!("must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got {}", echo(text)),
        )),
    }
}

/// Parses a bucket name given for the region check.
fn parse_bucket(field: &str, text: &str) -> Result<Option<String>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    let valid = (3..=63).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !valid {
        return Err(FieldError::new(field, format!("must be an S3 bucket name, got {}", echo(text))));
    }
    Ok(Some(text.to_owned()))
}

/// [`RoleCheck::resolve`] over `settings`.
fn resolve(settings: &RoleSettings, request: &RoleRequest) -> Result<Subject, FieldError> {
    let (role_arn, source) = match (request.role_arn.as_str(), &settings.role_arn) {
        ("", Some(configured)) => (configured.clone(), "configuration"),
        ("", None) => return Err(FieldError::new("role_arn", "required: no mediaconvert.role_arn is configured")),
        (given, _) => (parse_role_arn(given)?.arn, "request"),
    };
    let kms_key_arn = match (request.kms_key_arn.as_str(), &settings.kms_key_arn) {
        ("", Some(configured)) => configured.clone(),
        ("", None) => {
            return Err(FieldError::new(
                "kms_key_arn",
                "required: neither mediaconvert.output_kms_key_arn nor kms.default_key_id is configured",
            ));
        }
        (given, _) => {
            parse_key_arn(given)?;
            given.to_owned()
        }
    };
    let input_bucket = parse_bucket("input_bucket", &request.input_bucket)?.or(settings.input_bucket.clone());
    let output_bucket = parse_bucket("output_bucket", &request.output_bucket)?.or(settings.output_bucket.clone());
    Ok(Subject { role_arn, kms_key_arn, input_bucket, output_bucket, source })
}

/// MediaConvert's encryption context, as a map.
fn mediaconvert_context() -> BTreeMap<String, String> {
    context_map(ServiceContext::MediaConvert)
}

impl RoleCheck {
    /// A check; `aws` is `None` where the broker has no AWS KMS (the local
    /// keyring), so what only AWS shows is "unknown".
    pub fn new(broker: Arc<Broker>, aws: Option<AwsAdmin>, settings: RoleSettings) -> Self {
        RoleCheck { broker, aws, settings }
    }

    /// The role of the configuration, which the server checks at start.
    pub fn configured_role(&self) -> Option<&str> {
        self.settings.role_arn.as_deref()
    }

    /// The request's role, key and buckets, each from the configuration
    /// where the request leaves it empty.
    ///
    /// # Errors
    /// [`FieldError`] naming the field that is malformed, or missing with
    /// nothing configured.
    pub fn resolve(&self, request: &RoleRequest) -> Result<Subject, FieldError> {
        resolve(&self.settings, request)
    }

    /// Checks the configured role once, in the background: each requirement
    /// not met is a warning in the log, and nothing here stops the server.
    pub fn check_configured_in_background(self: &Arc<Self>) {
        let Some(role) = self.configured_role().map(str::to_owned) else {
            return;
        };
        let check = self.clone();
        tokio::spawn(async move {
            let grant = Grant::unrestricted("keybroker", false);
            let report = match check.check(&RoleRequest::default(), &grant).await {
                Ok(report) => report,
                Err(e) => {
                    tracing::warn!(role_arn = %role, error = %e, "MediaConvert role check could not run");
                    return;
                }
            };
            for r in report.requirements.iter().filter(|r| r.outcome != Outcome::Pass) {
                tracing::warn!(
                    role_arn = %role,
                    kms_key_arn = %report.subject.kms_key_arn,
                    requirement = r.name,
                    outcome = r.outcome.as_str(),
                    detail = %r.detail,
                    fix = %r.fix,
                    "MediaConvert role check"
                );
            }
            if report.ready() {
                tracing::info!(role_arn = %role, "MediaConvert role check: every requirement met");
            }
        });
    }

    /// Resolves the request and checks every requirement.
    ///
    /// # Errors
    /// [`PreflightError`]: a bad or missing field, a key outside the grant.
    /// What cannot be seen is "unknown", not an error.
    pub async fn check(&self, request: &RoleRequest, grant: &Grant) -> Result<RoleReport, PreflightError> {
        let subject = self.resolve(request)?;
        grant.check_kms_key(&subject.kms_key_arn)?;
        Ok(self.check_subject(self.named_key(subject).await).await)
    }

    /// The subject with a configured key named by alias (as
    /// `kms.default_key_id` may be) replaced by the key ARN DescribeKey
    /// answers: grants, key policies and MediaConvert deal in the key.
    pub(crate) async fn named_key(&self, mut subject: Subject) -> Subject {
        if parse_key_arn(&subject.kms_key_arn).is_ok() {
            return subject;
        }
        if let Some(aws) = &self.aws
            && let KeyLookup::Found(found) =
                facts::describe_key(&aws.kms(&subject.kms_key_arn), &subject.kms_key_arn).await
            && parse_key_arn(&found.arn).is_ok()
        {
            subject.kms_key_arn = found.arn;
        }
        subject
    }

    /// Checks a resolved subject.
    pub(crate) async fn check_subject(&self, subject: Subject) -> RoleReport {
        let arn = subject.kms_key_arn.as_str();
        let key = match &self.aws {
            Some(aws) => facts::describe_key(&aws.kms(arn), arn).await,
            None => KeyLookup::NotAsked,
        };
        let aws = self.aws.is_some();
        let connect = format!("keybroker mediaconvert connect-role --role {} --kms-key ARN --apply", subject.role_arn);
        // The look-ups are independent: one call's deadline, not their sum.
        let (regions, (decrypt, outputs, broker), probe) = tokio::join!(
            self.one_region(&subject),
            self.key_access(&subject, &key),
            facts::probe(&self.broker, Some(arn), ServiceContext::MediaConvert, SUBJECT),
        );
        let requirements = vec![
            Requirement::new(
                "customer-managed-key",
                customer_managed(arn, &key, aws, SUBJECT, "kms_key_arn"),
                "use a customer-managed symmetric KMS key (--kms-key, or mediaconvert.output_kms_key_arn); \
                 AWS-managed keys cannot be shared with the job role",
            ),
            Requirement::new(
                "one-region",
                regions,
                "use a KMS key in MediaConvert's region, and buckets there too (mediaconvert.input_bucket, \
                 output_bucket name the ones checked)",
            ),
            Requirement::new(
                "key-usable",
                key_usable(Some(arn), &key, aws, SUBJECT),
                "enable the key (kms enable-key), or use an enabled symmetric ENCRYPT_DECRYPT key",
            ),
            Requirement::new(
                "role-may-decrypt",
                decrypt,
                format!(
                    "{connect} (a KMS grant of Decrypt to the role under the MediaConvert context), or add the role \
                     to the key policy as a key user"
                ),
            ),
            Requirement::new(
                "role-may-encrypt-outputs",
                outputs,
                "for SSE-KMS outputs, allow the role kms:GenerateDataKey and kms:Encrypt on the key in the key \
                 policy (S3 calls KMS under its own encryption context, which a grant's MediaConvert constraint \
                 does not cover); not needed when no output group is SSE-KMS encrypted",
            ),
            Requirement::new(
                "broker-may-encrypt",
                broker,
                "allow the broker's IAM identity kms:Encrypt and kms:Decrypt on the key (key policy or grant)",
            ),
            Requirement::new(
                "probe",
                probe,
                "run the broker with kms.backend = \"aws\" and credentials that may use the key; see the \
                 requirements above",
            ),
        ];
        RoleReport { subject, region: self.settings.region.clone(), requirements }
    }

    /// Key, MediaConvert and the given buckets in one region.
    async fn one_region(&self, subject: &Subject) -> (Outcome, String) {
        let mut places: Vec<(String, Option<String>)> = vec![
            ("MediaConvert".to_owned(), self.settings.region.clone()),
            ("the KMS key".to_owned(), KeyArn::parse(&subject.kms_key_arn).map(|a| a.region.to_owned())),
        ];
        for (what, bucket) in [("input bucket", &subject.input_bucket), ("output bucket", &subject.output_bucket)] {
            if let Some(bucket) = bucket {
                let region = match &self.aws {
                    Some(aws) => aws.bucket_region(bucket).await,
                    None => None,
                };
                places.push((format!("the {what} {bucket}"), region));
            }
        }
        one_region_outcome(&places)
    }

    /// The role's Decrypt (inputs), Encrypt and GenerateDataKey (outputs),
    /// and the broker's Encrypt, as the key policy and grants show them.
    async fn key_access(
        &self,
        subject: &Subject,
        key: &KeyLookup,
    ) -> ((Outcome, String), (Outcome, String), (Outcome, String)) {
        let all = |outcome: Outcome, why: String| ((outcome, why.clone()), (outcome, why.clone()), (outcome, why));
        let Some(aws) = &self.aws else {
            return all(Outcome::Unknown, "the broker has no AWS KMS".to_owned());
        };
        if matches!(key, KeyLookup::Missing(_)) {
            return all(Outcome::Fail, "the KMS key does not exist".to_owned());
        }
        let access = match KeyAccess::read(aws, &subject.kms_key_arn).await {
            Ok(access) => access,
            Err(why) => return all(Outcome::Unknown, why),
        };
        let context = mediaconvert_context();
        let Some(role) = Principal::parse(&subject.role_arn) else {
            let why = format!("{} is not an IAM role ARN", echo(&subject.role_arn));
            return ((Outcome::Fail, why.clone()), (Outcome::Fail, why), access.broker(aws, &context).await);
        };
        let decrypt = access.judge(&role, "kms:Decrypt", &context);
        let outputs = both(
            access.judge_any_context(&role, "kms:GenerateDataKey"),
            access.judge_any_context(&role, "kms:Encrypt"),
        );
        let broker = access.broker(aws, &context).await;
        (decrypt, outputs, broker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_checked_by_name_and_rule() {
        let role = parse_role_arn("arn:aws:iam::111122223333:role/MediaConvert_Default_Role").unwrap();
        assert_eq!(role.account, "111122223333");
        for bad in ["", "MediaConvert_Default_Role", "arn:aws:iam::111122223333:user/u", "arn:aws:iam::1:role/"] {
            let err = parse_role_arn(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("role_arn: must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got"),
                "{err}"
            );
        }
    }

    #[test]
    fn empty_fields_are_the_configurations_and_missing_ones_are_named() {
        let configured = RoleSettings {
            role_arn: Some("arn:aws:iam::111122223333:role/mc".into()),
            kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            output_bucket: Some("out".into()),
            ..RoleSettings::default()
        };
        let subject = resolve(&configured, &RoleRequest::default()).unwrap();
        assert_eq!(subject.source, "configuration");
        assert_eq!(subject.output_bucket.as_deref(), Some("out"));
        let given = RoleRequest { role_arn: "arn:aws:iam::111122223333:role/other".into(), ..RoleRequest::default() };
        let subject = resolve(&configured, &given).unwrap();
        assert_eq!((subject.role_arn.as_str(), subject.source), ("arn:aws:iam::111122223333:role/other", "request"));
        let bare = RoleSettings::default();
        let err = resolve(&bare, &RoleRequest::default()).unwrap_err().to_string();
        assert_eq!(err, "role_arn: required: no mediaconvert.role_arn is configured");
        let request = RoleRequest { role_arn: "arn:aws:iam::111122223333:role/mc".into(), ..RoleRequest::default() };
        let err = resolve(&bare, &request).unwrap_err().to_string();
        assert!(err.starts_with("kms_key_arn: required"), "{err}");
        let request = RoleRequest { kms_key_arn: "alias/media".into(), ..request };
        assert!(resolve(&bare, &request).unwrap_err().to_string().starts_with("kms_key_arn: must be a KMS key ARN"));
        let request = RoleRequest {
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            input_bucket: "Not A Bucket".into(),
            ..request
        };
        assert!(
            resolve(&bare, &request).unwrap_err().to_string().starts_with("input_bucket: must be an S3 bucket name")
        );
    }
}
