//! EncryptObject and DecryptObject over real gRPC: every mode and edge size
//! round-trips, the ciphertext is what OpenSSL and Python `cryptography`
//! make and read with the same key, damaged objects end in DATA_LOSS with no
//! result, a 100 MiB stream, and the audit record. S3 mode is in
//! `object_s3`, the CLI in `object_cli`; both use the helpers here.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::custody::keys::EncryptionMode;
use keybroker::custody::kms::Kms;
use keybroker::objects::PIECE_LEN;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support;
use crate::support::broker::{TestBroker, local_config, local_keyring};
use crate::support::kms::ScriptedKms;
use crate::support::rng::Rng;
use crate::support::tools::{openssl_enc, python_with_cryptography};

pub(crate) const MODES: [&str; 3] = ["aes-cbc-pkcs7", "aes-ctr", "aes-gcm"];
pub(crate) const MIB: usize = 1 << 20;
const LOCAL_DEFAULT_ARN: &str = "arn:aws:kms:local:000000000000:alias/test-default";

// ---------------------------------------------------------------------------
// Helpers: data, streams, peers.

pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    Rng(seed | 1).bytes(len)
}

/// What a streaming call answered: the chunks, the result (if any), and
/// how the stream ended.
pub(crate) struct Streamed<R> {
    bytes: Vec<u8>,
    result: Option<R>,
    status: Result<(), Status>,
}

impl<R: std::fmt::Debug> Streamed<R> {
    pub(crate) fn ok(self) -> (Vec<u8>, R) {
        if let Err(status) = &self.status {
            panic!("the call failed: {:?}: {}", status.code(), status.message());
        }
        (self.bytes, self.result.expect("a successful stream ends with a result"))
    }

    /// Asserts the stream failed with `code` and carried no result.
    pub(crate) fn failed(self, code: Code) -> Status {
        assert!(self.result.is_none(), "a failed stream carried a result: {:?}", self.result);
        let status = self.status.expect_err("the call should have failed");
        assert_eq!(status.code(), code, "{}", status.message());
        status
    }
}

pub(crate) fn enc_start(mode: &str, key_bits: u32) -> pb::EncryptObjectStart {
    pb::EncryptObjectStart { mode: mode.into(), key_bits, ..Default::default() }
}

fn enc_messages(start: pb::EncryptObjectStart, plaintext: &[u8], chunk: usize) -> Vec<pb::EncryptObjectRequest> {
    use pb::encrypt_object_request::Message;
    let mut messages = vec![pb::EncryptObjectRequest { message: Some(Message::Start(start)) }];
    messages.extend(
        plaintext.chunks(chunk.max(1)).map(|c| pb::EncryptObjectRequest { message: Some(Message::Chunk(c.to_vec())) }),
    );
    messages
}

pub(crate) fn dec_messages(
    start: pb::DecryptObjectStart,
    ciphertext: &[u8],
    chunk: usize,
) -> Vec<pb::DecryptObjectRequest> {
    use pb::decrypt_object_request::Message;
    let mut messages = vec![pb::DecryptObjectRequest { message: Some(Message::Start(start)) }];
    messages.extend(
        ciphertext.chunks(chunk.max(1)).map(|c| pb::DecryptObjectRequest { message: Some(Message::Chunk(c.to_vec())) }),
    );
    messages
}

pub(crate) fn dec_start(encryption: &pb::Encryption) -> pb::DecryptObjectStart {
    pb::DecryptObjectStart { encryption: Some(encryption.clone()), ..Default::default() }
}

/// Runs EncryptObject with `messages` and collects everything it answers.
async fn encrypt_raw(
    client: &mut KeyBrokerClient<Channel>,
    messages: impl futures::Stream<Item = pb::EncryptObjectRequest> + Send + 'static,
) -> Streamed<pb::EncryptObjectResult> {
    use pb::encrypt_object_response::Message;
    let mut out = Streamed { bytes: Vec::new(), result: None, status: Ok(()) };
    let mut stream = match client.encrypt_object(messages).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            out.status = Err(status);
            return out;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(pb::EncryptObjectResponse { message: Some(Message::Chunk(bytes)) })) => {
                assert!(out.result.is_none(), "a chunk after the result");
                assert!(bytes.len() <= PIECE_LEN + 16, "a chunk of {} bytes", bytes.len());
                out.bytes.extend_from_slice(&bytes);
            }
            Ok(Some(pb::EncryptObjectResponse { message: Some(Message::Result(result)) })) => {
                assert!(out.result.is_none(), "two results");
                out.result = Some(result);
            }
            Ok(Some(other)) => panic!("an empty response message: {other:?}"),
            Ok(None) => return out,
            Err(status) => {
                out.status = Err(status);
                return out;
            }
        }
    }
}

pub(crate) async fn decrypt_raw(
    client: &mut KeyBrokerClient<Channel>,
    messages: impl futures::Stream<Item = pb::DecryptObjectRequest> + Send + 'static,
) -> Streamed<pb::DecryptObjectResult> {
    use pb::decrypt_object_response::Message;
    let mut out = Streamed { bytes: Vec::new(), result: None, status: Ok(()) };
    let mut stream = match client.decrypt_object(messages).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            out.status = Err(status);
            return out;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(pb::DecryptObjectResponse { message: Some(Message::Chunk(bytes)) })) => {
                assert!(out.result.is_none(), "a chunk after the result");
                assert!(bytes.len() <= PIECE_LEN + 16, "a chunk of {} bytes", bytes.len());
                out.bytes.extend_from_slice(&bytes);
            }
            Ok(Some(pb::DecryptObjectResponse { message: Some(Message::Result(result)) })) => {
                assert!(out.result.is_none(), "two results");
                out.result = Some(result);
            }
            Ok(Some(other)) => panic!("an empty response message: {other:?}"),
            Ok(None) => return out,
            Err(status) => {
                out.status = Err(status);
                return out;
            }
        }
    }
}

pub(crate) async fn encrypt(
    client: &mut KeyBrokerClient<Channel>,
    start: pb::EncryptObjectStart,
    plaintext: &[u8],
    chunk: usize,
) -> Streamed<pb::EncryptObjectResult> {
    encrypt_raw(client, futures::stream::iter(enc_messages(start, plaintext, chunk))).await
}

async fn decrypt(
    client: &mut KeyBrokerClient<Channel>,
    encryption: &pb::Encryption,
    ciphertext: &[u8],
    chunk: usize,
) -> Streamed<pb::DecryptObjectResult> {
    decrypt_raw(client, futures::stream::iter(dec_messages(dec_start(encryption), ciphertext, chunk))).await
}

/// The plaintext key of a block, through UnwrapKey (plaintext export on).
pub(crate) async fn unwrap(client: &mut KeyBrokerClient<Channel>, encryption: &pb::Encryption) -> Vec<u8> {
    client
        .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(encryption.clone()), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .plaintext_key
}

pub(crate) fn iv_of(encryption: &pb::Encryption) -> Vec<u8> {
    B64.decode(&encryption.initialization_vector).unwrap()
}

pub(crate) fn expected_len(mode: &str, plaintext: usize) -> usize {
    match mode {
        "aes-cbc-pkcs7" => (plaintext / 16 + 1) * 16,
        "aes-gcm" => plaintext + 16,
        _ => plaintext,
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What `openssl enc` writes for `plaintext` under this key and IV.
pub(crate) fn openssl_encrypt(dir: &Path, mode: &str, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mode = EncryptionMode::parse(mode, "mode").unwrap();
    let input = dir.join(format!("openssl-{}.in", uuid::Uuid::new_v4()));
    std::fs::write(&input, plaintext).unwrap();
    let out = openssl_enc(mode, key, iv, false, &input).output().unwrap();
    assert!(out.status.success(), "openssl enc: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Has Python `cryptography` decrypt every GCM object with
/// `AESGCM(key).decrypt(iv16, ct_and_tag, None)` and compare it with its
/// plaintext; panics on the first mismatch.
/// One GCM object for Python to check: key, IV, ciphertext with tag, plaintext.
type GcmCase = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

pub(crate) fn python_gcm_check(dir: &Path, cases: &[GcmCase]) {
    let mut manifest = String::new();
    for (i, (key, iv, ciphertext, plaintext)) in cases.iter().enumerate() {
        let ct = dir.join(format!("gcm-{i}.ct"));
        let pt = dir.join(format!("gcm-{i}.pt"));
        std::fs::write(&ct, ciphertext).unwrap();
        std::fs::write(&pt, plaintext).unwrap();
        manifest.push_str(&format!("{} {} {} {}\n", hex::encode(key), hex::encode(iv), ct.display(), pt.display()));
    }
    let list = dir.join("gcm-manifest.txt");
    std::fs::write(&list, manifest).unwrap();
    let script = r#"
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
n = 0
for line in open(sys.argv[1]):
    key, iv, ct, pt = line.split()
    got = AESGCM(bytes.fromhex(key)).decrypt(bytes.fromhex(iv), open(ct, 'rb').read(), None)
    if got != open(pt, 'rb').read():
        sys.exit('mismatch: ' + ct)
    n += 1
print(n)
"#;
    let out = Command::new(python_with_cryptography()).args(["-c", script]).arg(&list).output().unwrap();
    assert!(out.status.success(), "python cryptography: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cases.len().to_string());
}

// ---------------------------------------------------------------------------
// Streaming mode, local keyring.

/// (plaintext size, client chunk for EncryptObject, client chunk for
/// DecryptObject): the edge sizes, the broker's 1 MiB piece boundary ±1,
/// and odd chunkings that straddle blocks and pieces.
const CASES: [(usize, usize, usize); 10] = [
    (0, 1, 1),
    (1, 1, 1),
    (15, 1, 7),
    (16, 7, 1),
    (17, 16, 3),
    (PIECE_LEN - 1, 65_537, PIECE_LEN + 3),
    (PIECE_LEN, PIECE_LEN, 4_099),
    (PIECE_LEN + 1, PIECE_LEN + 3, PIECE_LEN),
    (3 * PIECE_LEN + 5, 2 * PIECE_LEN + 7, 999_983),
    (100_003, 100_003, 13),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_round_trips_at_every_edge_size_and_matches_openssl_and_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::local(dir.path()).await;
    let mut client = broker.client().await;
    let mut ivs = HashSet::new();
    let mut keys = Vec::new();
    let mut gcm_cases = Vec::new();
    for mode in MODES {
        for (i, (size, enc_chunk, dec_chunk)) in CASES.into_iter().enumerate() {
            let key_bits = [0, 128, 192, 256][i % 4];
            let plaintext = data(size, (i as u64) << 8 | mode.len() as u64);
            let (ciphertext, result) =
                encrypt(&mut client, enc_start(mode, key_bits), &plaintext, enc_chunk).await.ok();
            let what = format!("{mode}, {size} bytes, key_bits {key_bits}");

            let block = result.encryption.clone().unwrap();
            assert_eq!(block.mode, mode, "{what}");
            assert_eq!(result.kms_key_arn, LOCAL_DEFAULT_ARN, "{what}");
            assert_eq!(result.plaintext_bytes, size as u64, "{what}");
            assert_eq!(result.ciphertext_bytes, ciphertext.len() as u64, "{what}");
            assert_eq!(ciphertext.len(), expected_len(mode, size), "{what}");
            assert!(!result.key_fingerprint.is_empty(), "{what}");
            let iv = iv_of(&block);
            assert_eq!(iv.len(), 16, "{what}");
            assert!(ivs.insert(iv.clone()), "an IV repeated: {what}");

            let key = unwrap(&mut client, &block).await;
            assert_eq!(key.len(), if key_bits == 0 { 32 } else { key_bits as usize / 8 }, "{what}");
            assert_eq!(B64.decode(&block.key_md5).unwrap(), keybroker::custody::keys::md5_of(&key).to_vec(), "{what}");
            if mode == "aes-gcm" {
                gcm_cases.push((key.clone(), iv.clone(), ciphertext.clone(), plaintext.clone()));
            } else {
                let theirs = openssl_encrypt(dir.path(), mode, &key, &iv, &plaintext);
                assert!(theirs == ciphertext, "openssl enc wrote other bytes: {what}");
            }
            keys.push(key);

            let (decrypted, done) = decrypt(&mut client, &block, &ciphertext, dec_chunk).await.ok();
            assert_eq!(done.plaintext_bytes, size as u64, "{what}");
            assert!(decrypted == plaintext, "DecryptObject gave other bytes: {what}");
        }
    }
    python_gcm_check(dir.path(), &gcm_cases);
    support::logs::assert_no_key_logged(&keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_objects_end_in_data_loss_without_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::local(dir.path()).await;
    let mut client = broker.client().await;
    let plaintext = data(3 * PIECE_LEN + 100, 7);

    let (gcm, result) = encrypt(&mut client, enc_start("aes-gcm", 256), &plaintext, MIB).await.ok();
    let block = result.encryption.unwrap();
    let n = gcm.len();
    for (what, at) in [("first byte", 0), ("a body byte", n / 2), ("last body byte", n - 17), ("the tag", n - 5)] {
        let mut tampered = gcm.clone();
        tampered[at] ^= 0x01;
        let status = decrypt(&mut client, &block, &tampered, 65_536).await.failed(Code::DataLoss);
        assert!(status.message().contains("authentication"), "{what}: {}", status.message());
    }
    // Truncated: the tag cut off, and shorter than a tag.
    decrypt(&mut client, &block, &gcm[..n - 16], MIB).await.failed(Code::DataLoss);
    decrypt(&mut client, &block, &gcm[..10], MIB).await.failed(Code::DataLoss);
    decrypt(&mut client, &block, &[], MIB).await.failed(Code::DataLoss);
    // One byte appended.
    let mut longer = gcm.clone();
    longer.push(0);
    decrypt(&mut client, &block, &longer, MIB).await.failed(Code::DataLoss);

    let aligned = data(4096, 9);
    let (cbc, result) = encrypt(&mut client, enc_start("aes-cbc-pkcs7", 128), &aligned, 1000).await.ok();
    let block = result.encryption.unwrap();
    let status = decrypt(&mut client, &block, &cbc[..cbc.len() - 1], 333).await.failed(Code::DataLoss);
    assert!(status.message().contains("truncated"), "{}", status.message());
    decrypt(&mut client, &block, &cbc[..cbc.len() - 16], 333).await.failed(Code::DataLoss);
    decrypt(&mut client, &block, &[], 333).await.failed(Code::DataLoss);
    // The last plaintext block is all padding (0x10 x 16): flipping the last
    // byte of the block before turns its last byte into 0x11, invalid.
    let mut bad_padding = cbc.clone();
    let at = bad_padding.len() - 17;
    bad_padding[at] ^= 0x01;
    let status = decrypt(&mut client, &block, &bad_padding, 4096).await.failed(Code::DataLoss);
    assert!(status.message().contains("padding"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_protocol_is_enforced_and_fields_are_named() {
    use pb::encrypt_object_request::Message;
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::local(dir.path()).await;
    let mut client = broker.client().await;
    let chunk = |bytes: &[u8]| pb::EncryptObjectRequest { message: Some(Message::Chunk(bytes.to_vec())) };
    let start = |s: pb::EncryptObjectStart| pb::EncryptObjectRequest { message: Some(Message::Start(s)) };

    let err = encrypt_raw(&mut client, futures::stream::iter([chunk(b"early")])).await.failed(Code::InvalidArgument);
    assert!(err.message().starts_with("chunk:"), "{}", err.message());
    let twice = [start(enc_start("aes-gcm", 0)), chunk(b"x"), start(enc_start("aes-gcm", 0))];
    let err = encrypt_raw(&mut client, futures::stream::iter(twice)).await.failed(Code::InvalidArgument);
    assert!(err.message().starts_with("start:"), "{}", err.message());
    let err = encrypt_raw(&mut client, futures::stream::iter([])).await.failed(Code::InvalidArgument);
    assert!(err.message().starts_with("start:"), "{}", err.message());
    let empty = pb::EncryptObjectRequest { message: None };
    let err = encrypt_raw(&mut client, futures::stream::iter([empty])).await.failed(Code::InvalidArgument);
    assert!(err.message().starts_with("message:"), "{}", err.message());

    for (bad, field) in [
        (enc_start("aes-xts", 0), "start.mode"),
        (enc_start("s3", 0), "start.mode"),
        (enc_start("aes-gcm", 64), "start.key_bits"),
        (pb::EncryptObjectStart { context: 9, ..enc_start("aes-gcm", 0) }, "start.context"),
        (pb::EncryptObjectStart { kms_key_id: "x".repeat(3000), ..enc_start("aes-gcm", 0) }, "start.kms_key_id"),
        (
            pb::EncryptObjectStart {
                source: Some(pb::S3Location { bucket: "b".into(), key: "k".into() }),
                ..enc_start("aes-gcm", 0)
            },
            "start.destination",
        ),
        (
            pb::EncryptObjectStart {
                source: Some(pb::S3Location { bucket: "b".into(), key: String::new() }),
                destination: Some(pb::S3Location { bucket: "b".into(), key: "k".into() }),
                ..enc_start("aes-gcm", 0)
            },
            "start.source.key",
        ),
    ] {
        let err = encrypt(&mut client, bad, b"data", 4).await.failed(Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }

    // DecryptObject names the block's fields under start.
    let (_, result) = encrypt(&mut client, enc_start("aes-ctr", 0), b"data", 4).await.ok();
    let block = result.encryption.unwrap();
    for (bad, field) in [
        (
            pb::Encryption { initialization_vector: B64.encode([0u8; 12]), ..block.clone() },
            "start.encryption.initialization_vector",
        ),
        (
            pb::Encryption { initialization_vector: String::new(), ..block.clone() },
            "start.encryption.initialization_vector",
        ),
        (pb::Encryption { key: String::new(), ..block.clone() }, "start.encryption.key"),
        (pb::Encryption { key_md5: B64.encode([0u8; 16]), ..block.clone() }, "start.encryption.key_md5"),
        (pb::Encryption { mode: "s3".into(), ..block.clone() }, "start.encryption.mode"),
    ] {
        let err = decrypt(&mut client, &bad, b"data", 4).await.failed(Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }
    let missing = pb::DecryptObjectStart::default();
    let err = decrypt_raw(&mut client, futures::stream::iter(dec_messages(missing, b"", 1)))
        .await
        .failed(Code::InvalidArgument);
    assert!(err.message().starts_with("start.encryption"), "{}", err.message());

    // A server without an S3 client refuses S3 mode, saying why.
    let s3 = pb::EncryptObjectStart {
        source: Some(pb::S3Location { bucket: "b".into(), key: "in".into() }),
        destination: Some(pb::S3Location { bucket: "b".into(), key: "out".into() }),
        ..enc_start("aes-gcm", 0)
    };
    let err = encrypt(&mut client, s3, b"", 1).await.failed(Code::FailedPrecondition);
    assert!(err.message().contains("S3 mode"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decryption_is_refused_before_any_kms_call_when_export_is_off_and_encryption_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.allow_plaintext_export = false;
    let counting = ScriptedKms::counting(local_keyring(&config));
    let broker = TestBroker::start(config, Some(counting.clone() as Arc<dyn Kms>)).await;
    let mut client = broker.client().await;

    // The key never leaves the broker, so encryption needs no export.
    let plaintext = data(5000, 3);
    let (ciphertext, result) = encrypt(&mut client, enc_start("aes-gcm", 0), &plaintext, 999).await.ok();
    let calls = counting.count();
    assert_eq!(calls, 1, "one wrap per encryption");

    let err = decrypt(&mut client, result.encryption.as_ref().unwrap(), &ciphertext, 999)
        .await
        .failed(Code::PermissionDenied);
    assert!(err.message().contains("DecryptObject"), "{}", err.message());
    assert_eq!(counting.count(), calls, "a refused DecryptObject reached KMS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_audited_and_an_unwritable_audit_log_withholds_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    let audit = dir.path().join("audit.jsonl");
    config.audit.file = Some(audit.clone());
    let broker = TestBroker::start(config, None).await;
    let mut client = broker.client().await;

    let plaintext = data(70_000, 5);
    let (ciphertext, result) = encrypt(&mut client, enc_start("aes-cbc-pkcs7", 0), &plaintext, 4096).await.ok();
    let block = result.encryption.clone().unwrap();
    decrypt(&mut client, &block, &ciphertext, 4096).await.ok();
    let mut tampered = ciphertext.clone();
    let at = tampered.len() - 17;
    tampered[at] ^= 1;
    decrypt(&mut client, &block, &tampered, 4096).await.failed(Code::DataLoss);

    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |rpc: &str| records.iter().filter(|r| r["rpc"] == rpc).cloned().collect::<Vec<_>>();
    let encrypted = of("EncryptObject");
    assert_eq!(encrypted.len(), 1, "{records:?}");
    assert_eq!(encrypted[0]["outcome"], "ok");
    assert_eq!(encrypted[0]["kms_key_arn"], LOCAL_DEFAULT_ARN);
    assert_eq!(encrypted[0]["key_fingerprints"], serde_json::json!([result.key_fingerprint]));
    let decrypted = of("DecryptObject");
    assert_eq!(decrypted.len(), 2, "{records:?}");
    assert_eq!(decrypted[0]["outcome"], "ok");
    assert_eq!(decrypted[0]["key_fingerprints"], serde_json::json!([result.key_fingerprint]));
    assert_eq!((decrypted[1]["outcome"].as_str(), decrypted[1]["code"].as_str()), (Some("error"), Some("DataLoss")));

    // The log goes away: the call fails closed, with no Encryption block.
    std::fs::remove_file(&audit).unwrap();
    let err = encrypt(&mut client, enc_start("aes-gcm", 0), &plaintext, 4096).await.failed(Code::Unavailable);
    assert!(err.message().contains("audit log"), "{}", err.message());
    decrypt(&mut client, &block, &ciphertext, 4096).await.failed(Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_stream_round_trips() {
    use pb::encrypt_object_request::Message;
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::local(dir.path()).await;
    let mut client = broker.client().await;
    const TOTAL: usize = 100 * MIB;
    const CHUNK: usize = MIB + 13;

    // The plaintext is made as it is sent and only its digest kept.
    let (digest_tx, digest_rx) = oneshot::channel();
    let mut rng = Rng(0xC0FFEE);
    let mut hasher = Some(Sha256::new());
    let mut digest_tx = Some(digest_tx);
    let mut sent = 0usize;
    let start = std::iter::once(pb::EncryptObjectRequest { message: Some(Message::Start(enc_start("aes-gcm", 0))) });
    let chunks = std::iter::from_fn(move || {
        if sent == TOTAL {
            if let (Some(h), Some(tx)) = (hasher.take(), digest_tx.take()) {
                let _ = tx.send(<[u8; 32]>::from(h.finalize()));
            }
            return None;
        }
        let len = CHUNK.min(TOTAL - sent);
        let chunk = rng.bytes(len);
        hasher.as_mut().unwrap().update(&chunk);
        sent += len;
        Some(pb::EncryptObjectRequest { message: Some(Message::Chunk(chunk)) })
    });
    let started = Instant::now();
    let (ciphertext, result) = encrypt_raw(&mut client, futures::stream::iter(start.chain(chunks))).await.ok();
    let plaintext_digest = digest_rx.await.unwrap();
    assert_eq!(result.plaintext_bytes, TOTAL as u64);
    assert_eq!(ciphertext.len(), TOTAL + 16);

    let block = result.encryption.unwrap();
    let mut stream = client
        .decrypt_object(futures::stream::iter(dec_messages(dec_start(&block), &ciphertext, 4 * MIB - 64)))
        .await
        .unwrap()
        .into_inner();
    drop(ciphertext);
    let mut hasher = Sha256::new();
    let mut result = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.message.unwrap() {
            pb::decrypt_object_response::Message::Chunk(bytes) => hasher.update(&bytes),
            pb::decrypt_object_response::Message::Result(r) => result = Some(r),
        }
    }
    assert_eq!(result.unwrap().plaintext_bytes, TOTAL as u64);
    assert_eq!(<[u8; 32]>::from(hasher.finalize()), plaintext_digest, "SHA-256 of the decrypted stream");
    eprintln!("100 MiB encrypted and decrypted in {:?} (debug build)", started.elapsed());
}
