//! What AWS answers about a transcoder's key and buckets, for the preflight:
//! DescribeKey, GetKeyPolicy, ListGrants, GetBucketLocation,
//! GetCallerIdentity, and the probe key's round trip through the broker.
//!
//! Owns the calls and the reading of their answers into plain facts. Must
//! never change anything, and never let the probe key's bytes out of its
//! zeroizing [`DataKey`].

use std::collections::BTreeMap;

use super::access::GrantFacts;
use super::outcome::Outcome;
use crate::app::aws::{SdkFailure, sdk_failure};
use crate::custody::broker::{Broker, BrokerError, UnwrapRequest};
use crate::custody::keys::{DataKey, KeyBits, ServiceContext};
use crate::custody::kms::{KmsErrorKind, KmsKeyId};

/// What DescribeKey says of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// `KeyManager` is `CUSTOMER`.
    pub customer_managed: bool,
    /// `KeyManager` as KMS writes it.
    pub manager: String,
    /// `KeyState` (`Enabled`, `Disabled`, `PendingDeletion`, …).
    pub state: String,
    /// `KeySpec` (`SYMMETRIC_DEFAULT`, …).
    pub spec: String,
    /// `KeyUsage` (`ENCRYPT_DECRYPT`, …).
    pub usage: String,
    /// The key's ARN (for a key named by alias, the key it names).
    pub arn: String,
}

/// The answer of a DescribeKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// Not asked (no key, or no AWS KMS).
    NotAsked,
    /// The key, described.
    Found(KeyFacts),
    /// KMS has no such key (`NotFoundException`).
    Missing(String),
    /// KMS did not answer usefully (access, outage).
    Unreadable(String),
}

/// DescribeKey `arn`.
pub async fn describe_key(kms: &aws_sdk_kms::Client, arn: &str) -> KeyLookup {
    match kms.describe_key().key_id(arn).send().await {
        Ok(out) => match out.key_metadata() {
            Some(meta) => {
                let manager = meta.key_manager().map_or("unknown", |m| m.as_str()).to_owned();
                KeyLookup::Found(KeyFacts {
                    customer_managed: manager == "CUSTOMER",
                    manager,
                    state: meta.key_state().map_or("unknown", |s| s.as_str()).to_owned(),
                    spec: meta.key_spec().map_or("unknown", |s| s.as_str()).to_owned(),
                    usage: meta.key_usage().map_or("unknown", |u| u.as_str()).to_owned(),
                    arn: meta.arn().unwrap_or_default().to_owned(),
                })
            }
            None => KeyLookup::Unreadable("no KeyMetadata in the answer".to_owned()),
        },
        Err(e) => {
            let failure = sdk_failure(&e);
            if failure.code.as_deref() == Some("NotFoundException") {
                KeyLookup::Missing(failure.message)
            } else {
                KeyLookup::Unreadable(failure.message)
            }
        }
    }
}

/// The key's `default` policy, as JSON text.
///
/// # Errors
/// KMS's words.
pub async fn key_policy(kms: &aws_sdk_kms::Client, arn: &str) -> Result<String, String> {
    let out = kms.get_key_policy().key_id(arn).policy_name("default").send().await;
    let out = out.map_err(|e| sdk_failure(&e).message)?;
    out.policy().map(str::to_owned).ok_or_else(|| "no Policy in the answer".to_owned())
}

/// Every grant on the key (all pages).
///
/// # Errors
/// What KMS or the transport said.
pub async fn grants(kms: &aws_sdk_kms::Client, arn: &str) -> Result<Vec<GrantFacts>, SdkFailure> {
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = kms.list_grants().key_id(arn).set_marker(marker.take()).send().await;
        let out = out.map_err(|e| sdk_failure(&e))?;
        for grant in out.grants() {
            let map = |m: Option<&std::collections::HashMap<String, String>>| {
                m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>())
            };
            let constraints = grant.constraints();
            found.push(GrantFacts {
                id: grant.grant_id().unwrap_or_default().to_owned(),
                grantee: grant.grantee_principal().unwrap_or_default().to_owned(),
                operations: grant.operations().iter().map(|op| op.as_str().to_owned()).collect(),
                context_subset: map(constraints.and_then(|c| c.encryption_context_subset())),
                context_equals: map(constraints.and_then(|c| c.encryption_context_equals())),
            });
        }
        match out.next_marker().filter(|_| out.truncated()) {
            Some(next) => marker = Some(next.to_owned()),
            None => return Ok(found),
        }
    }
}

/// The region of `bucket` (GetBucketLocation: none is us-east-1, `EU` is
/// eu-west-1).
///
/// # Errors
/// S3's words.
pub async fn bucket_region(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<String, String> {
    let out = match s3.get_bucket_location().bucket(bucket).send().await {
        Ok(out) => out,
        // A bucket of another region may answer the client's region with a
        // redirect that names its own in `x-amz-bucket-region`.
        Err(e) => {
            let named = e.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(str::to_owned);
            return named.filter(|r| !r.is_empty()).ok_or_else(|| sdk_failure(&e).message);
        }
    };
    Ok(match out.location_constraint().map(|c| c.as_str()) {
        None | Some("") => "us-east-1".to_owned(),
        Some("EU") => "eu-west-1".to_owned(),
        Some(region) => region.to_owned(),
    })
}

/// The ARN of the identity the broker calls AWS as.
///
/// # Errors
/// STS's words, or no STS client.
pub async fn caller(sts: Option<&aws_sdk_sts::Client>) -> Result<String, String> {
    let sts = sts.ok_or_else(|| "no STS client".to_owned())?;
    let out = sts.get_caller_identity().send().await.map_err(|e| sdk_failure(&e).message)?;
    out.arn().map(str::to_owned).ok_or_else(|| "no Arn in the answer".to_owned())
}

/// Wraps a fresh 256-bit probe key with `arn` under `context` through the
/// broker's KMS, unwraps it, and compares; `subject` names who lacks a key
/// (`the pipeline`). Nothing is recorded: the probe key never leaves.
pub async fn probe(broker: &Broker, arn: Option<&str>, context: ServiceContext, subject: &str) -> (Outcome, String) {
    let Some(arn) = arn else {
        return (Outcome::Fail, format!("{subject} names no KMS key to probe"));
    };
    if broker.kms_backend() != "aws" {
        return (
            Outcome::Fail,
            format!(
                "the broker wraps with its {} keyring, whose keys {} cannot decrypt",
                broker.kms_backend(),
                service_name(context)
            ),
        );
    }
    let key_id = match KmsKeyId::parse(arn, "kms_key_arn") {
        Ok(id) => id,
        Err(e) => return (Outcome::Fail, e.to_string()),
    };
    let key = match DataKey::generate(KeyBits::Aes256) {
        Ok(key) => key,
        Err(e) => return (Outcome::Unknown, format!("no probe key: {e}")),
    };
    let sealed = match broker.wrap_raw(&key_id, &key, context).await {
        Ok(sealed) => sealed,
        Err(e) => return kms_outcome("wrap", &e),
    };
    let request =
        UnwrapRequest { key_id: Some(key_id), wrapped: sealed.wrapped, key_md5: Some(sealed.key_md5), context };
    match broker.open(request, "probe").await {
        Ok(opened) if opened.key.expose_secret() == key.expose_secret() => (
            Outcome::Pass,
            format!(
                "a probe key wrapped and unwrapped under the {} context with {}",
                service_name(context),
                sealed.key_arn
            ),
        ),
        Ok(_) => (Outcome::Fail, "the probe key came back different".to_owned()),
        Err(e) => kms_outcome("unwrap", &e),
    }
}

/// The service a context is for, as details name it.
pub const fn service_name(context: ServiceContext) -> &'static str {
    match context {
        ServiceContext::ElasticTranscoder => "Elastic Transcoder",
        ServiceContext::MediaConvert => "MediaConvert",
        ServiceContext::AuditChain => "the audit log",
    }
}

fn kms_outcome(step: &str, err: &BrokerError) -> (Outcome, String) {
    let outcome = match err {
        BrokerError::Kms(kms) if kms.kind == KmsErrorKind::Unavailable => Outcome::Unknown,
        BrokerError::KmsDeadline { .. } => Outcome::Unknown,
        _ => Outcome::Fail,
    };
    (outcome, format!("the probe key did not {step}: {err}"))
}
