//! Idempotent SubmitEncryptedJob on both ledger engines: a request token
//! makes a repeat answer the first answer with no new KMS call and no new
//! job; a lost CreateJob answer, a call cut off mid-POST, and two brokers
//! on one PostgreSQL racing with the same token each end with exactly one
//! job at the Elastic Transcoder endpoint; over mutual TLS, two callers'
//! identical tokens are two tokens.

use std::sync::Arc;
use std::time::Duration;

use keybroker::app::config::{PolicyConfig, TlsMode};
use keybroker::custody::kms::Kms;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::et::{EtEndpoint, KeyMd5Reading, PipelineFixture};
use crate::support::kms::ScriptedKms;
use crate::support::ledger_db::{ENGINES, Engine, LedgerDb};
use crate::support::moto::Moto;
use crate::support::pki::Ca;

const PIPELINE: &str = "1234567890123-abcdef";

struct Rig {
    et: EtEndpoint,
    kms: Arc<ScriptedKms>,
    key_arn: String,
}

async fn rig() -> Rig {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let et =
        EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(PIPELINE, Some(&key_arn))], KeyMd5Reading::Plaintext)
            .await;
    let config = aws_config(&key_arn);
    let kms = ScriptedKms::counting(aws_kms(moto, &config).await);
    Rig { et, kms, key_arn }
}

/// A broker over the rig's KMS and ET endpoint, recording into `db`.
async fn broker(rig: &Rig, db: &LedgerDb) -> TestBroker {
    let mut config = aws_config(&rig.key_arn);
    db.configure(&mut config);
    broker_with(rig, config).await
}

/// A broker over the rig's KMS and ET endpoint with `config`.
async fn broker_with(rig: &Rig, config: keybroker::app::config::Config) -> TestBroker {
    let moto = Moto::shared();
    let kms: Arc<dyn Kms> = rig.kms.clone();
    // The broker's own AWS settings (attempt timeout, retries), as `serve` builds them.
    let sdk = keybroker::app::aws::sdk_config_loader(&config.aws)
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await;
    TestBroker::start_with_peers(config, kms, Some(rig.et.sdk_client(&sdk)), None).await
}

fn job(token: &str, outputs: usize) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: PIPELINE.into(),
        input: Some(pb::JobInput { key: "in/source.mov".into(), ..Default::default() }),
        outputs: (0..outputs)
            .map(|i| pb::JobOutput {
                key: format!("out/{i}.mp4"),
                preset_id: "1351620000001-000010".into(),
                encryption: Some(pb::Protection {
                    encryption: Some(pb::Encryption { mode: "aes-cbc-pkcs7".into(), ..Default::default() }),
                    key_bits: 256,
                }),
                ..Default::default()
            })
            .collect(),
        request_token: token.into(),
        ..Default::default()
    }
}

fn token_of(created: &serde_json::Value) -> Option<&str> {
    created["UserMetadata"]["keybroker-request-token"].as_str()
}

#[tokio::test]
async fn a_repeated_token_answers_the_first_answer_with_no_kms_call_and_no_second_job() {
    for engine in ENGINES {
        let rig = rig().await;
        let db = LedgerDb::new(engine).await;
        let broker = broker(&rig, &db).await;
        let mut client = broker.client().await;
        let first = client.submit_encrypted_job(job("nightly-42", 2)).await.unwrap().into_inner();
        assert!(!first.job_id.is_empty());
        let kms_calls = rig.kms.count();
        let created = rig.et.created_jobs();
        assert_eq!(created.len(), 1);
        let marker = token_of(&created[0]).expect("the token travels in UserMetadata");
        assert_eq!(marker.len(), 64, "{marker}");

        let again = client.submit_encrypted_job(job("nightly-42", 2)).await.unwrap().into_inner();
        assert_eq!(again, first, "{engine:?}: the same job id, keys and bodies");
        assert_eq!(rig.kms.count(), kms_calls, "{engine:?}: a replay makes no KMS call");
        assert_eq!(rig.et.created_jobs().len(), 1, "{engine:?}: a replay makes no job");

        let err = client.submit_encrypted_job(job("nightly-42", 3)).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{engine:?}: {err:?}");
        assert!(err.message().contains("request_token \"nightly-42\"") && err.message().contains("different request"));
        assert_eq!(rig.et.created_jobs().len(), 1);

        let other = client.submit_encrypted_job(job("nightly-43", 2)).await.unwrap().into_inner();
        assert_ne!(other.job_id, first.job_id, "another token is another job");
        assert_eq!(rig.et.created_jobs().len(), 2);
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_naming_the_field_before_anything_happens() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, &db).await;
    let mut client = broker.client().await;
    for (request, field, rule) in [
        (job(&"t".repeat(65), 1), "request_token", "at most 64"),
        (job("tab\there", 1), "request_token", "printable ASCII"),
        (pb::SubmitEncryptedJobRequest { validate_only: true, ..job("t-1", 1) }, "request_token", "validate_only"),
        (
            pb::SubmitEncryptedJobRequest {
                user_metadata: [("keybroker-request-token".to_owned(), "x".to_owned())].into(),
                ..job("t-2", 1)
            },
            "user_metadata",
            "request_token",
        ),
    ] {
        let err = client.submit_encrypted_job(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field) && err.message().contains(rule), "{}", err.message());
    }
    assert_eq!(rig.kms.count(), 0);
    assert_eq!(rig.et.request_count(), 0);
}

#[tokio::test]
async fn a_lost_create_job_answer_does_not_become_a_second_job() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, &db).await;
    let mut client = broker.client().await;
    rig.et.lose_next_create_job_answers(1);
    let answer = client.submit_encrypted_job(job("lost-answer", 1)).await.unwrap().into_inner();
    let created = rig.et.created_jobs();
    assert_eq!(created.len(), 1, "the first POST made the job; nothing POSTed a second");
    let jobs: Vec<String> = rig.et.verified_keys().into_iter().map(|k| k.job_id).collect();
    assert_eq!(jobs, vec![answer.job_id], "the answer names the job ET made");
}

#[tokio::test]
async fn a_call_cut_off_mid_post_is_resolved_by_its_token_on_retry() {
    for engine in ENGINES {
        let rig = rig().await;
        let db = LedgerDb::new(engine).await;
        let broker = broker(&rig, &db).await;
        let mut client = broker.client().await;
        rig.et.lose_next_create_job_answers(1);
        let mut cut = tonic::Request::new(job("cut-off", 2));
        cut.set_timeout(Duration::from_millis(600));
        let err = client.submit_encrypted_job(cut).await.unwrap_err();
        assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{engine:?}: {err:?}");
        assert_eq!(rig.et.created_jobs().len(), 1, "ET made the job; its answer never came back");
        let kms_calls = rig.kms.count();

        // Another broker on the same ledger gets the retry.
        let other = self::broker(&rig, &db).await;
        let retried = other.client().await.submit_encrypted_job(job("cut-off", 2)).await.unwrap().into_inner();
        assert_eq!(rig.et.created_jobs().len(), 1, "{engine:?}: resolved by ListJobsByPipeline, not POSTed again");
        let made: Vec<String> = rig.et.verified_keys().into_iter().map(|k| k.job_id).collect();
        assert!(made.iter().all(|id| *id == retried.job_id), "{made:?} vs {}", retried.job_id);
        assert_eq!(rig.kms.count(), kms_calls, "the keys recorded before the POST are the job's keys");
        let keys: Vec<String> =
            retried.protected_files.iter().map(|f| f.encryption.as_ref().unwrap().key.clone()).collect();
        let created = &rig.et.created_jobs()[0];
        let sent: Vec<String> = created["Outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["Encryption"]["Key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, sent);
    }
}

#[tokio::test]
async fn two_brokers_on_one_postgres_given_the_same_token_at_once_make_one_job() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Postgres).await;
    let (a, b) = (broker(&rig, &db).await, broker(&rig, &db).await);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    for round in 0..3 {
        let token = format!("race-{round}");
        let (ra, rb) = tokio::join!(ca.submit_encrypted_job(job(&token, 2)), cb.submit_encrypted_job(job(&token, 2)));
        let (ra, rb) = (ra.unwrap().into_inner(), rb.unwrap().into_inner());
        assert_eq!(ra.job_id, rb.job_id, "round {round}: both answered the one job");
        assert_eq!(ra.protected_files, rb.protected_files);
        assert_eq!(rig.et.created_jobs().len(), round + 1, "round {round}: one job per token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_the_same_token_from_two_identities_is_two_tokens() {
    const FIRST: &str = "spiffe://test.example/encoder/first";
    const SECOND: &str = "spiffe://test.example/encoder/second";
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keybroker ledger test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("[[rule]]\nidentity = \"{FIRST}\"\nrpcs = [\"SubmitEncryptedJob\"]\n\n[[rule]]\nidentity = \"{SECOND}\"\nrpcs = [\"SubmitEncryptedJob\"]\n"),
    )
    .unwrap();
    let mut config = aws_config(&rig.key_arn);
    db.configure(&mut config);
    config.tls.mode = TlsMode::Mutual;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.client_ca_file = Some(ca.write(dir.path(), "client-ca"));
    config.policy = PolicyConfig { file: Some(policy), allow_all: false };
    let broker = broker_with(&rig, config).await;
    let client_as = async |identity: &str| {
        let leaf = ca.client(identity);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", broker.addr.port())).unwrap();
        KeyBrokerClient::new(endpoint.tls_config(tls).unwrap().connect().await.unwrap())
    };
    let (mut first, mut second) = (client_as(FIRST).await, client_as(SECOND).await);

    let a = first.submit_encrypted_job(job("shared-token", 2)).await.unwrap().into_inner();
    let b = second.submit_encrypted_job(job("shared-token", 2)).await.unwrap().into_inner();
    assert_ne!(a.job_id, b.job_id, "each identity's token made its own job");
    assert_eq!(rig.et.created_jobs().len(), 2);
    let keys = |answer: &pb::SubmitEncryptedJobResponse| -> Vec<String> {
        answer.protected_files.iter().map(|f| f.encryption.as_ref().unwrap().key.clone()).collect()
    };
    assert!(keys(&a).iter().all(|k| !keys(&b).contains(k)), "neither sees the other's keys");
    let markers: Vec<String> = rig.et.created_jobs().iter().map(|job| token_of(job).unwrap().to_owned()).collect();
    assert_ne!(markers[0], markers[1], "the token travels scoped to its caller");

    // Each repeat answers its own caller's first answer, with no new job.
    let kms_calls = rig.kms.count();
    assert_eq!(first.submit_encrypted_job(job("shared-token", 2)).await.unwrap().into_inner(), a);
    assert_eq!(second.submit_encrypted_job(job("shared-token", 2)).await.unwrap().into_inner(), b);
    assert_eq!(rig.kms.count(), kms_calls);
    assert_eq!(rig.et.created_jobs().len(), 2);

    // A different request under one caller's token is that caller's
    // conflict alone: the other caller's token still takes a new request.
    first.submit_encrypted_job(job("other-token", 1)).await.unwrap();
    let err = first.submit_encrypted_job(job("other-token", 3)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let fresh = second.submit_encrypted_job(job("other-token", 3)).await.unwrap().into_inner();
    assert_eq!(fresh.protected_files.len(), 3, "no ALREADY_EXISTS across identities");

    // The ledger names each job's keys with their caller.
    let ledger = db.open().await;
    for (answer, identity) in [(&a, FIRST), (&b, SECOND)] {
        let rows = ledger.find(&keybroker::ledger::Filter::JobId(answer.job_id.clone())).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|row| row.origin.identity == identity), "{rows:?}");
    }
    ledger.close().await;
}

/// A tokened job that Elastic Transcoder refused, or whose key KMS failed to
/// wrap, reached ET as no job: its token is free for an immediate retry
/// (without the release the retry would wait for the first call and answer
/// ABORTED).
#[tokio::test]
async fn a_refused_job_or_a_kms_failure_frees_its_token_for_an_immediate_retry() {
    let rig = rig().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, &db).await;
    let mut client = broker.client().await;

    rig.et.fail_next_create_job(400, "ValidationException");
    let err = client.submit_encrypted_job(job("refused-1", 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(rig.et.created_jobs().is_empty());
    let retried = client.submit_encrypted_job(job("refused-1", 2)).await.unwrap().into_inner();
    assert_eq!(rig.et.created_jobs().len(), 1, "the retry made the job");
    assert_eq!(token_of(&rig.et.created_jobs()[0]).map(str::len), Some(64));

    rig.kms.fail_next_wraps(1);
    let creates = rig.et.created_jobs().len();
    let err = client.submit_encrypted_job(job("kms-down-1", 2)).await.unwrap_err();
    assert!(err.message().starts_with("outputs["), "the failed key is named: {err:?}");
    assert_eq!(rig.et.created_jobs().len(), creates, "nothing reached ET");
    let again = client.submit_encrypted_job(job("kms-down-1", 2)).await.unwrap().into_inner();
    assert_ne!(again.job_id, retried.job_id);
    assert_eq!(rig.et.created_jobs().len(), creates + 1);
}

/// A call cut off by its deadline while its keys were at KMS never planned
/// a job: its claim is released in the background, and a retry with the
/// token runs at once.
#[tokio::test]
async fn a_call_cut_off_before_its_job_is_planned_frees_its_token() {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let et =
        EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(PIPELINE, Some(&key_arn))], KeyMd5Reading::Plaintext)
            .await;
    // Every KMS call takes longer than the call's deadline below.
    let kms = ScriptedKms::delayed(aws_kms(moto, &aws_config(&key_arn)).await, Duration::from_millis(1_500));
    let rig = Rig { et, kms, key_arn };
    let db = LedgerDb::new(Engine::Sqlite).await;
    let broker = broker(&rig, &db).await;
    let mut cut = tonic::Request::new(job("cut-early", 2));
    cut.set_timeout(Duration::from_millis(500));
    let err = broker.client().await.submit_encrypted_job(cut).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");

    db.assert_token_released("cut-early").await;
    assert!(rig.et.created_jobs().is_empty(), "nothing reached ET");

    let answer = broker.client().await.submit_encrypted_job(job("cut-early", 2)).await;
    assert!(!answer.unwrap().into_inner().job_id.is_empty());
    assert_eq!(rig.et.created_jobs().len(), 1);
}
