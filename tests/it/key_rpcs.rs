//! IssueDataKey, WrapKey and UnwrapKey over real gRPC, against both KMS
//! backends: AWS KMS (the local moto server over HTTP) and the embedded
//! keyring. Every property is proved by asking KMS itself, not the broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::custody::keys::{ServiceContext, WrappedKey};
use keybroker::custody::kms::{Kms, LocalKeyring};
use keybroker::pb;
use tonic::Code;

use crate::support;
use crate::support::broker::{TestBroker, issue};
use crate::support::moto::Moto;

/// Where the keys are wrapped, and a way to ask that KMS directly.
enum Peer {
    Aws { moto: &'static Moto, key_arn: String },
    Local { dir: tempfile::TempDir },
}

struct Harness {
    broker: TestBroker,
    peer: Peer,
}

impl Harness {
    async fn aws() -> Harness {
        let moto = Moto::shared();
        let key_arn = moto.create_key().await;
        let broker = TestBroker::aws(moto, &key_arn).await;
        Harness { broker, peer: Peer::Aws { moto, key_arn } }
    }

    async fn local() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let broker = TestBroker::local(dir.path()).await;
        Harness { broker, peer: Peer::Local { dir } }
    }

    /// Decrypts `key` (base64) with the KMS itself under `context`
    /// (`None`: no context at all). Errors are KMS's words.
    async fn kms_decrypt(&self, key_b64: &str, context: Option<HashMap<String, String>>) -> Result<Vec<u8>, String> {
        let blob = B64.decode(key_b64).unwrap();
        match &self.peer {
            Peer::Aws { moto, .. } => moto
                .kms()
                .decrypt()
                .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
                .set_encryption_context(context)
                .send()
                .await
                .map(|out| out.plaintext.unwrap().into_inner())
                .map_err(|e| format!("{:?}", e.into_service_error())),
            Peer::Local { dir } => {
                // A second keyring instance on the same master key file.
                let ring = LocalKeyring::open_or_create(&dir.path().join("master.key")).unwrap();
                let context = match context.as_ref().and_then(|c| c.get("service")).map(String::as_str) {
                    Some("elastictranscoder.amazonaws.com") => ServiceContext::ElasticTranscoder,
                    Some("mediaconvert.amazonaws.com") => ServiceContext::MediaConvert,
                    _ => return Err("the local keyring takes only service contexts".to_owned()),
                };
                ring.unwrap(None, &WrappedKey::new(blob), context)
                    .await
                    .map(|u| u.key.expose_secret().to_vec())
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn default_key_arn(&self) -> String {
        match &self.peer {
            Peer::Aws { key_arn, .. } => key_arn.clone(),
            Peer::Local { .. } => "arn:aws:kms:local:000000000000:alias/test-default".to_owned(),
        }
    }
}

fn et_context() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("service".to_owned(), "elastictranscoder.amazonaws.com".to_owned())]))
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aws() {
                super::$name(super::Harness::aws().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Harness::local().await).await;
            }
        }
    )*};
}

on_both_backends!(
    issued_key_decrypts_only_under_the_et_context,
    key_lengths_follow_key_bits,
    ivs_never_repeat_over_10000_keys,
    wrap_key_round_trips_the_callers_bytes,
    unwrap_key_checks_key_md5,
    mediaconvert_context_is_a_different_context,
);

async fn issued_key_decrypts_only_under_the_et_context(h: Harness) {
    let mut client = h.broker.client().await;
    let mut req = issue(256, "aes-gcm");
    req.return_plaintext = true;
    let resp = client.issue_data_key(req).await.unwrap().into_inner();
    let block = resp.encryption.unwrap();
    assert_eq!(block.mode, "aes-gcm");
    assert_eq!(resp.kms_key_arn, h.default_key_arn());

    let plaintext = h.kms_decrypt(&block.key, et_context()).await.unwrap();
    assert_eq!(plaintext, resp.plaintext_key, "KMS unwraps the key the broker returned");
    assert_eq!(plaintext.len(), 32);
    assert_eq!(B64.decode(&block.key_md5).unwrap(), keybroker::custody::keys::md5_of(&plaintext).to_vec());
    assert_eq!(B64.decode(&block.initialization_vector).unwrap().len(), 16);

    let wrong = Some(HashMap::from([("service".to_owned(), "s3.amazonaws.com".to_owned())]));
    assert!(h.kms_decrypt(&block.key, wrong).await.is_err(), "a wrong context must fail");
    assert!(h.kms_decrypt(&block.key, None).await.is_err(), "no context must fail");
    support::logs::assert_no_key_logged(&[plaintext]);
}

async fn key_lengths_follow_key_bits(h: Harness) {
    let mut client = h.broker.client().await;
    for (bits, len) in [(128, 16), (192, 24), (256, 32), (0, 32)] {
        for mode in ["aes-cbc-pkcs7", "aes-ctr", "aes-gcm"] {
            let block = client.issue_data_key(issue(bits, mode)).await.unwrap().into_inner().encryption.unwrap();
            let key = h.kms_decrypt(&block.key, et_context()).await.unwrap();
            assert_eq!(key.len(), len, "{bits} bits in {mode}");
            assert_eq!(block.mode, mode);
            assert_eq!(B64.decode(&block.key_md5).unwrap(), keybroker::custody::keys::md5_of(&key).to_vec());
        }
    }
}

async fn ivs_never_repeat_over_10000_keys(h: Harness) {
    let channel = h.broker.channel().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = pb::key_broker_client::KeyBrokerClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(625);
            for _ in 0..625 {
                let resp = client.issue_data_key(issue(128, "aes-ctr")).await.unwrap().into_inner();
                let block = resp.encryption.unwrap();
                out.push((block.initialization_vector, block.key));
            }
            out
        }));
    }
    let mut ivs = HashSet::new();
    let mut keys = HashSet::new();
    for task in tasks {
        for (iv, key) in task.await.unwrap() {
            assert_eq!(B64.decode(&iv).unwrap().len(), 16);
            assert!(ivs.insert(iv), "an IV repeated");
            assert!(keys.insert(key), "a wrapped key repeated");
        }
    }
    assert_eq!(ivs.len(), 10_000);
}

async fn wrap_key_round_trips_the_callers_bytes(h: Harness) {
    let mut client = h.broker.client().await;
    let mut secrets = Vec::new();
    for len in [16usize, 24, 32] {
        let material: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37).wrapping_add(len as u8)).collect();
        let iv: Vec<u8> = (100..116).collect();
        let resp = client
            .wrap_key(pb::WrapKeyRequest {
                plaintext_key: material.clone(),
                mode: "aes-ctr".to_owned(),
                initialization_vector: iv.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let block = resp.encryption.unwrap();
        assert_eq!(h.kms_decrypt(&block.key, et_context()).await.unwrap(), material);
        assert_eq!(B64.decode(&block.initialization_vector).unwrap(), iv, "the caller's IV is kept");
        assert_eq!(B64.decode(&block.key_md5).unwrap(), keybroker::custody::keys::md5_of(&material).to_vec());
        assert!(resp.key_fingerprint.starts_with("hmac-sha256:"));
        secrets.push(material);
    }
    support::logs::assert_no_key_logged(&secrets);
}

async fn unwrap_key_checks_key_md5(h: Harness) {
    let mut client = h.broker.client().await;
    let block = client.issue_data_key(issue(192, "aes-cbc-pkcs7")).await.unwrap().into_inner().encryption.unwrap();
    let resp = client
        .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(block.clone()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.plaintext_key, h.kms_decrypt(&block.key, et_context()).await.unwrap());
    assert_eq!(resp.initialization_vector, B64.decode(&block.initialization_vector).unwrap());
    assert_eq!(resp.kms_key_arn, h.default_key_arn());

    let mut wrong_md5 = block.clone();
    wrong_md5.key_md5 = B64.encode([0u8; 16]);
    let err = client
        .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(wrong_md5), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("encryption.key_md5: "), "{}", err.message());

    let mut flipped = B64.decode(&block.key).unwrap();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let mut tampered = block.clone();
    tampered.key = B64.encode(&flipped);
    let err =
        client.unwrap_key(pb::UnwrapKeyRequest { encryption: Some(tampered), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("encryption.key: "), "{}", err.message());
    support::logs::assert_no_key_logged(&[resp.plaintext_key]);
}

async fn mediaconvert_context_is_a_different_context(h: Harness) {
    let mut client = h.broker.client().await;
    let mut req = issue(256, "aes-ctr");
    req.context = pb::ServiceContext::Mediaconvert as i32;
    let block = client.issue_data_key(req).await.unwrap().into_inner().encryption.unwrap();
    let mc = Some(HashMap::from([("service".to_owned(), "mediaconvert.amazonaws.com".to_owned())]));
    assert_eq!(h.kms_decrypt(&block.key, mc).await.unwrap().len(), 32);
    assert!(h.kms_decrypt(&block.key, et_context()).await.is_err());
}

#[tokio::test]
async fn plaintext_export_is_refused_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::broker::local_config(dir.path());
    config.allow_plaintext_export = false;
    let broker = TestBroker::start(config, None).await;
    let mut client = broker.client().await;

    let mut req = issue(256, "aes-gcm");
    req.return_plaintext = true;
    let err = client.issue_data_key(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("allow_plaintext_export"), "{}", err.message());

    let resp = client.issue_data_key(issue(256, "aes-gcm")).await.unwrap().into_inner();
    assert!(resp.plaintext_key.is_empty(), "no plaintext unless asked and allowed");
    let err = client
        .unwrap_key(pb::UnwrapKeyRequest { encryption: resp.encryption, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn every_invalid_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::broker::local_config(dir.path());
    config.kms.default_key_id = None;
    let broker = TestBroker::start(config, None).await;
    let mut client = broker.client().await;
    let ok_key = "alias/x".to_owned();

    let issue_cases: Vec<(pb::IssueDataKeyRequest, &str)> = vec![
        (
            pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), mode: "aes-xts".into(), ..Default::default() },
            "mode: must be aes-cbc-pkcs7, aes-ctr or aes-gcm",
        ),
        (
            pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), mode: "AES-GCM".into(), ..Default::default() },
            "mode: must be",
        ),
        (
            pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), mode: "s3".into(), ..Default::default() },
            "mode: must be",
        ),
        (
            pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), key_bits: 64, ..Default::default() },
            "key_bits: must be 128, 192 or 256",
        ),
        (
            pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), key_bits: 512, ..Default::default() },
            "key_bits: must be 128, 192 or 256",
        ),
        (pb::IssueDataKeyRequest { kms_key_id: String::new(), ..Default::default() }, "kms_key_id: required"),
        (
            pb::IssueDataKeyRequest { kms_key_id: "k".repeat(2049), ..Default::default() },
            "kms_key_id: must be at most 2048 bytes",
        ),
        (
            pb::IssueDataKeyRequest { kms_key_id: "alias/has space".into(), ..Default::default() },
            "kms_key_id: must be a key id",
        ),
        (
            pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), context: 7, ..Default::default() },
            "context: unknown service context 7",
        ),
    ];
    for (req, expected) in issue_cases {
        let err = client.issue_data_key(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(expected), "{:?} does not start with {expected:?}", err.message());
    }

    let wrap_cases: Vec<(pb::WrapKeyRequest, &str)> = vec![
        (
            pb::WrapKeyRequest { kms_key_id: ok_key.clone(), plaintext_key: vec![7; 15], ..Default::default() },
            "plaintext_key: must be 16, 24 or 32 bytes",
        ),
        (
            pb::WrapKeyRequest { kms_key_id: ok_key.clone(), plaintext_key: vec![], ..Default::default() },
            "plaintext_key: must be 16, 24 or 32 bytes",
        ),
        (
            pb::WrapKeyRequest {
                kms_key_id: ok_key.clone(),
                plaintext_key: vec![7; 16],
                initialization_vector: vec![1; 12],
                ..Default::default()
            },
            "initialization_vector: must be exactly 16 bytes",
        ),
        (
            pb::WrapKeyRequest {
                kms_key_id: ok_key.clone(),
                plaintext_key: vec![7; 16],
                mode: "aes-ofb".into(),
                ..Default::default()
            },
            "mode: must be",
        ),
        (
            pb::WrapKeyRequest {
                kms_key_id: ok_key.clone(),
                plaintext_key: vec![7; 16],
                context: -1,
                ..Default::default()
            },
            "context: unknown service context",
        ),
    ];
    for (req, expected) in wrap_cases {
        let err = client.wrap_key(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(expected), "{:?} does not start with {expected:?}", err.message());
    }

    let good = client
        .issue_data_key(pb::IssueDataKeyRequest { kms_key_id: ok_key.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .encryption
        .unwrap();
    let unwrap_cases: Vec<(pb::Encryption, &str)> = vec![
        (pb::Encryption { key: "not base64!".into(), ..good.clone() }, "encryption.key: must be standard base64"),
        (pb::Encryption { key: String::new(), ..good.clone() }, "encryption.key: required"),
        (
            pb::Encryption { key_md5: "AAAA".into(), ..good.clone() },
            "encryption.key_md5: must be base64 of a 16-byte MD5",
        ),
        (pb::Encryption { mode: "aes-128".into(), ..good.clone() }, "encryption.mode: must be"),
        (
            pb::Encryption { initialization_vector: B64.encode([1u8; 12]), ..good.clone() },
            "encryption.initialization_vector: must be exactly 16 bytes, got 12",
        ),
    ];
    for (block, expected) in unwrap_cases {
        let err = client
            .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(block), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(expected), "{:?} does not start with {expected:?}", err.message());
    }
    let err = client.unwrap_key(pb::UnwrapKeyRequest::default()).await.unwrap_err();
    assert!(err.message().starts_with("encryption: required"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_errors_map_to_actionable_codes() {
    let moto = Moto::shared();
    let key_arn = moto.create_key().await;
    let broker = TestBroker::aws(moto, &key_arn).await;
    let mut client = broker.client().await;

    let mut req = issue(256, "aes-gcm");
    req.kms_key_id = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000".into();
    let err = client.issue_data_key(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("KMS Encrypt failed"), "{}", err.message());

    // An alias resolves to its key's ARN.
    let alias = format!("alias/keybroker-test-{}", uuid::Uuid::new_v4());
    moto.create_alias(&alias, &key_arn).await;
    let mut req = issue(256, "aes-gcm");
    req.kms_key_id = alias;
    let resp = client.issue_data_key(req).await.unwrap().into_inner();
    assert_eq!(resp.kms_key_arn, key_arn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_is_unavailable_within_the_deadline() {
    let mut moto = Moto::private();
    let key_arn = moto.create_key().await;
    let broker = TestBroker::aws(&moto, &key_arn).await;
    let deadline = broker.config.aws.call_timeout();
    let mut client = broker.client().await;
    client.issue_data_key(issue(256, "aes-ctr")).await.unwrap();

    moto.kill();
    let started = Instant::now();
    let err = client.issue_data_key(issue(256, "aes-ctr")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("KMS Encrypt"), "{}", err.message());
    assert!(took <= deadline + Duration::from_millis(500), "took {took:?}, deadline {deadline:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_that_hangs_is_cut_off_at_the_deadline() {
    // A TCP peer that accepts and never answers: the SDK's attempt and
    // operation timeouts must end the call.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let hold = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(8).collect();
        std::thread::sleep(Duration::from_secs(10));
        drop(conns);
    });
    let mut config = support::broker::aws_config("alias/none");
    config.aws.call_timeout_ms = 1_500;
    config.aws.attempt_timeout_ms = 500;
    let fake = Moto::at(&url);
    let kms = support::broker::aws_kms(&fake, &config).await;
    let broker = TestBroker::start(config, Some(kms)).await;
    let mut client = broker.client().await;
    let started = Instant::now();
    let err = client.issue_data_key(issue(256, "aes-ctr")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(started.elapsed() < Duration::from_millis(2_500), "took {:?}", started.elapsed());
    drop(hold);
}

#[tokio::test]
async fn health_and_reflection_serve_polyglot_tooling() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;

    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::local(dir.path()).await;
    let channel = broker.channel().await;

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "keybroker.v1.KeyBroker"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut stream =
        V1alpha::new(channel.clone()).server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(AlphaResponse::ListServicesResponse(list)) = stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: HashSet<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains("keybroker.v1.KeyBroker") && names.contains("grpc.health.v1.Health"), "{names:?}");

    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::FileContainingSymbol("grpc.health.v1.Health".into())),
    };
    let mut stream = V1::new(channel).server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(V1Response::FileDescriptorResponse(files)) = stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("the health service's descriptors are not registered");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls_and_flips_health() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let dir = tempfile::tempdir().unwrap();
    let config = support::broker::local_config(dir.path());
    let ring = support::broker::local_keyring(&config);
    let slow = crate::support::kms::ScriptedKms::delayed(ring, Duration::from_millis(800));
    let mut broker = TestBroker::start(config, Some(slow.clone() as Arc<dyn Kms>)).await;
    let channel = broker.channel().await;

    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

    let mut client = pb::key_broker_client::KeyBrokerClient::new(channel);
    let in_flight = tokio::spawn(async move { client.issue_data_key(issue(256, "aes-gcm")).await });
    // Stop only once the call is inside the broker, waiting on KMS.
    while slow.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.begin_stop();
    let flipped = watch.message().await.unwrap().unwrap().status;
    assert_eq!(flipped, ServingStatus::NotServing as i32);

    let addr = broker.addr;
    let answered = in_flight.await.unwrap();
    assert!(answered.is_ok(), "the in-flight call finished: {answered:?}");
    broker.join().await.unwrap();
    assert!(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_calls_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::local(dir.path()).await;
    let out = tokio::process::Command::new(support::tools::python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpcio_client.py"))
        .arg("--addr")
        .arg(broker.addr.to_string())
        .arg("--proto-root")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto"))
        .output()
        .await
        .expect("run python (the test command installs grpcio and grpcio-tools into .venv)");
    assert!(out.status.success(), "python client failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Check the Python client's results against the keyring itself.
    let h = Harness { broker, peer: Peer::Local { dir } };
    let issued = &answer["issued"];
    let key = h.kms_decrypt(issued["Key"].as_str().unwrap(), et_context()).await.unwrap();
    assert_eq!(key.len(), 16);
    assert_eq!(B64.encode(keybroker::custody::keys::md5_of(&key)), issued["KeyMd5"].as_str().unwrap());
    let wrapped = &answer["wrapped"];
    let material = hex::decode(answer["wrapped_material_hex"].as_str().unwrap()).unwrap();
    assert_eq!(h.kms_decrypt(wrapped["Key"].as_str().unwrap(), et_context()).await.unwrap(), material);
    assert_eq!(answer["bad_key_bits_code"], "INVALID_ARGUMENT");
    assert_eq!(answer["health"], "SERVING");
}
