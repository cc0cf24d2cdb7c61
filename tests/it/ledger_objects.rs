//! S3-mode EncryptObject and the key ledger, against moto's S3 (a versioned
//! bucket) and KMS on both ledger engines: the key row of an object gets the
//! version id and ETag S3 answered; a request token makes a repeat answer
//! the recorded result with no KMS call and no second upload, refuses a
//! repeat while the first call is in flight, refuses another request under
//! the token, and lets a retry of a failed call run anew with a fresh key.

use std::sync::Arc;

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use keybroker::ledger::{Filter, RecordedKey, S3Object, Usage};
use keybroker::objects::ObjectsSettings;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::kms::ScriptedKms;
use crate::support::ledger_db::{ENGINES, Engine, LedgerDb};
use crate::support::moto::Moto;
use crate::support::rng::Rng;
use crate::support::s3::S3Proxy;

const MIB: usize = 1 << 20;

/// A broker over moto's KMS (counted) and S3 (through a proxy that can
/// hold a transfer in flight), recording into `db`, with a fresh
/// versioned bucket.
struct Rig {
    broker: TestBroker,
    kms: Arc<ScriptedKms>,
    s3: aws_sdk_s3::Client,
    proxy: S3Proxy,
    bucket: String,
    db: LedgerDb,
}

async fn rig(engine: Engine) -> Rig {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let db = LedgerDb::new(engine).await;
    let mut config = aws_config(&key_arn);
    db.configure(&mut config);
    config.s3.force_path_style = true;
    config.s3.part_size_mib = 5;
    let kms = ScriptedKms::counting(aws_kms(moto, &config).await);
    let proxy = S3Proxy::spawn(&moto.url).await;
    let settings = ObjectsSettings { force_path_style: true, part_size: 5 * MIB, ..ObjectsSettings::default() };
    let sdk = moto.sdk_config().into_builder().endpoint_url(&proxy.url).build();
    let s3 = keybroker::objects::s3_client(&sdk, &settings);
    let bucket = format!("kb-ledger-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.expect("moto CreateBucket");
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(versioning).send().await.unwrap();
    let broker = TestBroker::start_with_peers(config, kms.clone(), None, Some(s3.clone())).await;
    Rig { broker, kms, s3, proxy, bucket, db }
}

impl Rig {
    fn location(&self, key: &str) -> Option<pb::S3Location> {
        Some(pb::S3Location { bucket: self.bucket.clone(), key: key.into() })
    }

    fn start(&self, from: &str, to: &str, token: &str) -> pb::EncryptObjectStart {
        pb::EncryptObjectStart {
            mode: "aes-gcm".into(),
            source: self.location(from),
            destination: self.location(to),
            request_token: token.into(),
            ..Default::default()
        }
    }

    async fn put(&self, key: &str, len: usize) {
        let bytes = Rng(len as u64 | 1).bytes(len);
        self.s3.put_object().bucket(&self.bucket).key(key).body(bytes.into()).send().await.unwrap();
    }

    /// Every version of `key`, newest first: (version id, ETag).
    async fn versions(&self, key: &str) -> Vec<(String, String)> {
        let listed = self.s3.list_object_versions().bucket(&self.bucket).prefix(key).send().await.unwrap();
        listed
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .map(|v| (v.version_id().unwrap_or_default().to_owned(), v.e_tag().unwrap_or_default().to_owned()))
            .collect()
    }

    /// The ledger rows of the object `key`, oldest first.
    async fn rows(&self, key: &str) -> Vec<RecordedKey> {
        let ledger = self.db.open().await;
        let rows = ledger.find(&Filter::Object { bucket: self.bucket.clone(), key: key.into() }).await.unwrap();
        ledger.close().await;
        rows
    }
}

/// Runs an S3-mode EncryptObject (a start and nothing else) to its end.
async fn encrypt(
    client: &mut KeyBrokerClient<Channel>,
    start: pb::EncryptObjectStart,
) -> Result<pb::EncryptObjectResult, Status> {
    use pb::encrypt_object_response::Message;
    let first = pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start)) };
    let mut stream = client.encrypt_object(futures::stream::iter(vec![first])).await?.into_inner();
    let mut result = None;
    while let Some(message) = stream.message().await? {
        match message.message {
            Some(Message::Result(r)) => result = Some(r),
            other => panic!("S3 mode answers no chunk: {other:?}"),
        }
    }
    Ok(result.expect("a successful stream ends with a result"))
}

fn refused(result: Result<pb::EncryptObjectResult, Status>, code: Code) -> String {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), code, "{}", status.message());
    status.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_objects_key_row_gets_the_version_id_and_etag_s3_answered() {
    for engine in ENGINES {
        let rig = rig(engine).await;
        let mut client = rig.broker.client().await;
        // One PutObject below a part, a three-part multipart upload above.
        rig.put("in/small", 70_001).await;
        rig.put("in/large", 11 * MIB + 3).await;
        for (from, to) in [("in/small", "enc/small"), ("in/large", "enc/large"), ("in/small", "enc/small")] {
            let result = encrypt(&mut client, rig.start(from, to, "")).await.unwrap();
            let (version_id, etag) = rig.versions(to).await.remove(0);
            assert!(!version_id.is_empty() && version_id != "null", "{engine:?}: a versioned bucket");
            assert_eq!((result.version_id.as_str(), result.etag.as_str()), (version_id.as_str(), etag.as_str()));
            let rows = rig.rows(to).await;
            let row = rows.last().unwrap();
            assert_eq!(row.key.fingerprint, result.key_fingerprint, "{engine:?}: the newest row is this call's key");
            assert_eq!(row.key.wrapped_key, result.encryption.as_ref().unwrap().key);
            let expected = S3Object {
                bucket: rig.bucket.clone(),
                key: to.into(),
                version_id: Some(version_id),
                etag: Some(etag.clone()),
            };
            assert_eq!(row.key.usage, Usage::Object(expected), "{engine:?} {to}");
            if from == "in/large" {
                assert!(etag.trim_matches('"').ends_with("-3"), "{engine:?}: a multipart ETag, got {etag}");
            }
        }
        // Each version the broker wrote has its own row, naming it.
        let versions = rig.versions("enc/small").await;
        assert_eq!(versions.len(), 2);
        let recorded: Vec<Option<String>> = rig
            .rows("enc/small")
            .await
            .into_iter()
            .map(|row| match row.key.usage {
                Usage::Object(object) => object.version_id,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut listed: Vec<Option<String>> = versions.into_iter().map(|(v, _)| Some(v)).collect();
        listed.reverse();
        assert_eq!(recorded, listed, "{engine:?}: oldest first, each version named");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_object_token_answers_the_recorded_result_with_no_kms_call_and_no_upload() {
    for engine in ENGINES {
        let rig = rig(engine).await;
        let mut client = rig.broker.client().await;
        rig.put("in/clip", 6 * MIB).await;
        let first = encrypt(&mut client, rig.start("in/clip", "enc/clip", "clip-42")).await.unwrap();
        let kms_calls = rig.kms.count();
        assert_eq!(kms_calls, 1, "{engine:?}: one key wrapped");
        assert_eq!(rig.versions("enc/clip").await.len(), 1);

        let again = encrypt(&mut client, rig.start("in/clip", "enc/clip", "clip-42")).await.unwrap();
        assert_eq!(again, first, "{engine:?}: the same block, ARN, sizes, fingerprint, version and ETag");
        assert_eq!(rig.kms.count(), kms_calls, "{engine:?}: a replay makes no KMS call");
        assert_eq!(rig.versions("enc/clip").await.len(), 1, "{engine:?}: a replay uploads nothing");
        assert_eq!(rig.rows("enc/clip").await.len(), 1, "{engine:?}: a replay records no key");

        // The same token for another request: refused, naming the token.
        for other in [
            rig.start("in/clip", "enc/other", "clip-42"),
            pb::EncryptObjectStart { mode: "aes-ctr".into(), ..rig.start("in/clip", "enc/clip", "clip-42") },
        ] {
            let message = refused(encrypt(&mut client, other).await, Code::AlreadyExists);
            assert!(
                message.starts_with("start.request_token \"clip-42\"") && message.contains("different request"),
                "{engine:?}: {message}"
            );
        }
        assert_eq!(rig.kms.count(), kms_calls);
        assert!(rig.versions("enc/other").await.is_empty(), "{engine:?}: nothing written for a refused request");
        assert_eq!(rig.versions("enc/clip").await.len(), 1);

        // Another token is another encryption.
        let other = encrypt(&mut client, rig.start("in/clip", "enc/clip", "clip-43")).await.unwrap();
        assert_ne!(other.encryption, first.encryption);
        assert_eq!(rig.versions("enc/clip").await.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_in_flight_is_refused_and_a_failed_first_call_leaves_the_token_to_a_fresh_retry() {
    for engine in ENGINES {
        let rig = rig(engine).await;
        rig.put("in/slow", 100_000).await;

        // The first call's GetObject is held at the proxy: it is in flight.
        rig.proxy.hold_gets_of(&rig.bucket, "in/slow");
        let mut first_client = rig.broker.client().await;
        let start = rig.start("in/slow", "enc/slow", "slow-1");
        let first = tokio::spawn(async move { encrypt(&mut first_client, start).await });
        rig.proxy.held().await;
        let kms_calls = rig.kms.count();
        let mut client = rig.broker.client().await;
        let message = refused(encrypt(&mut client, rig.start("in/slow", "enc/slow", "slow-1")).await, Code::Aborted);
        assert!(
            message.starts_with("start.request_token \"slow-1\"") && message.contains("still running"),
            "{engine:?}: {message}"
        );
        assert_eq!(rig.kms.count(), kms_calls, "{engine:?}: the repeat in flight was not run");
        rig.proxy.release();
        let first = first.await.unwrap().unwrap();
        let replay = encrypt(&mut client, rig.start("in/slow", "enc/slow", "slow-1")).await.unwrap();
        assert_eq!(replay, first, "{engine:?}: once finished, the repeat gets the first result");
        assert_eq!(rig.versions("enc/slow").await.len(), 1);
        assert_eq!(rig.kms.count(), kms_calls);

        // A first call that failed (no source yet) does not hold the token:
        // the retry runs anew, under a key and IV of its own.
        let message =
            refused(encrypt(&mut client, rig.start("in/late", "enc/late", "late-1")).await, Code::FailedPrecondition);
        assert!(message.contains("in/late"), "{message}");
        rig.put("in/late", 1000).await;
        let retried = encrypt(&mut client, rig.start("in/late", "enc/late", "late-1")).await.unwrap();
        let rows = rig.rows("enc/late").await;
        assert_eq!(rows.len(), 2, "{engine:?}: the failed call's key was recorded before it failed");
        assert_ne!(rows[0].key.wrapped_key, rows[1].key.wrapped_key);
        assert_ne!(rows[0].key.iv, rows[1].key.iv, "{engine:?}: never the same key and IV twice");
        assert_eq!(rows[1].key.wrapped_key, retried.encryption.as_ref().unwrap().key);
        assert!(matches!(&rows[0].key.usage, Usage::Object(o) if o.version_id.is_none() && o.etag.is_none()));
        assert_eq!(rig.versions("enc/late").await.len(), 1);
        let replay = encrypt(&mut client, rig.start("in/late", "enc/late", "late-1")).await.unwrap();
        assert_eq!(replay, retried);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_object_tokens_are_refused_naming_the_field_before_any_kms_call() {
    let rig = rig(Engine::Sqlite).await;
    let mut client = rig.broker.client().await;
    rig.put("in/x", 10).await;
    for (start, rule) in [
        (rig.start("in/x", "enc/x", &"t".repeat(65)), "at most 64"),
        (rig.start("in/x", "enc/x", "tab\there"), "printable ASCII"),
        (
            pb::EncryptObjectStart { source: None, destination: None, ..rig.start("in/x", "enc/x", "t-1") },
            "only in S3 mode",
        ),
    ] {
        let message = refused(encrypt(&mut client, start).await, Code::InvalidArgument);
        assert!(message.starts_with("start.request_token:") && message.contains(rule), "{message}");
    }
    assert_eq!(rig.kms.count(), 0);
    assert!(rig.versions("enc/x").await.is_empty());
}
