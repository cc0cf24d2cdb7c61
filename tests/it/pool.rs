//! The key pool end to end: keys wrapped ahead of demand by a real KMS
//! (moto over HTTP, or the local keyring), handed out through the real gRPC
//! server to a generated tonic client, and checked by KMS itself (and by
//! the suite's Elastic Transcoder endpoint, which decrypts every key of a
//! job under the ET context and checks its KeyMd5 and IV). KMS outages are
//! real: a relay between the broker and moto is cut.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::app::config::Config;
use keybroker::custody::keys::{KeyBits, ServiceContext};
use keybroker::custody::kms::{Kms, KmsKeyId};
use keybroker::custody::pool::KeyPool;
use keybroker::jobs::et::pipeline::Pipeline;
use keybroker::ledger::Filter;
use keybroker::pb;
use md5::{Digest as _, Md5};
use tonic::Code;

use crate::support::broker::{TestBroker, aws_config, aws_kms, local_config, local_keyring};
use crate::support::et::{EtEndpoint, KeyMd5Reading, PipelineFixture};
use crate::support::kms::ScriptedKms;
use crate::support::moto::Moto;
use crate::support::proxy::Relay;

const PIPELINE: &str = "2345678901234-poolab";

/// A fixed-size pool (`size` keys, 256 bits only) on `config`.
fn pooled(mut config: Config, size: usize) -> Config {
    config.pool.enabled = Some(true);
    config.pool.min_size = size;
    config.pool.max_size = size;
    config.pool.key_bits = vec![256];
    config.pool.concurrency = 8;
    config
}

fn pool(broker: &TestBroker) -> &KeyPool {
    broker.broker.pool().expect("the broker keeps key pools")
}

fn key_id(text: &str) -> KmsKeyId {
    KmsKeyId::parse(text, "kms_key_id").unwrap()
}

fn et_context() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("service".to_owned(), "elastictranscoder.amazonaws.com".to_owned())]))
}

/// KMS (moto, directly, not through the broker) decrypts `block.key` under
/// `context`; answers the plaintext.
async fn moto_decrypt(block: &pb::Encryption, context: Option<HashMap<String, String>>) -> Result<Vec<u8>, String> {
    Moto::shared()
        .kms()
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(B64.decode(&block.key).unwrap()))
        .set_encryption_context(context)
        .send()
        .await
        .map(|out| out.plaintext.unwrap().into_inner())
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

/// Checks a block as Elastic Transcoder would: KMS opens it under the ET
/// context (and not under another), it is 256 bits, its KeyMd5 is the
/// plaintext's MD5, its IV 16 bytes.
async fn assert_et_can_use(block: &pb::Encryption) {
    let plaintext = moto_decrypt(block, et_context()).await.expect("KMS decrypts a pooled key under the ET context");
    assert_eq!(plaintext.len(), 32);
    assert_eq!(B64.decode(&block.key_md5).unwrap(), Md5::digest(&plaintext).to_vec(), "KeyMd5 of the plaintext");
    assert_eq!(B64.decode(&block.initialization_vector).unwrap().len(), 16);
    let other = Some(HashMap::from([("service".to_owned(), "mediaconvert.amazonaws.com".to_owned())]));
    assert!(moto_decrypt(block, other).await.is_err(), "a pooled key opened under another context");
}

async fn issue(
    client: &mut pb::key_broker_client::KeyBrokerClient<tonic::transport::Channel>,
) -> Result<pb::IssueDataKeyResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::IssueDataKeyRequest::default());
    // A bound on the wait, not a timing assertion: a broker that hangs
    // fails the code check below with DEADLINE_EXCEEDED or CANCELLED.
    request.set_timeout(Duration::from_secs(20));
    client.issue_data_key(request).await.map(tonic::Response::into_inner)
}

fn aes_output(i: usize) -> pb::JobOutput {
    pb::JobOutput {
        key: format!("out/{i}.mp4"),
        preset_id: "1351620000001-000010".into(),
        encryption: Some(pb::Protection {
            encryption: Some(pb::Encryption { mode: "aes-cbc-pkcs7".into(), ..Default::default() }),
            key_bits: 256,
        }),
        ..Default::default()
    }
}

fn job(pipeline: &str, outputs: usize, validate_only: bool) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: pipeline.into(),
        input: Some(pb::JobInput { key: "in/source.mov".into(), ..Default::default() }),
        outputs: (0..outputs).map(aes_output).collect(),
        validate_only,
        ..Default::default()
    }
}

fn static_pipeline(key_arn: &str) -> Pipeline {
    Pipeline {
        id: PIPELINE.to_owned(),
        kms_key_arn: Some(key_arn.to_owned()),
        role: "arn:aws:iam::123456789012:role/Elastic_Transcoder_Default_Role".to_owned(),
        region: Some("us-east-1".to_owned()),
        ..Pipeline::default()
    }
}

/// A broker over moto's KMS through a relay the test can cut.
async fn behind_relay(size: usize, ttl_secs: u64) -> (TestBroker, Relay, String) {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let relay = Relay::start(&moto.url).await;
    let mut config = pooled(aws_config(&key_arn), size);
    config.pool.ttl_secs = ttl_secs;
    config.transcoder.pipelines = vec![static_pipeline(&key_arn)];
    config.transcoder.submit = false;
    let kms = aws_kms(&Moto::at(&relay.url), &config).await;
    (TestBroker::start(config, Some(kms)).await, relay, key_arn)
}

/// Thousands of concurrent calls, IssueDataKey and jobs, drawing on the
/// same pools: every key, IV and fingerprint handed out is distinct, the
/// pools did serve them, and each key is in the ledger once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_pooled_key_is_handed_out_twice_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.pool.enabled = Some(true);
    config.pool.min_size = 256;
    config.pool.key_bits = vec![256];
    config.transcoder.pipelines = vec![keybroker::app::config::dev_pipeline()];
    let broker = TestBroker::start(config, None).await;
    assert!(pool(&broker).wait_filled(256, Duration::from_secs(60)).await, "the pools did not fill");

    let mut tasks = Vec::new();
    for caller in 0..32 {
        let channel = broker.channel().await;
        tasks.push(tokio::spawn(async move {
            let mut client = pb::key_broker_client::KeyBrokerClient::new(channel);
            let mut blocks = Vec::new();
            for call in 0..100 {
                if caller % 8 == 0 && call % 10 == 0 {
                    let answer = client
                        .submit_encrypted_job(job(keybroker::app::config::DEV_PIPELINE_ID, 30, true))
                        .await
                        .unwrap()
                        .into_inner();
                    for file in answer.protected_files {
                        blocks.push((file.encryption.unwrap(), file.key_fingerprint));
                    }
                } else {
                    let answer = issue(&mut client).await.unwrap();
                    blocks.push((answer.encryption.unwrap(), answer.key_fingerprint));
                }
            }
            blocks
        }));
    }
    let mut blocks = Vec::new();
    for task in tasks {
        blocks.extend(task.await.unwrap());
    }
    assert_eq!(blocks.len(), 32 * 100 - 4 * 10 + 4 * 10 * 30);
    let keys: HashSet<_> = blocks.iter().map(|(b, _)| b.key.clone()).collect();
    let ivs: HashSet<_> = blocks.iter().map(|(b, _)| b.initialization_vector.clone()).collect();
    let fingerprints: HashSet<_> = blocks.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(keys.len(), blocks.len(), "a wrapped key was handed out twice");
    assert_eq!(ivs.len(), blocks.len(), "an IV was handed out twice");
    assert_eq!(fingerprints.len(), blocks.len(), "a fingerprint repeats");

    let default_key = key_id("alias/test-default");
    let pipeline_key = key_id(keybroker::app::config::dev_pipeline().kms_key_arn.as_deref().unwrap());
    let issued = pool(&broker).stats(&default_key, ServiceContext::ElasticTranscoder, KeyBits::Aes256).unwrap();
    let jobs = pool(&broker).stats(&pipeline_key, ServiceContext::ElasticTranscoder, KeyBits::Aes256).unwrap();
    assert_eq!(issued.hits + issued.misses, 3160, "every IssueDataKey asked its pool");
    assert_eq!(jobs.hits + jobs.misses, 1200, "every job key asked its pool");
    assert!(issued.hits >= 256 && jobs.hits >= 256, "the pools served keys: {issued:?} {jobs:?}");
    // A job takes all its 30 keys from the pool or mints all 30: never a
    // part, whatever the other calls took meanwhile.
    assert_eq!(jobs.hits % 30, 0, "a job took part of its keys from the pool: {jobs:?}");
    assert_eq!(jobs.misses % 30, 0, "a job took part of its keys from the pool: {jobs:?}");
    assert_eq!(jobs.unused, 0, "a successful job discarded keys: {jobs:?}");

    let ledger = broker.broker.ledger();
    for (block, fingerprint) in blocks.iter().step_by(37) {
        let rows = ledger.find(&Filter::WrappedKey(block.key.clone())).await.unwrap();
        assert_eq!(rows.len(), 1, "a handed-out key is recorded once");
        assert_eq!(&rows[0].key.fingerprint, fingerprint);
        assert_eq!(rows[0].key.key_md5, block.key_md5);
    }
}

/// Keys from the pool are real ET keys: a job submitted with them is
/// accepted by the suite's ET endpoint, which has KMS decrypt every key
/// under the ET context and checks KeyMd5 and IV; IssueDataKey's pooled
/// keys decrypt through moto with the right KeyMd5.
#[tokio::test]
async fn pooled_keys_decrypt_through_kms_under_the_et_context_with_their_key_md5() {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let et =
        EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(PIPELINE, Some(&key_arn))], KeyMd5Reading::Plaintext)
            .await;
    let mut config = pooled(aws_config(&key_arn), 40);
    config.transcoder.pipelines = vec![static_pipeline(&key_arn)];
    let kms = aws_kms(moto, &config).await;
    let broker = TestBroker::start_with_peers(config, kms, Some(et.sdk_client(&moto.sdk_config())), None).await;
    assert!(pool(&broker).wait_filled(40, Duration::from_secs(60)).await, "the pool did not fill");
    let mut client = broker.client().await;

    let answer = client.submit_encrypted_job(job(PIPELINE, 30, false)).await.unwrap().into_inner();
    assert!(!answer.job_id.is_empty());
    let verified = et.verified_keys();
    assert_eq!(verified.len(), 30, "ET verified every output key");
    assert_eq!(verified.iter().map(|k| k.key.clone()).collect::<HashSet<_>>().len(), 30);
    let stats = pool(&broker).stats(&key_id(&key_arn), ServiceContext::ElasticTranscoder, KeyBits::Aes256).unwrap();
    assert_eq!(stats.hits, 30, "the job's keys came from the pool: {stats:?}");

    let mut keys = Vec::new();
    for _ in 0..5 {
        let issued = issue(&mut client).await.unwrap();
        assert_eq!(issued.kms_key_arn, key_arn);
        assert!(issued.plaintext_key.is_empty());
        let block = issued.encryption.unwrap();
        assert_et_can_use(&block).await;
        keys.push(block.key);
    }
    let stats = pool(&broker).stats(&key_id(&key_arn), ServiceContext::ElasticTranscoder, KeyBits::Aes256).unwrap();
    assert_eq!(stats.hits, 35, "IssueDataKey's keys came from the pool: {stats:?}");
    // A key asked for in plaintext is never a pooled one, and its
    // plaintext is the key KMS opens.
    let shown = client
        .issue_data_key(pb::IssueDataKeyRequest { return_plaintext: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let block = shown.encryption.unwrap();
    assert_eq!(moto_decrypt(&block, et_context()).await.unwrap(), shown.plaintext_key);
    let stats = pool(&broker).stats(&key_id(&key_arn), ServiceContext::ElasticTranscoder, KeyBits::Aes256).unwrap();
    assert_eq!(stats.hits + stats.misses, 35, "a plaintext key was taken from the pool");
}

/// KMS unreachable: a warm pool keeps IssueDataKey and jobs working, with
/// health SERVING, until it runs dry; then UNAVAILABLE. The keys handed
/// out during the outage decrypt through KMS once it is back.
#[tokio::test]
async fn with_kms_down_a_warm_pool_serves_until_it_runs_dry() {
    let (broker, relay, key_arn) = behind_relay(12, 900).await;
    assert!(pool(&broker).wait_filled(12, Duration::from_secs(60)).await, "the pool did not fill");
    relay.set_down(true);
    let mut client = broker.client().await;
    let mut blocks = Vec::new();
    for _ in 0..10 {
        blocks.push(issue(&mut client).await.expect("a pooled key while KMS is down").encryption.unwrap());
    }
    let answer = client.submit_encrypted_job(job(PIPELINE, 2, true)).await.expect("a job from the pool").into_inner();
    blocks.extend(answer.protected_files.into_iter().map(|f| f.encryption.unwrap()));

    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mut health = HealthClient::new(broker.channel().await);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let dry = issue(&mut client).await.expect_err("the pool is dry and KMS is down");
    assert_eq!(dry.code(), Code::Unavailable, "{}", dry.message());
    let job_err = client.submit_encrypted_job(job(PIPELINE, 1, true)).await.unwrap_err();
    assert_eq!(job_err.code(), Code::Unavailable, "{}", job_err.message());

    relay.set_down(false);
    assert_eq!(blocks.len(), 12);
    assert_eq!(blocks.iter().map(|b| b.key.clone()).collect::<HashSet<_>>().len(), 12);
    for block in &blocks {
        assert_et_can_use(block).await;
    }
    // Back up, the pool refills by itself.
    assert!(pool(&broker).wait_filled(12, Duration::from_secs(60)).await, "the pool did not refill");
    let back = issue(&mut client).await.unwrap();
    assert_eq!(back.kms_key_arn, key_arn);
}

/// KMS unreachable from the start: the pool cannot fill, and calls answer
/// UNAVAILABLE (within the KMS deadline, not a hang).
#[tokio::test]
async fn with_kms_down_a_cold_pool_answers_unavailable() {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let relay = Relay::start(&moto.url).await;
    relay.set_down(true);
    let mut config = pooled(aws_config(&key_arn), 8);
    config.transcoder.pipelines = vec![static_pipeline(&key_arn)];
    let kms = aws_kms(&Moto::at(&relay.url), &config).await;
    let broker = TestBroker::start(config, Some(kms)).await;
    let mut client = broker.client().await;
    let err = issue(&mut client).await.expect_err("no KMS and an empty pool");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let err = client.submit_encrypted_job(job(PIPELINE, 3, true)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(pool(&broker).depth(&key_id(&key_arn), ServiceContext::ElasticTranscoder, KeyBits::Aes256), Some(0));
}

/// A pooled key past its time to live is discarded, never handed out,
/// even when the only alternative is failing the call: with KMS down and
/// every pooled key expired, IssueDataKey is UNAVAILABLE.
#[tokio::test]
async fn an_expired_pooled_key_is_never_handed_out() {
    let (broker, relay, key_arn) = behind_relay(8, 1).await;
    assert!(pool(&broker).wait_filled(8, Duration::from_secs(60)).await, "the pool did not fill");
    relay.set_down(true);
    // Every key the pool holds is now older than its 1 s time to live.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = broker.client().await;
    let err = issue(&mut client).await.expect_err("only expired keys were pooled");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let stats = pool(&broker).stats(&key_id(&key_arn), ServiceContext::ElasticTranscoder, KeyBits::Aes256).unwrap();
    assert_eq!(stats.hits, 0, "an expired key was handed out: {stats:?}");
    assert!(stats.expired >= 8, "{stats:?}");
}

/// Pools exist for the configured keys only: a caller naming another key
/// gets a key minted for its call alone, and no pool fills for it.
#[tokio::test]
async fn pools_fill_only_for_keys_the_configuration_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = pooled(local_config(dir.path()), 16);
    let kms = ScriptedKms::counting(local_keyring(&config));
    let broker = TestBroker::start(config, Some(kms.clone() as Arc<dyn Kms>)).await;
    assert!(pool(&broker).wait_filled(16, Duration::from_secs(60)).await);
    let pools: Vec<_> =
        pool(&broker).depths().into_iter().map(|(k, _)| (k.key_id.as_str().to_owned(), k.bits)).collect();
    assert_eq!(pools, vec![("alias/test-default".to_owned(), KeyBits::Aes256)]);
    let before = kms.count();
    let mut client = broker.client().await;
    for _ in 0..20 {
        let request = pb::IssueDataKeyRequest { kms_key_id: "alias/caller-named".into(), ..Default::default() };
        client.issue_data_key(request).await.unwrap();
    }
    // One wrap per call and nothing else: no pool minted for that key.
    assert_eq!(kms.count(), before + 20);
    assert_eq!(
        pool(&broker).depth(&key_id("alias/caller-named"), ServiceContext::ElasticTranscoder, KeyBits::Aes256),
        None
    );
}

/// A pooled key is recorded in the ledger and named in the audit log when
/// it is handed out, exactly as a freshly minted one.
#[tokio::test]
async fn a_pooled_key_is_recorded_and_audited_when_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = pooled(local_config(dir.path()), 4);
    config.audit.file = Some(dir.path().join("audit.jsonl"));
    let broker = TestBroker::start(config, None).await;
    assert!(pool(&broker).wait_filled(4, Duration::from_secs(60)).await);
    let mut client = broker.client().await;
    let issued = issue(&mut client).await.unwrap();
    let stats = pool(&broker).stats(&key_id("alias/test-default"), ServiceContext::ElasticTranscoder, KeyBits::Aes256);
    assert_eq!(stats.unwrap().hits, 1);

    let rows = broker.broker.ledger().find(&Filter::Fingerprint(issued.key_fingerprint.clone())).await.unwrap();
    assert_eq!(rows.len(), 1);
    let block = issued.encryption.unwrap();
    assert_eq!(rows[0].key.wrapped_key, block.key);
    assert_eq!(rows[0].key.iv.as_deref(), Some(block.initialization_vector.as_str()));
    assert_eq!(rows[0].key.key_md5, block.key_md5);
    assert_eq!(rows[0].origin.rpc.name(), "IssueDataKey");

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let record: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["rpc"] == "IssueDataKey")
        .expect("the call was audited");
    assert_eq!(record["outcome"], "ok");
    assert_eq!(record["key_fingerprints"][0], issued.key_fingerprint.as_str());
}

/// A job takes all the pooled keys it needs at once or none: with KMS
/// down and 12 keys pooled, a 20-key job fails without draining the pool
/// (it would have needed KMS for the rest anyway), and a 12-key job is
/// then served entirely from it.
#[tokio::test]
async fn a_job_the_pool_cannot_cover_takes_none_of_its_keys() {
    let (broker, relay, key_arn) = behind_relay(12, 900).await;
    assert!(pool(&broker).wait_filled(12, Duration::from_secs(60)).await, "the pool did not fill");
    relay.set_down(true);
    let mut client = broker.client().await;
    let err = client.submit_encrypted_job(job(PIPELINE, 20, true)).await.expect_err("20 keys, 12 pooled, KMS down");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let key = key_id(&key_arn);
    let (context, bits) = (ServiceContext::ElasticTranscoder, KeyBits::Aes256);
    assert_eq!(pool(&broker).depth(&key, context, bits), Some(12), "a job that could not be covered took keys");
    let stats = pool(&broker).stats(&key, context, bits).unwrap();
    assert_eq!((stats.hits, stats.misses, stats.unused), (0, 20, 0), "{stats:?}");

    let answer =
        client.submit_encrypted_job(job(PIPELINE, 12, true)).await.expect("12 keys from the pool").into_inner();
    assert_eq!(answer.protected_files.len(), 12);
    assert_eq!(pool(&broker).depth(&key, context, bits), Some(0));
    assert_eq!(pool(&broker).stats(&key, context, bits).unwrap().hits, 12);
    relay.set_down(false);
    for file in &answer.protected_files {
        assert_et_can_use(file.encryption.as_ref().unwrap()).await;
    }
}

/// A job that fails after taking its pooled keys discards them: they are
/// never put back for another caller (the job may have recorded or shown
/// them), and are counted as unused.
#[tokio::test]
async fn a_job_that_fails_after_taking_pooled_keys_discards_them() {
    let (broker, relay, key_arn) = behind_relay(12, 900).await;
    let mut client = broker.client().await;
    // A caller-supplied input key, checked with KMS Decrypt during the job.
    let supplied = issue(&mut client).await.unwrap().encryption.unwrap();
    assert!(pool(&broker).wait_filled(12, Duration::from_secs(60)).await, "the pool did not fill");
    let key = key_id(&key_arn);
    let (context, bits) = (ServiceContext::ElasticTranscoder, KeyBits::Aes256);
    let before = pool(&broker).stats(&key, context, bits).unwrap();
    relay.set_down(true);

    let mut failing = job(PIPELINE, 10, true);
    failing.input.as_mut().unwrap().encryption = Some(supplied);
    let err = client.submit_encrypted_job(failing).await.expect_err("the input key cannot be checked: KMS is down");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let after = pool(&broker).stats(&key, context, bits).unwrap();
    assert_eq!(after.hits - before.hits, 10, "the job took its 10 keys from the pool: {after:?}");
    assert_eq!(after.unused - before.unused, 10, "the failed job's keys were not discarded: {after:?}");
    assert_eq!(pool(&broker).depth(&key, context, bits), Some(2), "a failed job's keys went back to the pool");

    // Only the two keys never taken are left to hand out.
    let mut left = HashSet::new();
    for _ in 0..2 {
        left.insert(issue(&mut client).await.expect("a pooled key").encryption.unwrap().key);
    }
    assert_eq!(left.len(), 2);
    let dry = issue(&mut client).await.expect_err("the pool is dry and KMS is down");
    assert_eq!(dry.code(), Code::Unavailable, "{}", dry.message());
    relay.set_down(false);
}
