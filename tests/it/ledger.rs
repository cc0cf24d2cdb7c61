//! The key ledger on both engines (SQLite and a real PostgreSQL): every key
//! handed out is recorded before it leaves, as it left, with who asked and
//! where it is used; never plaintext; a ledger that cannot record fails the
//! call `UNAVAILABLE` and the broker recovers by itself.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::custody::keys::ServiceContext;
use keybroker::custody::rpc::Rpc;
use keybroker::ledger::{Filter, Usage};
use keybroker::pb;
use sqlx::Connection as _;
use tonic::Code;

use crate::support::broker::{TestBroker, aws_config, aws_kms, local_config};
use crate::support::et::{EtEndpoint, KeyMd5Reading, PipelineFixture};
use crate::support::ledger_db::{ENGINES, Engine, LedgerDb};
use crate::support::moto::Moto;

/// A local-keyring broker recording into `db`.
async fn broker_on(db: &LedgerDb) -> TestBroker {
    let mut config = local_config(db.dir.path());
    db.configure(&mut config);
    TestBroker::start(config, None).await
}

fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    request
}

#[tokio::test]
async fn issued_and_wrapped_keys_are_recorded_as_they_left_on_both_engines() {
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let broker = broker_on(&db).await;
        let mut client = broker.client().await;
        let issue = pb::IssueDataKeyRequest { key_bits: 192, mode: "aes-ctr".into(), ..Default::default() };
        let issued = client.issue_data_key(with_request_id(issue, "req-issue")).await.unwrap().into_inner();
        let wrap = pb::WrapKeyRequest {
            plaintext_key: vec![7; 16],
            mode: "aes-gcm".into(),
            context: pb::ServiceContext::Mediaconvert as i32,
            ..Default::default()
        };
        let wrapped = client.wrap_key(with_request_id(wrap, "req-wrap")).await.unwrap().into_inner();

        let ledger = db.open().await;
        for (answer, fingerprint, rpc, request_id, bits, context) in [
            (
                issued.encryption.unwrap(),
                issued.key_fingerprint,
                Rpc::IssueDataKey,
                "req-issue",
                192,
                ServiceContext::ElasticTranscoder,
            ),
            (
                wrapped.encryption.unwrap(),
                wrapped.key_fingerprint,
                Rpc::WrapKey,
                "req-wrap",
                128,
                ServiceContext::MediaConvert,
            ),
        ] {
            let rows = ledger.find(&Filter::Fingerprint(fingerprint.clone())).await.unwrap();
            assert_eq!(rows.len(), 1, "{engine:?} {rpc}: {rows:?}");
            let by_wrapped_key = ledger.find(&Filter::WrappedKey(answer.key.clone())).await.unwrap();
            assert_eq!(by_wrapped_key, rows, "{engine:?} {rpc}: found by its wrapped key too");
            let row = &rows[0];
            assert_eq!(row.origin.rpc, rpc);
            assert_eq!(row.origin.identity, "anonymous");
            assert_eq!(row.origin.request_id, request_id);
            assert_eq!(row.key.wrapped_key, answer.key, "{engine:?}: the wrapped key exactly as handed out");
            assert_eq!(row.key.key_md5, answer.key_md5);
            assert_eq!(row.key.iv.as_deref(), Some(answer.initialization_vector.as_str()));
            assert_eq!(row.key.mode, answer.mode);
            assert_eq!(row.key.key_bits, Some(bits));
            assert_eq!(row.key.context, context);
            assert!(row.key.kms_key_arn.ends_with("alias/test-default"), "{}", row.key.kms_key_arn);
            assert_eq!(row.key.usage, Usage::Unattached);
            assert!(row.recorded_at_ms > 0);
        }
        ledger.close().await;
    }
}

#[tokio::test]
async fn the_ledger_never_holds_plaintext_key_bytes() {
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let broker = broker_on(&db).await;
        let mut client = broker.client().await;
        let mut plaintexts = Vec::new();
        for bits in [128, 192, 256, 256, 128] {
            let request = pb::IssueDataKeyRequest {
                key_bits: bits,
                mode: "aes-cbc-pkcs7".into(),
                return_plaintext: true,
                ..Default::default()
            };
            plaintexts.push(client.issue_data_key(request).await.unwrap().into_inner().plaintext_key);
        }
        for byte in [0x5a_u8, 0xc3] {
            let key: Vec<u8> = (0..32).map(|i| byte ^ i).collect();
            client
                .wrap_key(pb::WrapKeyRequest {
                    plaintext_key: key.clone(),
                    mode: "aes-gcm".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            plaintexts.push(key);
        }
        let contents = db.contents().await;
        assert!(contents.len() > 1000, "{engine:?}: the ledger holds the rows ({} bytes)", contents.len());
        for key in &plaintexts {
            assert!([16, 24, 32].contains(&key.len()), "the plaintext came back");
            for form in [key.clone(), B64.encode(key).into_bytes(), hex::encode(key).into_bytes()] {
                assert!(
                    !contents.windows(form.len()).any(|w| w == form.as_slice()),
                    "{engine:?}: plaintext key bytes in the ledger"
                );
            }
        }
    }
}

#[tokio::test]
async fn concurrent_calls_are_all_recorded() {
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let broker = broker_on(&db).await;
        let channel = broker.channel().await;
        let calls =
            (0..64).map(|_| {
                let mut client = pb::key_broker_client::KeyBrokerClient::new(channel.clone());
                async move {
                    client.issue_data_key(crate::support::broker::issue(128, "aes-gcm")).await.unwrap().into_inner()
                }
            });
        let answers = futures::future::join_all(calls).await;
        let ledger = db.open().await;
        for answer in answers {
            let rows = ledger.find(&Filter::Fingerprint(answer.key_fingerprint)).await.unwrap();
            assert_eq!(rows.len(), 1, "{engine:?}");
            assert_eq!(rows[0].key.wrapped_key, answer.encryption.unwrap().key);
        }
        ledger.close().await;
    }
}

/// Stops `db` from taking writes until the returned guard is released:
/// SQLite's write lock held by another connection, or PostgreSQL refusing
/// connections to the database (its open ones terminated).
enum Outage {
    Sqlite(sqlx::SqliteConnection),
    Postgres(String),
}

async fn break_ledger(db: &LedgerDb) -> Outage {
    match db.engine {
        Engine::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.file.display())).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();
            Outage::Sqlite(conn)
        }
        Engine::Postgres => {
            let admin = crate::support::ledger_db::postgres_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name))
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
                .bind(&db.name)
                .execute(&mut conn)
                .await
                .unwrap();
            Outage::Postgres(db.name.clone())
        }
    }
}

async fn mend_ledger(outage: Outage) {
    match outage {
        Outage::Sqlite(mut conn) => {
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Outage::Postgres(name) => {
            let admin = crate::support::ledger_db::postgres_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&mut conn).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_ledger_that_cannot_record_fails_calls_unavailable_and_the_broker_recovers() {
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let broker = broker_on(&db).await;
        let mut client = broker.client().await;
        client.issue_data_key(crate::support::broker::issue(128, "aes-gcm")).await.unwrap();

        let outage = break_ledger(&db).await;
        for _ in 0..3 {
            let mut request = tonic::Request::new(pb::IssueDataKeyRequest {
                return_plaintext: true,
                ..crate::support::broker::issue(256, "aes-gcm")
            });
            request.set_timeout(Duration::from_secs(10));
            let err = client.issue_data_key(request).await.unwrap_err();
            assert_eq!(err.code(), Code::Unavailable, "{engine:?}: {err:?}");
            assert!(err.message().contains("key ledger"), "{}", err.message());
            assert!(err.metadata().get("x-request-id").is_some() || !err.message().is_empty());
        }
        let wrapped =
            client.wrap_key(pb::WrapKeyRequest { plaintext_key: vec![1; 16], ..Default::default() }).await.unwrap_err();
        assert_eq!(wrapped.code(), Code::Unavailable, "{engine:?}");

        mend_ledger(outage).await;
        let recovered = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match client.issue_data_key(crate::support::broker::issue(128, "aes-gcm")).await {
                    Ok(answer) => return answer.into_inner(),
                    Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e:?}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the broker recovers once the database is back");
        let ledger = db.open().await;
        let rows = ledger.find(&Filter::Fingerprint(recovered.key_fingerprint)).await.unwrap();
        assert_eq!(rows.len(), 1, "{engine:?}");
        ledger.close().await;
    }
}

/// An ET endpoint with `pipeline` on `key_arn` (moto), and an AWS-KMS broker
/// submitting to it and recording into `db`.
pub async fn aws_broker_with_et(db: &LedgerDb, key_arn: &str, pipeline: &str) -> (EtEndpoint, TestBroker) {
    let moto = Moto::shared();
    let et =
        EtEndpoint::spawn(moto.kms(), vec![PipelineFixture::new(pipeline, Some(key_arn))], KeyMd5Reading::Plaintext)
            .await;
    let mut config = aws_config(key_arn);
    db.configure(&mut config);
    let kms = aws_kms(moto, &config).await;
    let broker = TestBroker::start_with_peers(config, kms, Some(et.sdk_client(&moto.sdk_config())), None).await;
    (et, broker)
}

#[tokio::test]
async fn job_keys_are_recorded_with_their_places_and_the_job_id_before_the_job_leaves() {
    const PIPELINE: &str = "1234567890123-abcdef";
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let (et, broker) = aws_broker_with_et(&db, &key_arn, PIPELINE).await;
        let mut client = broker.client().await;
        let aes = |mode: &str| {
            Some(pb::Protection {
                encryption: Some(pb::Encryption { mode: mode.into(), ..Default::default() }),
                key_bits: 256,
            })
        };
        let job = pb::SubmitEncryptedJobRequest {
            pipeline_id: PIPELINE.into(),
            input: Some(pb::JobInput { key: "in/source.mov".into(), ..Default::default() }),
            outputs: (0..3)
                .map(|i| pb::JobOutput {
                    key: format!("out/{i}.mp4"),
                    preset_id: "1351620000001-000010".into(),
                    encryption: aes(["aes-cbc-pkcs7", "aes-ctr", "aes-gcm"][i]),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let answer = client.submit_encrypted_job(job.clone()).await.unwrap().into_inner();
        assert_eq!(et.created_jobs().len(), 1);

        let ledger = db.open().await;
        let rows = ledger.find(&Filter::JobId(answer.job_id.clone())).await.unwrap();
        assert_eq!(rows.len(), 3, "{engine:?}: {rows:?}");
        for (row, file) in rows.iter().zip(&answer.protected_files) {
            assert_eq!(row.origin.rpc, Rpc::SubmitEncryptedJob);
            assert_eq!(row.key.usage, Usage::Job { job_id: Some(answer.job_id.clone()), place: file.path.clone() });
            let block = file.encryption.as_ref().unwrap();
            assert_eq!(row.key.wrapped_key, block.key);
            assert_eq!(row.key.mode, block.mode);
            assert_eq!(row.key.fingerprint, file.key_fingerprint);
            assert_eq!(row.key.kms_key_arn, key_arn);
            assert_eq!(row.key.key_bits, Some(256));
        }
        assert_eq!(
            rows[2].key.usage,
            Usage::Job { job_id: Some(answer.job_id.clone()), place: "Outputs[2].Encryption".into() }
        );

        // With the ledger down, no job reaches Elastic Transcoder.
        let outage = break_ledger(&db).await;
        let err = client.submit_encrypted_job(job).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{engine:?}: {err:?}");
        assert_eq!(et.created_jobs().len(), 1, "{engine:?}: a job whose keys are not recorded is never submitted");
        mend_ledger(outage).await;
        ledger.close().await;
    }
}

#[tokio::test]
async fn lookups_by_fingerprint_and_wrapped_key_go_through_their_compact_indexes() {
    const BY_FINGERPRINT: &str =
        "SELECT id FROM ledger_keys WHERE substr(fingerprint, 13, 16) = substr($1, 13, 16) AND fingerprint = $1";
    const BY_WRAPPED_KEY: &str = "SELECT id FROM ledger_keys WHERE substr(wrapped_key, length(wrapped_key) - 15) = \
                                  substr($1, length($1) - 15) AND wrapped_key = $1";
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let ledger = db.open().await;
        for (query, index) in
            [(BY_FINGERPRINT, "ledger_keys_fingerprint_head"), (BY_WRAPPED_KEY, "ledger_keys_wrapped_tail")]
        {
            let plan: Vec<String> = match engine {
                Engine::Sqlite => {
                    let url = format!("sqlite://{}", db.file.display());
                    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {query}"))
                        .bind("x".repeat(64))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                    rows.into_iter().map(|row| row.3).collect()
                }
                Engine::Postgres => {
                    let mut conn = sqlx::PgConnection::connect(db.url.as_deref().unwrap()).await.unwrap();
                    // An empty table: without this, a sequential scan is cheapest.
                    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
                    let query = query.replace("$1", "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'");
                    let rows: Vec<(String,)> =
                        sqlx::query_as(&format!("EXPLAIN {query}")).fetch_all(&mut conn).await.unwrap();
                    rows.into_iter().map(|row| row.0).collect()
                }
            };
            assert!(plan.iter().any(|line| line.contains(index)), "{engine:?}: {query}: {plan:?}");
        }
        ledger.close().await;
    }
}
