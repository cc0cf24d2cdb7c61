//! Self-test of the suite's MediaConvert endpoint, driven by the real
//! `aws-sdk-mediaconvert` client: it must accept a job whose input keys
//! KMS wrapped under the MediaConvert context and hand back the very key,
//! refuse (with MediaConvert's error shape and the JSON path) a key wrapped
//! under the Elastic Transcoder context, a wrong IV length and a value the
//! botocore model rejects, and answer a repeated `ClientRequestToken` with
//! the first job. Needs moto (started by the support module) and botocore.

use aws_sdk_mediaconvert::error::ProvideErrorMetadata as _;
use aws_sdk_mediaconvert::types::{
    DecryptionMode, DestinationSettings, HlsEncryptionSettings, HlsEncryptionType, HlsGroupSettings,
    HlsKeyProviderType, Input, InputDecryptionSettings, JobSettings, OutputGroup, OutputGroupSettings, OutputGroupType,
    S3DestinationSettings, S3EncryptionSettings, S3ServerSideEncryptionType, StaticKeyProvider,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::support::mc_model::model;
use crate::support::mediaconvert::{MC_CONTEXT_VALUE, McEndpoint};
use crate::support::moto::Moto;
use crate::support::rng::random_bytes;

const ROLE: &str = "arn:aws:iam::111122223333:role/MediaConvert_Default_Role";

/// A fresh key wrapped by moto's KMS under `{"service": service}`.
async fn wrapped(moto: &Moto, kms_key: &str, len: usize, service: &str) -> (Vec<u8>, String) {
    let key = random_bytes(len);
    let blob = moto.encrypt_under(kms_key, &key, service).await;
    (key, B64.encode(blob))
}

fn input(file: &str, mode: DecryptionMode, key: &str, iv: &[u8]) -> Input {
    Input::builder()
        .file_input(file)
        .decryption_settings(
            InputDecryptionSettings::builder()
                .decryption_mode(mode)
                .encrypted_decryption_key(key)
                .initialization_vector(B64.encode(iv))
                .build(),
        )
        .build()
}

fn hls_group(kms_key: &str, static_key: &str) -> OutputGroup {
    let context = B64.encode(json!({"keybroker-request-token": "t-1"}).to_string());
    OutputGroup::builder()
        .output_group_settings(
            OutputGroupSettings::builder()
                .r#type(OutputGroupType::HlsGroupSettings)
                .hls_group_settings(
                    HlsGroupSettings::builder()
                        .destination("s3://out-bucket/hls/")
                        .segment_length(6)
                        .min_segment_length(0)
                        .destination_settings(
                            DestinationSettings::builder()
                                .s3_settings(
                                    S3DestinationSettings::builder()
                                        .encryption(
                                            S3EncryptionSettings::builder()
                                                .encryption_type(S3ServerSideEncryptionType::ServerSideEncryptionKms)
                                                .kms_key_arn(kms_key)
                                                .kms_encryption_context(context)
                                                .build(),
                                        )
                                        .build(),
                                )
                                .build(),
                        )
                        .encryption(
                            HlsEncryptionSettings::builder()
                                .encryption_method(HlsEncryptionType::Aes128)
                                .r#type(HlsKeyProviderType::StaticKey)
                                .static_key_provider(
                                    StaticKeyProvider::builder()
                                        .static_key_value(static_key)
                                        .url("https://keys.example.com/k1")
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build()
}

#[tokio::test]
async fn accepts_mediaconvert_wrapped_keys_and_hands_back_the_key() {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let client = endpoint.sdk_client(&moto.sdk_config());
    let (key_cbc, wrapped_cbc) = wrapped(moto, &kms_key, 32, MC_CONTEXT_VALUE).await;
    let (key_gcm, wrapped_gcm) = wrapped(moto, &kms_key, 16, MC_CONTEXT_VALUE).await;
    let iv_gcm = random_bytes(12);
    let settings = JobSettings::builder()
        .inputs(input("s3://in/a.mp4", DecryptionMode::AesCbc, &wrapped_cbc, &random_bytes(16)))
        .inputs(input("s3://in/b.mp4", DecryptionMode::AesGcm, &wrapped_gcm, &iv_gcm))
        .output_groups(hls_group(&kms_key, "00112233445566778899aabbccddeeff"))
        .build();
    let created = client
        .create_job()
        .role(ROLE)
        .settings(settings.clone())
        .client_request_token("token-one")
        .user_metadata("keybroker-request-token", "t-1")
        .send()
        .await
        .expect("the endpoint accepts a valid job");
    let job = created.job().expect("job");
    let keys = endpoint.input_keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key, key_cbc);
    assert_eq!(keys[0].mode, "AES_CBC");
    assert_eq!(keys[1].key, key_gcm);
    assert_eq!(keys[1].iv, iv_gcm);
    assert_eq!(keys[1].file_input, "s3://in/b.mp4");
    assert!(keys.iter().all(|k| k.job_id == job.id().unwrap_or_default() && k.kms_key_id == kms_key));
    let groups = endpoint.groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].encryption_type.as_deref(), Some("SERVER_SIDE_ENCRYPTION_KMS"));
    assert_eq!(groups[0].static_key.as_deref(), Some("00112233445566778899aabbccddeeff"));
    assert_eq!(
        groups[0].kms_encryption_context.as_ref().and_then(|c| c.get("keybroker-request-token")).unwrap(),
        "t-1"
    );

    // The same token again: the first job, no second one.
    let again = client
        .create_job()
        .role(ROLE)
        .settings(settings)
        .client_request_token("token-one")
        .send()
        .await
        .expect("a repeat answers");
    assert_eq!(again.job().and_then(|j| j.id()), job.id());
    assert_eq!(endpoint.created_jobs().len(), 1);
    let read = client.get_job().id(job.id().unwrap_or_default()).send().await.expect("GetJob");
    assert_eq!(
        read.job().and_then(|j| j.user_metadata()).and_then(|m| m.get("keybroker-request-token")).unwrap(),
        "t-1"
    );
}

async fn refusal(endpoint: &McEndpoint, client: &aws_sdk_mediaconvert::Client, settings: JobSettings) -> String {
    let err = client.create_job().role(ROLE).settings(settings).send().await.expect_err("the endpoint refuses");
    let service = err.as_service_error().expect("a typed MediaConvert error");
    assert_eq!(service.code(), Some("BadRequestException"));
    assert!(service.is_bad_request_exception());
    let message = service.message().unwrap_or_default().to_owned();
    assert_eq!(endpoint.rejections().last(), Some(&message));
    message
}

#[tokio::test]
async fn refuses_et_context_keys_bad_ivs_and_model_violations() {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let client = endpoint.sdk_client(&moto.sdk_config());
    let (_, under_et) = wrapped(moto, &kms_key, 16, "elastictranscoder.amazonaws.com").await;
    let (_, under_mc) = wrapped(moto, &kms_key, 16, MC_CONTEXT_VALUE).await;

    let message = refusal(
        &endpoint,
        &client,
        JobSettings::builder()
            .inputs(input("s3://in/a.mp4", DecryptionMode::AesCbc, &under_et, &random_bytes(16)))
            .build(),
    )
    .await;
    assert!(
        message.starts_with("Settings.Inputs[0].DecryptionSettings.EncryptedDecryptionKey: AWS KMS cannot decrypt"),
        "{message}"
    );

    // A 12-byte IV is for GCM and CTR only; the model's pattern admits it.
    let message = refusal(
        &endpoint,
        &client,
        JobSettings::builder()
            .inputs(input("s3://in/a.mp4", DecryptionMode::AesCbc, &under_mc, &random_bytes(12)))
            .build(),
    )
    .await;
    assert!(
        message.starts_with("Settings.Inputs[0].DecryptionSettings.InitializationVector: decodes to 12"),
        "{message}"
    );

    // The model: an enum value it does not list, and an IV outside the pattern.
    let message = refusal(
        &endpoint,
        &client,
        JobSettings::builder()
            .inputs(input("s3://in/a.mp4", DecryptionMode::from("AES_ECB"), &under_mc, &random_bytes(16)))
            .build(),
    )
    .await;
    assert!(
        message.starts_with("Settings.Inputs[0].DecryptionSettings.DecryptionMode: \"AES_ECB\" is not one"),
        "{message}"
    );
    let message = refusal(
        &endpoint,
        &client,
        JobSettings::builder()
            .inputs(input("s3://in/a.mp4", DecryptionMode::AesCtr, &under_mc, &random_bytes(8)))
            .build(),
    )
    .await;
    assert!(message.starts_with("Settings.Inputs[0].DecryptionSettings.InitializationVector:"), "{message}");
    let message =
        refusal(&endpoint, &client, JobSettings::builder().output_groups(hls_group(&kms_key, "not-a-key")).build())
            .await;
    assert!(message.contains("StaticKeyProvider.StaticKeyValue: \"not-a-key\"... does not match"), "{message}");
    assert!(endpoint.created_jobs().is_empty());
    assert!(endpoint.input_keys().is_empty());
}

#[test]
fn the_model_checker_holds_required_members_types_and_unknown_members() {
    let model = model();
    let missing_role = json!({"settings": {}});
    assert_eq!(model.check(&missing_role, "CreateJobRequest", ""), Err("Role: is required".to_owned()));
    let pascal_case = json!({"Role": ROLE, "Settings": {}});
    assert_eq!(
        model.check(&pascal_case, "CreateJobRequest", ""),
        Err("Role: is not a member of this shape".to_owned())
    );
    let bad_priority = json!({"role": ROLE, "settings": {}, "priority": 51});
    assert!(model.check(&bad_priority, "CreateJobRequest", "").unwrap_err().starts_with("Priority: 51 is above"));
    let wrong_type = json!({"role": ROLE, "settings": {"inputs": {}}});
    assert_eq!(
        model.check(&wrong_type, "CreateJobRequest", ""),
        Err("Settings.Inputs: must be a JSON array".to_owned())
    );
    let good =
        json!({"role": ROLE, "settings": {"inputs": [{"fileInput": "s3://in/a.mp4"}]}, "userMetadata": {"a": "b"}});
    assert_eq!(model.check(&good, "CreateJobRequest", ""), Ok(()));
}

/// The broker maps member names to the wire by a rule and a list
/// (`jobs::mediaconvert::names`); both must be the model's own facts.
#[test]
fn the_brokers_name_mapping_is_the_models() {
    use keybroker::jobs::mediaconvert::names::{MAP_MEMBERS, location_name};
    let model = model();
    let mut maps = std::collections::BTreeSet::new();
    let mut members = 0;
    for shape in model.shapes().values() {
        for (name, member) in shape.get("members").and_then(|m| m.as_object()).into_iter().flatten() {
            members += 1;
            let wire = member.get("locationName").and_then(|l| l.as_str()).unwrap_or(name);
            assert_eq!(location_name(name), wire, "member {name}");
            let target = member["shape"].as_str().unwrap();
            if model.shape(target)["type"] == "map" {
                maps.insert(name.clone());
            }
        }
    }
    assert!(members > 1000, "the model has {members} members: not the MediaConvert model?");
    assert_eq!(maps, MAP_MEMBERS.iter().map(|m| m.to_string()).collect());
}
