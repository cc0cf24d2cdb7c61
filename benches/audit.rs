//! IssueDataKey throughput with the audit log on and off, in the same run:
//! the real gRPC server on loopback, in process, local keyring, over 4
//! connections, alternating off/on three times, at 32 callers and at 256
//! (`KEYBROKER_BENCH_CONCURRENCY=32,256` is the default). The audit log is a
//! file in the target directory (a real disk), fdatasync'd per group commit.
//! Before the runs it times one 400-byte append + fdatasync on that disk,
//! the floor that any durable record adds to a call's latency.
//!
//! `cargo bench --bench audit`. Target: with the log on, at least 0.8 of the
//! throughput with it off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

/// The allocator the `keybroker` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use keybroker::config::{Config, KmsBackend, TlsMode};
use keybroker::loadgen::{LoadOptions, LoadRpc, run};

async fn serve(dir: &std::path::Path, audit: bool) -> (std::net::SocketAddr, Option<keybroker::audit::AuditLog>) {
    let mut config = Config::default();
    config.tls.mode = TlsMode::Plaintext;
    config.kms.backend = KmsBackend::Local;
    config.kms.local.master_key_file = dir.join("master.key");
    config.kms.default_key_id = Some("alias/bench".into());
    config.limits.max_concurrent_requests = 4096;
    if audit {
        config.audit.file = Some(dir.join(format!("audit-{}.jsonl", uuid::Uuid::new_v4())));
    }
    let kms = keybroker::server::build_kms(&config).await.unwrap();
    let services = keybroker::server::Services::new(&config, kms, None, None).unwrap();
    let log = services.gate.audit.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        keybroker::server::serve(listener, &config, services, std::future::pending()).await.unwrap();
    });
    (addr, log)
}

/// Mean microseconds of one 400-byte append + fdatasync in `dir`, idle.
fn sync_floor(dir: &std::path::Path) -> f64 {
    use std::io::Write as _;
    let path = dir.join("sync-floor");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let rounds = 500;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        file.write_all(&[b'x'; 400]).unwrap();
        file.sync_data().unwrap();
    }
    let _ = std::fs::remove_file(&path);
    start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-audit");
    std::fs::create_dir_all(&dir).unwrap();
    let levels: Vec<usize> = std::env::var("KEYBROKER_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "32,256".to_owned())
        .split(',')
        .map(|v| v.trim().parse().expect("KEYBROKER_BENCH_CONCURRENCY: comma-separated numbers"))
        .collect();
    println!("append + fdatasync on this disk, idle: {:.0} us", sync_floor(&dir));
    let mut summary = Vec::new();
    for concurrency in levels {
        let options = LoadOptions {
            rpc: LoadRpc::IssueDataKey,
            concurrency,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
        };
        let mut totals = [(0.0, 0u32); 2];
        println!("IssueDataKey, local keyring, concurrency {concurrency} over 4 connections, 5 s per run");
        for round in 0..3 {
            for (slot, audit) in [(0, false), (1, true)] {
                let (addr, log) = serve(&dir, audit).await;
                let mut channels = Vec::new();
                for _ in 0..4 {
                    channels.push(
                        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                            .unwrap()
                            .connect()
                            .await
                            .unwrap(),
                    );
                }
                let report = run(&channels, &options).await;
                assert_eq!(report.error_count(), 0, "{}", report.summary());
                let batching = log
                    .map(|l| {
                        let (records, commits) = l.stats();
                        format!(
                            ", {:.1} records per commit, {} us per write + fdatasync",
                            records as f64 / commits.max(1) as f64,
                            l.mean_commit().as_micros()
                        )
                    })
                    .unwrap_or_default();
                println!("round {round} audit {}: {}{batching}", if audit { "on " } else { "off" }, report.summary());
                totals[slot].0 += report.rps();
                totals[slot].1 += 1;
            }
        }
        let off = totals[0].0 / f64::from(totals[0].1);
        let on = totals[1].0 / f64::from(totals[1].1);
        summary.push(format!(
            "concurrency {concurrency}: mean requests/s audit off {off:.0}, audit on {on:.0}, ratio on/off {:.2} (target >= 0.80)",
            on / off
        ));
    }
    for line in summary {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
