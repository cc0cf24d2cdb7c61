//! The `encrypt` and `decrypt` CLI against a `serve --dev` child process:
//! files round-trip, and a forged file leaves no output.

use std::path::Path;

use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;

use crate::object_rpcs::{MIB, MODES, data, expected_len, iv_of, openssl_encrypt, unwrap};
use crate::support;
use crate::support::process::{Served, serve};

fn serve_dev(cwd: &Path) -> Served {
    serve(cwd, &["--dev", "--allow-plaintext-export"], &[("RUST_LOG", "trace".to_owned())])
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".keybroker-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_encrypts_and_decrypts_files_and_a_forged_file_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_dev(dir.path());
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let path = |name: &str| files.join(name).to_str().unwrap().to_owned();
    let plaintext = data(3 * MIB + 777, 21);
    std::fs::write(path("clip.mov"), &plaintext).unwrap();

    let mut keys = Vec::new();
    let mut client = KeyBrokerClient::connect(format!("http://{}", server.addr)).await.unwrap();
    for mode in MODES {
        let enc = format!("clip.{mode}");
        let out = server.cli(&["encrypt", "--in", &path("clip.mov"), "--out", &path(&enc), "--mode", mode]);
        assert!(out.status.success(), "encrypt {mode}: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains('\r') && !stderr.contains("eta"), "a progress bar on a non-terminal: {stderr:?}");
        let block: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let fields: Vec<&str> = block.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, ["InitializationVector", "Key", "KeyMd5", "Mode"], "exactly ET's four fields");
        assert_eq!(block["Mode"], mode);
        let ciphertext = std::fs::read(path(&enc)).unwrap();
        assert_eq!(ciphertext.len(), expected_len(mode, plaintext.len()));

        let json = path(&format!("clip.{mode}.json"));
        std::fs::write(&json, &out.stdout).unwrap();
        let back = format!("clip.{mode}.out");
        let out = server.cli(&["decrypt", "--in", &path(&enc), "--out", &path(&back), "--encryption", &json]);
        assert!(out.status.success(), "decrypt {mode}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read(path(&back)).unwrap() == plaintext, "{mode}: the file did not round-trip");

        let encryption = pb::Encryption {
            mode: mode.into(),
            key: block["Key"].as_str().unwrap().into(),
            key_md5: block["KeyMd5"].as_str().unwrap().into(),
            initialization_vector: block["InitializationVector"].as_str().unwrap().into(),
        };
        let key = unwrap(&mut client, &encryption).await;
        if mode != "aes-gcm" {
            let theirs = openssl_encrypt(dir.path(), mode, &key, &iv_of(&encryption), &plaintext);
            assert!(theirs == ciphertext, "{mode}: openssl enc wrote other bytes");
        }
        keys.push(key);
    }

    // A forged GCM file: non-zero exit, the status on stderr, no --out file.
    let mut forged = std::fs::read(path("clip.aes-gcm")).unwrap();
    let at = forged.len() - 3;
    forged[at] ^= 0x80;
    std::fs::write(path("forged.aes-gcm"), &forged).unwrap();
    let out = server.cli(&[
        "decrypt",
        "--in",
        &path("forged.aes-gcm"),
        "--out",
        &path("forged.out"),
        "--encryption",
        &path("clip.aes-gcm.json"),
    ]);
    assert!(!out.status.success(), "a forged file decrypted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(!files.join("forged.out").exists(), "a forged file left its plaintext behind");
    assert_eq!(leftovers(&files), Vec::<String>::new(), "temporary files left behind");

    // Local and S3 do not mix; a missing input says so; in and out differ.
    let out = server.cli(&["encrypt", "--in", &path("clip.mov"), "--out", "s3://bucket/key", "--mode", "aes-gcm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("both must be local files or both s3:// URLs"));
    let out = server.cli(&["encrypt", "--in", &path("nothing"), "--out", &path("x"), "--mode", "aes-gcm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing"));
    let out = server.cli(&["encrypt", "--in", &path("clip.mov"), "--out", &path("clip.mov"), "--mode", "aes-gcm"]);
    assert!(!out.status.success());
    assert!(!files.join("x").exists());
    assert_eq!(leftovers(&files), Vec::<String>::new());

    let log = server.log_text();
    assert!(log.contains("EncryptObject") || log.contains("keybroker serving"), "{log}");
    support::logs::assert_no_key_in(&log, &keys, "the server's output");
}
