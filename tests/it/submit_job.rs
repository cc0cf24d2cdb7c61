//! SubmitEncryptedJob end to end: a real gRPC client, the broker over AWS KMS
//! (moto over HTTP), and the Elastic Transcoder endpoint of the test suite,
//! which decrypts every key with KMS under the ET context and checks lengths,
//! KeyMd5 and IVs as ET would.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::custody::keys::KeyMd5Source;
use keybroker::custody::kms::Kms;
use keybroker::pb;
use tonic::Code;

use crate::support;
use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::et::{EtEndpoint, KeyMd5Reading, PipelineFixture};
use crate::support::kms::ScriptedKms;
use crate::support::moto::Moto;

pub(crate) const PIPELINE: &str = "1234567890123-abcdef";

pub(crate) struct Rig {
    pub(crate) et: EtEndpoint,
    pub(crate) kms: Arc<ScriptedKms>,
    pub(crate) broker: TestBroker,
    pub(crate) key_arn: String,
}

pub(crate) async fn rig_with(
    fixture: impl FnOnce(&str) -> PipelineFixture,
    md5: KeyMd5Source,
    wrap: Option<WrapKms>,
) -> Rig {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let reading = match md5 {
        KeyMd5Source::Plaintext => KeyMd5Reading::Plaintext,
        KeyMd5Source::Ciphertext => KeyMd5Reading::Ciphertext,
    };
    let et = EtEndpoint::spawn(moto.kms(), vec![fixture(&key_arn)], reading).await;
    let mut config = aws_config(&key_arn);
    config.kms.key_md5 = md5;
    config.transcoder.max_concurrent_kms_calls = 8;
    let aws = aws_kms(moto, &config).await;
    let inner: Arc<dyn Kms> = match wrap {
        Some(wrap) => wrap(aws),
        None => aws,
    };
    let kms = ScriptedKms::counting(inner);
    let et_client = et.sdk_client(&moto.sdk_config());
    let broker = TestBroker::start_with_peers(config, kms.clone(), Some(et_client), None).await;
    Rig { et, kms, broker, key_arn }
}

pub(crate) type WrapKms = Box<dyn FnOnce(Arc<dyn Kms>) -> Arc<dyn Kms>>;

pub(crate) async fn rig() -> Rig {
    rig_with(|key| PipelineFixture::new(PIPELINE, Some(key)), KeyMd5Source::Plaintext, None).await
}

pub(crate) fn aes(mode: &str, bits: u32) -> Option<pb::Protection> {
    Some(pb::Protection {
        encryption: Some(pb::Encryption { mode: mode.into(), ..Default::default() }),
        key_bits: bits,
    })
}

pub(crate) fn output(i: usize) -> pb::JobOutput {
    pb::JobOutput { key: format!("out/{i}.mp4"), preset_id: "1351620000001-000010".into(), ..Default::default() }
}

pub(crate) fn minimal_job(outputs: usize) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: PIPELINE.into(),
        input: Some(pb::JobInput { key: "in/source.mov".into(), ..Default::default() }),
        outputs: (0..outputs).map(|i| pb::JobOutput { encryption: aes("aes-cbc-pkcs7", 256), ..output(i) }).collect(),
        ..Default::default()
    }
}

/// A caller's block for a file it encrypted, issued by the same broker.
pub(crate) async fn caller_block(rig: &Rig, mode: &str) -> pb::Encryption {
    let mut client = rig.broker.client().await;
    client
        .issue_data_key(pb::IssueDataKeyRequest { mode: mode.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .encryption
        .unwrap()
}

/// 30 outputs (file, thumbnail and caption encryption in every AES mode and
/// length), watermarks, album art, captions and inputs the caller encrypted,
/// an HLS playlist with content protection and a PlayReady playlist.
pub(crate) async fn full_job(rig: &Rig) -> pb::SubmitEncryptedJobRequest {
    let modes = ["aes-cbc-pkcs7", "aes-ctr", "aes-gcm"];
    let bits = [128, 192, 256];
    let mut outputs = Vec::new();
    for i in 0..30 {
        let mut out = output(i);
        out.thumbnail_pattern = format!("thumbs/{i}-{{count}}");
        out.thumbnail_encryption = aes(modes[(i + 1) % 3], bits[i % 3]);
        if i < 25 {
            out.encryption = aes(modes[i % 3], bits[(i + 2) % 3]);
        }
        out.captions = Some(pb::Captions {
            caption_formats: vec![
                pb::CaptionFormat {
                    format: "webvtt".into(),
                    pattern: format!("cc/{i}-{{language}}"),
                    encryption: aes(modes[i % 3], 256),
                },
                pb::CaptionFormat {
                    format: "srt".into(),
                    pattern: format!("srt/{i}-{{language}}"),
                    encryption: aes("aes-gcm", 128),
                },
            ],
        });
        if i % 10 == 0 {
            out.watermarks = vec![pb::JobWatermark {
                preset_watermark_id: "TopLeft".into(),
                input_key: format!("marks/logo{i}.png"),
                encryption: Some(caller_block(rig, "aes-cbc-pkcs7").await),
            }];
            out.album_art = Some(pb::JobAlbumArt {
                merge_policy: "Replace".into(),
                artwork: vec![pb::Artwork {
                    input_key: format!("art/cover{i}.jpg"),
                    max_width: "600".into(),
                    max_height: "600".into(),
                    sizing_policy: "Fit".into(),
                    padding_policy: "NoPad".into(),
                    album_art_format: "jpg".into(),
                    encryption: Some(caller_block(rig, "aes-ctr").await),
                }],
            });
        }
        outputs.push(out);
    }
    pb::SubmitEncryptedJobRequest {
        pipeline_id: PIPELINE.into(),
        input: Some(pb::JobInput {
            key: "in/source.mov".into(),
            container: "mov".into(),
            encryption: Some(caller_block(rig, "aes-gcm").await),
            input_captions: Some(pb::InputCaptions {
                merge_policy: "MergeOverride".into(),
                caption_sources: vec![pb::CaptionSource {
                    key: "in/captions.srt".into(),
                    language: "en".into(),
                    encryption: Some(caller_block(rig, "aes-cbc-pkcs7").await),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        outputs,
        output_key_prefix: "jobs/full/".into(),
        playlists: vec![
            pb::Playlist {
                name: "hls".into(),
                format: "HLSv3".into(),
                output_keys: (25..28).map(|i| format!("out/{i}.mp4")).collect(),
                hls_content_protection: Some(pb::HlsContentProtection {
                    method: "aes-128".into(),
                    key_storage_policy: "NoStore".into(),
                    license_acquisition_url: "https://keys.example.com/hls".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::Playlist {
                name: "smooth".into(),
                format: "Smooth".into(),
                output_keys: (28..30).map(|i| format!("out/{i}.mp4")).collect(),
                play_ready_drm: Some(pb::PlayReadyDrm {
                    format: "microsoft".into(),
                    content_key: (0..16).map(|b| b * 11).collect(),
                    key_id: "0123abcd-0123-4567-89ab-0123456789ab".into(),
                    initialization_vector: B64.encode([7u8; 8]),
                    license_acquisition_url: "https://drm.example.com/rightsmanager.asmx".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        user_metadata: [("team".to_owned(), "newsroom".to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_30_output_job_with_every_kind_of_protection_is_accepted() {
    let rig = rig().await;
    let request = full_job(&rig).await;
    let mut client = rig.broker.client().await;
    let answer = client.submit_encrypted_job(request).await.unwrap().into_inner();

    // ET accepted it, and the job it holds is the body the broker built.
    assert!(!answer.job_id.is_empty());
    let jobs = rig.et.created_jobs();
    assert_eq!(jobs.len(), 1, "rejections: {:?}", rig.et.rejections());
    let sent: serde_json::Value = serde_json::from_str(&answer.create_job_request_json).unwrap();
    assert_eq!(jobs[0], sent, "the body POSTed through the SDK is the body the broker answered");
    let job: serde_json::Value = serde_json::from_str(&answer.job_json).unwrap();
    assert_eq!(job["Id"], answer.job_id);
    assert_eq!(answer.kms_key_arn, rig.key_arn);

    // Every AES block verified at the endpoint (KMS decrypt under the ET
    // context, key length, KeyMd5, IV length), with no key or IV reused.
    let verified = rig.et.verified_keys();
    let broker_made = 25 + 30 + 60 + 1 + 1; // outputs, thumbnails, caption formats, HLS, PlayReady
    let caller = 1 + 1 + 3 + 3; // input, caption source, watermarks, album art
    assert_eq!(verified.len(), broker_made + caller);
    assert_eq!(answer.protected_files.len(), broker_made + caller);
    assert_eq!(answer.protected_files.iter().filter(|f| f.issued_by_broker).count(), broker_made);
    let keys: HashSet<_> = verified.iter().map(|v| v.key.clone()).collect();
    let ivs: HashSet<_> = verified.iter().filter_map(|v| v.iv.clone()).collect();
    assert_eq!(keys.len(), verified.len(), "a plaintext key repeated");
    assert_eq!(ivs.len(), verified.len(), "an IV repeated");
    for v in &verified {
        assert_eq!(v.kms_key_id, rig.key_arn, "{} wrapped with another key", v.path);
    }
    let by_path = |p: &str| verified.iter().find(|v| v.path == p).unwrap_or_else(|| panic!("{p} not verified"));
    assert_eq!(by_path("Outputs[0].ThumbnailEncryption").key.len(), 16);
    assert_eq!(by_path("Outputs[1].ThumbnailEncryption").key.len(), 24);
    assert_eq!(by_path("Outputs[2].Encryption").key.len(), 24);
    assert_eq!(by_path("Outputs[1].Encryption").key.len(), 16);
    assert_eq!(by_path("Outputs[4].Captions.CaptionFormats[1].Encryption").key.len(), 16);
    assert_eq!(by_path("Playlists[0].HlsContentProtection").key.len(), 16);
    assert_eq!(by_path("Playlists[1].PlayReadyDrm").key, (0..16).map(|b| b * 11).collect::<Vec<u8>>());
    assert_eq!(by_path("Playlists[1].PlayReadyDrm").iv.as_deref(), Some(&[7u8; 8][..]));

    // The answer lists every protected file with the block that is in the body.
    let thumb = answer.protected_files.iter().find(|f| f.path == "Outputs[7].ThumbnailEncryption").unwrap();
    assert_eq!(thumb.object_key, "thumbs/7-{count}");
    assert_eq!(
        thumb.encryption.as_ref().unwrap().key,
        sent["Outputs"][7]["ThumbnailEncryption"]["Key"].as_str().unwrap()
    );
    let plaintexts: Vec<Vec<u8>> = verified.iter().map(|v| v.key.clone()).collect();
    support::logs::assert_no_key_in(&answer.create_job_request_json, &plaintexts, "the CreateJob body");
    support::logs::assert_no_key_in(&answer.job_json, &plaintexts, "the job ET answered");
    support::logs::assert_no_key_logged(&plaintexts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn validate_only_answers_the_body_and_submits_nothing() {
    let rig = rig().await;
    let mut request = minimal_job(3);
    request.validate_only = true;
    let mut client = rig.broker.client().await;
    let answer = client.submit_encrypted_job(request).await.unwrap().into_inner();
    assert!(answer.job_id.is_empty() && answer.job_json.is_empty());
    assert!(rig.et.created_jobs().is_empty(), "validate_only submitted a job");
    let body: serde_json::Value = serde_json::from_str(&answer.create_job_request_json).unwrap();
    assert_eq!(body["PipelineId"], PIPELINE);
    for i in 0..3 {
        let block = &body["Outputs"][i]["Encryption"];
        assert_eq!(block["Mode"], "aes-cbc-pkcs7");
        // The key in the body is KMS-wrapped under the ET context.
        let blob = B64.decode(block["Key"].as_str().unwrap()).unwrap();
        let plain = Moto::shared()
            .kms()
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
            .encryption_context("service", "elastictranscoder.amazonaws.com")
            .send()
            .await
            .unwrap()
            .plaintext
            .unwrap()
            .into_inner();
        assert_eq!(plain.len(), 32);
        assert_eq!(
            B64.decode(block["KeyMd5"].as_str().unwrap()).unwrap(),
            keybroker::custody::keys::md5_of(&plain).to_vec()
        );
        assert!(!answer.create_job_request_json.contains(&B64.encode(&plain)));
    }
    // The same job for real is accepted by the endpoint.
    let answer = client.submit_encrypted_job(minimal_job(3)).await.unwrap().into_inner();
    assert_eq!(rig.et.created_jobs().len(), 1);
    assert!(!answer.job_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn counts_over_the_limits_are_refused_before_any_kms_call() {
    let rig = rig().await;
    let mut client = rig.broker.client().await;

    let err = client.submit_encrypted_job(minimal_job(31)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "outputs: at most 30 outputs per job, got 31");

    let mut many_inputs = minimal_job(1);
    many_inputs.inputs = (0..200).map(|i| pb::JobInput { key: format!("clip{i}.mp4"), ..Default::default() }).collect();
    let err = client.submit_encrypted_job(many_inputs).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "inputs: at most 200 inputs per job, got 201");

    let mut playlists = minimal_job(1);
    playlists.playlists = (0..31)
        .map(|i| pb::Playlist {
            name: format!("p{i}"),
            format: "HLSv4".into(),
            output_keys: vec!["out/0.mp4".into()],
            ..Default::default()
        })
        .collect();
    let err = client.submit_encrypted_job(playlists).await.unwrap_err();
    assert_eq!(err.message(), "playlists: at most 30 playlists per job, got 31");

    assert_eq!(rig.kms.count(), 0, "KMS saw a call for a job that breaks the model");
    assert_eq!(rig.et.request_count(), 0, "ET saw a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn every_violation_names_its_path() {
    let rig = rig().await;
    let mut client = rig.broker.client().await;
    let caller = caller_block(&rig, "aes-gcm").await;
    let kms_calls_before = rig.kms.count();

    let mut cases: Vec<(pb::SubmitEncryptedJobRequest, &str)> = Vec::new();
    let mut job = minimal_job(5);
    job.outputs[3].captions = Some(pb::Captions {
        caption_formats: vec![
            pb::CaptionFormat { format: "srt".into(), pattern: "a".into(), encryption: aes("aes-ctr", 0) },
            pb::CaptionFormat { format: "srt".into(), pattern: "b".into(), encryption: aes("AES-CTR", 0) },
        ],
    });
    cases.push((job, "outputs[3].captions.caption_formats[1].encryption.mode: must be one of"));
    let mut job = minimal_job(1);
    job.pipeline_id = "12345".into();
    cases.push((job, r"pipeline_id: must match ^\d{13}-\w{6}$"));
    let mut job = minimal_job(2);
    job.outputs[1].encryption = aes("aes-gcm", 64);
    cases.push((job, "outputs[1].encryption.key_bits: must be 128, 192 or 256"));
    let mut job = minimal_job(1);
    job.outputs[0].watermarks = vec![pb::JobWatermark { input_key: "logo.gif".into(), ..Default::default() }];
    cases.push((job, "outputs[0].watermarks[0].input_key: must end in .jpg, .jpeg or .png"));
    let mut job = minimal_job(1);
    job.outputs[0].key = "k".repeat(256);
    cases.push((job, "outputs[0].key: must be 1 to 255 characters, got 256"));
    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption =
        Some(pb::Encryption { mode: "aes-cbc-pkcs7".into(), ..Default::default() });
    cases.push((job, "input.encryption.key: required: the caller encrypted this file"));
    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption =
        Some(pb::Encryption { initialization_vector: B64.encode([1u8; 12]), ..caller.clone() });
    cases.push((job, "input.encryption.initialization_vector: must be base64 of exactly 16 bytes, got 12"));
    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption = Some(pb::Encryption { key_md5: "AAAA".into(), ..caller.clone() });
    cases.push((job, "input.encryption.key_md5: must be base64 of the 16-byte MD5 digest"));
    let mut job = minimal_job(2);
    job.playlists = vec![pb::Playlist {
        name: "p".into(),
        format: "HLSv4".into(),
        output_keys: vec!["out/1.mp4".into()],
        hls_content_protection: Some(pb::HlsContentProtection {
            key_storage_policy: "WithVariantPlaylists".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    cases.push((job, "outputs[1].encryption: file-level AES encryption excludes the content protection"));
    let mut job = minimal_job(1);
    job.outputs[0].encryption = None;
    job.playlists = vec![pb::Playlist {
        name: "p".into(),
        format: "HLSv4".into(),
        output_keys: vec!["out/0.mp4".into()],
        hls_content_protection: Some(pb::HlsContentProtection {
            key_storage_policy: "WithVariantPlaylists".into(),
            license_acquisition_url: "https://k.example.com".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    cases.push((
        job,
        "playlists[0].hls_content_protection.license_acquisition_url: must be empty with WithVariantPlaylists",
    ));
    let mut job = minimal_job(1);
    job.outputs[0].encryption = None;
    job.playlists = vec![pb::Playlist {
        name: "p".into(),
        format: "Smooth".into(),
        output_keys: vec!["out/0.mp4".into()],
        play_ready_drm: Some(pb::PlayReadyDrm {
            format: "microsoft".into(),
            content_key: vec![1; 16],
            key_id: "not-a-guid".into(),
            license_acquisition_url: "https://drm.example.com".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    cases.push((job, "playlists[0].play_ready_drm.key_id: must be a GUID"));
    let mut job = minimal_job(1);
    job.playlists = vec![pb::Playlist {
        name: "p".into(),
        format: "Smooth".into(),
        output_keys: vec!["out/0.mp4".into()],
        play_ready_drm: Some(pb::PlayReadyDrm { content_key: vec![1; 15], ..Default::default() }),
        ..Default::default()
    }];
    cases.push((job, "playlists[0].play_ready_drm.content_key: must be 16, 24 or 32 bytes"));

    for (job, expected) in cases {
        let err = client.submit_encrypted_job(job).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(expected), "{:?} does not start with {expected:?}", err.message());
    }
    assert_eq!(rig.kms.count(), kms_calls_before, "an invalid job reached KMS");
    assert!(rig.et.created_jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn caller_blocks_are_checked_with_kms_before_submission() {
    let rig = rig().await;
    let mut client = rig.broker.client().await;
    let good = caller_block(&rig, "aes-ctr").await;

    let mut flipped = B64.decode(&good.key).unwrap();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x80;
    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption = Some(pb::Encryption { key: B64.encode(&flipped), ..good.clone() });
    let err = client.submit_encrypted_job(job).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("input.encryption.key: KMS cannot decrypt it"), "{}", err.message());

    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption = Some(pb::Encryption { key_md5: B64.encode([0u8; 16]), ..good.clone() });
    let err = client.submit_encrypted_job(job).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("input.encryption.key_md5: does not match"), "{}", err.message());

    // A key wrapped by another KMS key than the pipeline's.
    let other = Moto::shared().create_key().await;
    let foreign = client
        .issue_data_key(pb::IssueDataKeyRequest { kms_key_id: other, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .encryption
        .unwrap();
    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption = Some(foreign);
    let err = client.submit_encrypted_job(job).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(err.message().starts_with("input.encryption"), "{}", err.message());

    assert!(rig.et.created_jobs().is_empty(), "a job with a bad caller block was submitted");
    let mut job = minimal_job(1);
    job.input.as_mut().unwrap().encryption = Some(good);
    client.submit_encrypted_job(job).await.unwrap();
    assert_eq!(rig.et.created_jobs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn pipeline_preconditions_say_how_to_fix_them() {
    // No KMS key on the pipeline.
    let rig = rig_with(|_| PipelineFixture::new(PIPELINE, None), KeyMd5Source::Plaintext, None).await;
    let mut client = rig.broker.client().await;
    let err = client.submit_encrypted_job(minimal_job(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("has no AwsKmsKeyArn") && err.message().contains("UpdatePipeline"),
        "{}",
        err.message()
    );
    assert_eq!(rig.kms.count(), 0);

    // A key in another region than the pipeline.
    let rig = rig_with(
        |key| {
            let mut p = PipelineFixture::new(PIPELINE, Some(key));
            p.region = "eu-west-1".into();
            p
        },
        KeyMd5Source::Plaintext,
        None,
    )
    .await;
    let mut client = rig.broker.client().await;
    let err = client.submit_encrypted_job(minimal_job(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is in eu-west-1 but its KMS key"), "{}", err.message());
    assert_eq!(rig.kms.count(), 0);

    // A caller-named key that is not the pipeline's.
    let rig = self::rig().await;
    let mut client = rig.broker.client().await;
    let mut job = minimal_job(1);
    job.kms_key_id = "alias/some-other-key".into();
    let err = client.submit_encrypted_job(job).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is not the pipeline's KMS key"), "{}", err.message());
    let mut job = minimal_job(1);
    job.kms_key_id = rig.key_arn.clone();
    client.submit_encrypted_job(job).await.unwrap();

    // An unknown pipeline.
    let mut job = minimal_job(1);
    job.pipeline_id = "9999999999999-zzzzzz".into();
    let err = client.submit_encrypted_job(job).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("ReadPipeline"), "{}", err.message());
}
