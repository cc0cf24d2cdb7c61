//! EncryptObject and DecryptObject in S3 mode against moto's S3 and KMS:
//! multipart objects round-trip, every mode on small objects, failures name
//! the location, and a failed tag leaves no destination.

use keybroker::app::config::Config;
use keybroker::objects::ObjectsSettings;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::object_rpcs::{
    MIB, MODES, Streamed, data, dec_messages, dec_start, decrypt_raw, enc_start, encrypt, expected_len, iv_of,
    openssl_encrypt, python_gcm_check, sha256, unwrap,
};
use crate::support;
use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::moto::Moto;
use crate::support::s3::S3Proxy;

/// A broker over moto's KMS that reads and writes objects in moto's S3,
/// with an S3 client of the test's own and a fresh bucket.
struct S3Broker {
    broker: TestBroker,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Broker {
    /// `part_size`: the multipart part size, in bytes.
    async fn start(part_size: usize) -> S3Broker {
        let moto = Moto::shared();
        let key_arn = moto.create_key().await;
        let mut config: Config = aws_config(&key_arn);
        config.s3.force_path_style = true;
        config.s3.part_size_mib = part_size >> 20;
        let kms = aws_kms(moto, &config).await;
        let settings = ObjectsSettings { force_path_style: true, part_size, ..ObjectsSettings::default() };
        let sdk = moto.sdk_config().into_builder().endpoint_url(S3Proxy::spawn(&moto.url).await.url).build();
        let s3 = keybroker::objects::s3_client(&sdk, &settings);
        let bucket = format!("kb-objects-{}", uuid::Uuid::new_v4().simple());
        s3.create_bucket().bucket(&bucket).send().await.expect("moto CreateBucket");
        let broker = TestBroker::start_with_peers(config, kms, None, Some(s3.clone())).await;
        S3Broker { broker, s3, bucket }
    }

    async fn client(&self) -> KeyBrokerClient<Channel> {
        self.broker.client().await
    }

    fn location(&self, key: &str) -> Option<pb::S3Location> {
        Some(pb::S3Location { bucket: self.bucket.clone(), key: key.into() })
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.s3.put_object().bucket(&self.bucket).key(key).body(bytes.into()).send().await.unwrap();
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        let object = self.s3.get_object().bucket(&self.bucket).key(key).send().await.unwrap();
        object.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// The object's ETag, or `None` when it does not exist.
    async fn etag(&self, key: &str) -> Option<String> {
        match self.s3.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Some(head.e_tag().unwrap_or_default().to_owned()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => None,
            Err(e) => panic!("HeadObject {key}: {e:?}"),
        }
    }

    async fn pending_uploads(&self) -> usize {
        let listed = self.s3.list_multipart_uploads().bucket(&self.bucket).send().await.unwrap();
        listed.uploads().len()
    }

    async fn encrypt(&self, mode: &str, from: &str, to: &str) -> Streamed<pb::EncryptObjectResult> {
        let start = pb::EncryptObjectStart {
            source: self.location(from),
            destination: self.location(to),
            ..enc_start(mode, 0)
        };
        encrypt(&mut self.client().await, start, &[], 1).await
    }

    async fn decrypt(&self, block: &pb::Encryption, from: &str, to: &str) -> Streamed<pb::DecryptObjectResult> {
        let start =
            pb::DecryptObjectStart { source: self.location(from), destination: self.location(to), ..dec_start(block) };
        decrypt_raw(&mut self.client().await, futures::stream::iter(dec_messages(start, &[], 1))).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mode_round_trips_a_multipart_object_and_a_failed_tag_leaves_no_destination() {
    let s3 = S3Broker::start(keybroker::objects::DEFAULT_PART_SIZE).await;
    let mut client = s3.client().await;
    let plaintext = data(20 * MIB + 5, 11);
    s3.put("in/clip.mov", plaintext.clone()).await;

    let (chunks, result) = s3.encrypt("aes-gcm", "in/clip.mov", "enc/clip.mov").await.ok();
    assert!(chunks.is_empty(), "S3 mode streams no chunks");
    assert_eq!(result.plaintext_bytes, plaintext.len() as u64);
    assert_eq!(result.ciphertext_bytes, plaintext.len() as u64 + 16);
    let etag = s3.etag("enc/clip.mov").await.expect("the encrypted object exists");
    assert!(etag.trim_matches('"').ends_with("-3"), "a 3-part multipart upload, got ETag {etag}");

    // Independent check: Python cryptography reads the object S3 holds.
    let block = result.encryption.unwrap();
    let ciphertext = s3.get("enc/clip.mov").await;
    assert_eq!(ciphertext.len() as u64, result.ciphertext_bytes);
    let key = unwrap(&mut client, &block).await;
    let dir = tempfile::tempdir().unwrap();
    python_gcm_check(dir.path(), &[(key.clone(), iv_of(&block), ciphertext.clone(), plaintext.clone())]);

    let (chunks, done) = s3.decrypt(&block, "enc/clip.mov", "out/clip.mov").await.ok();
    assert!(chunks.is_empty());
    assert_eq!(done.plaintext_bytes, plaintext.len() as u64);
    assert_eq!(sha256(&s3.get("out/clip.mov").await), sha256(&plaintext), "SHA-256 of the decrypted object");

    // One flipped bit: DATA_LOSS, and the parts already uploaded are aborted.
    let mut tampered = ciphertext;
    let at = tampered.len() / 2;
    tampered[at] ^= 0x04;
    s3.put("enc/tampered.mov", tampered).await;
    let status = s3.decrypt(&block, "enc/tampered.mov", "out/tampered.mov").await.failed(Code::DataLoss);
    assert!(status.message().contains("authentication"), "{}", status.message());
    assert_eq!(s3.etag("out/tampered.mov").await, None, "a destination appeared for a forged object");
    assert_eq!(s3.pending_uploads().await, 0, "the multipart upload was not aborted");
    support::logs::assert_no_key_logged(&[key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mode_small_objects_every_mode_and_failures_name_the_location() {
    let s3 = S3Broker::start(keybroker::objects::MIN_PART_SIZE).await;
    let mut client = s3.client().await;
    let dir = tempfile::tempdir().unwrap();
    for (i, mode) in MODES.into_iter().enumerate() {
        for size in [0, 17, 70_001] {
            let plaintext = data(size, 100 + i as u64);
            let (src, enc, out) = (format!("p/{mode}-{size}"), format!("e/{mode}-{size}"), format!("o/{mode}-{size}"));
            s3.put(&src, plaintext.clone()).await;
            let (_, result) = s3.encrypt(mode, &src, &enc).await.ok();
            let block = result.encryption.unwrap();
            let ciphertext = s3.get(&enc).await;
            assert_eq!(ciphertext.len(), expected_len(mode, size), "{mode} {size}");
            assert!(!s3.etag(&enc).await.unwrap().contains('-'), "a single PutObject below one part");
            if mode != "aes-gcm" {
                let key = unwrap(&mut client, &block).await;
                assert!(
                    openssl_encrypt(dir.path(), mode, &key, &iv_of(&block), &plaintext) == ciphertext,
                    "{mode} {size}"
                );
            }
            s3.decrypt(&block, &enc, &out).await.ok();
            assert!(s3.get(&out).await == plaintext, "{mode} {size}");
        }
    }

    // A truncated CBC object: DATA_LOSS, nothing written.
    s3.put("p/cbc", data(1000, 1)).await;
    let (_, result) = s3.encrypt("aes-cbc-pkcs7", "p/cbc", "e/cbc").await.ok();
    let mut ciphertext = s3.get("e/cbc").await;
    ciphertext.pop();
    s3.put("e/cbc-short", ciphertext).await;
    s3.decrypt(result.encryption.as_ref().unwrap(), "e/cbc-short", "o/cbc-short").await.failed(Code::DataLoss);
    assert_eq!(s3.etag("o/cbc-short").await, None);

    let status = s3.encrypt("aes-gcm", "p/missing", "e/missing").await.failed(Code::FailedPrecondition);
    let missing = format!("s3://{}/p/missing", s3.bucket);
    assert!(status.message().contains(&missing), "{}", status.message());
    let start = pb::EncryptObjectStart {
        source: s3.location("p/cbc"),
        destination: Some(pb::S3Location { bucket: "kb-no-such-bucket".into(), key: "x".into() }),
        ..enc_start("aes-gcm", 0)
    };
    let status = encrypt(&mut client, start, &[], 1).await.failed(Code::FailedPrecondition);
    assert!(status.message().contains("s3://kb-no-such-bucket/x"), "{}", status.message());

    // S3 mode carries no chunks.
    let start = pb::EncryptObjectStart {
        source: s3.location("p/cbc"),
        destination: s3.location("e/x"),
        ..enc_start("aes-gcm", 0)
    };
    let err = encrypt(&mut client, start, b"data", 4).await.failed(Code::InvalidArgument);
    assert!(err.message().starts_with("chunk:"), "{}", err.message());
    assert_eq!(s3.pending_uploads().await, 0);
}

// ---------------------------------------------------------------------------
// The CLI against `keybroker serve --dev` in a child process.
