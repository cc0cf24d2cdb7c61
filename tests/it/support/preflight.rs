//! moto set-up the preflight tests share: KMS clients in any region, keys
//! with the key policy a test needs, and buckets in any region.

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use keybroker::objects::ObjectsSettings;
use serde_json::{Value, json};

use crate::support::moto::Moto;

/// The identity moto's STS reports for the suite's credentials: the broker.
pub const BROKER_USER: &str = "arn:aws:iam::123456789012:user/moto";

/// A KMS client on moto in `region`.
pub fn kms_in(moto: &Moto, region: &str) -> aws_sdk_kms::Client {
    let config =
        aws_sdk_kms::config::Builder::from(&moto.sdk_config()).region(aws_config::Region::new(region.to_owned()));
    aws_sdk_kms::Client::from_conf(config.build())
}

/// An S3 client on moto, path-style.
pub fn s3(moto: &Moto) -> aws_sdk_s3::Client {
    let settings = ObjectsSettings { force_path_style: true, ..ObjectsSettings::default() };
    keybroker::objects::s3_client(&moto.sdk_config(), &settings)
}

/// A key policy statement allowing `principal` the `actions`.
pub fn allow(principal: &str, actions: &[&str]) -> Value {
    json!({ "Sid": format!("allow-{}", actions.join("-")), "Effect": "Allow", "Principal": { "AWS": principal }, "Action": actions, "Resource": "*" })
}

/// A symmetric key in `region` whose key policy is `statements` (moto's
/// default policy, an Allow to its account root, when `None`).
pub async fn key(moto: &Moto, region: &str, statements: Option<Vec<Value>>) -> String {
    let kms = kms_in(moto, region);
    let out = kms
        .create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap();
    let arn = out.key_metadata().unwrap().arn().unwrap().to_owned();
    if let Some(statements) = statements {
        let policy = json!({ "Version": "2012-10-17", "Statement": statements }).to_string();
        kms.put_key_policy().key_id(&arn).policy_name("default").policy(policy).send().await.unwrap();
    }
    arn
}

/// A fresh bucket in `region`.
pub async fn bucket(moto: &Moto, region: &str) -> String {
    let name = format!("kb-preflight-{}", uuid::Uuid::new_v4().simple());
    let mut create = s3(moto).create_bucket().bucket(&name);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    create.send().await.unwrap();
    name
}

/// The outcome, detail and fix of requirement `name` among `requirements`.
pub fn requirement<'a>(
    requirements: &'a [keybroker::pb::PipelineRequirement],
    name: &str,
) -> (&'static str, &'a str, &'a str) {
    use keybroker::pb::CheckOutcome;
    let r = requirements.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no requirement {name}"));
    let outcome = match CheckOutcome::try_from(r.outcome).unwrap() {
        CheckOutcome::Pass => "pass",
        CheckOutcome::Fail => "fail",
        CheckOutcome::Unknown => "unknown",
        CheckOutcome::Unspecified => "unspecified",
    };
    (outcome, &r.detail, &r.fix)
}

/// `probes` are two fresh 256-bit keys (one per check), and none of their
/// bytes is in `answers`, the audit log at `audit` or the captured logs.
pub fn assert_probes_nowhere(probes: &[Vec<u8>], answers: &str, audit: &std::path::Path) {
    assert_eq!(probes.len(), 2, "one probe key per check");
    assert!(probes.iter().all(|k| k.len() == 32) && probes[0] != probes[1], "fresh 256-bit probe keys");
    crate::support::logs::assert_no_key_in(answers, probes, "the answers");
    crate::support::logs::assert_no_key_in(&std::fs::read_to_string(audit).unwrap(), probes, "the audit log");
    crate::support::logs::assert_no_key_logged(probes);
}

/// A `keybroker.toml` for `serve` over moto's KMS with `arn` as the default
/// key, plaintext gRPC, every caller allowed and no transcoder submission;
/// `extra` is appended (pipelines, MediaConvert settings).
pub fn serve_config(arn: &str, extra: &str) -> String {
    format!(
        "[tls]\nmode = \"plaintext\"\n[policy]\nallow_all = true\n[kms]\nbackend = \"aws\"\ndefault_key_id = \"{arn}\"\n\
         [s3]\nforce_path_style = true\n[transcoder]\nsubmit = false\n{extra}"
    )
}
