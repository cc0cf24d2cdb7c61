//! Files the broker encrypted for MediaConvert, as MediaConvert would read
//! them: each mode's file is written to S3 by `EncryptObject` (what
//! `keybroker encrypt --context mediaconvert --in s3://... --out s3://...`
//! calls) under the MediaConvert context; a job naming only the object gets
//! its `DecryptionSettings` from the key ledger; the suite's MediaConvert
//! endpoint has KMS decrypt the key; and Python's `cryptography`, standing
//! in for MediaConvert's decryption, turns the object back into the
//! original bytes with that key and IV. The same holds for files the
//! `keybroker encrypt --context mediaconvert` binary writes locally, brought
//! to a job (`keybroker mediaconvert submit`) as `DecryptionSettings`.

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::objects::ObjectsSettings;
use keybroker::pb;
use serde_json::json;

use crate::support::broker::{TestBroker, aws_config, aws_kms};
use crate::support::mediaconvert::{InputKey, McEndpoint};
use crate::support::moto::Moto;
use crate::support::process::cli_json;
use crate::support::tools::python_with_cryptography;

const DECRYPT: &str = r#"
import base64, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import padding
mode, key, iv, src, dst = sys.argv[1], base64.b64decode(sys.argv[2]), base64.b64decode(sys.argv[3]), sys.argv[4], sys.argv[5]
data = open(src, 'rb').read()
if mode == 'AES_CBC':
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = d.update(data) + d.finalize()
    u = padding.PKCS7(128).unpadder()
    out = u.update(padded) + u.finalize()
elif mode == 'AES_CTR':
    d = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    out = d.update(data) + d.finalize()
elif mode == 'AES_GCM':
    out = AESGCM(key).decrypt(iv, data, None)
open(dst, 'wb').write(out)
"#;

#[tokio::test]
async fn files_encrypted_for_mediaconvert_decrypt_with_the_key_kms_gives_the_endpoint() {
    let python = python_with_cryptography();
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let mut config = aws_config(&kms_key);
    config.s3.force_path_style = true;
    config.mediaconvert.submit = true;
    let kms = aws_kms(moto, &config).await;
    let settings = ObjectsSettings { force_path_style: true, ..ObjectsSettings::default() };
    let sdk =
        moto.sdk_config().into_builder().endpoint_url(crate::support::s3::S3Proxy::spawn(&moto.url).await.url).build();
    let s3 = keybroker::objects::s3_client(&sdk, &settings);
    let bucket = format!("kb-mc-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let broker =
        TestBroker::start_with_mediaconvert(config, kms, endpoint.sdk_client(&moto.sdk_config()), Some(s3.clone()))
            .await;
    let mut client = broker.client().await;

    let modes = [("aes-cbc-pkcs7", "AES_CBC"), ("aes-ctr", "AES_CTR"), ("aes-gcm", "AES_GCM")];
    let plaintext: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut inputs = Vec::new();
    for (mode, _) in modes {
        let source = format!("plain/{mode}.mp4");
        let destination = format!("enc/{mode}.mp4");
        s3.put_object().bucket(&bucket).key(&source).body(plaintext.clone().into()).send().await.unwrap();
        let start = pb::EncryptObjectStart {
            mode: mode.to_owned(),
            key_bits: 256,
            context: pb::ServiceContext::Mediaconvert as i32,
            source: Some(pb::S3Location { bucket: bucket.clone(), key: source }),
            destination: Some(pb::S3Location { bucket: bucket.clone(), key: destination.clone() }),
            ..Default::default()
        };
        let message = pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start)) };
        let mut stream = client.encrypt_object(futures::stream::iter([message])).await.unwrap().into_inner();
        while let Some(_answer) = stream.message().await.unwrap() {}
        inputs.push(json!({"FileInput": format!("s3://{bucket}/{destination}")}));
    }
    let job =
        json!({"Role": "arn:aws:iam::111122223333:role/MediaConvert_Default_Role", "Settings": {"Inputs": inputs}});
    let request = pb::SubmitMediaConvertJobRequest { create_job_json: job.to_string(), ..Default::default() };
    let answer = client.submit_media_convert_job(request).await.unwrap().into_inner();
    assert!(!answer.job_id.is_empty());

    let keys = endpoint.input_keys();
    assert_eq!(keys.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    for ((mode, mc_mode), key) in modes.iter().zip(&keys) {
        assert_eq!(key.mode, *mc_mode);
        assert_eq!(key.key.len(), 32);
        assert_eq!(key.iv.len(), 16, "keybroker's files carry a 16-byte IV in every mode");
        let (bucket_name, object) = key.file_input.trim_start_matches("s3://").split_once('/').unwrap();
        let got = s3.get_object().bucket(bucket_name).key(object).send().await.unwrap();
        let ciphertext = got.body.collect().await.unwrap().into_bytes();
        assert_ne!(&ciphertext[..64], &plaintext[..64]);
        let src = dir.path().join(format!("{mode}.enc"));
        std::fs::write(&src, &ciphertext).unwrap();
        assert_decrypts_to(python, &src, key, &plaintext);
    }
}

/// `keybroker serve` as deployed: MediaConvert found through the shared AWS
/// settings and `AWS_ENDPOINT_URL_MEDIACONVERT`, the job signed by the SDK
/// and judged by the suite's endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finds_mediaconvert_through_aws_endpoint_url_mediaconvert() {
    let moto = Moto::shared();
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("AWS_ENDPOINT_URL_MEDIACONVERT", endpoint.url.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("KEYBROKER_MEDIACONVERT__SUBMIT", "true".to_owned()),
        ("KEYBROKER_POLICY__ALLOW_ALL", "true".to_owned()),
        ("KEYBROKER_KMS__DEFAULT_KEY_ID", "alias/media".to_owned()),
    ];
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mediaconvert/job.json");
    let (answer, log) = tokio::task::spawn_blocking(move || {
        let server = crate::support::process::serve(dir.path(), &["--kms", "local", "--tls-mode", "plaintext"], &env);
        let out = server.cli(&["mediaconvert", "submit", "--job", example, "--request-token", "deployed-1"]);
        let (_, log) = server.terminate();
        (out, log)
    })
    .await
    .unwrap();
    assert!(answer.status.success(), "{}\n{log}", String::from_utf8_lossy(&answer.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert!(printed["JobId"].is_string(), "{printed}");
    let jobs = endpoint.created_jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["userMetadata"]["project"], "launch-trailer");
    assert_eq!(jobs[0]["clientRequestToken"].as_str().map(str::len), Some(64), "derived from the request token");
    assert_eq!(jobs[0]["userMetadata"]["keybroker-request-token"], jobs[0]["clientRequestToken"]);
    let key = endpoint.groups()[0].static_key.clone().unwrap();
    assert!(log.contains("keybroker stopped"), "the server's output was read: {log}");
    assert!(!log.contains(&key) && !log.contains(&key.to_uppercase()), "the static key is not in the server's output");
}

/// Decrypts the file at `src` with Python `cryptography` (standing in for
/// MediaConvert) using the key and IV the endpoint got from KMS, and asserts
/// the bytes are `plaintext`.
fn assert_decrypts_to(python: &str, src: &std::path::Path, key: &InputKey, plaintext: &[u8]) {
    let dst = src.with_extension("out");
    let out = Command::new(python)
        .args(["-c", DECRYPT, &key.mode, &B64.encode(&key.key), &B64.encode(&key.iv)])
        .arg(src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", key.mode, String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&dst).unwrap() == plaintext, "{}: the decrypted file differs from the original", key.mode);
}

#[tokio::test]
async fn files_the_binary_encrypts_for_mediaconvert_decrypt_with_the_key_kms_gives_the_endpoint() {
    let python = python_with_cryptography();
    let moto = Moto::shared();
    let kms_key = moto.create_key().await;
    let mut config = aws_config(&kms_key);
    config.mediaconvert.submit = true;
    let kms = aws_kms(moto, &config).await;
    let endpoint = McEndpoint::spawn(moto.kms()).await;
    let broker = TestBroker::start_with_mediaconvert(config, kms, endpoint.sdk_client(&moto.sdk_config()), None).await;
    let dir = tempfile::tempdir().unwrap();
    let plaintext: Vec<u8> = (0..70_001u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    let source = dir.path().join("source.mp4");
    std::fs::write(&source, &plaintext).unwrap();

    let modes = [("aes-cbc-pkcs7", "AES_CBC"), ("aes-ctr", "AES_CTR"), ("aes-gcm", "AES_GCM")];
    let mut inputs = Vec::new();
    for (mode, mc_mode) in modes {
        let out = dir.path().join(format!("{mode}.enc"));
        let (from, to) = (source.to_str().unwrap(), out.to_str().unwrap());
        let block = cli_json(
            &broker.addr.to_string(),
            &["encrypt", "--in", from, "--out", to, "--mode", mode, "--context", "mediaconvert"],
        )
        .await;
        assert_eq!(block["Mode"], mode, "{block}");
        inputs.push(json!({"FileInput": format!("s3://in/{mode}.mp4"), "DecryptionSettings": {
            "DecryptionMode": mc_mode,
            "EncryptedDecryptionKey": block["Key"],
            "InitializationVector": block["InitializationVector"]}}));
    }
    let job =
        json!({"Role": "arn:aws:iam::111122223333:role/MediaConvert_Default_Role", "Settings": {"Inputs": inputs}});
    let job_file = dir.path().join("job.json");
    std::fs::write(&job_file, job.to_string()).unwrap();
    let answer =
        cli_json(&broker.addr.to_string(), &["mediaconvert", "submit", "--job", job_file.to_str().unwrap()]).await;
    assert!(answer["JobId"].is_string(), "{answer}");

    // The endpoint opened each key under the MediaConvert context; with it
    // and the IV, each file decrypts to the original bytes.
    let keys = endpoint.input_keys();
    assert_eq!(keys.len(), 3);
    for ((mode, mc_mode), key) in modes.iter().zip(&keys) {
        assert_eq!(key.mode, *mc_mode);
        assert_eq!(key.key.len(), 32);
        assert_decrypts_to(python, &dir.path().join(format!("{mode}.enc")), key, &plaintext);
    }
}
