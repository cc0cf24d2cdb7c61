//! SubmitEncryptedJob latency against a KMS with an injected 20 ms round
//! trip, beside the latency of one wrap (IssueDataKey), in the same run,
//! through the real gRPC server on loopback.
//!
//! `cargo bench --bench submit_job` (release build). Target: a 30-output AES
//! job in at most 3 KMS round trips of wall time, not 30.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The allocator the `keybroker` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keybroker::app::config::{Config, DEV_PIPELINE_ID, KmsBackend};
use keybroker::app::server::{Application, Peers};
use keybroker::custody::kms::{Kms, LocalKeyring};

#[path = "support/jobs.rs"]
mod jobs;
// The benchmark uses only the delay, not the call count.
#[allow(dead_code)]
#[path = "../tests/it/support/kms.rs"]
mod kms;
use jobs::{job, ms, percentile};
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use kms::ScriptedKms;

/// The injected KMS round trip; `KEYBROKER_BENCH_RTT_MS` overrides 20.
fn round_trip() -> Duration {
    Duration::from_millis(std::env::var("KEYBROKER_BENCH_RTT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(20))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("keybroker-bench-{}", std::process::id()));
    let mut config = Config::default();
    config.kms.backend = KmsBackend::Local;
    config.kms.local.master_key_file = dir.join("master.key");
    config.apply_dev();
    let ring: Arc<dyn Kms> = Arc::new(LocalKeyring::open_or_create(&config.kms.local.master_key_file).unwrap());
    let kms: Arc<dyn Kms> = ScriptedKms::delayed(ring, round_trip());
    let peers = Peers { kms: Some(kms), ..Peers::default() };
    let app = Application::build(config.clone(), peers).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        app.run(listener, std::future::pending()).await.unwrap();
    });
    let mut client = KeyBrokerClient::connect(format!("http://{addr}")).await.unwrap();

    let runs = 30;
    let mut wrap = Vec::new();
    for _ in 0..runs + 3 {
        let started = Instant::now();
        client.issue_data_key(pb::IssueDataKeyRequest::default()).await.unwrap();
        wrap.push(started.elapsed());
    }
    wrap.drain(..3);
    let mut rows = vec![("IssueDataKey (1 wrap)", 1, wrap)];
    for (name, request, wraps) in [
        ("SubmitEncryptedJob, 30 outputs", job(DEV_PIPELINE_ID, 30, false), 30),
        ("SubmitEncryptedJob, 30 outputs + thumbnails + 2 captions each", job(DEV_PIPELINE_ID, 30, true), 120),
    ] {
        let mut samples = Vec::new();
        for _ in 0..runs + 3 {
            let started = Instant::now();
            client.submit_encrypted_job(request.clone()).await.unwrap();
            samples.push(started.elapsed());
        }
        samples.drain(..3);
        rows.push((name, wraps, samples));
    }
    let base = percentile(&rows[0].2, 0.5);
    println!(
        "KMS round trip injected: {} ms; max_concurrent_kms_calls: {}; {runs} runs each",
        ms(round_trip()),
        config.transcoder.max_concurrent_kms_calls
    );
    println!("{:<64} {:>6} {:>9} {:>9} {:>12}", "call", "wraps", "p50 ms", "p90 ms", "p50 / 1 wrap");
    for (name, wraps, samples) in rows {
        let p50 = percentile(&samples, 0.5);
        let p90 = percentile(&samples, 0.9);
        println!(
            "{name:<64} {wraps:>6} {:>9.1} {:>9.1} {:>12.2}",
            ms(p50),
            ms(p90),
            p50.as_secs_f64() / base.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
