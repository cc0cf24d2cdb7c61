//! The pipeline preflight: what Elastic Transcoder needs of a pipeline and
//! its KMS key before any job is keyed, checked one requirement at a time
//! ([`Preflight::check`]), and the two set-up steps of the ET guide done as
//! API calls ([`Preflight::connect`], in [`connect`]).
//!
//! Owns the requirements, their order and their fix texts. The AWS look-ups
//! live in [`facts`], the reading of key policies and grants in [`access`].
//! Must never fail for what it cannot see (that is "unknown"), never call
//! an `Allow` to the account root a pass, and never let the probe key's
//! bytes leave memory that is zeroized on drop: no log, no message.

pub mod access;
pub mod connect;
pub mod facts;
pub mod outcome;

use std::collections::BTreeMap;
use std::sync::Arc;

use self::access::Principal;
use self::facts::{KeyFacts, KeyLookup};
pub use self::outcome::Outcome;
use self::outcome::worst;
use super::Transcoder;
use super::error::{EtError, EtErrorKind};
use super::pipeline::Pipeline;
use crate::custody::broker::Broker;
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::ServiceContext;
use crate::custody::kms::{KeyArn, KmsErrorKind};
use crate::custody::policy::{Denial, Grant};

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
    fn new(name: &'static str, (outcome, detail): (Outcome, String), fix: impl Into<String>) -> Self {
        let fix = if outcome == Outcome::Pass { String::new() } else { fix.into() };
        Requirement { name, outcome, detail, fix }
    }
}

/// A pipeline's preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The pipeline checked, as read.
    pub pipeline: Pipeline,
    /// `ReadPipeline` or `configuration`.
    pub source: &'static str,
    /// Each requirement, in a fixed order.
    pub requirements: Vec<Requirement>,
}

impl Report {
    /// Whether every requirement passed.
    pub fn ready(&self) -> bool {
        self.requirements.iter().all(|r| r.outcome == Outcome::Pass)
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
}

/// The preflight over the broker's pipelines, KMS and S3.
pub struct Preflight {
    broker: Arc<Broker>,
    transcoder: Arc<Transcoder>,
    aws: Option<AwsAdmin>,
}

/// The encryption context ET decrypts under, as a map.
fn et_context() -> BTreeMap<String, String> {
    ServiceContext::ElasticTranscoder.encryption_context().into_iter().collect()
}

/// Parses a pipeline id.
///
/// # Errors
/// [`FieldError`] naming `pipeline_id`.
pub fn parse_pipeline_id(text: &str) -> Result<&str, FieldError> {
    if text.is_empty() {
        return Err(FieldError::new("pipeline_id", "required"));
    }
    if !super::validate::is_pipeline_id(text) {
        return Err(FieldError::new("pipeline_id", format!(r"must match ^\d{{13}}-\w{{6}}$, got {}", echo(text))));
    }
    Ok(text)
}

impl Preflight {
    /// A preflight; `aws` is `None` where the broker has no AWS KMS (the
    /// local keyring), so what only AWS shows is "unknown".
    pub fn new(broker: Arc<Broker>, transcoder: Arc<Transcoder>, aws: Option<AwsAdmin>) -> Self {
        Preflight { broker, transcoder, aws }
    }

    /// The ids of the configuration's pipeline table, which the server
    /// checks at start.
    pub fn configured_pipelines(&self) -> Vec<String> {
        self.transcoder.pipelines().configured_ids()
    }

    /// Checks every pipeline of the configuration's table once, in the
    /// background: each requirement not met is a warning in the log, and
    /// nothing here stops the server.
    pub fn check_configured_in_background(self: &Arc<Self>) {
        let preflight = self.clone();
        tokio::spawn(async move {
            let grant = Grant::unrestricted("keybroker", false);
            for id in preflight.configured_pipelines() {
                let report = match preflight.check(&id, &grant).await {
                    Ok(report) => report,
                    Err(e) => {
                        tracing::warn!(pipeline_id = %id, error = %e, "pipeline preflight could not run");
                        continue;
                    }
                };
                for r in report.requirements.iter().filter(|r| r.outcome != Outcome::Pass) {
                    tracing::warn!(
                        pipeline_id = %id,
                        requirement = r.name,
                        outcome = r.outcome.as_str(),
                        detail = %r.detail,
                        fix = %r.fix,
                        "pipeline preflight"
                    );
                }
                if report.ready() {
                    tracing::info!(pipeline_id = %id, "pipeline preflight: every requirement met");
                }
            }
        });
    }

    /// Reads the pipeline `id` and checks every requirement.
    ///
    /// # Errors
    /// [`PreflightError`]: a bad id, a pipeline outside the grant, no such
    /// pipeline, ET unreachable. What cannot be seen is "unknown", not an
    /// error.
    pub async fn check(&self, id: &str, grant: &Grant) -> Result<Report, PreflightError> {
        let id = parse_pipeline_id(id)?;
        grant.check_pipeline(id)?;
        let pipeline = self.transcoder.pipelines().resolve_fresh(id).await?;
        Ok(self.check_pipeline(pipeline).await)
    }

    /// Checks a pipeline already read.
    pub(crate) async fn check_pipeline(&self, pipeline: Pipeline) -> Report {
        let source =
            if self.transcoder.pipelines().is_configured(&pipeline.id) { "configuration" } else { "ReadPipeline" };
        let arn = pipeline.kms_key_arn.clone().filter(|a| !a.is_empty());
        let key = match (&self.aws, &arn) {
            (Some(aws), Some(arn)) => facts::describe_key(&aws.kms(arn), arn).await,
            _ => KeyLookup::NotAsked,
        };
        let connect = connect_fix(&pipeline.id);
        // The look-ups are independent: one call's deadline, not their sum.
        let (regions, (role, broker), probe) = tokio::join!(
            self.one_region(&pipeline),
            self.key_access(&pipeline, arn.as_deref(), &key),
            self.probe(arn.as_deref()),
        );
        let requirements = vec![
            Requirement::new("customer-managed-key", customer_managed(&pipeline, &key, self.aws.is_some()), &connect),
            Requirement::new(
                "one-region",
                regions,
                "give the pipeline a KMS key in its own region (keybroker pipeline connect), and keep its input, \
                 output and thumbnail buckets there; name buckets of a configured pipeline in \
                 [[transcoder.pipelines]] (input_bucket, output_bucket, thumbnail_bucket)",
            ),
            Requirement::new(
                "key-usable",
                key_usable(arn.as_deref(), &key, self.aws.is_some()),
                "enable the key (kms enable-key), or connect the pipeline to an enabled symmetric ENCRYPT_DECRYPT \
                 key (keybroker pipeline connect)",
            ),
            Requirement::new(
                "role-may-decrypt",
                role,
                format!(
                    "{connect} (a KMS grant of Decrypt to the pipeline's role under the Elastic Transcoder \
                     context), or add the role to the key policy as a key user"
                ),
            ),
            Requirement::new(
                "broker-may-encrypt",
                broker,
                "allow the broker's IAM identity kms:Encrypt and kms:Decrypt on the key (key policy or grant)",
            ),
            Requirement::new(
                "probe",
                probe,
                "run the broker with kms.backend = \"aws\" and credentials that may use the pipeline's key; see the \
                 requirements above",
            ),
        ];
        Report { pipeline, source, requirements }
    }

    /// Key, pipeline and buckets in one region.
    async fn one_region(&self, pipeline: &Pipeline) -> (Outcome, String) {
        let mut places: Vec<(String, Option<String>)> = Vec::new();
        places.push(("the pipeline".to_owned(), pipeline.region.clone().filter(|r| !r.is_empty())));
        if let Some(arn) = pipeline.kms_key_arn.as_deref().filter(|a| !a.is_empty()) {
            places.push(("the KMS key".to_owned(), KeyArn::parse(arn).map(|a| a.region.to_owned())));
        }
        let buckets = [
            ("input bucket", &pipeline.input_bucket),
            ("output bucket", &pipeline.output_bucket),
            (
                "thumbnail bucket",
                if pipeline.thumbnail_bucket.is_some() { &pipeline.thumbnail_bucket } else { &pipeline.output_bucket },
            ),
        ];
        let mut seen: Vec<(String, Option<String>)> = Vec::new();
        for (what, bucket) in buckets {
            let Some(bucket) = bucket.as_deref().filter(|b| !b.is_empty()) else {
                places.push((format!("the {what}"), None));
                continue;
            };
            let region = match (self.aws.as_ref().and_then(|a| a.s3.as_ref()), seen.iter().find(|(b, _)| b == bucket)) {
                (_, Some((_, region))) => region.clone(),
                (Some(s3), None) => facts::bucket_region(s3, bucket).await.ok(),
                (None, None) => None,
            };
            seen.push((bucket.to_owned(), region.clone()));
            places.push((format!("the {what} {bucket}"), region));
        }
        one_region_outcome(&places)
    }

    /// The pipeline role's Decrypt and the broker's Encrypt, as the key
    /// policy and grants show them.
    async fn key_access(
        &self,
        pipeline: &Pipeline,
        arn: Option<&str>,
        key: &KeyLookup,
    ) -> ((Outcome, String), (Outcome, String)) {
        let Some(arn) = arn else {
            let why = "the pipeline names no KMS key to use".to_owned();
            return ((Outcome::Fail, why.clone()), (Outcome::Fail, why));
        };
        let Some(aws) = &self.aws else {
            let why = "the broker has no AWS KMS".to_owned();
            return ((Outcome::Unknown, why.clone()), (Outcome::Unknown, why));
        };
        if matches!(key, KeyLookup::Missing(_)) {
            let why = "the KMS key does not exist".to_owned();
            return ((Outcome::Fail, why.clone()), (Outcome::Fail, why));
        }
        let kms = aws.kms(arn);
        let policy = facts::key_policy(&kms, arn).await;
        let grants = facts::grants(&kms, arn).await;
        let (policy_text, grants_slice) = match (&policy, &grants) {
            (Ok(p), Ok(g)) => (Some(p.as_str()), g.as_slice()),
            (Ok(p), Err(_)) => (Some(p.as_str()), &[][..]),
            (Err(_), Ok(g)) => (None, g.as_slice()),
            (Err(e), Err(_)) => {
                let why = format!("neither the key policy nor the grants are readable: {e}");
                return ((Outcome::Unknown, why.clone()), (Outcome::Unknown, why));
            }
        };
        let context = et_context();
        // Without the grants, "nothing allows it" is only "nothing in the
        // key policy allows it".
        let grants_unread = grants.as_ref().err().map(|e| format!("the grants could not be read ({})", e.message));
        let access = |principal: &Principal, action: &str| {
            let (outcome, detail) = access::access(policy_text, grants_slice, principal, action, &context);
            match (&grants_unread, outcome) {
                (Some(note), Outcome::Fail) if !detail.contains(" denies ") => {
                    (Outcome::Unknown, format!("{detail}; {note}"))
                }
                _ => (outcome, detail),
            }
        };
        let role = match Principal::parse(&pipeline.role) {
            Some(role) => access(&role, "kms:Decrypt"),
            None => (Outcome::Fail, format!("the pipeline's role {} is not an IAM role ARN", echo(&pipeline.role))),
        };
        let broker = match facts::caller(aws.sts.as_ref()).await {
            Ok(me) => match Principal::parse(&me) {
                Some(me) => both(access(&me, "kms:Encrypt"), access(&me, "kms:Decrypt")),
                None => (Outcome::Unknown, format!("the broker's identity {me} is not an IAM ARN")),
            },
            Err(e) => (Outcome::Unknown, format!("the broker's identity is unknown: {e}")),
        };
        (role, broker)
    }

    /// Wraps a fresh probe key with the pipeline's key under the ET context
    /// and unwraps it again. The key is dropped (zeroized) here.
    async fn probe(&self, arn: Option<&str>) -> (Outcome, String) {
        facts::probe(&self.broker, arn).await
    }
}

/// Two findings as one: the worse outcome with its detail; both details
/// when both pass.
fn both(a: (Outcome, String), b: (Outcome, String)) -> (Outcome, String) {
    let outcome = worst(a.0, b.0);
    match (a.0 == outcome, outcome) {
        (true, Outcome::Pass) => (outcome, format!("{}; {}", a.1, b.1)),
        (true, _) => (outcome, a.1),
        (false, _) => (outcome, b.1),
    }
}

fn connect_fix(id: &str) -> String {
    format!("keybroker pipeline connect {id} --kms-key ARN --apply")
}

/// A customer-managed key on the pipeline, not the `aws/s3` default.
fn customer_managed(pipeline: &Pipeline, key: &KeyLookup, aws: bool) -> (Outcome, String) {
    let Some(arn) = pipeline.kms_key_arn.as_deref().filter(|a| !a.is_empty()) else {
        return (
            Outcome::Fail,
            "the pipeline has no AwsKmsKeyArn: Elastic Transcoder uses the AWS-managed aws/s3 key, which cannot \
             decrypt keys for aes-cbc-pkcs7, aes-ctr or aes-gcm"
                .to_owned(),
        );
    };
    if arn.contains(":alias/aws/") {
        return (Outcome::Fail, format!("the pipeline names {arn}, an AWS-managed key"));
    }
    if KeyArn::parse(arn).is_none_or(|a| !a.resource.starts_with("key/") && !a.resource.starts_with("alias/")) {
        return (Outcome::Fail, format!("AwsKmsKeyArn {} is not a KMS key ARN", echo(arn)));
    }
    match key {
        KeyLookup::Found(KeyFacts { customer_managed: true, .. }) => {
            (Outcome::Pass, format!("the pipeline names the customer-managed key {arn}"))
        }
        KeyLookup::Found(KeyFacts { manager, .. }) => {
            (Outcome::Fail, format!("the pipeline's key {arn} is managed by {manager}, not by the customer"))
        }
        KeyLookup::Missing(e) => (Outcome::Fail, format!("the pipeline's key {arn} does not exist: {e}")),
        KeyLookup::Unreadable(e) => (Outcome::Unknown, format!("DescribeKey of {arn} failed: {e}")),
        KeyLookup::NotAsked if aws => (Outcome::Unknown, "the key was not described".to_owned()),
        KeyLookup::NotAsked => (Outcome::Unknown, format!("the broker has no AWS KMS to describe {arn} with")),
    }
}

/// The key exists, is enabled, and is a symmetric encrypt/decrypt key.
fn key_usable(arn: Option<&str>, key: &KeyLookup, aws: bool) -> (Outcome, String) {
    let Some(arn) = arn else {
        return (Outcome::Fail, "the pipeline names no KMS key".to_owned());
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
fn one_region_outcome(places: &[(String, Option<String>)]) -> (Outcome, String) {
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
    fn pipeline_ids_are_checked_by_name_and_rule() {
        assert!(parse_pipeline_id("1111111111111-abcdef").is_ok());
        assert_eq!(parse_pipeline_id("").unwrap_err().to_string(), "pipeline_id: required");
        let err = parse_pipeline_id("nope").unwrap_err().to_string();
        assert!(err.starts_with(r"pipeline_id: must match ^\d{13}-\w{6}$, got "), "{err}");
    }

    #[test]
    fn no_key_is_the_aws_s3_default_and_fails() {
        let pipeline = Pipeline { id: "1111111111111-abcdef".into(), ..Pipeline::default() };
        let (outcome, detail) = customer_managed(&pipeline, &KeyLookup::NotAsked, true);
        assert_eq!(outcome, Outcome::Fail);
        assert!(detail.contains("aws/s3"), "{detail}");
    }
}
