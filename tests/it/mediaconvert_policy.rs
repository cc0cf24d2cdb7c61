//! The policy over `SubmitMediaConvertJob`, through real gRPC calls over
//! mutual TLS by two identities: a rule's `require_encrypted_outputs`
//! refuses a job with an unencrypted output group before any key is made,
//! for its identity only; moving an Elastic Transcoder input's key
//! (`rewrap_et_inputs`) needs a rule that names `RewrapKeys`.

use std::sync::Arc;

use keybroker::app::config::{PolicyConfig, TlsMode};
use keybroker::ledger::Filter;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::kms::ScriptedKms;
use crate::support::ledger_db::{Engine, LedgerDb};
use crate::support::mediaconvert::McEndpoint;
use crate::support::moto::Moto;
use crate::support::pki::Ca;

/// Its rule requires encrypted outputs and does not name `RewrapKeys`.
const STRICT: &str = "spiffe://test.example/media/strict";
/// Its rule requires nothing of outputs and names `RewrapKeys`.
const MIGRATOR: &str = "spiffe://test.example/media/migrator";
const ROLE: &str = "arn:aws:iam::111122223333:role/MediaConvert_Default_Role";

struct Rig {
    kms: Arc<ScriptedKms>,
    endpoint: McEndpoint,
    broker: TestBroker,
    db: LedgerDb,
    ca: Ca,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let db = LedgerDb::new(Engine::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keybroker MediaConvert policy test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\nidentity = \"{STRICT}\"\nrpcs = [\"IssueDataKey\", \"SubmitMediaConvertJob\"]\n\
             plaintext_export = true\nrequire_encrypted_outputs = true\n\n\
             [[rule]]\nidentity = \"{MIGRATOR}\"\nrpcs = [\"SubmitMediaConvertJob\", \"RewrapKeys\"]\n"
        ),
    )
    .unwrap();
    let mut config = aws_config(&kms_key);
    db.configure(&mut config);
    config.mediaconvert.submit = true;
    config.mediaconvert.output_kms_key_arn = Some(kms_key.clone());
    config.tls.mode = TlsMode::Mutual;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.client_ca_file = Some(ca.write(dir.path(), "client-ca"));
    config.policy = PolicyConfig { file: Some(policy), allow_all: false };
    let kms = ScriptedKms::counting(aws_kms(moto, &config).await);
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let client = endpoint.sdk_client(&moto.sdk_config());
    let broker = TestBroker::start_with_mediaconvert(config, kms.clone(), client, None).await;
    Rig { kms, endpoint, broker, db, ca, _dir: dir }
}

async fn client_as(rig: &Rig, identity: &str) -> KeyBrokerClient<Channel> {
    let leaf = rig.ca.client(identity);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&rig.ca.pem))
        .domain_name("localhost")
        .identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", rig.broker.addr.port())).unwrap();
    KeyBrokerClient::new(endpoint.tls_config(tls).unwrap().connect().await.unwrap())
}

fn request(job: &Value) -> pb::SubmitMediaConvertJobRequest {
    pb::SubmitMediaConvertJobRequest { create_job_json: job.to_string(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_requires_encrypted_outputs_refuses_a_plain_group_for_its_identity_only() {
    let rig = rig().await;
    let (mut strict, mut migrator) = (client_as(&rig, STRICT).await, client_as(&rig, MIGRATOR).await);
    let hls = json!({"Name": "HLS", "OutputGroupSettings": {"Type": "HLS_GROUP_SETTINGS", "HlsGroupSettings": {
        "Destination": "s3://out/hls/", "SegmentLength": 6, "MinSegmentLength": 0,
        "Encryption": {"EncryptionMethod": "AES128", "Type": "STATIC_KEY",
                       "StaticKeyProvider": {"Url": "https://keys.example.com/hls.key"}}}}});
    let file = json!({"Name": "File", "OutputGroupSettings": {"Type": "FILE_GROUP_SETTINGS",
        "FileGroupSettings": {"Destination": "s3://out/mp4/"}}});
    let job = json!({"Role": ROLE, "Settings": {"OutputGroups": [hls, file]}});
    let kms_before = rig.kms.count();

    let err = strict.submit_media_convert_job(request(&job)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().starts_with("Settings.OutputGroups[0]: writes unencrypted outputs"), "{}", err.message());
    assert!(err.message().contains("policy rule 1") && err.message().contains("require_encrypted_outputs"));
    assert_eq!(rig.kms.count(), kms_before, "refused before the static key was made");
    assert_eq!(rig.endpoint.request_count(), 0);

    // With SSE-KMS asked for, the same identity's job passes.
    let mut encrypted = request(&job);
    encrypted.encrypt_outputs = true;
    let answer = strict.submit_media_convert_job(encrypted).await.unwrap().into_inner();
    let groups = rig.endpoint.groups();
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|g| g.encryption_type.as_deref() == Some("SERVER_SIDE_ENCRYPTION_KMS")));
    assert!(groups.iter().all(|g| g.job_id == answer.job_id));

    // Another identity's rule requires nothing of its outputs.
    let plain = migrator.submit_media_convert_job(request(&job)).await.unwrap().into_inner();
    let groups = rig.endpoint.groups();
    assert_eq!(groups.len(), 4);
    assert!(groups[2..].iter().all(|g| g.job_id == plain.job_id && g.encryption_type.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_et_input_key_on_submit_needs_the_rewrap_keys_grant() {
    let rig = rig().await;
    let (mut strict, mut migrator) = (client_as(&rig, STRICT).await, client_as(&rig, MIGRATOR).await);
    let issued = strict
        .issue_data_key(pb::IssueDataKeyRequest {
            key_bits: 256,
            mode: "aes-ctr".to_owned(),
            return_plaintext: true,
            context: pb::ServiceContext::ElasticTranscoder as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = json!({"Role": ROLE, "Settings": {"Inputs": [{"FileInput": "s3://in/from-et.mp4"}]}});
    let mut req = request(&job);
    req.input_keys = vec![pb::MediaConvertInputKey { input_index: 0, key_fingerprint: issued.key_fingerprint.clone() }];
    req.rewrap_et_inputs = true;
    let ledger = rig.db.open().await;
    let moved = || Filter::RewrappedFrom(issued.key_fingerprint.clone());
    let kms_before = rig.kms.count();

    let err = strict.submit_media_convert_job(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("RewrapKeys"), "{}", err.message());
    assert_eq!(rig.endpoint.request_count(), 0, "nothing submitted");
    assert_eq!(rig.kms.count(), kms_before, "no ReEncrypt");
    assert!(ledger.find(&moved()).await.unwrap().is_empty(), "no ledger rows");

    let answer = migrator.submit_media_convert_job(req).await.unwrap().into_inner();
    let keys = rig.endpoint.input_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].job_id, answer.job_id);
    assert_eq!(keys[0].key, issued.plaintext_key, "KMS gives MediaConvert the ET key, moved to its context");
    assert_eq!(keys[0].mode, "AES_CTR");
    let rows = ledger.find(&moved()).await.unwrap();
    assert!(!rows.is_empty(), "the moved key is recorded, linked to the ET key");
    assert!(rows.iter().all(|row| row.origin.identity == MIGRATOR), "{rows:?}");
    assert_eq!(answer.keys[0].rewrapped_from, issued.key_fingerprint);
    ledger.close().await;
}
