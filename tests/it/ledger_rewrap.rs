//! The key ledger's lookup and rewrap: recorded keys found by job, key
//! fingerprint and the caller's own request token on both engines; keys
//! moved from Elastic Transcoder's context to MediaConvert's through KMS
//! `ReEncrypt` (moto) that decrypt to the same key under the new context
//! only; a rewrap the policy does not allow changes nothing; blocks a caller
//! holds rewrapped through the local keyring; the CLI's `keys` commands.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::custody::kms::Kms;
use keybroker::ledger::Filter;
use keybroker::pb;
use tonic::Code;

use crate::support::broker::{TestBroker, local_config, local_keyring};
use crate::support::kms::ScriptedKms;
use crate::support::ledger_db::{ENGINES, Engine, LedgerDb};
use crate::support::moto::Moto;
use crate::support::process::BIN;

const PIPELINE: &str = "1234567890123-abcdef";
const ET: &str = "elastictranscoder.amazonaws.com";
const MEDIACONVERT: &str = "mediaconvert.amazonaws.com";

/// What a lookup selects.
enum By {
    JobId(String),
    KeyFingerprint(String),
    RequestToken(String),
}

fn lookup(by: By) -> pb::LookupKeysRequest {
    match by {
        By::JobId(job_id) => pb::LookupKeysRequest { job_id, ..Default::default() },
        By::KeyFingerprint(key_fingerprint) => pb::LookupKeysRequest { key_fingerprint, ..Default::default() },
        By::RequestToken(request_token) => pb::LookupKeysRequest { request_token, ..Default::default() },
    }
}

fn job(token: &str) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: PIPELINE.into(),
        input: Some(pb::JobInput { key: "in/source.mov".into(), ..Default::default() }),
        outputs: ["aes-cbc-pkcs7", "aes-ctr", "aes-gcm"]
            .iter()
            .enumerate()
            .map(|(i, mode)| pb::JobOutput {
                key: format!("out/{i}.mp4"),
                preset_id: "1351620000001-000010".into(),
                encryption: Some(pb::Protection {
                    encryption: Some(pb::Encryption { mode: (*mode).into(), ..Default::default() }),
                    key_bits: 256,
                }),
                ..Default::default()
            })
            .collect(),
        request_token: token.into(),
        ..Default::default()
    }
}

/// What KMS (moto) decrypts `key` (base64) to under the service `service`.
async fn decrypt(kms: &aws_sdk_kms::Client, key: &str, service: &str) -> Result<Vec<u8>, String> {
    kms.decrypt()
        .ciphertext_blob(Blob::new(B64.decode(key).unwrap()))
        .set_encryption_context(Some(HashMap::from([("service".to_owned(), service.to_owned())])))
        .send()
        .await
        .map(|out| out.plaintext.unwrap().into_inner())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn job_keys_are_looked_up_and_moved_to_mediaconvert_through_kms_on_both_engines() {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    for engine in ENGINES {
        let db = LedgerDb::new(engine).await;
        let (_et, broker) = crate::ledger::aws_broker_with_et(&db, &key_arn, PIPELINE).await;
        let mut client = broker.client().await;
        let answer = client.submit_encrypted_job(job("job-token-1")).await.unwrap().into_inner();

        // By job id, by the caller's token, by one key's fingerprint.
        let by_job = client.lookup_keys(lookup(By::JobId(answer.job_id.clone()))).await.unwrap().into_inner();
        assert_eq!(by_job.keys.len(), 3, "{engine:?}");
        assert!(!by_job.truncated);
        for (key, file) in by_job.keys.iter().zip(&answer.protected_files) {
            assert_eq!(key.encryption, file.encryption, "{engine:?}: the block exactly as it left");
            assert_eq!((key.job_id.as_str(), key.job_place.as_str()), (answer.job_id.as_str(), file.path.as_str()));
            assert_eq!(
                (key.key_fingerprint.as_str(), key.kms_key_arn.as_str()),
                (file.key_fingerprint.as_str(), key_arn.as_str())
            );
            assert_eq!(
                (key.rpc.as_str(), key.key_bits, key.context),
                ("SubmitEncryptedJob", 256, pb::ServiceContext::ElasticTranscoder as i32)
            );
            assert!(key.rewrapped_from.is_empty());
        }
        let by_token = client.lookup_keys(lookup(By::RequestToken("job-token-1".into()))).await.unwrap().into_inner();
        assert_eq!(by_token.keys, by_job.keys, "{engine:?}");
        let fingerprint = answer.protected_files[1].key_fingerprint.clone();
        let by_key = client.lookup_keys(lookup(By::KeyFingerprint(fingerprint.clone()))).await.unwrap().into_inner();
        assert_eq!(by_key.keys, by_job.keys[1..2], "{engine:?}");
        for (by, code, words) in [
            (By::RequestToken("never-used".into()), Code::NotFound, "no recorded key for request token"),
            (By::JobId("9999999999999-zzzzzz".into()), Code::NotFound, "no recorded key for job"),
            (By::KeyFingerprint("abc".into()), Code::InvalidArgument, "key_fingerprint: "),
            (By::JobId("../etc".into()), Code::InvalidArgument, "job_id: "),
        ] {
            let err = client.lookup_keys(lookup(by)).await.unwrap_err();
            assert_eq!(err.code(), code, "{engine:?}: {err:?}");
            assert!(err.message().contains(words), "{}", err.message());
        }
        let none = client.lookup_keys(pb::LookupKeysRequest::default()).await.unwrap_err();
        assert!(none.message().starts_with("job_id: set exactly one of"), "{none:?}");
        let two = pb::LookupKeysRequest { request_token: "t".into(), ..lookup(By::JobId(answer.job_id.clone())) };
        let two = client.lookup_keys(two).await.unwrap_err();
        assert_eq!((two.code(), two.message()), (none.code(), none.message()), "{two:?}");

        // The job's keys move to MediaConvert's context under the same KMS key.
        let rewrap = pb::RewrapKeysRequest {
            recorded: Some(lookup(By::JobId(answer.job_id.clone()))),
            destination_context: pb::ServiceContext::Mediaconvert as i32,
            ..Default::default()
        };
        let moved = client.rewrap_keys(rewrap.clone()).await.unwrap().into_inner();
        assert_eq!(moved.keys.len(), 3, "{engine:?}");
        for (new, old) in moved.keys.iter().zip(&by_job.keys) {
            let (new_block, old_block) = (new.encryption.as_ref().unwrap(), old.encryption.as_ref().unwrap());
            assert_eq!(new.rewrapped_from, old.key_fingerprint);
            assert_ne!(new.key_fingerprint, old.key_fingerprint);
            assert_eq!(new.context, pb::ServiceContext::Mediaconvert as i32);
            assert_eq!((new.rpc.as_str(), new.kms_key_arn.as_str()), ("RewrapKeys", key_arn.as_str()));
            assert_eq!((&new.job_id, &new.job_place), (&old.job_id, &old.job_place), "the same file's key");
            assert_eq!(new_block.mode, old_block.mode);
            assert_eq!(new_block.initialization_vector, old_block.initialization_vector);
            assert_eq!(new_block.key_md5, old_block.key_md5, "the same plaintext key has the same MD5");
            assert_ne!(new_block.key, old_block.key);
            let before = decrypt(&moto.kms(), &old_block.key, ET).await.unwrap();
            let after = decrypt(&moto.kms(), &new_block.key, MEDIACONVERT).await.unwrap();
            assert_eq!(after, before, "{engine:?}: the same key under MediaConvert's context");
            assert!(decrypt(&moto.kms(), &new_block.key, ET).await.is_err(), "no longer needs ET's context");
        }
        // Both sets are on record, linked; a repeat answers the same blocks.
        let both = client.lookup_keys(lookup(By::JobId(answer.job_id.clone()))).await.unwrap().into_inner();
        assert_eq!(both.keys.len(), 6, "{engine:?}");
        assert_eq!(both.keys[3..], moved.keys[..]);
        let again = client.rewrap_keys(rewrap).await.unwrap().into_inner();
        assert_eq!(again.keys, moved.keys, "{engine:?}: a repeated rewrap answers the first");
        let ledger = db.open().await;
        assert_eq!(ledger.find(&Filter::JobId(answer.job_id.clone())).await.unwrap().len(), 6);
        ledger.close().await;
    }
}

/// A local-keyring broker in `dir` over `kms`, recording into `db`, with
/// the policy `policy`.
async fn policed(dir: &std::path::Path, db: &LedgerDb, kms: &Arc<ScriptedKms>, policy: &str) -> TestBroker {
    let mut config = local_config(dir);
    db.configure(&mut config);
    let file = dir.join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    config.policy.allow_all = false;
    config.policy.file = Some(file);
    TestBroker::start(config, Some(kms.clone() as Arc<dyn Kms>)).await
}

#[tokio::test]
async fn a_rewrap_the_policy_does_not_allow_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"
[[rule]]
identity = "anonymous"
rpcs = ["*"]
kms_keys = ["alias/test-default", "arn:aws:kms:local:000000000000:alias/test-default"]
plaintext_export = true
"#;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let kms = ScriptedKms::counting(local_keyring(&local_config(dir.path())));
    let broker = policed(dir.path(), &db, &kms, policy).await;
    let mut client = broker.client().await;
    let issued = client
        .issue_data_key(pb::IssueDataKeyRequest {
            return_plaintext: true,
            ..crate::support::broker::issue(256, "aes-cbc-pkcs7")
        })
        .await
        .unwrap()
        .into_inner();
    let recorded = || lookup(By::KeyFingerprint(issued.key_fingerprint.clone()));
    let to_mediaconvert = pb::RewrapKeysRequest {
        recorded: Some(recorded()),
        destination_context: pb::ServiceContext::Mediaconvert as i32,
        ..Default::default()
    };
    let calls = kms.count();
    let err = client.rewrap_keys(to_mediaconvert.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("does not grant it; name \"RewrapKeys\""), "{}", err.message());
    assert_eq!(kms.count(), calls, "a refused rewrap never reaches KMS");
    drop(client);
    drop(broker);

    // Named, but to a KMS key the rule does not cover.
    let policy =
        policy.replace(r#"rpcs = ["*"]"#, r#"rpcs = ["IssueDataKey", "UnwrapKey", "LookupKeys", "RewrapKeys"]"#);
    let broker = policed(dir.path(), &db, &kms, &policy).await;
    let mut client = broker.client().await;
    let elsewhere =
        pb::RewrapKeysRequest { destination_kms_key_id: "alias/elsewhere".into(), ..to_mediaconvert.clone() };
    let calls = kms.count();
    let err = client.rewrap_keys(elsewhere).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("may not use KMS key alias/elsewhere"), "{}", err.message());
    assert_eq!(kms.count(), calls);
    let ledger = db.open().await;
    assert_eq!(ledger.find(&Filter::RewrappedFrom(issued.key_fingerprint.clone())).await.unwrap().len(), 0);

    // Allowed: the same key, now under MediaConvert's context only.
    let moved = client.rewrap_keys(to_mediaconvert).await.unwrap().into_inner().keys.remove(0);
    let unwrap = |context: pb::ServiceContext| pb::UnwrapKeyRequest {
        encryption: moved.encryption.clone(),
        context: context as i32,
        kms_key_id: String::new(),
    };
    let plain = client.unwrap_key(unwrap(pb::ServiceContext::Mediaconvert)).await.unwrap().into_inner();
    assert_eq!(plain.plaintext_key, issued.plaintext_key);
    let err = client.unwrap_key(unwrap(pb::ServiceContext::ElasticTranscoder)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let rows = ledger.find(&Filter::RewrappedFrom(issued.key_fingerprint.clone())).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key.fingerprint, moved.key_fingerprint);
    let bytes = db.contents().await;
    let needle = &issued.plaintext_key[..];
    assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the ledger never holds the plaintext");
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_a_caller_holds_are_rewrapped_and_bad_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = LedgerDb::new(Engine::Sqlite).await;
    let mut config = local_config(dir.path());
    db.configure(&mut config);
    let broker = TestBroker::start(config, None).await;
    let mut client = broker.client().await;
    let material = vec![9u8; 32];
    let wrapped = client
        .wrap_key(pb::WrapKeyRequest { plaintext_key: material.clone(), mode: "aes-gcm".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let block = wrapped.encryption.clone().unwrap();
    let request = pb::RewrapKeysRequest {
        blocks: vec![block.clone()],
        destination_context: pb::ServiceContext::Mediaconvert as i32,
        ..Default::default()
    };
    for (bad, field) in [
        (request.clone(), "destination_kms_key_id: required for blocks"),
        (
            pb::RewrapKeysRequest { recorded: Some(lookup(By::JobId("x".into()))), ..request.clone() },
            "blocks: give either recorded or blocks",
        ),
        (
            pb::RewrapKeysRequest {
                blocks: vec![pb::Encryption { key_md5: String::new(), ..block.clone() }],
                source_kms_key_id: "alias/test-default".into(),
                ..request.clone()
            },
            "blocks[0].key_md5: ",
        ),
        (pb::RewrapKeysRequest { destination_context: 9, ..request.clone() }, "destination_context: "),
        (pb::RewrapKeysRequest::default(), "recorded: required"),
    ] {
        let err = client.rewrap_keys(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }

    let request = pb::RewrapKeysRequest { source_kms_key_id: "alias/test-default".into(), ..request };
    let moved = client.rewrap_keys(request).await.unwrap().into_inner().keys.remove(0);
    assert_eq!(moved.rewrapped_from, wrapped.key_fingerprint, "a block the ledger knows is linked");
    let plain = client
        .unwrap_key(pb::UnwrapKeyRequest {
            encryption: moved.encryption.clone(),
            context: pb::ServiceContext::Mediaconvert as i32,
            kms_key_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plaintext_key, material);

    // The CLI: `keys lookup` and `keys rewrap` print the records as JSON.
    let cli = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["--addr", &broker.url()]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let found = cli(&["keys", "lookup", "--fingerprint", &moved.key_fingerprint]);
    assert_eq!(found[0]["Encryption"]["Key"], moved.encryption.as_ref().unwrap().key.as_str());
    assert_eq!(found[0]["Context"], MEDIACONVERT);
    assert_eq!(found[0]["RewrappedFrom"], wrapped.key_fingerprint.as_str());
    assert_eq!(found[0]["RecordedBy"]["Rpc"], "RewrapKeys");
    let file = dir.path().join("block.json");
    std::fs::write(&file, serde_json::to_string(&found[0]["Encryption"]).unwrap()).unwrap();
    let back = cli(&[
        "keys",
        "rewrap",
        "--encryption",
        file.to_str().unwrap(),
        "--from-context",
        "mediaconvert",
        "--from-kms-key-id",
        "alias/test-default",
        "--to-context",
        "elastic-transcoder",
    ]);
    assert_eq!(back[0]["Context"], ET);
    assert_eq!(back[0]["RewrappedFrom"], moved.key_fingerprint.as_str());
    let plain = client
        .unwrap_key(pb::UnwrapKeyRequest {
            encryption: Some(pb::Encryption {
                mode: back[0]["Encryption"]["Mode"].as_str().unwrap().into(),
                key: back[0]["Encryption"]["Key"].as_str().unwrap().into(),
                key_md5: back[0]["Encryption"]["KeyMd5"].as_str().unwrap().into(),
                initialization_vector: back[0]["Encryption"]["InitializationVector"].as_str().unwrap().into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.plaintext_key, material);
}
