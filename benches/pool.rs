//! The key pool against a distant KMS: SubmitEncryptedJob latency with the
//! pool cold (off: every key waits for KMS) and warm, and jobs through a
//! KMS outage, through the real gRPC server on loopback with the real AWS
//! SDK path to `scripts/kms-stub.js`, which answers Encrypt after an
//! injected round trip and can be made unreachable on demand.
//!
//! `cargo bench --bench pool` (or `scripts/bench-pool`). Targets: with the
//! pool warm, a 30-output job's p50 at most 0.15 of one KMS round trip and
//! its p99 at most 0.3, the 120-key job likewise; KMS unreachable for 10 s
//! during a steady job load below the pool's capacity fails no job.
//! Variables: `KEYBROKER_BENCH_RTT_MS` (20), `KEYBROKER_BENCH_JOBS` (100
//! measured jobs per row), `KEYBROKER_BENCH_OUTAGE_SECS` (10),
//! `KEYBROKER_BENCH_LEDGER=off` (no key ledger, to see its share),
//! `KEYBROKER_BENCH_ROWS=warm` (the warm rows and the outage only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The allocator the `keybroker` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keybroker::app::config::{Config, TlsMode};
use keybroker::app::server::{Application, Peers};
use keybroker::custody::kms::{AwsKms, Kms};
use keybroker::jobs::et::pipeline::Pipeline;
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::transport::Channel;

#[path = "support/jobs.rs"]
mod jobs;
use jobs::{job, ms, percentile};

const STUB_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000";
const PIPELINE: &str = "3456789012345-benchp";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `scripts/kms-stub.js` with the round trip and a control port.
struct Stub {
    child: Child,
    url: String,
    control: u16,
}

impl Stub {
    fn start(rtt: Duration) -> Stub {
        let (port, control) = (free_port(), free_port());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kms-stub.js");
        let child = Command::new("node")
            .args([script, &port.to_string(), "--latency-ms", &rtt.as_millis().to_string()])
            .args(["--control-port", &control.to_string()])
            .spawn()
            .expect("node runs scripts/kms-stub.js");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", control)).is_err() {
            assert!(Instant::now() < until, "the KMS stub did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Stub { child, url: format!("http://127.0.0.1:{port}"), control }
    }

    /// Makes KMS unreachable for `span`.
    fn down_for(&self, span: Duration) {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.control)).unwrap();
        write!(stream, "GET /down?ms={} HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n", span.as_millis()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("down"), "{answer}");
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &std::path::Path, pool: bool) -> Config {
    let mut config = Config::default();
    config.tls.mode = TlsMode::Plaintext;
    config.policy.allow_all = true;
    config.kms.default_key_id = Some(STUB_ARN.to_owned());
    config.ledger.file = dir.join("ledger.sqlite");
    config.transcoder.submit = false;
    config.transcoder.pipelines = vec![Pipeline {
        id: PIPELINE.to_owned(),
        kms_key_arn: Some(STUB_ARN.to_owned()),
        role: "arn:aws:iam::111122223333:role/Elastic_Transcoder_Default_Role".to_owned(),
        region: Some("us-east-1".to_owned()),
        ..Pipeline::default()
    }];
    config.ledger.enabled = std::env::var("KEYBROKER_BENCH_LEDGER").as_deref() != Ok("off");
    config.pool.enabled = Some(pool);
    config.pool.min_size = 256;
    config.pool.key_bits = vec![256];
    config.pool.concurrency = 32;
    config
}

/// Serves `config` over AWS KMS at the stub; answers a client and the app's
/// broker (for its pools).
async fn serve(config: Config, stub: &Stub) -> (KeyBrokerClient<Channel>, Arc<keybroker::custody::broker::Broker>) {
    let sdk = keybroker::app::aws::sdk_config_loader(&config.aws)
        .endpoint_url(&stub.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new("bench", "bench", None, None, "bench"))
        .load()
        .await;
    let kms: Arc<dyn Kms> = Arc::new(AwsKms::new(&sdk));
    let app = Application::build(config, Peers { kms: Some(kms), ..Peers::default() }).await.unwrap();
    let broker = app.broker();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { app.run(listener, std::future::pending()).await.unwrap() });
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (KeyBrokerClient::new(channel), broker)
}

/// Jobs started every `every` (open loop: a slow answer does not delay
/// the next job) for `span`; answers each one's latency or error, by start
/// time.
async fn paced_jobs(
    client: &KeyBrokerClient<Channel>,
    request: &pb::SubmitEncryptedJobRequest,
    every: Duration,
    span: Duration,
) -> Vec<(Duration, Result<Duration, tonic::Code>)> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    let mut calls = Vec::new();
    while started.elapsed() < span {
        tick.tick().await;
        let (mut client, request) = (client.clone(), request.clone());
        let at = started.elapsed();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = client.submit_encrypted_job(request).await.map(|_| t.elapsed()).map_err(|s| s.code());
            (at, result)
        }));
    }
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rtt = Duration::from_millis(env_or("KEYBROKER_BENCH_RTT_MS", 20));
    let jobs = env_or("KEYBROKER_BENCH_JOBS", 100) as u32;
    let outage = Duration::from_secs(env_or("KEYBROKER_BENCH_OUTAGE_SECS", 10));
    let stub = Stub::start(rtt);
    let dir = tempfile::tempdir().unwrap();
    println!("KMS round trip injected: {} ms (scripts/kms-stub.js over HTTP, the AWS SDK path)", ms(rtt));

    let mut rows: Vec<(String, Duration, Duration, usize)> = Vec::new();
    let mut one_wrap = Duration::ZERO;
    let only_warm = std::env::var("KEYBROKER_BENCH_ROWS").as_deref() == Ok("warm");
    for warm in [false, true] {
        if only_warm && !warm {
            continue;
        }
        let sub = dir.path().join(if warm { "warm" } else { "cold" });
        let (mut client, broker) = serve(config(&sub, warm), &stub).await;
        if warm {
            let pool = broker.pool().unwrap();
            assert!(pool.wait_filled(256, Duration::from_secs(60)).await, "the pool did not fill");
        } else {
            let mut wraps = Vec::new();
            for _ in 0..33 {
                let t = Instant::now();
                client.issue_data_key(pb::IssueDataKeyRequest::default()).await.unwrap();
                wraps.push(t.elapsed());
            }
            one_wrap = percentile(&wraps[3..], 0.5);
            rows.push((
                "IssueDataKey, pool off (one KMS round trip)".into(),
                one_wrap,
                percentile(&wraps[3..], 0.99),
                0,
            ));
        }
        let label = if warm { "warm" } else { "cold" };
        for (extras, every) in [(false, Duration::from_millis(100)), (true, Duration::from_millis(200))] {
            let request = job(PIPELINE, 30, extras);
            // Warm-up: the pool learns the demand and grows to cover it.
            paced_jobs(&client, &request, every, Duration::from_secs(3)).await;
            let results = paced_jobs(&client, &request, every, every * jobs).await;
            let failed = results.iter().filter(|(_, r)| r.is_err()).count();
            let took: Vec<_> = results.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
            let name = format!("SubmitEncryptedJob, {} keys, pool {label}", if extras { 120 } else { 30 });
            rows.push((name, percentile(&took, 0.5), percentile(&took, 0.99), failed));
        }
        if let Some(pool) = broker.pool() {
            for (key, depth) in pool.depths() {
                println!("pool {} {} bits after the warm rows: {depth} keys", key.key_id, key.bits.bits());
            }
        }
    }
    println!("{:<52} {:>9} {:>9} {:>10} {:>10} {:>7}", "call", "p50 ms", "p99 ms", "p50/1 RTT", "p99/1 RTT", "failed");
    for (name, p50, p99, failed) in &rows {
        println!(
            "{name:<52} {:>9.2} {:>9.2} {:>10.3} {:>10.3} {failed:>7}",
            ms(*p50),
            ms(*p99),
            p50.as_secs_f64() / rtt.as_secs_f64(),
            p99.as_secs_f64() / rtt.as_secs_f64()
        );
    }
    println!("(one KMS round trip through the broker, IssueDataKey p50 with the pool off: {:.2} ms)", ms(one_wrap));
    let ledger = std::env::var("KEYBROKER_BENCH_LEDGER").as_deref() != Ok("off");
    println!("key ledger: {}", if ledger { "SQLite, synchronous = FULL (as --dev)" } else { "off" });

    // KMS unreachable during a steady load below the pool's capacity:
    // 30-key jobs at 5 a second (150 keys/s).
    let (client, broker) = serve(config(&dir.path().join("outage"), true), &stub).await;
    let pool = broker.pool().unwrap();
    assert!(pool.wait_filled(256, Duration::from_secs(60)).await);
    let request = job(PIPELINE, 30, false);
    let every = Duration::from_millis(200);
    paced_jobs(&client, &request, every, Duration::from_secs(10)).await;
    let before: usize = pool.depths().iter().map(|(_, d)| d).sum();
    let load = {
        let client = client.clone();
        let request = request.clone();
        tokio::spawn(async move { paced_jobs(&client, &request, every, outage + Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    stub.down_for(outage);
    let results = load.await.unwrap();
    let down_from = Duration::from_secs(5);
    let during: Vec<_> = results.iter().filter(|(at, _)| *at >= down_from && *at < down_from + outage).collect();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let took: Vec<_> = during.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
    let after: usize = pool.depths().iter().map(|(_, d)| d).sum();
    println!(
        "KMS unreachable for {:?} (from {:?} after the load began) under 30-key jobs at 5/s: {} jobs in all, {} during \
         the outage, {failed} failed; during the outage p50 {:.2} ms, p99 {:.2} ms; pooled keys {before} before, \
         {after} at the end",
        outage,
        down_from,
        results.len(),
        during.len(),
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.99)),
    );
    let errors: Vec<_> = results.iter().filter_map(|(at, r)| r.as_ref().err().map(|c| (at, c))).take(5).collect();
    if !errors.is_empty() {
        println!("first failures (start time, code): {errors:?}");
    }
}
