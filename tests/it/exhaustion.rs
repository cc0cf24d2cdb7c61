//! The broker under an exhaustion attack over real mutual TLS: a caller
//! with no policy rule and a granted one each try to take the broker's
//! capacity with stalled bodies, idle streams, idle connections and
//! unfinished handshakes, while a legitimate caller keeps being served.
//!
//! The attackers speak raw HTTP/2 (the `h2` crate) so they can do what no
//! well-behaved gRPC client does: promise a body and never finish it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keybroker::app::config::{Config, PolicyConfig, TlsMode};
use keybroker::pb::key_broker_client::KeyBrokerClient;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::support::broker::{TestBroker, issue, local_config};
use crate::support::pki::{Ca, Leaf};

const LEGIT: &str = "spiffe://test.example/legit";
const GREEDY: &str = "spiffe://test.example/greedy";
const STRANGER: &str = "spiffe://test.example/stranger";

const POLICY: &str = r#"
[[rule]]
identity = "spiffe://test.example/legit"
rpcs = ["IssueDataKey"]

[[rule]]
identity = "spiffe://test.example/greedy"
rpcs = ["IssueDataKey", "EncryptObject"]
max_concurrent = 3
"#;

const READ_TIMEOUT: Duration = Duration::from_millis(600);
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);

struct Target {
    _dir: tempfile::TempDir,
    ca: Ca,
    audit: std::path::PathBuf,
    broker: TestBroker,
}

async fn target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keybroker test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let mut config: Config = local_config(dir.path());
    config.tls.mode = TlsMode::Mutual;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.client_ca_file = Some(ca.write(dir.path(), "client-ca"));
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    config.policy = PolicyConfig { file: Some(policy), allow_all: false };
    config.audit.file = Some(dir.path().join("audit.jsonl"));
    let limits = &mut config.limits;
    limits.max_concurrent_requests = 8;
    limits.max_concurrent_per_identity = 4;
    limits.read_timeout_ms = READ_TIMEOUT.as_millis() as u64;
    limits.idle_timeout_ms = IDLE_TIMEOUT.as_millis() as u64;
    limits.handshake_timeout_ms = HANDSHAKE_TIMEOUT.as_millis() as u64;
    limits.max_handshakes = 16;
    // The attackers all come from 127.0.0.1; the legitimate caller from 127.0.0.2.
    limits.max_connections_per_peer = 24;
    let audit = config.audit.file.clone().unwrap();
    let broker = TestBroker::start(config, None).await;
    Target { _dir: dir, ca, audit, broker }
}

/// A TCP connection to the broker from `source` (any address in 127/8).
async fn tcp_from(source: [u8; 4], broker: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(broker).await
}

fn tls_client(ca: &Ca, leaf: &Leaf) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An HTTP/2 connection as `leaf`, from 127.0.0.1.
async fn h2_as(t: &Target, leaf: &Leaf) -> h2::client::SendRequest<Bytes> {
    let tcp = tcp_from([127, 0, 0, 1], t.broker.addr).await.unwrap();
    let tls = tls_client(&t.ca, leaf).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    send
}

/// Opens a call to `method` and sends only `prefix` of its body, never
/// ending it; answers the call's gRPC status (from the headers of a
/// trailers-only answer, or the trailers) and how long it took.
async fn stalled_call(
    mut send: h2::client::SendRequest<Bytes>,
    method: &str,
    prefix: &'static [u8],
) -> (Code, Duration) {
    let started = Instant::now();
    let request = tonic::codegen::http::Request::post(format!("https://localhost/keybroker.v1.KeyBroker/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    send = send.ready().await.unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(prefix), false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer").unwrap();
    let status = match response.headers().get("grpc-status") {
        Some(code) => code.to_str().unwrap().parse::<i32>().unwrap(),
        None => {
            let mut answer = response.into_body();
            while answer.data().await.is_some() {}
            let trailers = answer.trailers().await.unwrap().expect("trailers");
            trailers["grpc-status"].to_str().unwrap().parse::<i32>().unwrap()
        }
    };
    drop(body);
    (Code::from_i32(status), started.elapsed())
}

/// A grpc message prefix promising a 100-byte IssueDataKeyRequest, and
/// two bytes of it.
const STALLED_UNARY: &[u8] = &[0, 0, 0, 0, 100, 0x08, 0x80];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legitimate_caller_is_served_while_a_stranger_and_a_granted_caller_try_to_exhaust_the_broker() {
    let t = target().await;
    let (stranger, greedy) = (t.ca.client(STRANGER), t.ca.client(GREEDY));

    // The legitimate caller, from another address, with a 2 s deadline per call.
    let legit = t.ca.client(LEGIT);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&t.ca.pem))
        .domain_name("localhost")
        .identity(Identity::from_pem(&legit.cert_pem, &legit.key_pem));
    let addr = t.broker.addr;
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_| async move {
            tcp_from([127, 0, 0, 2], addr).await.map(hyper_util::rt::TokioIo::new)
        }))
        .await
        .unwrap();
    let mut client = KeyBrokerClient::new(channel);
    client.issue_data_key(issue(128, "aes-gcm")).await.unwrap();

    // Unfinished handshakes: TCP connections that never say a word (10 of
    // the 16 handshakes the broker runs at once).
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(tcp_from([127, 0, 0, 1], addr).await.unwrap());
    }
    // Idle connections: TLS done, HTTP/2 never started.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let tcp = tcp_from([127, 0, 0, 1], addr).await.unwrap();
        idle.push(tls_client(&t.ca, &greedy).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap());
    }
    // Stalled bodies from a stranger (no rule) and the greedy caller, and
    // idle EncryptObject streams from the greedy caller.
    let stranger_conn = h2_as(&t, &stranger).await;
    let greedy_conn = h2_as(&t, &greedy).await;
    let mut attack = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (conn, method, prefix) = match i % 3 {
            0 => (stranger_conn.clone(), "IssueDataKey", STALLED_UNARY),
            1 => (greedy_conn.clone(), "IssueDataKey", STALLED_UNARY),
            _ => (greedy_conn.clone(), "EncryptObject", &[][..]),
        };
        let who = if i % 3 == 0 { "stranger" } else { "greedy" };
        attack.spawn(async move { (who, method, stalled_call(conn, method, prefix).await) });
    }

    // Meanwhile the legitimate caller keeps being served within its deadline.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        let answer = client.issue_data_key(issue(128, "aes-gcm")).await;
        assert!(answer.is_ok(), "the legitimate caller was refused under attack: {answer:?}");
        assert!(asked.elapsed() < Duration::from_secs(2));
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served >= 10, "served {served} calls in 3 s");

    // Every attacking call ended, and how.
    let mut outcomes = std::collections::HashMap::<(&str, &str, Code), (usize, Duration)>::new();
    while let Some(result) = attack.join_next().await {
        let (who, method, (code, took)) = result.unwrap();
        let entry = outcomes.entry((who, method, code)).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(took);
    }
    let count = |who, method, code| outcomes.get(&(who, method, code)).map_or(0, |o| o.0);
    // The stranger is refused at once, without its body: all 20.
    assert_eq!(count("stranger", "IssueDataKey", Code::PermissionDenied), 20, "{outcomes:?}");
    assert!(outcomes[&("stranger", "IssueDataKey", Code::PermissionDenied)].1 < READ_TIMEOUT, "{outcomes:?}");
    // The greedy caller gets its cap of 3 at a time; the rest are shed at
    // once, and the admitted ones end at the read timeout.
    let timed_out = count("greedy", "IssueDataKey", Code::DeadlineExceeded)
        + count("greedy", "EncryptObject", Code::DeadlineExceeded);
    let shed = count("greedy", "IssueDataKey", Code::ResourceExhausted)
        + count("greedy", "EncryptObject", Code::ResourceExhausted);
    assert_eq!(timed_out + shed, 40, "{outcomes:?}");
    assert!((1..=3).contains(&timed_out), "only its cap of 3 were admitted at once: {outcomes:?}");

    // The idle connections and the silent sockets were closed by the broker.
    // (The broker's HTTP/2 settings come first; then the connection ends.)
    for mut conn in idle {
        let mut sent = Vec::new();
        let read = tokio::time::timeout(IDLE_TIMEOUT * 3, conn.read_to_end(&mut sent)).await;
        assert!(read.is_ok(), "an idle connection stayed open: {read:?}");
    }
    for mut socket in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, socket.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "an unfinished handshake stayed open: {read:?}");
    }
    // The legitimate caller is still served afterwards.
    client.issue_data_key(issue(128, "aes-gcm")).await.unwrap();

    // Every refusal is in the audit log under its caller's identity.
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&t.audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let audited =
        |identity: &str, code: &str| records.iter().filter(|r| r["identity"] == identity && r["code"] == code).count();
    assert_eq!(audited(STRANGER, "PermissionDenied"), 20);
    assert_eq!(audited(GREEDY, "ResourceExhausted"), shed);
    assert_eq!(audited(GREEDY, "DeadlineExceeded"), timed_out);
}
