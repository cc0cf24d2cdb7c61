//! Self-test of the suite's Elastic Transcoder endpoint: it must accept what
//! ET accepted and reject, with a typed SDK error naming the JSON path, what
//! ET rejected. Needs moto (started by the support module).

use aws_sdk_elastictranscoder::Client;
use aws_sdk_elastictranscoder::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elastictranscoder::operation::create_job::{CreateJobError, CreateJobOutput as CreateJobResponse};
use aws_sdk_elastictranscoder::types::{
    CreateJobOutput, CreateJobPlaylist, Encryption, HlsContentProtection, JobInput, PlayReadyDrm,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};

use crate::support::rng::random_bytes;
use crate::support::{et::*, moto::Moto};

const PIPELINE_ID: &str = "1700000000000-abc123";
const PRESET_ID: &str = "1351620000001-000010";
const MEDIACONVERT_CONTEXT: &str = "mediaconvert.amazonaws.com";

/// An AES key as the broker would hand it to ET, plus its plaintext.
struct WrappedKey {
    plaintext: Vec<u8>,
    key: String,
    key_md5: String,
    iv: String,
    iv_bytes: Vec<u8>,
}

fn md5_b64(bytes: &[u8]) -> String {
    B64.encode(Md5::digest(bytes).as_slice())
}

/// Wraps a fresh `key_len`-byte key under `kms_key` with context
/// `{"service": context_service}` through moto's KMS directly.
async fn wrap(moto: &Moto, kms_key: &str, key_len: usize, context_service: &str) -> WrappedKey {
    let plaintext = random_bytes(key_len);
    let blob = moto.encrypt_under(kms_key, &plaintext, context_service).await;
    let iv_bytes = random_bytes(16);
    WrappedKey { key_md5: md5_b64(&plaintext), plaintext, key: B64.encode(&blob), iv: B64.encode(&iv_bytes), iv_bytes }
}

async fn et_wrap(moto: &Moto, kms_key: &str, key_len: usize) -> WrappedKey {
    wrap(moto, kms_key, key_len, ET_CONTEXT_VALUE).await
}

fn encryption(mode: &str, key: &WrappedKey) -> Encryption {
    Encryption::builder().mode(mode).key(&key.key).key_md5(&key.key_md5).initialization_vector(&key.iv).build()
}

fn output(key: &str) -> aws_sdk_elastictranscoder::types::builders::CreateJobOutputBuilder {
    CreateJobOutput::builder().key(key).preset_id(PRESET_ID)
}

fn input() -> JobInput {
    JobInput::builder().key("in/source.mp4").container("auto").build()
}

struct Setup {
    moto: &'static Moto,
    kms_key: String,
    et: EtEndpoint,
    client: Client,
}

async fn setup_with(md5: KeyMd5Reading) -> Setup {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let et = EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(PIPELINE_ID, Some(&kms_key))], md5).await;
    let client = et.sdk_client(&moto.sdk_config());
    Setup { moto, kms_key, et, client }
}

async fn setup() -> Setup {
    setup_with(KeyMd5Reading::Plaintext).await
}

/// Asserts a typed ValidationException whose message starts with `path`,
/// and that the endpoint recorded it and created no job.
fn assert_rejected(s: &Setup, result: Result<CreateJobResponse, SdkError<CreateJobError>>, path: &str) {
    let err = result.expect_err("the job must be rejected").into_service_error();
    assert!(err.is_validation_exception(), "want ValidationException, got {err:?}");
    let message = err.message().expect("a message");
    assert!(message.starts_with(&format!("{path}:")), "message must name {path}: {message}");
    assert_eq!(s.et.rejections().last().map(String::as_str), Some(message));
    assert!(s.et.created_jobs().is_empty(), "a rejected job must not be recorded");
    assert!(s.et.verified_keys().is_empty());
}

#[tokio::test]
async fn accepts_a_job_with_aes_outputs_thumbnails_and_hls_protection() {
    let s = setup().await;
    let file_key = et_wrap(s.moto, &s.kms_key, 32).await;
    let thumb_key = et_wrap(s.moto, &s.kms_key, 16).await;
    let hls_key = et_wrap(s.moto, &s.kms_key, 16).await;

    let sent = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(
            output("mp4/movie.mp4")
                .encryption(encryption("aes-cbc-pkcs7", &file_key))
                .thumbnail_pattern("thumbs/movie-{count}")
                .thumbnail_encryption(encryption("aes-gcm", &thumb_key))
                .build(),
        )
        .outputs(output("hls/400k").segment_duration("10").build())
        .playlists(
            CreateJobPlaylist::builder()
                .name("hls/index")
                .format("HLSv3")
                .output_keys("hls/400k")
                .hls_content_protection(
                    HlsContentProtection::builder()
                        .method("aes-128")
                        .key(&hls_key.key)
                        .key_md5(&hls_key.key_md5)
                        .initialization_vector(&hls_key.iv)
                        .license_acquisition_url("https://keys.example.com/hls")
                        .key_storage_policy("NoStore")
                        .build(),
                )
                .build(),
        )
        .user_metadata("tenant", "test")
        .send()
        .await
        .expect("ET accepts a well-formed encrypted job");

    let job = sent.job().expect("CreateJob answers the job");
    let id = job.id().expect("job id");
    assert!(is_et_id(id), "job id {id} must match ^\\d{{13}}-\\w{{6}}$");
    assert_eq!(job.pipeline_id(), Some(PIPELINE_ID));
    assert_eq!(job.status(), Some("Submitted"));
    assert_eq!(job.arn(), Some(format!("arn:aws:elastictranscoder:us-east-1:111122223333:job/{id}").as_str()));
    assert_eq!(job.outputs().len(), 2);
    assert_eq!(job.outputs()[0].id(), Some("1"));
    assert_eq!(job.outputs()[0].status(), Some("Submitted"));
    let echoed = job.outputs()[0].encryption().expect("echoed encryption");
    assert_eq!(echoed.key(), Some(file_key.key.as_str()));
    assert_eq!(job.output().and_then(|o| o.key()), Some("mp4/movie.mp4"));
    assert_eq!(job.playlists().len(), 1);
    assert!(job.timing().and_then(|t| t.submit_time_millis()).is_some());

    let read = s.client.read_job().id(id).send().await.expect("ReadJob");
    let read_job = read.job().expect("ReadJob answers the job");
    assert_eq!(read_job.id(), Some(id));
    assert_eq!(read_job.outputs().len(), 2);

    assert_eq!(s.et.created_jobs().len(), 1);
    assert_eq!(s.et.created_jobs()[0]["PipelineId"], PIPELINE_ID);
    let keys = s.et.verified_keys();
    let paths: Vec<&str> = keys.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(paths, ["Outputs[0].ThumbnailEncryption", "Outputs[0].Encryption", "Playlists[0].HlsContentProtection"]);
    for (verified, sent) in keys.iter().zip([&thumb_key, &file_key, &hls_key]) {
        assert_eq!(verified.job_id, id);
        assert_eq!(verified.key, sent.plaintext);
        assert_eq!(verified.iv.as_deref(), Some(sent.iv_bytes.as_slice()));
        assert_eq!(verified.kms_key_id, s.kms_key);
    }
    assert_eq!(keys[0].mode, "aes-gcm");
    assert_eq!(keys[1].mode, "aes-cbc-pkcs7");
    assert_eq!(keys[2].mode, "aes-128");
    assert!(s.et.rejections().is_empty());
}

#[tokio::test]
async fn rejects_a_wrapped_key_with_one_flipped_byte() {
    let s = setup().await;
    let mut key = et_wrap(s.moto, &s.kms_key, 32).await;
    let mut blob = B64.decode(&key.key).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    key.key = B64.encode(&blob);
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("a.mp4").build())
        .outputs(output("b.mp4").encryption(encryption("aes-ctr", &key)).build())
        .send()
        .await;
    assert_rejected(&s, result, "Outputs[1].Encryption.Key");
}

#[tokio::test]
async fn rejects_a_wrong_key_md5() {
    let s = setup().await;
    let mut key = et_wrap(s.moto, &s.kms_key, 16).await;
    key.key_md5 = md5_b64(b"not the key");
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("a.mp4").build())
        .outputs(output("b.mp4").build())
        .outputs(output("c.mp4").build())
        .outputs(
            output("d.mp4")
                .thumbnail_pattern("d-{count}")
                .thumbnail_encryption(encryption("aes-cbc-pkcs7", &key))
                .build(),
        )
        .send()
        .await;
    assert_rejected(&s, result, "Outputs[3].ThumbnailEncryption.KeyMd5");
}

#[tokio::test]
async fn rejects_a_12_byte_iv() {
    let s = setup().await;
    let mut key = et_wrap(s.moto, &s.kms_key, 32).await;
    key.iv = B64.encode(random_bytes(12));
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("a.mp4").encryption(encryption("aes-gcm", &key)).build())
        .send()
        .await;
    assert_rejected(&s, result, "Outputs[0].Encryption.InitializationVector");
}

#[tokio::test]
async fn rejects_a_key_wrapped_under_the_mediaconvert_context() {
    let s = setup().await;
    let key = wrap(s.moto, &s.kms_key, 32, MEDIACONVERT_CONTEXT).await;
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(JobInput::builder().key("in/encrypted.mp4").encryption(encryption("aes-cbc-pkcs7", &key)).build())
        .outputs(output("a.mp4").build())
        .send()
        .await;
    assert_rejected(&s, result, "Input.Encryption.Key");
    assert!(s.et.rejections()[0].contains("cannot decrypt"));
    assert!(s.et.rejections()[0].contains("InvalidCiphertextException"));
}

#[tokio::test]
async fn rejects_31_outputs() {
    let s = setup().await;
    let mut job = s.client.create_job().pipeline_id(PIPELINE_ID).input(input());
    for i in 0..31 {
        job = job.outputs(output(&format!("out/{i}.mp4")).build());
    }
    let result = job.send().await;
    assert_rejected(&s, result, "Outputs");
    assert!(s.et.rejections()[0].contains("31"));
}

#[tokio::test]
async fn read_pipeline_reports_the_kms_key_and_unknown_pipelines_are_typed() {
    let s = setup().await;
    let pipeline = s.client.read_pipeline().id(PIPELINE_ID).send().await.expect("ReadPipeline");
    let pipeline = pipeline.pipeline().expect("pipeline");
    assert_eq!(pipeline.id(), Some(PIPELINE_ID));
    assert_eq!(pipeline.aws_kms_key_arn(), Some(s.kms_key.as_str()));
    assert_eq!(pipeline.status(), Some("Active"));
    assert_eq!(pipeline.role(), Some(DEFAULT_ROLE));
    assert_eq!(
        pipeline.arn(),
        Some(format!("arn:aws:elastictranscoder:us-east-1:111122223333:pipeline/{PIPELINE_ID}").as_str())
    );

    let err = s
        .client
        .read_pipeline()
        .id("1999999999999-zzzzzz")
        .send()
        .await
        .expect_err("unknown pipeline")
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "got {err:?}");
    assert!(err.message().unwrap_or_default().contains("1999999999999-zzzzzz"));

    let err =
        s.client.read_job().id("1999999999999-zzzzzz").send().await.expect_err("unknown job").into_service_error();
    assert!(err.is_resource_not_found_exception(), "got {err:?}");
}

#[tokio::test]
async fn a_pipeline_without_a_kms_key_has_none_in_read_pipeline() {
    let moto = Moto::shared();
    let et =
        EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(PIPELINE_ID, None)], KeyMd5Reading::Plaintext).await;
    let out = et.sdk_client(&moto.sdk_config()).read_pipeline().id(PIPELINE_ID).send().await.expect("ReadPipeline");
    assert_eq!(out.pipeline().and_then(|p| p.aws_kms_key_arn()), None);
}

#[tokio::test]
async fn rejects_a_key_wrapped_under_another_kms_key_than_the_pipelines() {
    let s = setup().await;
    let other_key = s.moto.create_key().await;
    let key = et_wrap(s.moto, &other_key, 32).await;
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("a.mp4").encryption(encryption("aes-cbc-pkcs7", &key)).build())
        .send()
        .await;
    assert_rejected(&s, result, "Outputs[0].Encryption.Key");
    assert!(s.et.rejections()[0].contains("AwsKmsKeyArn"));
}

#[tokio::test]
async fn rejects_an_unknown_pipeline_in_create_job() {
    let s = setup().await;
    let result = s
        .client
        .create_job()
        .pipeline_id("1999999999999-zzzzzz")
        .input(input())
        .outputs(output("a.mp4").build())
        .send()
        .await;
    assert_rejected(&s, result, "PipelineId");
}

#[tokio::test]
async fn rejects_a_bad_mode_a_short_hls_key_and_a_playlist_naming_no_output() {
    let s = setup().await;
    let key = et_wrap(s.moto, &s.kms_key, 32).await;
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("a.mp4").encryption(encryption("AES-CBC-PKCS7", &key)).build())
        .send()
        .await;
    assert_rejected(&s, result, "Outputs[0].Encryption.Mode");

    let s = setup().await;
    let key = et_wrap(s.moto, &s.kms_key, 32).await;
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("hls/1").build())
        .playlists(
            CreateJobPlaylist::builder()
                .name("index")
                .format("HLSv4")
                .output_keys("hls/1")
                .hls_content_protection(
                    HlsContentProtection::builder()
                        .method("aes-128")
                        .key(&key.key)
                        .key_md5(&key.key_md5)
                        .initialization_vector(&key.iv)
                        .key_storage_policy("WithVariantPlaylists")
                        .build(),
                )
                .build(),
        )
        .send()
        .await;
    assert_rejected(&s, result, "Playlists[0].HlsContentProtection.Key");

    let s = setup().await;
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("hls/1").build())
        .playlists(CreateJobPlaylist::builder().name("index").format("HLSv3").output_keys("hls/2").build())
        .send()
        .await;
    assert_rejected(&s, result, "Playlists[0].OutputKeys[0]");
}

#[tokio::test]
async fn rejects_file_encryption_on_an_output_of_a_protected_playlist() {
    let s = setup().await;
    let file_key = et_wrap(s.moto, &s.kms_key, 16).await;
    let drm_key = et_wrap(s.moto, &s.kms_key, 16).await;
    let result = s
        .client
        .create_job()
        .pipeline_id(PIPELINE_ID)
        .input(input())
        .outputs(output("smooth/1").encryption(encryption("aes-ctr", &file_key)).build())
        .playlists(
            CreateJobPlaylist::builder()
                .name("index")
                .format("Smooth")
                .output_keys("smooth/1")
                .play_ready_drm(
                    PlayReadyDrm::builder()
                        .format("microsoft")
                        .key(&drm_key.key)
                        .key_md5(&drm_key.key_md5)
                        .key_id("0123456789abcdef0123456789ABCDEF")
                        .license_acquisition_url("https://license.example.com/rightsmanager.asmx")
                        .build(),
                )
                .build(),
        )
        .send()
        .await;
    assert_rejected(&s, result, "Playlists[0].OutputKeys[0]");
}

#[tokio::test]
async fn accepts_play_ready_with_an_8_byte_iv_and_rejects_a_16_byte_one() {
    let s = setup().await;
    let drm_key = et_wrap(s.moto, &s.kms_key, 16).await;
    let drm = |iv: Vec<u8>| {
        PlayReadyDrm::builder()
            .format("discretix-3.0")
            .key(&drm_key.key)
            .key_md5(&drm_key.key_md5)
            .key_id("01234567-89ab-cdef-0123-456789abcdef")
            .initialization_vector(B64.encode(iv))
            .license_acquisition_url("https://license.example.com/pr")
            .build()
    };
    let job = |iv: Vec<u8>| {
        s.client.create_job().pipeline_id(PIPELINE_ID).input(input()).outputs(output("hls/1").build()).playlists(
            CreateJobPlaylist::builder()
                .name("index")
                .format("HLSv3")
                .output_keys("hls/1")
                .play_ready_drm(drm(iv))
                .build(),
        )
    };
    let err = job(random_bytes(16)).send().await.expect_err("16-byte PlayReady IV").into_service_error();
    assert!(err.is_validation_exception());
    assert!(err.message().unwrap_or_default().starts_with("Playlists[0].PlayReadyDrm.InitializationVector:"));
    job(random_bytes(8)).send().await.expect("8-byte PlayReady IV");
    let keys = s.et.verified_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].path, "Playlists[0].PlayReadyDrm");
    assert_eq!(keys[0].iv.as_ref().map(Vec::len), Some(8));
}

#[tokio::test]
async fn the_ciphertext_reading_of_key_md5_checks_the_kms_blob() {
    let s = setup_with(KeyMd5Reading::Ciphertext).await;
    let mut key = et_wrap(s.moto, &s.kms_key, 32).await;
    let job = |key: &WrappedKey| {
        s.client
            .create_job()
            .pipeline_id(PIPELINE_ID)
            .input(input())
            .outputs(output("a.mp4").encryption(encryption("aes-cbc-pkcs7", key)).build())
    };
    let err = job(&key).send().await.expect_err("plaintext digest").into_service_error();
    assert!(err.is_validation_exception());
    assert!(err.message().unwrap_or_default().starts_with("Outputs[0].Encryption.KeyMd5:"));
    key.key_md5 = md5_b64(&B64.decode(&key.key).unwrap());
    job(&key).send().await.expect("ciphertext digest");
    assert_eq!(s.et.verified_keys().len(), 1);
}

#[tokio::test]
async fn injected_failures_are_typed_and_have_no_side_effects() {
    let s = setup().await;
    let key = et_wrap(s.moto, &s.kms_key, 32).await;
    let job = || {
        s.client
            .create_job()
            .pipeline_id(PIPELINE_ID)
            .input(input())
            .outputs(output("a.mp4").encryption(encryption("aes-cbc-pkcs7", &key)).build())
    };

    s.et.fail_next_create_job(400, "AccessDeniedException");
    let err = job().send().await.expect_err("injected").into_service_error();
    assert!(err.is_access_denied_exception(), "got {err:?}");

    s.et.fail_next_create_job(400, "IncompatibleVersionException");
    let err = job().send().await.expect_err("injected").into_service_error();
    assert!(err.is_incompatible_version_exception(), "got {err:?}");
    assert!(s.et.created_jobs().is_empty());
    assert!(s.et.rejections().is_empty());
    assert!(s.et.verified_keys().is_empty());

    // The SDK retries a 503 (standard policy, 3 attempts): three injected
    // failures surface, with one request per attempt.
    let before = s.et.request_count();
    s.et.fail_next_create_jobs(3, 503, "ServiceUnavailableException");
    let err = job().send().await.expect_err("injected 503s");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert_eq!(s.et.request_count() - before, 3);
    assert!(s.et.created_jobs().is_empty());

    // A single 503 is retried away.
    s.et.fail_next_create_job(503, "ServiceUnavailableException");
    job().send().await.expect("the retry succeeds");
    assert_eq!(s.et.created_jobs().len(), 1);
}
