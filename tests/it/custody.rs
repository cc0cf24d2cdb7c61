//! The custody boundary over real mutual TLS: client certificates made in
//! the test (a CA plus CA:FALSE leaves), identities, policy decisions, the
//! audit verifier, certificate reload. The limits are in `custody_limits`,
//! which shares this module's mutual TLS rig.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keybroker::app::config::{Config, TlsMode};
use keybroker::custody::kms::Kms;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::support;
use crate::support::broker::{TestBroker, issue, local_config};
use crate::support::pki::{Ca, Leaf};

pub(crate) const ENCODER: &str = "spiffe://test.example/encoder";
pub(crate) const OPS: &str = "spiffe://test.example/ops/alice";
pub(crate) const LIMITED: &str = "spiffe://test.example/limited";
pub(crate) const STRANGER: &str = "spiffe://test.example/stranger";

pub(crate) const POLICY: &str = r#"
[[rule]]
identity = "spiffe://test.example/encoder"
rpcs = ["IssueDataKey", "WrapKey", "SubmitEncryptedJob"]
kms_keys = ["alias/test-default", "alias/media-*"]
max_key_bits = 192

[[rule]]
identity = "spiffe://test.example/ops/*"
rpcs = ["*"]
plaintext_export = true

[[rule]]
identity = "spiffe://test.example/limited"
rpcs = ["IssueDataKey"]
rate_per_second = 1
burst = 3
"#;

pub(crate) struct Custody {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: Ca,
    pub(crate) ca_path: PathBuf,
    pub(crate) audit: PathBuf,
    pub(crate) broker: TestBroker,
}

pub(crate) fn custody_config(dir: &std::path::Path, ca: &Ca) -> Config {
    let (cert, key) = ca.server().write(dir, "server");
    let mut config = local_config(dir);
    config.tls.mode = TlsMode::Mutual;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.client_ca_file = Some(ca.write(dir, "client-ca"));
    config.tls.reload_poll_secs = 1;
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    config.policy = keybroker::app::config::PolicyConfig { file: Some(policy), allow_all: false };
    config.audit.file = Some(dir.join("audit.jsonl"));
    // The server lets plaintext out at all; the policy says who.
    config.allow_plaintext_export = true;
    config
}

pub(crate) async fn custody_with(tweak: impl FnOnce(&mut Config), kms: Option<Arc<dyn Kms>>) -> Custody {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keybroker test CA");
    let mut config = custody_config(dir.path(), &ca);
    tweak(&mut config);
    let ca_path = config.tls.client_ca_file.clone().unwrap();
    let audit = config.audit.file.clone().unwrap();
    let broker = TestBroker::start(config, kms).await;
    Custody { dir, ca, ca_path, audit, broker }
}

pub(crate) async fn custody() -> Custody {
    custody_with(|_| {}, None).await
}

impl Custody {
    pub(crate) fn endpoint(&self, leaf: Option<&Leaf>, trust_pem: &str) -> Endpoint {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(trust_pem)).domain_name("localhost");
        if let Some(leaf) = leaf {
            tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.broker.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(Duration::from_secs(5))
    }

    pub(crate) async fn client_as(&self, identity: &str) -> KeyBrokerClient<Channel> {
        let leaf = self.ca.client(identity);
        KeyBrokerClient::new(self.endpoint(Some(&leaf), &self.ca.pem).connect().await.unwrap())
    }

    /// The audit records once `ready` holds of them, for records written
    /// after the client has its answer (or gave up); at most 20 s.
    pub(crate) async fn audit_records_when(
        &self,
        ready: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut records = self.audit_records();
        for _ in 0..200 {
            if ready(&records) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            records = self.audit_records();
        }
        records
    }

    pub(crate) fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A call over an endpoint whose handshake should fail: either connecting
/// or the first call errors, and the broker answers nothing.
pub(crate) async fn refused(endpoint: Endpoint) -> String {
    match endpoint.connect().await {
        Err(e) => format!("connect: {e:?}"),
        Ok(channel) => {
            let err = KeyBrokerClient::new(channel).issue_data_key(issue(128, "aes-gcm")).await.unwrap_err();
            assert_ne!(err.code(), Code::Ok);
            format!("call: {err:?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_valid_client_certificate_is_served_and_its_identity_audited() {
    let c = custody().await;
    let mut client = c.client_as(ENCODER).await;
    let request = {
        let mut r = tonic::Request::new(issue(128, "aes-gcm"));
        r.metadata_mut().insert("x-request-id", "req-123".parse().unwrap());
        r
    };
    let response = client.issue_data_key(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-123");
    let answer = response.into_inner();

    let records = c.audit_records();
    let record = records.last().unwrap();
    assert_eq!(record["identity"], ENCODER);
    assert_eq!(record["rpc"], "IssueDataKey");
    assert_eq!(record["outcome"], "ok");
    assert_eq!(record["code"], "Ok");
    assert_eq!(record["request_id"], "req-123");
    assert!(record["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(record["kms_key_arn"], answer.kms_key_arn);
    assert_eq!(record["key_fingerprints"][0], answer.key_fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn no_certificate_another_ca_and_an_expired_one_are_refused_at_the_handshake() {
    let c = custody().await;
    let no_cert = refused(c.endpoint(None, &c.ca.pem)).await;
    let other_ca = Ca::new("someone else's CA");
    let foreign = refused(c.endpoint(Some(&other_ca.client(ENCODER)), &c.ca.pem)).await;
    let expired = refused(c.endpoint(Some(&c.ca.expired_client(ENCODER)), &c.ca.pem)).await;
    for (what, err) in [("no certificate", &no_cert), ("another CA", &foreign), ("expired", &expired)] {
        assert!(!err.is_empty(), "{what}");
    }
    assert!(c.audit_records().is_empty(), "a refused handshake reached an RPC");
    let logs = support::logs::text();
    assert!(logs.contains("TLS handshake refused"), "refusals are logged");
    // And the valid certificate still works on the same server.
    c.client_as(ENCODER).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_policy_decides_and_names_what_is_missing() {
    let c = custody().await;

    let err = c.client_as(STRANGER).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), format!("no policy rule matches identity {STRANGER}"));

    let mut encoder = c.client_as(ENCODER).await;
    let err = encoder
        .unwrap_key(pb::UnwrapKeyRequest { encryption: Some(pb::Encryption::default()), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("may not call UnwrapKey (policy rule 1)"), "{}", err.message());

    let err = encoder.issue_data_key(issue(256, "aes-gcm")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("may not use 256-bit keys") && err.message().contains("max_key_bits is 192"));

    let mut other_key = issue(128, "aes-gcm");
    other_key.kms_key_id = "alias/finance".into();
    let err = encoder.issue_data_key(other_key).await.unwrap_err();
    assert!(err.message().contains("may not use KMS key alias/finance"), "{}", err.message());

    let mut plaintext = issue(128, "aes-gcm");
    plaintext.return_plaintext = true;
    let err = encoder.issue_data_key(plaintext.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("may not export plaintext keys"), "{}", err.message());

    // The ops rule grants export; the key it unwraps is the encoder's.
    let issued = encoder.issue_data_key(issue(192, "aes-gcm")).await.unwrap().into_inner();
    let mut ops = c.client_as(OPS).await;
    let unwrapped = ops
        .unwrap_key(pb::UnwrapKeyRequest { encryption: issued.encryption.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext_key.len(), 24);
    assert_eq!(unwrapped.key_fingerprint, issued.key_fingerprint, "fingerprints name the same wrapped key");

    // Every call, allowed or denied, has its record; none carries the key.
    let records = c.audit_records();
    assert_eq!(records.len(), 7);
    let outcomes: Vec<&str> = records.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["denied", "denied", "denied", "denied", "denied", "ok", "ok"]);
    assert_eq!(records[0]["code"], "PermissionDenied");
    let audit_text = std::fs::read_to_string(&c.audit).unwrap();
    support::logs::assert_no_key_in(&audit_text, std::slice::from_ref(&unwrapped.plaintext_key), "the audit log");
    support::logs::assert_no_key_logged(&[unwrapped.plaintext_key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_servers_export_switch_is_a_ceiling_no_rule_lifts() {
    let c = custody_with(|config| config.allow_plaintext_export = false, None).await;
    let issued = c.client_as(ENCODER).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap().into_inner();
    let mut ops = c.client_as(OPS).await;
    let err = ops
        .unwrap_key(pb::UnwrapKeyRequest { encryption: issued.encryption.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("the server's allow_plaintext_export is off"), "{}", err.message());
    let mut asked = issue(128, "aes-gcm");
    asked.return_plaintext = true;
    let err = ops.issue_data_key(asked).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let start = pb::DecryptObjectStart { encryption: issued.encryption, ..Default::default() };
    let request = pb::DecryptObjectRequest { message: Some(pb::decrypt_object_request::Message::Start(start)) };
    let err = ops.decrypt_object(futures::stream::iter([request])).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_certificate_that_names_no_identity_is_unauthenticated_not_anonymous() {
    // A rule for every identity, `anonymous` included: the caller must not
    // fall through to it.
    let c = custody_with(
        |config| {
            let policy = config.policy.file.clone().unwrap();
            std::fs::write(&policy, "[[rule]]\nidentity = \"*\"\nrpcs = [\"*\"]\n").unwrap();
        },
        None,
    )
    .await;
    let leaf = c.ca.client_without_san();
    let channel = c.endpoint(Some(&leaf), &c.ca.pem).connect().await.unwrap();
    let err = KeyBrokerClient::new(channel).issue_data_key(issue(128, "aes-gcm")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("neither a SPIFFE ID URI SAN"), "{}", err.message());
    // The same rule serves a certificate that does name its caller.
    c.client_as(ENCODER).await.issue_data_key(issue(128, "aes-gcm")).await.unwrap();
    let records = c.audit_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["code"], "Unauthenticated");
    assert_eq!(records[0]["outcome"], "denied");
    assert_ne!(records[0]["identity"], "anonymous");
    assert_eq!(records[1]["identity"], ENCODER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_dns_san_is_a_dns_identity_and_never_passes_as_a_spiffe_id() {
    let c = custody_with(
        |config| {
            let policy = config.policy.file.clone().unwrap();
            let rules = format!("[[rule]]\nidentity = \"dns:*.media.svc\"\nrpcs = [\"IssueDataKey\"]\n{POLICY}");
            std::fs::write(&policy, rules).unwrap();
        },
        None,
    )
    .await;
    let call = |leaf: Leaf| {
        let endpoint = c.endpoint(Some(&leaf), &c.ca.pem);
        async move {
            let channel = endpoint.connect().await.unwrap();
            KeyBrokerClient::new(channel).issue_data_key(issue(128, "aes-gcm")).await
        }
    };
    // A DNS SAN that reads like the ops SPIFFE ID names nobody.
    let err = call(c.ca.client_with_dns(&["spiffe://test.example/ops/alice"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // A wildcard DNS SAN is the identity dns:*.media.svc, which the glob rule matches.
    call(c.ca.client_with_dns(&["*.media.svc"])).await.unwrap();
    call(c.ca.client_with_dns(&["packager.media.svc", "localhost"])).await.unwrap();
    let err = call(c.ca.client_with_dns(&["packager.other.svc"])).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let identities: Vec<String> =
        c.audit_records().iter().map(|r| r["identity"].as_str().unwrap().to_owned()).collect();
    assert_eq!(identities[1..], ["dns:*.media.svc", "dns:packager.media.svc", "dns:packager.other.svc"]);
    assert!(!identities[0].contains("spiffe://"), "{identities:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_audit_verifier_finds_edits_deletions_and_swaps() {
    let c = custody().await;
    let mut client = c.client_as(ENCODER).await;
    for _ in 0..6 {
        client.issue_data_key(issue(128, "aes-gcm")).await.unwrap();
    }
    let _ = c.client_as(STRANGER).await.issue_data_key(issue(128, "aes-gcm")).await;
    let bin = env!("CARGO_BIN_EXE_keybroker");
    // The chain key, unwrapped by the broker's local keyring.
    let wrapped = c.dir.path().join("audit.jsonl.chain-key");
    let verify_args = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(bin)
            .args(["audit", "verify", "--kms", "local", "--wrapped-key"])
            .arg(&wrapped)
            .env("KEYBROKER_KMS__LOCAL__MASTER_KEY_FILE", c.dir.path().join("master.key"))
            .args(args)
            .output()
            .unwrap()
    };
    let verify = |path: &std::path::Path| verify_args(&[path.as_os_str()]);
    let ok = verify(&c.audit);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok: 7 records, keyed chain intact"));

    let lines: Vec<String> = std::fs::read_to_string(&c.audit).unwrap().lines().map(str::to_owned).collect();
    let copy = c.dir.path().join("tampered.jsonl");
    let check = |lines: Vec<String>, expect: &str| {
        std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
        let out = verify(&copy);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains(expect), "expected {expect:?} in {stderr}");
    };
    let mut edited = lines.clone();
    edited[6] = edited[6].replace("\"denied\"", "\"ok\"");
    check(edited, "line 7: record seq 6 was edited");
    let mut deleted = lines.clone();
    deleted.remove(2);
    check(deleted, "line 3: record seq 2 was deleted");
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    check(swapped, "line 4: record seq 4 comes before seq 3: reordered");
    // A head cut off leaves an intact chain that does not start at seq 0.
    check(lines[2..].to_vec(), "line 1: the log starts at seq 2, not 0");

    // Rotated files verify as one chain, in order; a gap or a wrong anchor
    // between them is found.
    let (old, new) = (c.dir.path().join("old.jsonl"), c.dir.path().join("new.jsonl"));
    let write = |path: &std::path::Path, lines: &[String]| std::fs::write(path, lines.join("\n") + "\n").unwrap();
    write(&old, &lines[..3]);
    write(&new, &lines[3..]);
    let both = verify_args(&[old.as_os_str(), new.as_os_str()]);
    assert!(both.status.success(), "{}", String::from_utf8_lossy(&both.stderr));
    assert!(String::from_utf8_lossy(&both.stdout).contains("ok: 7 records, keyed chain intact"));
    let reversed = verify_args(&[new.as_os_str(), old.as_os_str()]);
    assert!(!reversed.status.success());
    let last_of_old =
        serde_json::from_str::<serde_json::Value>(&lines[2]).unwrap()["hash"].as_str().unwrap().to_owned();
    let anchored = verify_args(&["--after".as_ref(), last_of_old.as_ref(), new.as_os_str()]);
    assert!(anchored.status.success(), "{}", String::from_utf8_lossy(&anchored.stderr));
    let first_of_new =
        serde_json::from_str::<serde_json::Value>(&lines[3]).unwrap()["hash"].as_str().unwrap().to_owned();
    let wrong_anchor = verify_args(&["--after".as_ref(), first_of_new.as_ref(), new.as_os_str()]);
    assert!(String::from_utf8_lossy(&wrong_anchor.stderr).contains("does not continue the chain"));
    write(&old, &lines[..2]);
    let gap = verify_args(&[old.as_os_str(), new.as_os_str()]);
    assert!(!gap.status.success());
    let stderr = String::from_utf8_lossy(&gap.stderr);
    assert!(stderr.contains("record seq 3 does not continue the chain at seq 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn certificates_and_trust_bundle_reload_without_dropping_connections() {
    let c = custody().await;
    let mut established = c.client_as(ENCODER).await;
    established.issue_data_key(issue(128, "aes-gcm")).await.unwrap();

    // Rotate to a new CA for both the server certificate and client trust.
    let new_ca = Ca::new("rotated CA");
    let (cert, key) = new_ca.server().write(c.dir.path(), "server-new");
    std::fs::rename(cert, c.dir.path().join("server.crt")).unwrap();
    std::fs::rename(key, c.dir.path().join("server.key")).unwrap();
    std::fs::write(&c.ca_path, &new_ca.pem).unwrap();
    let new_client = new_ca.client(ENCODER);
    let mut reloaded = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(channel) = c.endpoint(Some(&new_client), &new_ca.pem).connect().await
            && KeyBrokerClient::new(channel).issue_data_key(issue(128, "aes-gcm")).await.is_ok()
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the rotated certificates were not picked up");
    established.issue_data_key(issue(128, "aes-gcm")).await.expect("the established connection survived the reload");
    let old = refused(c.endpoint(Some(&c.ca.client(ENCODER)), &c.ca.pem)).await;
    assert!(!old.is_empty(), "new connections with the old CA are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_python_grpcio_client_connects_with_its_own_certificate() {
    let c = custody().await;
    let leaf = c.ca.client("spiffe://test.example/ops/python");
    let (cert, key) = leaf.write(c.dir.path(), "python-client");
    let out = tokio::process::Command::new(support::tools::python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpcio_client.py"))
        .args(["--addr", &format!("localhost:{}", c.broker.addr.port())])
        .args(["--proto-root", concat!(env!("CARGO_MANIFEST_DIR"), "/proto")])
        .arg("--ca")
        .arg(&c.ca_path)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["issued"]["Mode"], "aes-gcm");
    let identities: Vec<String> =
        c.audit_records().iter().map(|r| r["identity"].as_str().unwrap().to_owned()).collect();
    assert!(identities.iter().all(|i| i == "spiffe://test.example/ops/python"), "{identities:?}");
}
