//! The keyed audit chain as an operator meets it: `keybroker serve` (the
//! binary) writes the log, rotates it on SIGHUP and checkpoints it; then
//! `keybroker audit verify` (the binary), with the chain key from KMS (the
//! local keyring, or AWS KMS in moto) or from an exported key file, accepts
//! the untouched log and catches every rewrite someone who can write the
//! file could try without the key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit as _, Mac as _};
use keybroker::audit::{Checkpoint, GENESIS};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::support;
use crate::support::moto::Moto;
use crate::support::process::{BIN, Served, free_addr, serve};

/// Writes the broker's configuration: plaintext gRPC, every caller
/// allowed, the audit log in `dir`, a checkpoint every 4 records.
fn write_config(dir: &Path, kms: &str) -> PathBuf {
    let d = dir.display();
    let config = format!(
        r#"
allow_plaintext_export = false
[tls]
mode = "plaintext"
[policy]
allow_all = true
{kms}
[audit]
file = "{d}/audit.jsonl"
checkpoint_every = 4
checkpoint_interval_ms = 600000
checkpoint_path = "{d}/checkpoints"
"#
    );
    let path = dir.join("keybroker.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn local_kms(dir: &Path) -> String {
    format!(
        "[kms]\nbackend = \"local\"\ndefault_key_id = \"alias/media\"\n[kms.local]\nmaster_key_file = \"{}/master.key\"\n",
        dir.display()
    )
}

fn issue_keys(server: &Served, n: usize) {
    for _ in 0..n {
        let out = server.cli(&["issue-key", "--key-bits", "128", "--mode", "aes-gcm"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `keybroker audit ARGS…` with `env`.
fn audit(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(BIN).arg("audit").args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

/// `lines` chained again from seq 0 as someone without the chain key
/// would: each line's `prev` and `hash` recomputed by `seal` over the
/// line's bytes before its hash, with or without the version member.
fn rechain(lines: &[String], seal: impl Fn(&[u8]) -> String, versioned: bool) -> Vec<String> {
    let mut prev = GENESIS.to_owned();
    lines
        .iter()
        .enumerate()
        .map(|(seq, line)| {
            let mut map: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            map.remove("hash");
            map.remove("v");
            if versioned {
                map.insert("v".to_owned(), Value::from(2));
            }
            map.insert("seq".to_owned(), Value::from(seq));
            map.insert("prev".to_owned(), Value::from(prev.clone()));
            let body = serde_json::to_string(&map).unwrap();
            let hash = seal(body.as_bytes());
            prev = hash.clone();
            format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac_under(key: &[u8]) -> impl Fn(&[u8]) -> String + '_ {
    move |bytes| hex::encode(<Hmac<Sha256>>::new_from_slice(key).unwrap().chain_update(bytes).finalize().into_bytes())
}

/// Waits until `path` exists (the broker reopened its log).
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_keyed_chain_catches_every_rewrite_and_a_cut_tail_with_the_local_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, &local_kms(d));
    let config_arg = config.to_str().unwrap();
    let metrics = free_addr();
    let server = serve(d, &["--config", config_arg, "--metrics-listen", &metrics], &[]);
    issue_keys(&server, 5);
    // Rotation: the log is renamed away and SIGHUP reopens the path; the new
    // file continues the chain.
    let (rotated, current) = (d.join("audit.jsonl.1"), d.join("audit.jsonl"));
    std::fs::rename(&current, &rotated).unwrap();
    assert!(Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap().success());
    wait_for(&current);
    issue_keys(&server, 4);
    let scraped = crate::binary::scrape(&metrics);
    assert_eq!(crate::binary::sample(&scraped, "keybroker_audit_checkpoint_sequence"), 8.0, "{scraped}");
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");

    let wrapped = d.join("audit.jsonl.chain-key");
    assert!(wrapped.exists(), "the chain key is kept wrapped beside the log");
    let files = [rotated.to_str().unwrap(), current.to_str().unwrap()];
    let checkpoints = d.join("checkpoints");
    let checkpoints_arg = checkpoints.to_str().unwrap();

    // Untouched, through KMS (the configuration serve ran with) and
    // against the last checkpoint in the checkpoint file.
    let ok = audit(&[&["verify", "--config", config_arg, "--checkpoint", checkpoints_arg][..], &files].concat(), &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let said = text(&ok);
    assert!(said.contains("ok: 9 records, keyed chain intact"), "{said}");
    assert!(said.contains("reaches the checkpoint of audit.jsonl at seq 8"), "{said}");
    // The checkpoints were taken every 4 records and at the rotation, and
    // the server log (and the gauge, above) carries them too.
    let taken: Vec<u64> = lines(&checkpoints).iter().map(|l| Checkpoint::find(l).unwrap().seq).collect();
    assert_eq!(taken, [3, 4, 8]);
    let from_log = Checkpoint::find(&log).unwrap();
    assert_eq!(from_log.seq, 8, "{log}");
    let token = from_log.token();

    // The key, exported for offline review, verifies the same.
    let key_file = d.join("chain.key");
    let key_arg = key_file.to_str().unwrap();
    let exported = audit(&["export-key", "--config", config_arg, "--out", key_arg], &[]);
    assert!(exported.status.success(), "{}", text(&exported));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let key = std::fs::read(&key_file).unwrap();
    assert_eq!(key.len(), 32);
    assert!(!audit(&["export-key", "--config", config_arg, "--out", key_arg], &[]).status.success());
    let offline = audit(&[&["verify", "--key-file", key_arg, "--checkpoint", &token][..], &files].concat(), &[]);
    assert!(offline.status.success(), "{}", text(&offline));

    // Every rewrite, on one file holding the whole chain.
    let all: Vec<String> = lines(&rotated).into_iter().chain(lines(&current)).collect();
    let tampered = d.join("tampered.jsonl");
    let tampered_arg = tampered.to_str().unwrap();
    let verify = |lines: &[String], checkpoint: bool| {
        std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
        let mut args = vec!["verify", "--key-file", key_arg, tampered_arg];
        if checkpoint {
            args.extend(["--checkpoint", checkpoints_arg]);
        }
        audit(&args, &[])
    };
    let caught = |lines: &[String], expect: &str| {
        let out = verify(lines, true);
        assert!(!out.status.success(), "not caught ({expect}): {}", text(&out));
        assert!(text(&out).contains(expect), "expected {expect:?} in {}", text(&out));
    };
    let whole = verify(&all, true);
    assert!(whole.status.success(), "{}", text(&whole));

    let mut edited = all.clone();
    edited[3] = edited[3].replace("\"IssueDataKey\"", "\"UnwrapKey\"");
    caught(&edited, "line 4: record seq 3 was edited or forged");
    let mut deleted = all.clone();
    deleted.remove(5);
    caught(&deleted, "record seq 5 was deleted");
    let mut inserted = all.clone();
    inserted.insert(6, all[2].clone());
    caught(&inserted, "inserted");
    let mut reordered = all.clone();
    reordered.swap(1, 2);
    caught(&reordered, "reordered");
    // A cut tail is an intact chain: only the checkpoint catches it.
    let cut = &all[..7];
    assert!(verify(cut, false).status.success(), "without a checkpoint a cut tail verifies");
    caught(cut, "the chain ends at seq 6 but the checkpoint covers seq 8: records were cut from the tail");
    // Deleted, then re-chained with plain SHA-256: as legacy records, or
    // keeping the version.
    let mut fewer = all.clone();
    fewer.remove(4);
    let legacy = rechain(&fewer, sha256, false);
    let unanchored = verify(&legacy, false);
    assert!(!unanchored.status.success());
    assert!(text(&unanchored).contains("8 of 8 records are unkeyed legacy records"), "{}", text(&unanchored));
    let accepted = audit(&["verify", "--key-file", key_arg, "--allow-legacy", tampered_arg], &[]);
    assert!(accepted.status.success(), "{}", text(&accepted));
    assert!(text(&accepted).contains("warning: 8 of 8 records are unkeyed legacy records"), "{}", text(&accepted));
    caught(&legacy, "the chain ends at seq 7 but the checkpoint covers seq 8");
    caught(&rechain(&fewer, sha256, true), "line 1: record seq 0 was edited or forged");
    // Re-chained under a guessed key, and a log made up from scratch.
    let guessed = [0x42u8; 32];
    caught(&rechain(&fewer, hmac_under(&guessed), true), "line 1: record seq 0 was edited or forged");
    let made_up: Vec<String> = (0..9)
        .map(|i| format!(r#"{{"time":"2026-01-01T00:00:0{i}.000Z","identity":"anonymous","peer":"","rpc":"IssueDataKey","request_id":"r{i}","outcome":"ok","code":"Ok"}}"#))
        .collect();
    caught(&rechain(&made_up, hmac_under(&guessed), true), "was edited or forged");
    // An edit re-chained with the right key (which KMS guards) passes the
    // chain but not the checkpoint: the tests above fail for the key alone.
    let with_key = rechain(&edited, hmac_under(&key), true);
    assert!(verify(&with_key, false).status.success());
    caught(&with_key, "record seq 8 does not carry the checkpoint's hash");

    // Rotated files: the current file alone lacks its head, the rotated
    // one alone its tail, and a file missing between them is reported.
    let head = audit(&["verify", "--key-file", key_arg, files[1]], &[]);
    assert!(text(&head).contains("the log starts at seq 5, not 0"), "{}", text(&head));
    let tail = audit(&["verify", "--key-file", key_arg, "--checkpoint", &token, files[0]], &[]);
    assert!(text(&tail).contains("cut from the tail"), "{}", text(&tail));
    std::fs::write(&tampered, all[..3].join("\n") + "\n").unwrap();
    let gap = audit(&["verify", "--key-file", key_arg, tampered_arg, files[1]], &[]);
    assert!(text(&gap).contains("a rotated file is missing"), "{}", text(&gap));
    // A forged checkpoint is refused.
    let forged = token.replacen(".8.", ".7.", 1);
    let refused = audit(&[&["verify", "--key-file", key_arg, "--checkpoint", &forged][..], &files].concat(), &[]);
    assert!(text(&refused).contains("does not authenticate under this chain key"), "{}", text(&refused));

    // The chain key's plaintext is nowhere but in the exported file.
    let mut seen = log.clone();
    for file in [&rotated, &current, &checkpoints, &wrapped] {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(file).unwrap()));
    }
    for out in [&ok, &exported, &offline] {
        seen.push_str(&text(out));
    }
    support::logs::assert_no_key_in(&seen, &[key], "the log, the checkpoints, the wrapped key or any output");
}

#[test]
fn the_keyed_chain_verifies_through_aws_kms() {
    let moto = Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key_arn = runtime.block_on(moto.create_key());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kms = format!("[kms]\nbackend = \"aws\"\ndefault_key_id = \"{key_arn}\"\n");
    let config = write_config(d, &kms);
    let config_arg = config.to_str().unwrap();
    let env = moto.env();
    let server = serve(d, &["--config", config_arg], &env);
    issue_keys(&server, 3);
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    let log_file = d.join("audit.jsonl");
    let log_arg = log_file.to_str().unwrap();
    let checkpoints = d.join("checkpoints");
    // Fewer records than checkpoint_every: the shutdown checkpoint covers them.
    assert_eq!(Checkpoint::find(&std::fs::read_to_string(&checkpoints).unwrap()).unwrap().seq, 2);

    let ok = audit(&["verify", "--config", config_arg, "--checkpoint", checkpoints.to_str().unwrap(), log_arg], &env);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("ok: 3 records, keyed chain intact"), "{}", text(&ok));

    let key_file = d.join("chain.key");
    let exported = audit(&["export-key", "--config", config_arg, "--out", key_file.to_str().unwrap()], &env);
    assert!(exported.status.success(), "{}", text(&exported));
    let key = std::fs::read(&key_file).unwrap();
    let mut all = lines(&log_file);
    all.pop();
    let rechained = rechain(&all, hmac_under(&[0x17; 32]), true);
    std::fs::write(&log_file, rechained.join("\n") + "\n").unwrap();
    let forged = audit(&["verify", "--config", config_arg, log_arg], &env);
    assert!(text(&forged).contains("was edited or forged"), "{}", text(&forged));

    let mut seen = log;
    seen.push_str(&std::fs::read_to_string(&checkpoints).unwrap());
    seen.push_str(&String::from_utf8_lossy(&std::fs::read(d.join("audit.jsonl.chain-key")).unwrap()));
    seen.push_str(&text(&ok));
    support::logs::assert_no_key_in(&seen, &[key], "the log, the checkpoints, the wrapped key or any output");
}
