//! `keybroker unwrap-key` and `issue-key --plaintext-out` against the real
//! binary: the key goes only where asked (a new 0600 file, a pipe, a
//! terminal with `--force-terminal`), decrypts the file with the OpenSSL
//! CLI, and is refused, with no file left, by a broker that does not
//! export plaintext.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::support::logs::assert_no_key_in;
use crate::support::process::{BIN, Served, serve};
use crate::support::tools::openssl;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs a client subcommand with stdout on a pseudo-terminal (`script`).
fn on_terminal(server: &Served, args: &[&str]) -> Output {
    // The arguments are paths under a temporary directory: no quoting needed.
    let line = format!("{BIN} {} --addr {}", args.join(" "), server.addr);
    Command::new("script").args(["-qec", &line, "/dev/null"]).output().expect("script(1) from util-linux")
}

#[test]
fn plaintext_keys_go_only_where_asked_and_decrypt_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--dev", "--allow-plaintext-export"], &[]);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let plaintext: Vec<u8> = (0..100_007u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(path("clip.mov"), &plaintext).unwrap();

    let encrypted = ok(server.cli(&[
        "encrypt",
        "--in",
        &path("clip.mov"),
        "--out",
        &path("clip.mov.enc"),
        "--mode",
        "aes-cbc-pkcs7",
    ]));
    std::fs::write(path("clip.json"), &encrypted.stdout).unwrap();
    let block: serde_json::Value = serde_json::from_slice(&encrypted.stdout).unwrap();
    let iv = B64.decode(block["InitializationVector"].as_str().unwrap()).unwrap();

    // To a new file: mode 0600, hex and a newline; the IV (public) on stdout.
    let to_file = ok(server.cli(&["unwrap-key", "--encryption", &path("clip.json"), "--out", &path("clip.key")]));
    assert_eq!(mode_of(&dir.path().join("clip.key")), 0o600);
    let key_hex = std::fs::read_to_string(path("clip.key")).unwrap();
    assert!(key_hex.ends_with('\n') && key_hex.trim().len() == 64, "{key_hex:?}");
    let key = hex::decode(key_hex.trim()).unwrap();
    assert_eq!(String::from_utf8_lossy(&to_file.stdout).trim(), hex::encode(&iv));

    // The real openssl CLI decrypts the broker's file with it.
    let decrypted = ok(Command::new(openssl())
        .args(["enc", "-d", "-aes-256-cbc", "-K", key_hex.trim(), "-iv", &hex::encode(&iv), "-in"])
        .arg(path("clip.mov.enc"))
        .output()
        .unwrap());
    assert!(decrypted.stdout == plaintext, "openssl did not get the plaintext back");

    // An existing file is never overwritten, and nothing is unwrapped.
    let again = server.cli(&["unwrap-key", "--encryption", &path("clip.json"), "--out", &path("clip.key")]);
    assert!(!again.status.success());
    assert!(text(&again).contains("the file exists"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(path("clip.key")).unwrap(), key_hex);

    // To a pipe: the key on stdout only.
    let piped = ok(server.cli(&["unwrap-key", "--encryption", &path("clip.json")]));
    assert_eq!(String::from_utf8_lossy(&piped.stdout), key_hex);
    assert_no_key_in(&String::from_utf8_lossy(&piped.stderr), std::slice::from_ref(&key), "unwrap-key's stderr");
    let raw = ok(server.cli(&["unwrap-key", "--encryption", &path("clip.json"), "--key-encoding", "raw"]));
    assert_eq!(raw.stdout, key);

    // A terminal gets no key unless asked.
    let refused = on_terminal(&server, &["unwrap-key", "--encryption", &path("clip.json")]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("stdout is a terminal"), "{}", text(&refused));
    assert_no_key_in(&text(&refused), std::slice::from_ref(&key), "a terminal without --force-terminal");
    let forced = on_terminal(&server, &["unwrap-key", "--encryption", &path("clip.json"), "--force-terminal"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(text(&forced).contains(key_hex.trim()), "--force-terminal prints the key");

    // issue-key --plaintext-out: the block on stdout, the key in the file only.
    let issued = ok(server.cli(&["issue-key", "--key-bits", "128", "--plaintext-out", &path("fresh.key")]));
    assert_eq!(mode_of(&dir.path().join("fresh.key")), 0o600);
    let fresh = hex::decode(std::fs::read_to_string(path("fresh.key")).unwrap().trim()).unwrap();
    assert_eq!(fresh.len(), 16);
    let issued_block: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    assert_eq!(
        B64.decode(issued_block["KeyMd5"].as_str().unwrap()).unwrap(),
        keybroker::custody::keys::md5_of(&fresh).to_vec(),
        "the file holds the key the block wraps"
    );
    let refused = server.cli(&["issue-key", "--plaintext-out", &path("fresh.key")]);
    assert!(!refused.status.success() && text(&refused).contains("the file exists"), "{}", text(&refused));

    let (status, log) = server.terminate();
    assert!(status.success());
    let secrets = [key, fresh];
    for (what, out) in [("unwrap-key --out", &to_file), ("issue-key --plaintext-out", &issued)] {
        assert_no_key_in(&text(out), &secrets, what);
    }
    assert_no_key_in(&log, &secrets, "the server's output");
}

#[test]
fn a_broker_without_export_refuses_and_no_key_file_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--dev"], &[]);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let block = ok(server.cli(&["issue-key"]));
    std::fs::write(path("block.json"), &block.stdout).unwrap();

    let unwrap = server.cli(&["unwrap-key", "--encryption", &path("block.json"), "--out", &path("k")]);
    let issue = server.cli(&["issue-key", "--plaintext-out", &path("k2")]);
    for (what, out) in [("unwrap-key", unwrap), ("issue-key --plaintext-out", issue)] {
        assert!(!out.status.success(), "{what}");
        assert!(text(&out).contains("allow_plaintext_export is off"), "{what}: {}", text(&out));
    }
    assert!(!dir.path().join("k").exists() && !dir.path().join("k2").exists(), "a refused call leaves no file");
    let (status, _) = server.terminate();
    assert!(status.success());
}
