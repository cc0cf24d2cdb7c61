//! The pipeline preflight: what Elastic Transcoder needs of a pipeline and
//! its KMS key before any job is keyed, checked one requirement at a time
//! ([`Preflight::check`]), and the two set-up steps of the ET guide done as
//! API calls ([`Preflight::connect`], in [`connect`]).
//!
//! Owns the requirements, their order and their fix texts. The parts every
//! transcoder shares (the AWS look-ups, the reading of key policies and
//! grants, the KMS grant of a connection) live in [`crate::jobs::preflight`].
//! Must never fail for what it cannot see (that is "unknown"), never call
//! an `Allow` to the account root a pass, and never let the probe key's
//! bytes leave memory that is zeroized on drop: no log, no message.

pub mod connect;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Transcoder;
use super::pipeline::Pipeline;
use crate::custody::broker::Broker;
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::ServiceContext;
use crate::custody::kms::KeyArn;
use crate::custody::policy::Grant;
use crate::jobs::preflight::access::Principal;
use crate::jobs::preflight::facts::{self, KeyLookup};
pub use crate::jobs::preflight::{AwsAdmin, Outcome, PreflightError, Requirement};
use crate::jobs::preflight::{KeyAccess, context_map, key_usable, one_region_outcome};

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

/// The preflight over the broker's pipelines, KMS and S3.
pub struct Preflight {
    broker: Arc<Broker>,
    transcoder: Arc<Transcoder>,
    aws: Option<AwsAdmin>,
}

/// The encryption context ET decrypts under, as a map.
fn et_context() -> BTreeMap<String, String> {
    context_map(ServiceContext::ElasticTranscoder)
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
                key_usable(arn.as_deref(), &key, self.aws.is_some(), "the pipeline"),
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
        let access = match KeyAccess::read(aws, arn).await {
            Ok(access) => access,
            Err(why) => return ((Outcome::Unknown, why.clone()), (Outcome::Unknown, why)),
        };
        let context = et_context();
        let role = match Principal::parse(&pipeline.role) {
            Some(role) => access.judge(&role, "kms:Decrypt", &context),
            None => (Outcome::Fail, format!("the pipeline's role {} is not an IAM role ARN", echo(&pipeline.role))),
        };
        let broker = access.broker(aws, &context).await;
        (role, broker)
    }

    /// Wraps a fresh probe key with the pipeline's key under the ET context
    /// and unwraps it again. The key is dropped (zeroized) here.
    async fn probe(&self, arn: Option<&str>) -> (Outcome, String) {
        facts::probe(&self.broker, arn, ServiceContext::ElasticTranscoder, "the pipeline").await
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
    crate::jobs::preflight::customer_managed(arn, key, aws, "the pipeline", "AwsKmsKeyArn")
}

#[cfg(test)]
mod tests {
    use super::*;

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
