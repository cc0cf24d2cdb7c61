//! SubmitEncryptedJob when something fails: ET's error answers map to codes
//! and leave no job, a key that fails to wrap means no job at all, KeyMd5 of
//! the ciphertext as a deployment option, and a broker that submits nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::custody::keys::KeyMd5Source;
use keybroker::custody::kms::{Kms, KmsError, KmsErrorKind};
use tonic::Code;

use crate::submit_job::*;
use crate::support;
use crate::support::broker::TestBroker;
use crate::support::et::PipelineFixture;
use crate::support::kms::ScriptedKms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_submission_maps_to_its_code_and_leaves_no_job() {
    let rig = rig().await;
    let mut client = rig.broker.client().await;
    rig.et.fail_next_create_jobs(3, 503, "ServiceUnavailableException");
    let err = client.submit_encrypted_job(minimal_job(2)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("CreateJob"), "{}", err.message());

    rig.et.fail_next_create_job(400, "AccessDeniedException");
    let err = client.submit_encrypted_job(minimal_job(2)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(rig.et.created_jobs().is_empty());
    let logs = support::logs::text();
    assert!(logs.contains("call failed") && logs.contains("SubmitEncryptedJob"), "the failure is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_fails_to_wrap_means_no_job_is_submitted() {
    // A KMS whose fifth wrap fails as if throttled.
    let fail_fifth = |inner| {
        let wraps = AtomicUsize::new(0);
        ScriptedKms::on_wrap(inner, move |_| match wraps.fetch_add(1, Ordering::SeqCst) {
            4 => Err(KmsError {
                operation: "Encrypt",
                kind: KmsErrorKind::Unavailable,
                message: "ThrottlingException: Rate exceeded".into(),
            }),
            _ => Ok(()),
        }) as Arc<dyn Kms>
    };
    let rig =
        rig_with(|key| PipelineFixture::new(PIPELINE, Some(key)), KeyMd5Source::Plaintext, Some(Box::new(fail_fifth)))
            .await;
    let mut client = rig.broker.client().await;
    let err = client.submit_encrypted_job(minimal_job(10)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("ThrottlingException"), "{}", err.message());
    assert!(err.message().starts_with("outputs["), "the message names the block: {}", err.message());
    assert_eq!(rig.et.request_count() - rig.et.rejections().len(), 1, "only ReadPipeline reached ET");
    assert!(rig.et.created_jobs().is_empty(), "a job was submitted with a key that failed to wrap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_md5_of_the_ciphertext_is_a_deployment_option() {
    let rig = rig_with(|key| PipelineFixture::new(PIPELINE, Some(key)), KeyMd5Source::Ciphertext, None).await;
    let mut client = rig.broker.client().await;
    let answer = client.submit_encrypted_job(minimal_job(2)).await.unwrap().into_inner();
    assert!(!answer.job_id.is_empty(), "rejections: {:?}", rig.et.rejections());
    for file in &answer.protected_files {
        let block = file.encryption.as_ref().unwrap();
        let blob = B64.decode(&block.key).unwrap();
        assert_eq!(B64.decode(&block.key_md5).unwrap(), keybroker::custody::keys::md5_of(&blob).to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_submits_nothing_refuses_a_job_as_a_precondition_before_any_key_is_made() {
    // transcoder.submit off, as with --dev: no ET client is made.
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::broker::local_config(dir.path());
    config.transcoder.submit = false;
    config.transcoder.pipelines = vec![keybroker::jobs::et::pipeline::Pipeline {
        id: PIPELINE.into(),
        kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/local".into()),
        role: String::new(),
        region: None,
        ..Default::default()
    }];
    let kms = ScriptedKms::counting(support::broker::local_keyring(&config));
    let broker = TestBroker::start(config, Some(kms.clone() as Arc<dyn Kms>)).await;
    let mut client = broker.client().await;

    let err = client.submit_encrypted_job(minimal_job(2)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("send validate_only"), "{}", err.message());
    assert_eq!(kms.count(), 0, "keys were made for a job that could not be submitted");

    let mut request = minimal_job(2);
    request.validate_only = true;
    let answer = client.submit_encrypted_job(request).await.unwrap().into_inner();
    assert!(answer.job_id.is_empty() && !answer.create_job_request_json.is_empty());
}
