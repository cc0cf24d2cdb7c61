//! What every transcoder's preflight shares: a requirement and its three
//! outcomes, the AWS clients it reads with, the judgement of a KMS key
//! (customer-managed, usable, one region with its buckets) and of who may
//! use it (key policy and grants, in [`access`]), the probe key's round
//! trip ([`facts`]), and the KMS grant a connection makes ([`change`]).
//!
//! Owns nothing of a pipeline or a job role: the Elastic Transcoder
//! preflight (`jobs::et::preflight`) and the MediaConvert role check
//! (`jobs::mediaconvert::role`) pick their requirements, contexts and fix
//! texts from these parts. Must never fail for what it cannot see (that is
//! "unknown"), and never call an `Allow` to the account root a pass.

pub mod access;
pub mod change;
pub mod facts;
pub mod outcome;

use std::collections::BTreeMap;

use self::access::{GrantFacts, Principal};
use self::facts::{KeyFacts, KeyLookup};
pub use self::outcome::Outcome;
use self::outcome::worst;
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::ServiceContext;
use crate::custody::kms::{KeyArn, KmsErrorKind};
use crate::custody::policy::Denial;
use crate::jobs::et::error::{EtError, EtErrorKind};

/// One requirement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The requirement's stable name (`customer-managed-key`, …).
    pub name: &'static str,
    /// How it stands.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about it; empty for a pass.
    pub fix: String,
}

impl Requirement {
    /// A requirement from its finding; a pass keeps no fix.
    pub fn new(name: &'static str, (outcome, detail): (Outcome, String), fix: impl Into<String>) -> Self {
        let fix = if outcome == Outcome::Pass { String::new() } else { fix.into() };
        Requirement { name, outcome, detail, fix }
    }
}

/// Why a check or a connection could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A request field is malformed.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The caller's grant does not cover the pipeline or key.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// No such pipeline.
    #[error("{0}")]
    NotFound(String),
    /// The change cannot be made as asked; the message says why.
    #[error("{0}")]
    Precondition(String),
    /// Elastic Transcoder failed.
    #[error(transparent)]
    Et(EtError),
    /// A KMS call of a change failed.
    #[error("KMS {operation} failed: {message}")]
    Kms {
        /// `CreateGrant`, `DescribeKey`, …
        operation: &'static str,
        /// What kind of failure.
        kind: KmsErrorKind,
        /// KMS's words.
        message: String,
    },
}

impl From<EtError> for PreflightError {
    fn from(err: EtError) -> Self {
        match err.kind {
            EtErrorKind::NotFound => PreflightError::NotFound(err.to_string()),
            _ => PreflightError::Et(err),
        }
    }
}

/// The AWS clients the preflight reads and changes KMS and S3 with.
#[derive(Clone)]
pub struct AwsAdmin {
    sdk: aws_config::SdkConfig,
    /// S3: GetBucketLocation; `None` leaves bucket regions unknown.
    pub s3: Option<aws_sdk_s3::Client>,
    /// STS: GetCallerIdentity, the broker's own principal.
    pub sts: Option<aws_sdk_sts::Client>,
}

impl AwsAdmin {
    /// The clients of one SDK configuration; S3 from `s3` (its path style
    /// and timeouts are the object RPCs').
    pub fn new(sdk: &aws_config::SdkConfig, s3: Option<aws_sdk_s3::Client>) -> Self {
        AwsAdmin { sdk: sdk.clone(), s3, sts: Some(aws_sdk_sts::Client::new(sdk)) }
    }

    /// A KMS client for DescribeKey, GetKeyPolicy, ListGrants and
    /// CreateGrant on the key `arn`, in the key's own region (KMS answers
    /// for its region's keys only).
    pub fn kms(&self, arn: &str) -> aws_sdk_kms::Client {
        let mut config = aws_sdk_kms::config::Builder::from(&self.sdk);
        if let Some(key) = KeyArn::parse(arn) {
            config = config.region(aws_config::Region::new(key.region.to_owned()));
        }
        aws_sdk_kms::Client::from_conf(config.build())
    }

    /// The region the SDK calls services in, when it has one.
    pub fn region(&self) -> Option<String> {
        self.sdk.region().map(ToString::to_string)
    }

    /// The region of `bucket`, `None` when S3 cannot say.
    pub async fn bucket_region(&self, bucket: &str) -> Option<String> {
        facts::bucket_region(self.s3.as_ref()?, bucket).await.ok()
    }
}

/// A service's encryption context, as a map.
pub fn context_map(context: ServiceContext) -> BTreeMap<String, String> {
    context.encryption_context().into_iter().collect()
}

/// What KMS shows of who may use one key: its policy and grants, read once
/// for every principal and action asked about.
pub struct KeyAccess {
    policy: Option<String>,
    grants: Vec<GrantFacts>,
    /// Why the grants could not be read, when only the policy was.
    grants_unread: Option<String>,
}

impl KeyAccess {
    /// Reads the key policy and grants of `arn`.
    ///
    /// # Errors
    /// Why neither could be read: every access is then unknown.
    pub async fn read(aws: &AwsAdmin, arn: &str) -> Result<KeyAccess, String> {
        let kms = aws.kms(arn);
        let policy = facts::key_policy(&kms, arn).await;
        let grants = facts::grants(&kms, arn).await;
        match (policy, grants) {
            (Err(e), Err(_)) => Err(format!("neither the key policy nor the grants are readable: {e}")),
            (policy, Ok(grants)) => Ok(KeyAccess { policy: policy.ok(), grants, grants_unread: None }),
            (Ok(policy), Err(e)) => Ok(KeyAccess {
                policy: Some(policy),
                grants: Vec::new(),
                grants_unread: Some(format!("the grants could not be read ({})", e.message)),
            }),
        }
    }

    /// Whether `principal` may `action` under `context`.
    pub fn judge(&self, principal: &Principal, action: &str, context: &BTreeMap<String, String>) -> (Outcome, String) {
        let found = access::access(self.policy.as_deref(), &self.grants, principal, action, context);
        self.hedge(found)
    }

    /// Whether `principal` may `action` under whatever context S3 calls with.
    pub fn judge_any_context(&self, principal: &Principal, action: &str) -> (Outcome, String) {
        let found = access::access_under_any_context(self.policy.as_deref(), &self.grants, principal, action);
        self.hedge(found)
    }

    /// Without the grants, "nothing allows it" is only "nothing in the key
    /// policy allows it".
    fn hedge(&self, (outcome, detail): (Outcome, String)) -> (Outcome, String) {
        match (&self.grants_unread, outcome) {
            (Some(note), Outcome::Fail) if !detail.contains(" denies ") => {
                (Outcome::Unknown, format!("{detail}; {note}"))
            }
            _ => (outcome, detail),
        }
    }

    /// Whether the broker's own identity may Encrypt and Decrypt under
    /// `context`.
    pub async fn broker(&self, aws: &AwsAdmin, context: &BTreeMap<String, String>) -> (Outcome, String) {
        match facts::caller(aws.sts.as_ref()).await {
            Ok(me) => match Principal::parse(&me) {
                Some(me) => both(self.judge(&me, "kms:Encrypt", context), self.judge(&me, "kms:Decrypt", context)),
                None => (Outcome::Unknown, format!("the broker's identity {me} is not an IAM ARN")),
            },
            Err(e) => (Outcome::Unknown, format!("the broker's identity is unknown: {e}")),
        }
    }
}

/// Two findings as one: the worse outcome with its detail; both details
/// when both pass.
pub fn both(a: (Outcome, String), b: (Outcome, String)) -> (Outcome, String) {
    let outcome = worst(a.0, b.0);
    match (a.0 == outcome, outcome) {
        (true, Outcome::Pass) => (outcome, format!("{}; {}", a.1, b.1)),
        (true, _) => (outcome, a.1),
        (false, _) => (outcome, b.1),
    }
}

/// A customer-managed key `arn`, not an AWS-managed one; `subject` names
/// who names the key (`the pipeline`), `field` the setting that holds it.
pub fn customer_managed(arn: &str, key: &KeyLookup, aws: bool, subject: &str, field: &str) -> (Outcome, String) {
    if arn.contains(":alias/aws/") {
        return (Outcome::Fail, format!("{subject} names {arn}, an AWS-managed key"));
    }
    if KeyArn::parse(arn).is_none_or(|a| !a.resource.starts_with("key/") && !a.resource.starts_with("alias/")) {
        return (Outcome::Fail, format!("{field} {} is not a KMS key ARN", echo(arn)));
    }
    match key {
        KeyLookup::Found(KeyFacts { customer_managed: true, .. }) => {
            (Outcome::Pass, format!("{subject} names the customer-managed key {arn}"))
        }
        KeyLookup::Found(KeyFacts { manager, .. }) => {
            (Outcome::Fail, format!("{subject}'s key {arn} is managed by {manager}, not by the customer"))
        }
        KeyLookup::Missing(e) => (Outcome::Fail, format!("{subject}'s key {arn} does not exist: {e}")),
        KeyLookup::Unreadable(e) => (Outcome::Unknown, format!("DescribeKey of {arn} failed: {e}")),
        KeyLookup::NotAsked if aws => (Outcome::Unknown, "the key was not described".to_owned()),
        KeyLookup::NotAsked => (Outcome::Unknown, format!("the broker has no AWS KMS to describe {arn} with")),
    }
}

/// The key exists, is enabled, and is a symmetric encrypt/decrypt key;
/// `subject` names who should name one (`the pipeline`).
pub fn key_usable(arn: Option<&str>, key: &KeyLookup, aws: bool, subject: &str) -> (Outcome, String) {
    let Some(arn) = arn else {
        return (Outcome::Fail, format!("{subject} names no KMS key"));
    };
    match key {
        KeyLookup::Found(facts) => {
            let mut wrong = Vec::new();
            if facts.state != "Enabled" {
                wrong.push(format!("its state is {}", facts.state));
            }
            if facts.spec != "SYMMETRIC_DEFAULT" {
                wrong.push(format!("its spec is {}, not SYMMETRIC_DEFAULT", facts.spec));
            }
            if facts.usage != "ENCRYPT_DECRYPT" {
                wrong.push(format!("its usage is {}, not ENCRYPT_DECRYPT", facts.usage));
            }
            if wrong.is_empty() {
                (Outcome::Pass, format!("{arn} is enabled, SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT"))
            } else {
                (Outcome::Fail, format!("{arn}: {}", wrong.join("; ")))
            }
        }
        KeyLookup::Missing(e) => (Outcome::Fail, format!("{arn} does not exist: {e}")),
        KeyLookup::Unreadable(e) => (Outcome::Unknown, format!("DescribeKey of {arn} failed: {e}")),
        KeyLookup::NotAsked if aws => (Outcome::Unknown, "the key was not described".to_owned()),
        KeyLookup::NotAsked => (Outcome::Unknown, format!("the broker has no AWS KMS to describe {arn} with")),
    }
}

/// One region for every place whose region is known; unknown when a place's
/// region is not.
pub fn one_region_outcome(places: &[(String, Option<String>)]) -> (Outcome, String) {
    let known: Vec<(&String, &String)> = places.iter().filter_map(|(w, r)| r.as_ref().map(|r| (w, r))).collect();
    let unknown: Vec<&String> = places.iter().filter(|(_, r)| r.is_none()).map(|(w, _)| w).collect();
    let listed = known.iter().map(|(w, r)| format!("{w}: {r}")).collect::<Vec<_>>().join(", ");
    if let Some((_, first)) = known.first()
        && known.iter().any(|(_, r)| r != first)
    {
        return (Outcome::Fail, format!("not in one region: {listed}"));
    }
    if !unknown.is_empty() {
        let names = unknown.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", ");
        let listed = if listed.is_empty() { String::new() } else { format!("{listed}; ") };
        return (Outcome::Unknown, format!("{listed}region unknown for {names}"));
    }
    (Outcome::Pass, format!("one region: {listed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_fail_on_a_mismatch_and_are_unknown_with_a_gap() {
        let place = |w: &str, r: Option<&str>| (w.to_owned(), r.map(str::to_owned));
        let same = [place("the pipeline", Some("us-east-1")), place("the KMS key", Some("us-east-1"))];
        assert_eq!(one_region_outcome(&same).0, Outcome::Pass);
        let mixed = [place("the pipeline", Some("us-east-1")), place("the input bucket b", Some("eu-west-1"))];
        let (outcome, detail) = one_region_outcome(&mixed);
        assert_eq!(outcome, Outcome::Fail);
        assert!(detail.contains("the input bucket b: eu-west-1"), "{detail}");
        let gap = [place("the pipeline", Some("us-east-1")), place("the output bucket", None)];
        assert_eq!(one_region_outcome(&gap).0, Outcome::Unknown);
    }

    #[test]
    fn two_findings_keep_the_worse_ones_detail() {
        let pass = (Outcome::Pass, "allows Encrypt".to_owned());
        let fail = (Outcome::Fail, "nothing allows Decrypt".to_owned());
        assert_eq!(both(pass.clone(), fail.clone()), fail);
        assert_eq!(both(fail.clone(), pass.clone()), fail);
        assert_eq!(both(pass.clone(), pass).1, "allows Encrypt; allows Encrypt");
    }

    #[test]
    fn an_aws_managed_or_malformed_key_fails_by_its_subjects_words() {
        let (outcome, detail) = customer_managed(
            "arn:aws:kms:us-east-1:111122223333:alias/aws/s3",
            &KeyLookup::NotAsked,
            true,
            "MediaConvert",
            "kms_key_arn",
        );
        assert_eq!(outcome, Outcome::Fail);
        assert_eq!(detail, "MediaConvert names arn:aws:kms:us-east-1:111122223333:alias/aws/s3, an AWS-managed key");
        let (outcome, detail) = customer_managed("nope", &KeyLookup::NotAsked, true, "the pipeline", "AwsKmsKeyArn");
        assert_eq!(outcome, Outcome::Fail);
        assert!(detail.starts_with("AwsKmsKeyArn "), "{detail}");
    }
}
