//! Pipelines: the static table from the configuration, else Elastic
//! Transcoder `ReadPipeline`, cached with a TTL. A pipeline tells the broker
//! which KMS key (and region) every key of a job must be wrapped with.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::error::{EtError, EtErrorKind, map_et_error};
use crate::custody::kms::KeyArn;

/// A pipeline as the broker needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// The pipeline id.
    pub id: String,
    /// `AwsKmsKeyArn`: the key ET decrypts the job's keys with.
    #[serde(default)]
    pub kms_key_arn: Option<String>,
    /// The pipeline's IAM role (must be a user of the KMS key).
    #[serde(default)]
    pub role: String,
    /// The pipeline's region.
    #[serde(default)]
    pub region: Option<String>,
    /// The bucket ET reads inputs from (`InputBucket`), for the preflight's
    /// region check.
    #[serde(default)]
    pub input_bucket: Option<String>,
    /// The bucket ET writes outputs to (`ContentConfig.Bucket` or
    /// `OutputBucket`).
    #[serde(default)]
    pub output_bucket: Option<String>,
    /// The bucket ET writes thumbnails to (`ThumbnailConfig.Bucket`);
    /// unset, the output bucket.
    #[serde(default)]
    pub thumbnail_bucket: Option<String>,
}

impl Pipeline {
    /// The id and ARN of the pipeline's key, checked against its region.
    ///
    /// # Errors
    /// A message saying how to fix the pipeline (no key, malformed ARN, a key
    /// in another region).
    pub fn key_arn(&self) -> Result<&str, String> {
        let Some(arn) = self.kms_key_arn.as_deref().filter(|a| !a.is_empty()) else {
            return Err(format!(
                "pipeline {} has no AwsKmsKeyArn: Elastic Transcoder decrypts AES keys only with the pipeline's KMS key; \
                 set one with UpdatePipeline (or kms_key_arn in [[transcoder.pipelines]])",
                self.id
            ));
        };
        let Some(parts) = KeyArn::parse(arn) else {
            return Err(format!("pipeline {}: AwsKmsKeyArn {arn:?} is not a KMS key ARN", self.id));
        };
        if let Some(region) = self.region.as_deref().filter(|r| !r.is_empty())
            && parts.region != region
        {
            return Err(format!(
                "pipeline {} is in {region} but its KMS key {arn} is in {}: pipeline, buckets and KMS key must share a \
                 region; give the pipeline a key in {region}",
                self.id, parts.region
            ));
        }
        Ok(arn)
    }
}

/// Finds pipelines.
pub struct Pipelines {
    fixed: HashMap<String, Pipeline>,
    et: Option<aws_sdk_elastictranscoder::Client>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Pipeline)>>,
}

impl Pipelines {
    /// A directory over the static table and, when given, ET `ReadPipeline`.
    pub fn new(fixed: Vec<Pipeline>, et: Option<aws_sdk_elastictranscoder::Client>, ttl: Duration) -> Self {
        Pipelines {
            fixed: fixed.into_iter().map(|p| (p.id.clone(), p)).collect(),
            et,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline `id`.
    ///
    /// # Errors
    /// [`EtError`]: not found, ET unreachable or refusing, or no ET endpoint
    /// configured for a pipeline outside the static table.
    pub async fn resolve(&self, id: &str) -> Result<Pipeline, EtError> {
        if let Some(pipeline) = self.fixed.get(id) {
            return Ok(pipeline.clone());
        }
        let Some(client) = &self.et else {
            return Err(EtError::new(
                "ReadPipeline",
                EtErrorKind::NotFound,
                format!(
                    "pipeline {id} is not in [[transcoder.pipelines]] and no Elastic Transcoder endpoint is configured"
                ),
            ));
        };
        if let Some((at, pipeline)) = self.cache.lock().await.get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(pipeline.clone());
        }
        self.read(client, id).await
    }

    /// Whether `id` is in the configuration's pipeline table (which is
    /// read instead of ET).
    pub fn is_configured(&self, id: &str) -> bool {
        self.fixed.contains_key(id)
    }

    /// The ids of the configuration's pipeline table, sorted.
    pub fn configured_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.fixed.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The pipeline `id` as ET answers now, past the cache (which it
    /// refreshes); the table's entry for a configured one.
    ///
    /// # Errors
    /// As [`Pipelines::resolve`].
    pub async fn resolve_fresh(&self, id: &str) -> Result<Pipeline, EtError> {
        match (&self.et, self.fixed.contains_key(id)) {
            (Some(client), false) => self.read(client, id).await,
            _ => self.resolve(id).await,
        }
    }

    async fn read(&self, client: &aws_sdk_elastictranscoder::Client, id: &str) -> Result<Pipeline, EtError> {
        let out = client.read_pipeline().id(id).send().await.map_err(|e| map_et_error("ReadPipeline", &e))?;
        let found = out
            .pipeline()
            .ok_or_else(|| EtError::new("ReadPipeline", EtErrorKind::Internal, "no Pipeline in the answer"))?;
        let pipeline = pipeline_of(found);
        self.cache.lock().await.insert(id.to_owned(), (Instant::now(), pipeline.clone()));
        Ok(pipeline)
    }
}

fn pipeline_of(p: &aws_sdk_elastictranscoder::types::Pipeline) -> Pipeline {
    let info = super::answer::pipeline_info(p);
    let bucket = |b: Option<&str>| b.filter(|b| !b.is_empty()).map(str::to_owned);
    Pipeline {
        id: info.id,
        kms_key_arn: info.kms_key_arn,
        role: info.role,
        region: info.region,
        input_bucket: bucket(p.input_bucket()),
        output_bucket: bucket(p.content_config().and_then(|c| c.bucket())).or_else(|| bucket(p.output_bucket())),
        thumbnail_bucket: bucket(p.thumbnail_config().and_then(|c| c.bucket())).or_else(|| bucket(p.output_bucket())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(key: Option<&str>, region: &str) -> Pipeline {
        Pipeline {
            id: "1111111111111-abcdef".into(),
            kms_key_arn: key.map(str::to_owned),
            role: "arn:aws:iam::111122223333:role/ET".into(),
            region: Some(region.into()),
            ..Pipeline::default()
        }
    }

    #[test]
    fn preconditions_say_how_to_fix_them() {
        let err = pipeline(None, "us-east-1").key_arn().unwrap_err();
        assert!(err.contains("no AwsKmsKeyArn") && err.contains("UpdatePipeline"), "{err}");
        let err = pipeline(Some("arn:aws:kms:eu-west-1:111122223333:key/k"), "us-east-1").key_arn().unwrap_err();
        assert!(err.contains("is in us-east-1 but its KMS key") && err.contains("eu-west-1"), "{err}");
        assert!(pipeline(Some("arn:aws:kms:us-east-1:111122223333:key/k"), "us-east-1").key_arn().is_ok());
    }
}
