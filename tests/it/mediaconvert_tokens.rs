//! Request tokens of `SubmitMediaConvertJob` under the ledger's write-ahead:
//! a job whose CreateJob answer was lost, or whose call was cut off mid-POST,
//! is found at MediaConvert by its token (ListJobs, `UserMetadata`) on retry
//! and never becomes a second job; a planned job MediaConvert never got is
//! POSTed again with the keys recorded for it; a call that failed before
//! MediaConvert had the job frees its token for an immediate retry. Real
//! peers: moto's KMS, SQLite and PostgreSQL ledgers, the suite's
//! MediaConvert endpoint (bodies and ListJobs queries checked against the
//! botocore model).

use std::sync::Arc;
use std::time::Duration;

use keybroker::app::config::Config;
use keybroker::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::kms::ScriptedKms;
use crate::support::ledger_db::{ENGINES, Engine, LedgerDb};
use crate::support::logs;
use crate::support::mediaconvert::McEndpoint;
use crate::support::moto::Moto;

const ROLE: &str = "arn:aws:iam::111122223333:role/MediaConvert_Default_Role";
const MC: i32 = pb::ServiceContext::Mediaconvert as i32;

struct Rig {
    kms_key: String,
    kms: Arc<ScriptedKms>,
    endpoint: McEndpoint,
}

async fn rig() -> Rig {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let kms = ScriptedKms::counting(aws_kms(moto, &aws_config(&kms_key)).await);
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    Rig { kms_key, kms, endpoint }
}

fn config(rig: &Rig, db: &LedgerDb) -> Config {
    let mut config = aws_config(&rig.kms_key);
    db.configure(&mut config);
    config.mediaconvert.submit = true;
    config.mediaconvert.output_kms_key_arn = Some(rig.kms_key.clone());
    config
}

/// A broker over the rig's KMS and endpoint; its MediaConvert client has
/// the broker's own attempt timeout and retries, as `serve` builds it.
async fn broker(rig: &Rig, config: Config) -> TestBroker {
    let moto = Moto::shared();
    let sdk = keybroker::app::aws::sdk_config_loader(&config.aws)
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await;
    TestBroker::start_with_mediaconvert(config, rig.kms.clone(), rig.endpoint.sdk_client(&sdk), None).await
}

/// A job with a ledger-issued input key and an HLS group whose static key
/// the broker makes.
fn job(fingerprint: &str, token: &str) -> pb::SubmitMediaConvertJobRequest {
    let job = json!({"Role": ROLE, "Settings": {
        "Inputs": [{"FileInput": "s3://in/a.mp4"}],
        "OutputGroups": [{"Name": "HLS", "OutputGroupSettings": {"Type": "HLS_GROUP_SETTINGS", "HlsGroupSettings": {
            "Destination": "s3://out/hls/", "SegmentLength": 6, "MinSegmentLength": 0,
            "Encryption": {"EncryptionMethod": "AES128", "Type": "STATIC_KEY",
                           "StaticKeyProvider": {"Url": "https://keys.example.com/hls.key"}}}}}]}});
    pb::SubmitMediaConvertJobRequest {
        create_job_json: job.to_string(),
        input_keys: vec![pb::MediaConvertInputKey { input_index: 0, key_fingerprint: fingerprint.to_owned() }],
        encrypt_outputs: true,
        request_token: token.to_owned(),
        ..Default::default()
    }
}

async fn issue(broker: &TestBroker) -> pb::IssueDataKeyResponse {
    let request = pb::IssueDataKeyRequest {
        key_bits: 256,
        mode: "aes-cbc-pkcs7".to_owned(),
        return_plaintext: true,
        context: MC,
        ..Default::default()
    };
    broker.client().await.issue_data_key(request).await.unwrap().into_inner()
}

/// The static key the ledger recorded for `job_id`, unwrapped through the broker.
async fn recorded_static_key(broker: &TestBroker, job_id: &str) -> Vec<u8> {
    let mut client = broker.client().await;
    let rows = client
        .lookup_keys(pb::LookupKeysRequest { job_id: job_id.to_owned(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(rows.len(), 2, "the job's input key and its static key, one entry: {rows:?}");
    let row = rows.iter().find(|k| k.job_place.contains("StaticKeyProvider")).unwrap();
    let mut block = row.encryption.clone().unwrap();
    block.mode = "aes-cbc-pkcs7".to_owned();
    let request = pb::UnwrapKeyRequest { encryption: Some(block), context: MC, ..Default::default() };
    client.unwrap_key(request).await.unwrap().into_inner().plaintext_key
}

fn marker_of(created: &Value) -> Option<&str> {
    created["userMetadata"]["keybroker-request-token"].as_str()
}

#[tokio::test]
async fn a_call_cut_off_mid_post_is_resolved_by_its_token_on_retry() {
    for engine in ENGINES {
        let rig = rig().await;
        let db = LedgerDb::new(engine).await;
        let first = broker(&rig, config(&rig, &db)).await;
        let input = issue(&first).await;
        rig.endpoint.lose_next_create_job_answers(1);
        let mut cut = tonic::Request::new(job(&input.key_fingerprint, "cut-off"));
        cut.set_timeout(Duration::from_millis(700));
        let err = first.client().await.submit_media_convert_job(cut).await.unwrap_err();
        assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{engine:?}: {err:?}");
        assert_eq!(rig.endpoint.created_jobs().len(), 1, "MediaConvert made the job; its answer never came back");
        let (kms_calls, posts) = (rig.kms.count(), rig.endpoint.create_requests());

        // Another broker on the same ledger gets the retry.
        let other = broker(&rig, config(&rig, &db)).await;
        let retried =
            other.client().await.submit_media_convert_job(job(&input.key_fingerprint, "cut-off")).await.unwrap();
        let retried = retried.into_inner();
        assert_eq!(rig.endpoint.create_requests(), posts, "{engine:?}: resolved by ListJobs, not POSTed again");
        assert!(rig.endpoint.list_requests() >= 1);
        assert_eq!(rig.kms.count(), kms_calls, "{engine:?}: the keys recorded before the POST are the job's keys");
        let created = rig.endpoint.created_jobs();
        assert_eq!(created.len(), 1, "{engine:?}");
        assert!(marker_of(&created[0]).is_some_and(|m| m.len() == 64), "the token travels in UserMetadata");
        assert_eq!(created[0]["clientRequestToken"].as_str(), marker_of(&created[0]));
        let made = rig.endpoint.groups();
        assert_eq!(made.len(), 1);
        assert_eq!(retried.job_id, made[0].job_id, "{engine:?}: the answer names the job MediaConvert made");

        // The retry's answer is what the first call would have answered:
        // the job's keys as recorded, no static key in it.
        let sent = made[0].static_key.clone().unwrap();
        assert_eq!(hex::encode(recorded_static_key(&other, &retried.job_id).await), sent);
        assert!(!retried.create_job_json.contains(&sent) && !retried.job_json.contains(&sent));
        assert!(retried.static_keys_redacted);
        assert_eq!(retried.keys.len(), 2);
        assert_eq!(retried.keys[0].key_fingerprint, input.key_fingerprint);

        // And it is the token's answer from now on.
        let again = first.client().await.submit_media_convert_job(job(&input.key_fingerprint, "cut-off")).await;
        assert_eq!(again.unwrap().into_inner(), retried);
        assert_eq!(rig.endpoint.create_requests(), posts);
        logs::assert_no_key_logged(&[hex::decode(&sent).unwrap(), input.plaintext_key.clone()]);
    }
}

#[tokio::test]
async fn a_lost_create_job_answer_does_not_become_a_second_job() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, config(&rig, &db)).await;
    let input = issue(&broker).await;
    for token in ["lost-answer", ""] {
        let before = rig.endpoint.created_jobs().len();
        rig.endpoint.lose_next_create_job_answers(1);
        let answer = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, token)).await.unwrap();
        let created = rig.endpoint.created_jobs();
        assert_eq!(created.len(), before + 1, "token {token:?}: the first POST made the job, nothing made a second");
        assert!(created[before]["clientRequestToken"].is_string(), "every POST carries a ClientRequestToken");
        assert_eq!(answer.into_inner().job_id, rig.endpoint.groups()[before].job_id);
    }
}

#[tokio::test]
async fn a_planned_job_mediaconvert_never_got_is_submitted_again_with_its_recorded_keys() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let mut config = config(&rig, &db);
    // A short lease: the retry takes the lapsed claim over within seconds.
    config.transcoder.job_deadline_ms = 500;
    config.aws.call_timeout_ms = 1_000;
    let attempts = config.aws.max_attempts as usize;
    let broker = broker(&rig, config).await;
    let input = issue(&broker).await;
    rig.endpoint.fail_next_create_jobs(attempts, 500, "InternalServerErrorException");
    let err = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "never-got")).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(rig.endpoint.created_jobs().is_empty());
    assert!(rig.endpoint.list_requests() >= 1, "an unknown outcome is looked up before it is answered");

    let answer =
        broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "never-got")).await.unwrap();
    let answer = answer.into_inner();
    let created = rig.endpoint.created_jobs();
    assert_eq!(created.len(), 1, "the retry POSTed the planned job once");
    let groups = rig.endpoint.groups();
    assert_eq!(answer.job_id, groups[0].job_id);
    let sent = groups[0].static_key.clone().unwrap();
    assert_eq!(
        hex::encode(recorded_static_key(&broker, &answer.job_id).await),
        sent,
        "the static key MediaConvert got is the one recorded before the first POST"
    );
    assert_eq!(rig.endpoint.input_keys()[0].key, input.plaintext_key);
    assert!(!answer.create_job_json.contains(&sent) && !answer.job_json.contains(&sent));
    let planned_token = created[0]["clientRequestToken"].as_str().unwrap();
    assert_eq!(Some(planned_token), marker_of(&created[0]), "the same ClientRequestToken as the first POST");
    logs::assert_no_key_logged(&[hex::decode(&sent).unwrap()]);
}

#[tokio::test]
async fn a_job_mediaconvert_refused_frees_its_token_for_an_immediate_retry() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, config(&rig, &db)).await;
    let input = issue(&broker).await;
    rig.endpoint.fail_next_create_jobs(1, 400, "BadRequestException");
    let err = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "refused")).await;
    assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);
    assert!(rig.endpoint.created_jobs().is_empty());

    // Without the release the retry would find a PENDING claim and wait
    // out its lease, then answer ABORTED.
    let answer = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "refused")).await;
    let answer = answer.unwrap().into_inner();
    assert_eq!(rig.endpoint.created_jobs().len(), 1);
    assert_eq!(answer.job_id, rig.endpoint.groups()[0].job_id);
    let ledger = db.open().await;
    let row = ledger.find(&keybroker::ledger::Filter::JobId(answer.job_id.clone())).await.unwrap();
    assert_eq!(row.len(), 2, "the job's keys are the retry's: {row:?}");
    ledger.close().await;
}

#[tokio::test]
async fn a_kms_failure_before_the_post_frees_its_token() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, config(&rig, &db)).await;
    let input = issue(&broker).await;
    rig.kms.fail_next_wraps(1);
    let err = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "kms-down")).await;
    let err = err.unwrap_err();
    assert!(err.message().contains("StaticKeyProvider"), "the failed key is named: {err:?}");
    assert_eq!(rig.endpoint.request_count(), 0, "nothing reached MediaConvert");

    let answer = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "kms-down")).await;
    assert!(!answer.unwrap().into_inner().job_id.is_empty(), "the retry ran at once with the same token");
    assert_eq!(rig.endpoint.created_jobs().len(), 1);
}

#[tokio::test]
async fn a_call_cut_off_before_its_job_is_planned_frees_its_token() {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    // Every KMS call takes longer than the call's deadline below.
    let kms = ScriptedKms::delayed(aws_kms(moto, &aws_config(&kms_key)).await, Duration::from_millis(1_500));
    let rig = Rig { kms_key, kms, endpoint: McEndpoint::spawn(moto.kms()).await };
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, config(&rig, &db)).await;
    let input = issue(&broker).await;
    let mut cut = tonic::Request::new(job(&input.key_fingerprint, "cut-early"));
    cut.set_timeout(Duration::from_millis(500));
    let err = broker.client().await.submit_media_convert_job(cut).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");

    // Cut off while its static key was at KMS: the claim is released in
    // the background, not left to its lease.
    db.assert_token_released("cut-early").await;
    assert_eq!(rig.endpoint.request_count(), 0, "nothing reached MediaConvert");

    let answer = broker.client().await.submit_media_convert_job(job(&input.key_fingerprint, "cut-early")).await;
    assert!(!answer.unwrap().into_inner().job_id.is_empty());
    assert_eq!(rig.endpoint.created_jobs().len(), 1);
}
