//! What `keybroker` says about itself, as users meet it: `serve`'s start-up
//! (no instance-metadata lookup on the local keyring) and shutdown (its
//! last line), `serve --help`, shell completions and man pages.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::process::{BIN, serve, serve_without};

/// A stand-in for the EC2 instance metadata service: counts the
/// connections made to it and closes each at once.
fn metadata_service() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, asked)
}

/// With the local keyring the broker never asks the instance metadata
/// service for a region (and logs no warning about it), with `--dev` or
/// without; the same set-up with AWS KMS does ask it, so the stand-in
/// would have seen a lookup.
#[test]
fn the_local_keyring_asks_no_instance_metadata_service() {
    let unset = ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL"];
    let cases: [(&[&str], bool); 3] = [
        (&["--dev"], false),
        (&["--kms", "local", "--tls-mode", "plaintext"], false),
        (&["--kms", "aws", "--kms-key-id", "alias/any", "--tls-mode", "plaintext"], true),
    ];
    for (args, asks) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (url, asked) = metadata_service();
        let env = [
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url),
            ("AWS_CONFIG_FILE", dir.path().join("none").display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none").display().to_string()),
            ("KEYBROKER_POLICY__ALLOW_ALL", "true".to_owned()),
        ];
        let server = serve_without(dir.path(), args, &env, &unset);
        if !asks {
            assert!(server.cli(&["health"]).status.success());
        }
        let (status, log) = server.terminate();
        assert!(status.success(), "{args:?}: {log}");
        let seen = asked.load(Ordering::SeqCst);
        if asks {
            assert!(seen > 0, "{args:?}: AWS KMS should look the region up: the stand-in saw nothing\n{log}");
        } else {
            assert_eq!(seen, 0, "{args:?}: the instance metadata service was asked\n{log}");
            assert!(!log.contains("IMDS") && !log.contains("imds"), "{args:?}: {log}");
            assert!(!log.contains(" WARN aws_config"), "{args:?}: {log}");
        }
    }
}

/// SIGTERM: the drain and the last audit checkpoint come before
/// "keybroker stopped", and nothing comes after it. The start-up line
/// names the address plainly.
#[test]
fn keybroker_stopped_is_the_last_thing_serve_says() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = serve(dir.path(), &["--dev", "--audit-log", audit.to_str().unwrap()], &[]);
    assert!(server.cli(&["issue-key"]).status.success());
    let addr = server.addr.clone();
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let at =
        |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle}: {log}"));
    assert!(lines[at("keybroker serving")].contains(&format!("listen={addr} ")), "{log}");
    let order = [at("SIGTERM received"), at("shutting down"), at("audit checkpoint"), at("keybroker stopped")];
    assert!(order.is_sorted(), "out of order {order:?}:\n{log}");
    assert_eq!(order[3], lines.len() - 1, "something came after \"keybroker stopped\":\n{log}");
}

/// `serve --help` names, for each flag, the variable that sets the same
/// key and the default; every variable it names is in README's
/// configuration table.
#[test]
fn serve_help_names_variables_and_defaults() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("[env: KEYBROKER_LISTEN] [default: 127.0.0.1:50051]"), "{help}");
    assert!(help.contains("[default: false]") && help.contains("[default: text]"), "{help}");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut named = 0;
    for piece in help.split("[env: ").skip(1) {
        let variable = &piece[..piece.find(']').unwrap()];
        assert!(readme.contains(&format!("`{variable}`")), "{variable} is not in README's configuration table");
        named += 1;
    }
    assert!(named >= 12, "too few variables named: {help}");
}

/// `decrypt --help` claims authentication only for the mode that has it.
#[test]
fn decrypt_help_says_only_aes_gcm_is_authenticated() {
    let out = Command::new(BIN).args(["decrypt", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("for aes-gcm, once its tag verified"), "{help}");
    assert!(help.contains("aes-cbc-pkcs7 and aes-ctr carry no authentication"), "{help}");
    assert!(!help.contains("whole file authenticated"), "{help}");
}

/// Completion scripts and man pages come from the command tree itself:
/// bash accepts the script and it knows the newest subcommand's flags;
/// the man pages cover each subcommand.
#[test]
fn completions_and_man_pages_cover_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let bash = Command::new(BIN).args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success());
    let script = dir.path().join("keybroker.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    let text = String::from_utf8(bash.stdout).unwrap();
    assert!(text.contains("unwrap-key") && text.contains("--plaintext-out") && text.contains("--force-terminal"));
    assert!(text.contains("check-role") && text.contains("connect-role") && text.contains("--output-bucket"));
    for (shell, marker) in [("zsh", "#compdef keybroker"), ("fish", "complete -c keybroker")] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(marker), "{shell}");
    }
    let bad = Command::new(BIN).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a usage error, not a panic");

    let man = Command::new(BIN).arg("man").output().unwrap();
    assert!(man.status.success());
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.contains(".TH keybroker 1") && page.contains("unwrap\\-key"), "{page}");
    let pages = dir.path().join("man");
    std::fs::create_dir(&pages).unwrap();
    assert!(Command::new(BIN).args(["man", "--out-dir"]).arg(&pages).status().unwrap().success());
    let mut serve_page = String::new();
    std::fs::File::open(pages.join("keybroker-serve.1")).unwrap().read_to_string(&mut serve_page).unwrap();
    assert!(serve_page.contains("KEYBROKER_LISTEN"), "{serve_page}");
    assert!(pages.join("keybroker-unwrap-key.1").exists() && pages.join("keybroker-completions.1").exists());
    assert!(pages.join("keybroker-mediaconvert-check-role.1").exists(), "no check-role page");
    assert!(pages.join("keybroker-mediaconvert-connect-role.1").exists(), "no connect-role page");
}
