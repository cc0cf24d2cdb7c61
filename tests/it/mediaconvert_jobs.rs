//! `SubmitMediaConvertJob` end to end: a real broker (moto's KMS, the
//! SQLite ledger), a real gRPC client and the suite's MediaConvert endpoint,
//! which checks every body against the botocore model and KMS-decrypts
//! every input key under the MediaConvert context.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::kms::ScriptedKms;
use crate::support::logs;
use crate::support::mediaconvert::{MC_CONTEXT_VALUE, McEndpoint};
use crate::support::moto::Moto;

const ROLE: &str = "arn:aws:iam::111122223333:role/MediaConvert_Default_Role";
const MC: i32 = pb::ServiceContext::Mediaconvert as i32;
const ET: i32 = pb::ServiceContext::ElasticTranscoder as i32;

struct Rig {
    moto: &'static Moto,
    kms_key: String,
    kms: Arc<ScriptedKms>,
    endpoint: McEndpoint,
    broker: TestBroker,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    rig_with(|_| {}).await
}

async fn rig_with(adjust: impl FnOnce(&mut keybroker::app::config::Config)) -> Rig {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = aws_config(&kms_key);
    config.mediaconvert.submit = true;
    config.mediaconvert.output_kms_key_arn = Some(kms_key.clone());
    config.mediaconvert.key_url_template = Some("https://keys.example.com/{token}/{group}.key".to_owned());
    config.audit.file = Some(dir.path().join("audit.jsonl"));
    adjust(&mut config);
    let kms = ScriptedKms::counting(aws_kms(moto, &config).await);
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let client = endpoint.sdk_client(&moto.sdk_config());
    let audit = dir.path().join("audit.jsonl");
    let broker = TestBroker::start_with_mediaconvert(config, kms.clone(), client, None).await;
    Rig { moto, kms_key, kms, endpoint, broker, audit, _dir: dir }
}

async fn issue(rig: &Rig, mode: &str, bits: u32, context: i32) -> pb::IssueDataKeyResponse {
    let request = pb::IssueDataKeyRequest {
        key_bits: bits,
        mode: mode.to_owned(),
        return_plaintext: true,
        context,
        ..Default::default()
    };
    rig.broker.client().await.issue_data_key(request).await.unwrap().into_inner()
}

fn hls_group() -> Value {
    json!({"Name": "HLS", "OutputGroupSettings": {"Type": "HLS_GROUP_SETTINGS", "HlsGroupSettings": {
        "Destination": "s3://out/hls/", "SegmentLength": 6, "MinSegmentLength": 0,
        "Encryption": {"EncryptionMethod": "AES128", "Type": "STATIC_KEY",
                       "StaticKeyProvider": {"Url": "https://keys.example.com/hls.key", "KeyFormat": "identity", "KeyFormatVersions": "1"}}}}})
}

fn cmaf_group() -> Value {
    json!({"Name": "CMAF", "OutputGroupSettings": {"Type": "CMAF_GROUP_SETTINGS", "CmafGroupSettings": {
        "Destination": "s3://out/cmaf/", "SegmentLength": 6, "FragmentLength": 2,
        "Encryption": {"EncryptionMethod": "SAMPLE_AES", "Type": "STATIC_KEY", "StaticKeyProvider": {}}}}})
}

fn file_group() -> Value {
    json!({"Name": "File", "OutputGroupSettings": {"Type": "FILE_GROUP_SETTINGS", "FileGroupSettings": {"Destination": "s3://out/mp4/"}}})
}

fn request(job: &Value) -> pb::SubmitMediaConvertJobRequest {
    pb::SubmitMediaConvertJobRequest { create_job_json: job.to_string(), ..Default::default() }
}

#[tokio::test]
async fn a_job_with_every_kind_of_key_is_accepted_and_a_repeat_is_the_same_job() {
    let rig = rig().await;
    let from_ledger = issue(&rig, "aes-cbc-pkcs7", 256, MC).await;
    let from_et = issue(&rig, "aes-ctr", 128, ET).await;
    // A block the caller wrapped itself, straight through KMS.
    let brought_key = vec![7u8; 24];
    let wrapped = rig.moto.encrypt_under(&rig.kms_key, &brought_key, MC_CONTEXT_VALUE).await;
    let brought_iv = [9u8; 12];
    let job = json!({
        "Role": ROLE,
        "UserMetadata": {"team": "video"},
        "Settings": {
            "Inputs": [
                {"FileInput": "s3://in/ledger.mp4"},
                {"FileInput": "s3://in/brought.mp4", "DecryptionSettings": {
                    "DecryptionMode": "AES_GCM",
                    "EncryptedDecryptionKey": B64.encode(&wrapped),
                    "InitializationVector": B64.encode(brought_iv)}},
                {"FileInput": "s3://in/from-et.mp4"}
            ],
            "OutputGroups": [hls_group(), cmaf_group(), file_group()]
        }
    });
    let mut req = request(&job);
    req.input_keys = vec![
        pb::MediaConvertInputKey { input_index: 0, key_fingerprint: from_ledger.key_fingerprint.clone() },
        pb::MediaConvertInputKey { input_index: 2, key_fingerprint: from_et.key_fingerprint.clone() },
    ];
    req.rewrap_et_inputs = true;
    req.encrypt_outputs = true;
    req.bind_job_context = true;
    req.constant_initialization_vector = true;
    req.request_token = "mc-job-1".to_owned();
    let kms_before = rig.kms.count();
    let answer = rig.broker.client().await.submit_media_convert_job(req.clone()).await.unwrap().into_inner();
    assert!(!answer.job_id.is_empty());
    assert_eq!(rig.endpoint.created_jobs().len(), 1);

    // Every input key decrypted by KMS at the endpoint is the key the broker issued.
    let keys = rig.endpoint.input_keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(keys[0].key, from_ledger.plaintext_key);
    assert_eq!(keys[0].mode, "AES_CBC");
    assert_eq!(B64.encode(&keys[0].iv), from_ledger.encryption.as_ref().unwrap().initialization_vector);
    assert_eq!(keys[1].key, brought_key);
    assert_eq!(keys[1].iv, brought_iv);
    assert_eq!(keys[2].key, from_et.plaintext_key, "the ET key was moved, not replaced");
    assert_eq!(keys[2].mode, "AES_CTR");
    // Each block names the region of the KMS key that wrapped its key.
    let region = rig.kms_key.split(':').nth(3).unwrap();
    assert!(keys.iter().all(|k| k.kms_key_region.as_deref() == Some(region)), "{keys:?}");
    let submitted: Value = serde_json::from_str(&answer.create_job_json).unwrap();
    assert_eq!(submitted["Settings"]["Inputs"][0]["DecryptionSettings"]["KmsKeyRegion"], region);
    let moved = answer.keys.iter().find(|k| k.place == "Settings.Inputs[2].DecryptionSettings").unwrap();
    assert_eq!(moved.rewrapped_from, from_et.key_fingerprint);

    // Outputs: SSE-KMS bound to the job, and a fresh static key per group.
    let groups = rig.endpoint.groups();
    assert_eq!(groups.len(), 3);
    for group in &groups {
        assert_eq!(group.encryption_type.as_deref(), Some("SERVER_SIDE_ENCRYPTION_KMS"), "{}", group.path);
        assert_eq!(group.kms_key_arn.as_deref(), Some(rig.kms_key.as_str()));
        let context = group.kms_encryption_context.as_ref().unwrap();
        assert_eq!(context["keybroker-request-token"], "mc-job-1");
        assert_eq!(context["keybroker-caller"], "anonymous");
    }
    let hls_key = groups[0].static_key.clone().unwrap();
    let cmaf_key = groups[1].static_key.clone().unwrap();
    assert_ne!(hls_key, cmaf_key);
    assert_eq!(groups[0].static_key_url.as_deref(), Some("https://keys.example.com/hls.key"));
    assert_eq!(groups[1].static_key_url.as_deref(), Some("https://keys.example.com/mc-job-1/1.key"));
    assert_eq!(groups[0].constant_iv.as_ref().map(String::len), Some(32));
    assert!(groups[2].static_key.is_none());

    // The static keys are recorded wrapped under the MediaConvert context:
    // unwrapping the recorded block gives the key MediaConvert was sent.
    let mut client = rig.broker.client().await;
    let recorded = client
        .lookup_keys(pb::LookupKeysRequest { job_id: answer.job_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(recorded.len(), 5, "three inputs and two static keys");
    let static_rows: Vec<_> = recorded.iter().filter(|k| k.job_place.contains("StaticKeyProvider")).collect();
    assert_eq!(static_rows.len(), 2);
    let mut static_plain = Vec::new();
    for row in static_rows {
        assert_eq!(row.context, MC);
        assert_eq!(row.key_bits, 128);
        // UnwrapKey reads the block's mode as a file mode; the row's is the packaging method.
        let mut block = row.encryption.clone().unwrap();
        assert!(block.mode.starts_with("static-"), "{}", block.mode);
        block.mode = "aes-cbc-pkcs7".to_owned();
        let unwrapped = client
            .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(block), context: MC, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        static_plain.push(unwrapped.plaintext_key);
    }
    let sent: Vec<Vec<u8>> = [&hls_key, &cmaf_key].iter().map(|h| hex::decode(h).unwrap()).collect();
    assert!(sent.iter().all(|k| static_plain.contains(k)), "recorded static keys are the keys sent");

    // The answer never carries a static key: only the submitted body does.
    assert!(answer.static_keys_redacted);
    for text in [&answer.create_job_json, &answer.job_json] {
        assert!(!text.contains(&hls_key) && !text.contains(&cmaf_key));
    }

    // A repeat of the token: the first job, no KMS call, no second job.
    let kms_after = rig.kms.count();
    assert!(kms_after > kms_before);
    let again = client.submit_media_convert_job(req).await.unwrap().into_inner();
    assert_eq!(again.job_id, answer.job_id);
    assert_eq!(rig.kms.count(), kms_after);
    assert_eq!(rig.endpoint.create_requests(), 1);

    // No plaintext key in logs, audit or any answer's JSON.
    let mut secrets = sent.clone();
    secrets.extend([from_ledger.plaintext_key.clone(), from_et.plaintext_key.clone(), brought_key]);
    logs::assert_no_key_logged(&secrets);
    let audit = std::fs::read_to_string(&rig.audit).unwrap();
    assert!(audit.contains("SubmitMediaConvertJob"));
    logs::assert_no_key_in(&audit, &secrets, "the audit log");
    logs::assert_no_key_in(&format!("{recorded:?}"), &secrets, "the ledger's records");
}

#[tokio::test]
async fn validate_only_answers_the_exact_body_with_static_keys_only_for_plaintext_export() {
    let rig = rig().await;
    let job = json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/plain.mp4"}], "OutputGroups": [hls_group()]}});
    let mut req = request(&job);
    req.validate_only = true;
    req.encrypt_outputs = true;
    let answer = rig.broker.client().await.submit_media_convert_job(req).await.unwrap().into_inner();
    let body: Value = serde_json::from_str(&answer.create_job_json).unwrap();
    let key = body
        .pointer(
            "/Settings/OutputGroups/0/OutputGroupSettings/HlsGroupSettings/Encryption/StaticKeyProvider/StaticKeyValue",
        )
        .and_then(Value::as_str)
        .unwrap();
    assert_eq!(key.len(), 32, "this caller may export plaintext: the exact body");
    assert!(!answer.static_keys_redacted);
    assert_eq!(
        body.pointer("/Settings/OutputGroups/0/OutputGroupSettings/HlsGroupSettings/DestinationSettings/S3Settings/Encryption/KmsKeyArn"),
        Some(&json!(rig.kms_key))
    );
    assert_eq!(rig.endpoint.request_count(), 0, "validate_only submits nothing");

    // A caller without plaintext export sees the body with the key redacted.
    let rig = rig_with(|config| config.allow_plaintext_export = false).await;
    let mut req = request(&job);
    req.validate_only = true;
    let answer = rig.broker.client().await.submit_media_convert_job(req).await.unwrap().into_inner();
    assert!(answer.static_keys_redacted);
    let body: Value = serde_json::from_str(&answer.create_job_json).unwrap();
    let shown = body
        .pointer(
            "/Settings/OutputGroups/0/OutputGroupSettings/HlsGroupSettings/Encryption/StaticKeyProvider/StaticKeyValue",
        )
        .and_then(Value::as_str)
        .unwrap();
    assert!(shown.starts_with("(redacted"), "{shown}");
    assert_eq!(answer.keys.len(), 1, "the key was still made and recorded (wrapped)");
}

#[tokio::test]
async fn an_et_wrapped_key_is_refused_naming_rewrap_keys_and_nothing_is_submitted() {
    let rig = rig().await;
    let from_et = issue(&rig, "aes-cbc-pkcs7", 256, ET).await;
    let job = json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/a.mp4"}]}});
    let mut req = request(&job);
    req.input_keys = vec![pb::MediaConvertInputKey { input_index: 0, key_fingerprint: from_et.key_fingerprint }];
    let err = rig.broker.client().await.submit_media_convert_job(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("RewrapKeys"), "{}", err.message());
    assert!(err.message().starts_with("Settings.Inputs[0].DecryptionSettings"), "{}", err.message());

    // The same key brought as a block: KMS cannot open it under the
    // MediaConvert context, and the ledger knows it for an ET key.
    let block = from_et.encryption.unwrap();
    let brought = json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/a.mp4", "DecryptionSettings": {
        "DecryptionMode": "AES_CBC", "EncryptedDecryptionKey": block.key, "InitializationVector": block.initialization_vector}}]}});
    let err = rig.broker.client().await.submit_media_convert_job(request(&brought)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("RewrapKeys"), "{}", err.message());
    assert_eq!(rig.endpoint.request_count(), 0);
}

#[tokio::test]
async fn a_body_the_model_rejects_reaches_neither_kms_nor_mediaconvert() {
    let rig = rig().await;
    let before = rig.kms.count();
    let cases = [
        (
            json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/a.mp4", "DecryptionSettings": {
                "DecryptionMode": "AES_ECB", "EncryptedDecryptionKey": "A".repeat(40), "InitializationVector": "AAAAAAAAAAAAAAAAAAAAAA=="}}],
                "OutputGroups": [hls_group()]}}),
            "Settings.Inputs[0].DecryptionSettings.DecryptionMode: ",
        ),
        (
            json!({"Role": ROLE, "Settings": {"OutputGroups": [{"OutputGroupSettings": {"HlsGroupSettings": {
                "Encryption": {"Type": "STATIC_KEY", "ConstantInitializationVector": "xyz", "StaticKeyProvider": {"Url": "u"}}}}}]}}),
            "Settings.OutputGroups[0].OutputGroupSettings.HlsGroupSettings.Encryption.ConstantInitializationVector: ",
        ),
        (
            json!({"Role": ROLE, "Settings": {"OutputGroups": [{"OutputGroupSettings": {"HlsGroupSettings": {
                "Encryption": {"Type": "STATIC_KEY", "StaticKeyProvider": {"Url": "u", "StaticKeyValue": "00112233445566778899aabbccddeeff"}}}}}]}}),
            "Settings.OutputGroups[0].OutputGroupSettings.HlsGroupSettings.Encryption.StaticKeyProvider.StaticKeyValue: ",
        ),
        (json!({"Settings": {}}), "Role: is required"),
        (json!({"Role": ROLE, "Settings": {"Inputs": {}}}), "Settings.Inputs: must be a JSON array"),
    ];
    for (job, prefix) in cases {
        let err = rig.broker.client().await.submit_media_convert_job(request(&job)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(prefix), "{} should start with {prefix}", err.message());
        assert!(!err.message().contains("00112233445566778899aabbccddeeff"), "a refusal never repeats a key");
    }
    let err = rig
        .broker
        .client()
        .await
        .submit_media_convert_job(pb::SubmitMediaConvertJobRequest {
            create_job_json: "{\"Role\":".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("create_job_json: is not JSON"), "{}", err.message());
    assert_eq!(rig.kms.count(), before, "no KMS call for a refused body");
    assert_eq!(rig.endpoint.request_count(), 0, "nothing reached MediaConvert");
}

/// Runs the `keybroker` binary against the rig's broker; answers its stdout as JSON.
async fn cli(rig: &Rig, args: &[&str]) -> Value {
    crate::support::process::cli_json(&rig.broker.addr.to_string(), args).await
}

#[tokio::test]
async fn the_cli_migrates_an_et_input_and_submits_the_example_job() {
    let rig = rig().await;
    let from_et = issue(&rig, "aes-gcm", 256, ET).await;
    let block = from_et.encryption.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("et-input.json");
    let et_json = json!({"Encryption": {"Mode": block.mode, "Key": block.key, "KeyMd5": block.key_md5,
                                        "InitializationVector": block.initialization_vector}});
    std::fs::write(&file, et_json.to_string()).unwrap();
    let settings =
        cli(&rig, &["migrate", "et-input", "--encryption", file.to_str().unwrap(), "--kms-key-id", &rig.kms_key]).await;
    assert_eq!(settings["DecryptionMode"], "AES_GCM");
    assert_eq!(settings["InitializationVector"], json!(block.initialization_vector), "the IV is carried");
    assert_ne!(settings["EncryptedDecryptionKey"], json!(block.key), "the key is re-encrypted");
    assert_eq!(settings["KmsKeyRegion"], rig.kms_key.split(':').nth(3).unwrap(), "the region of the KMS key");

    // The migrated block, brought in a job, is the same key under the MediaConvert context.
    let job = json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/migrated.mp4", "DecryptionSettings": settings}]}});
    let answer = rig.broker.client().await.submit_media_convert_job(request(&job)).await.unwrap().into_inner();
    assert!(!answer.job_id.is_empty());
    assert_eq!(rig.endpoint.input_keys()[0].key, from_et.plaintext_key);
    let audit = std::fs::read_to_string(&rig.audit).unwrap();
    assert!(audit.contains("\"RewrapKeys\""), "the migration is audited");

    // The example job: model-valid as MediaConvert's endpoint judges it.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mediaconvert/job.json");
    let checked =
        cli(&rig, &["mediaconvert", "submit", "--job", example, "--encrypt-outputs", "--validate-only"]).await;
    assert!(checked["JobId"].is_null());
    let hls = &checked["CreateJob"]["Settings"]["OutputGroups"][0]["OutputGroupSettings"]["HlsGroupSettings"];
    assert_eq!(hls["DestinationSettings"]["S3Settings"]["Encryption"]["KmsKeyArn"], json!(rig.kms_key));
    let submitted = cli(
        &rig,
        &[
            "mediaconvert",
            "submit",
            "--job",
            example,
            "--encrypt-outputs",
            "--bind-job-context",
            "--request-token",
            "example-1",
        ],
    )
    .await;
    assert!(submitted["JobId"].is_string(), "{submitted}");
    assert_eq!(submitted["StaticKeysRedacted"], true);
    assert_eq!(rig.endpoint.created_jobs().len(), 2);
    assert!(rig.endpoint.rejections().is_empty(), "{:?}", rig.endpoint.rejections());
}

#[tokio::test]
async fn a_server_that_requires_encrypted_outputs_refuses_a_plain_group_before_any_key_is_made() {
    let rig = rig_with(|config| config.mediaconvert.require_encrypted_outputs = true).await;
    let job = json!({"Role": ROLE, "Settings": {"OutputGroups": [hls_group(), file_group()]}});
    let before = rig.kms.count();
    let err = rig.broker.client().await.submit_media_convert_job(request(&job)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("Settings.OutputGroups[0]: writes unencrypted outputs"), "{}", err.message());
    assert_eq!(rig.kms.count(), before, "no static key was made");
    assert_eq!(rig.endpoint.request_count(), 0);

    // Asked for, the same job passes: every group SSE-KMS under the configured key.
    let mut req = request(&job);
    req.encrypt_outputs = true;
    let answer = rig.broker.client().await.submit_media_convert_job(req).await.unwrap().into_inner();
    assert!(!answer.job_id.is_empty());
    let groups = rig.endpoint.groups();
    assert!(groups.iter().all(|g| g.kms_key_arn.as_deref() == Some(rig.kms_key.as_str())), "{groups:?}");
    assert!(groups.iter().all(|g| g.kms_encryption_context.is_none()), "no context unless asked");
}

#[tokio::test]
async fn a_kms_key_region_that_is_not_the_keys_is_refused_naming_the_field() {
    let rig = rig().await;
    let issued = issue(&rig, "aes-ctr", 128, MC).await;
    let block = issued.encryption.unwrap();
    let region = rig.kms_key.split(':').nth(3).unwrap();
    let other = if region == "eu-west-1" { "us-east-1" } else { "eu-west-1" };
    let input = |region: &str| {
        json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/a.mp4", "DecryptionSettings": {
            "DecryptionMode": "AES_CTR", "EncryptedDecryptionKey": block.key, "KmsKeyRegion": region,
            "InitializationVector": block.initialization_vector}}]}})
    };
    let err = rig.broker.client().await.submit_media_convert_job(request(&input(other))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("Settings.Inputs[0].DecryptionSettings.KmsKeyRegion: ")
            && err.message().contains(region),
        "{}",
        err.message()
    );
    assert_eq!(rig.endpoint.request_count(), 0);
    let answer = rig.broker.client().await.submit_media_convert_job(request(&input(region))).await.unwrap();
    assert!(!answer.into_inner().job_id.is_empty());
    assert_eq!(rig.endpoint.input_keys()[0].kms_key_region.as_deref(), Some(region));
}
