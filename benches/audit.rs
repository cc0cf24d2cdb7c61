//! IssueDataKey throughput with the audit log on and off, in the same run.
//!
//! The server is the release `keybroker serve --dev` (local keyring) as a
//! child process, pinned to CPU 0 with `taskset`; the load generator (this
//! process, the library's closed-loop `loadgen` over 4 connections) re-runs
//! itself pinned to CPU 1. So the server has a core of its own, as it would
//! in production, and the figures measure what the audit log costs the
//! server rather than how two processes share two cores. Without `taskset`
//! (or with `KEYBROKER_BENCH_PIN=0`) both run unpinned and the run says so.
//!
//! For each caller count, rounds alternate a server without and with
//! `--audit-log` (a fresh server and a fresh log file each run, on the
//! machine's disk under `target/`). Each run reports requests/s, p50/p99,
//! the server's CPU time per call (from `/proc/PID/stat`) and, with the log,
//! records per group commit and the mean write + fdatasync time (from the
//! server's Prometheus metrics). The summary gives the mean of each side,
//! their ratio, and the per-round ratios (median, lowest, highest), since
//! runs on a shared machine vary by 10-20 % on their own.
//!
//! Two KMS setups (`KEYBROKER_BENCH_KMS`, comma separated, default
//! `local,moto`): `local`, the `--dev` in-process keyring, where a call is
//! ~25 us of CPU and nothing else, so the log's fdatasync latency and CPU
//! are all the difference (the worst case); and `moto`, the `aws` backend
//! against a local moto server over HTTP (`.venv/bin/moto_server`, else
//! `PATH`), where every call makes a KMS round trip as it does in
//! production. moto runs on the load generator's CPU.
//!
//! `cargo bench --bench audit`; `KEYBROKER_BENCH_CONCURRENCY` (comma
//! separated; default `32,256` for the keyring, `8,32` for moto), `KEYBROKER_BENCH_ROUNDS` (default 5),
//! `KEYBROKER_BENCH_SECONDS` (per run, default 5). The servers inherit the
//! environment, so `KEYBROKER_AUDIT__GROUP_COMMIT_DELAY_US=0` measures
//! back-to-back commits. Target: with the log on, at least 0.8 of the
//! throughput with it off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keybroker::client::loadgen::{LoadOptions, LoadReport, LoadRpc, run};

const BIN: &str = env!("CARGO_BIN_EXE_keybroker");
/// Set in the re-run that `taskset` pinned.
const PINNED: &str = "KEYBROKER_BENCH_PINNED";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().map_or(default, |v| v.trim().parse().unwrap_or_else(|_| panic!("{name}: bad value {v}")))
}

fn has_taskset() -> bool {
    Command::new("taskset").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    metrics: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// Where the server's KMS is.
#[derive(Clone)]
enum Kms {
    /// `--dev`: the in-process keyring; a call costs tens of microseconds
    /// of CPU and nothing else, the worst case for the log.
    Local,
    /// The `aws` backend against a local moto server over HTTP: every
    /// IssueDataKey makes a KMS round trip, as it does in production.
    Moto { url: String, key: String },
}

impl Kms {
    fn name(&self) -> &'static str {
        match self {
            Kms::Local => "local keyring (--dev)",
            Kms::Moto { .. } => "aws backend against moto over HTTP",
        }
    }
}

/// A moto server (from `.venv`, as `scripts/test` installs it, else `PATH`);
/// killed when dropped.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_moto() -> (Moto, Kms) {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server");
    let binary = if Path::new(venv).exists() { venv } else { "moto_server" };
    let addr = free_addr();
    let (host, port) = addr.split_once(':').unwrap();
    let child = Command::new(binary)
        .args(["-H", host, "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} (pip install 'moto[server]'): {e}"));
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{addr}");
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&url)
        .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
            aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "keybroker-bench"),
        ))
        .build();
    let created =
        aws_sdk_kms::Client::new(&config).create_key().description("keybroker audit bench").send().await.unwrap();
    let key = created.key_metadata().unwrap().arn().unwrap().to_owned();
    (moto, Kms::Moto { url, key })
}

fn start(dir: &Path, kms: &Kms, audit: Option<&Path>, pin: bool) -> Server {
    let addr = free_addr();
    let mut command = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    command.current_dir(dir).args(["serve", "--listen", &addr]);
    match kms {
        Kms::Local => {
            command.arg("--dev");
        }
        Kms::Moto { url, key } => {
            let policy = dir.join("policy.toml");
            std::fs::write(
                &policy,
                "[[rule]]\nidentity = \"anonymous\"\nrpcs = [\"*\"]\npipelines = [\"*\"]\nkms_keys = [\"*\"]\n",
            )
            .unwrap();
            command.arg("--policy").arg(policy);
            command.envs([
                ("KEYBROKER_TLS__MODE", "plaintext"),
                ("KEYBROKER_KMS__BACKEND", "aws"),
                ("KEYBROKER_KMS__DEFAULT_KEY_ID", key),
                ("AWS_ENDPOINT_URL", url),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ]);
        }
    }
    command.env("KEYBROKER_LIMITS__MAX_CONCURRENT_REQUESTS", "4096");
    // 256 callers share one identity (anonymous): not shed at its limit.
    command.env("KEYBROKER_LIMITS__MAX_CONCURRENT_PER_IDENTITY", "4096");
    let metrics = audit.map(|log| {
        let metrics = free_addr();
        command.arg("--audit-log").arg(log).args(["--metrics-listen", &metrics]);
        metrics
    });
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut server = Server { child, addr, metrics };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&server.addr).is_err() {
        assert!(server.child.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "the server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The process's user + system CPU time so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after.split_whitespace().skip(11).take(2).map(|f| f.parse().unwrap()).collect();
    // USER_HZ is 100 on Linux.
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// `sum / count` of a Prometheus summary or histogram.
fn mean_of(metrics: &str, name: &str) -> f64 {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{suffix} ")))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap_or(0.0))
    };
    value("_sum") / value("_count").max(1.0)
}

async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

/// Mean microseconds of one 400-byte append + fdatasync in `dir`, idle.
fn sync_floor(dir: &Path) -> f64 {
    use std::io::Write as _;
    let path = dir.join("sync-floor");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let rounds = 500;
    let start = Instant::now();
    for _ in 0..rounds {
        file.write_all(&[b'x'; 400]).unwrap();
        file.sync_data().unwrap();
    }
    let _ = std::fs::remove_file(&path);
    start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

struct Run {
    report: LoadReport,
    server_cpu_per_call: Duration,
    group: Option<(f64, f64)>,
}

async fn measure(dir: &Path, kms: &Kms, audit: Option<PathBuf>, pin: bool, options: &LoadOptions) -> Run {
    let server = start(dir, kms, audit.as_deref(), pin);
    let mut channels = Vec::new();
    for _ in 0..4 {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
        channels.push(endpoint.connect().await.unwrap());
    }
    let before = cpu_time(server.child.id());
    let report = run(&channels, options).await;
    let server_cpu = cpu_time(server.child.id()).saturating_sub(before);
    assert_eq!(report.error_count(), 0, "{}", report.summary());
    // The CPU count covers the warm-up too.
    let calls = report.rps() * (options.duration + options.warmup).as_secs_f64();
    let server_cpu_per_call = server_cpu.div_f64(calls.max(1.0));
    let group = match &server.metrics {
        Some(addr) => {
            let text = scrape(addr).await;
            Some((
                mean_of(&text, "keybroker_audit_commit_records"),
                mean_of(&text, "keybroker_audit_commit_seconds") * 1e6,
            ))
        }
        None => None,
    };
    if let Some(log) = audit {
        let _ = std::fs::remove_file(log);
    }
    Run { report, server_cpu_per_call, group }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

fn main() {
    let want_pin = std::env::var("KEYBROKER_BENCH_PIN").map_or(true, |v| v != "0");
    if want_pin && std::env::var_os(PINNED).is_none() && has_taskset() {
        // Re-run this benchmark on CPU 1, leaving CPU 0 to the server.
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(PINNED, "1")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let pin = std::env::var_os(PINNED).is_some();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(bench(pin));
}

async fn bench(pin: bool) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-audit");
    std::fs::create_dir_all(&dir).unwrap();
    let levels: Option<Vec<usize>> = std::env::var("KEYBROKER_BENCH_CONCURRENCY").ok().map(|levels| {
        levels
            .split(',')
            .map(|v| v.trim().parse().expect("KEYBROKER_BENCH_CONCURRENCY: comma-separated numbers"))
            .collect()
    });
    let rounds: usize = env_or("KEYBROKER_BENCH_ROUNDS", 5);
    let seconds: u64 = env_or("KEYBROKER_BENCH_SECONDS", 5);
    if pin {
        println!("server pinned to CPU 0, load generator to CPU 1");
    } else {
        println!("NOT pinned (no taskset, or KEYBROKER_BENCH_PIN=0): server and load generator share the CPUs");
    }
    println!("append + fdatasync on this disk, idle: {:.0} us", sync_floor(&dir));
    let mut summary = Vec::new();
    let mut backends = Vec::new();
    let mut _moto = None;
    for name in std::env::var("KEYBROKER_BENCH_KMS").unwrap_or_else(|_| "local,moto".to_owned()).split(',') {
        match name.trim() {
            "local" => backends.push(Kms::Local),
            "moto" => {
                let (moto, kms) = start_moto().await;
                _moto = Some(moto);
                backends.push(kms);
            }
            other => panic!("KEYBROKER_BENCH_KMS: {other}? (local, moto)"),
        }
    }
    // moto answers a few hundred calls a second and refuses some beyond
    // ~64 waiting; the default levels for it stay below that.
    let levels_for = |kms: &Kms| match (kms, &levels) {
        (Kms::Moto { .. }, None) => vec![8, 32],
        (_, None) => vec![32, 256],
        (_, Some(levels)) => levels.clone(),
    };
    for (kms, concurrency) in backends.iter().flat_map(|k| levels_for(k).into_iter().map(move |c| (k, c))) {
        let options = LoadOptions {
            rpc: LoadRpc::IssueDataKey,
            concurrency,
            duration: Duration::from_secs(seconds),
            warmup: Duration::from_secs(1),
            pipeline_id: String::new(),
        };
        println!(
            "IssueDataKey, {}, concurrency {concurrency} over 4 connections, {seconds} s per run, {rounds} rounds",
            kms.name()
        );
        let (mut off_total, mut on_total, mut ratios) = (0.0, 0.0, Vec::new());
        for round in 0..rounds {
            let mut rps = [0.0; 2];
            for (slot, audit) in [None, Some(dir.join(format!("audit-{round}.jsonl")))].into_iter().enumerate() {
                let on = audit.is_some();
                let run = measure(&dir, kms, audit, pin, &options).await;
                let group = run.group.map_or_else(String::new, |(records, micros)| {
                    format!(", {records:.1} records per commit, {micros:.0} us per write + fdatasync")
                });
                println!(
                    "round {round} audit {}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.1} us/call{group}",
                    if on { "on " } else { "off" },
                    run.report.rps(),
                    run.report.p50.as_secs_f64() * 1e3,
                    run.report.p99.as_secs_f64() * 1e3,
                    run.server_cpu_per_call.as_secs_f64() * 1e6,
                );
                rps[slot] = run.report.rps();
            }
            off_total += rps[0];
            on_total += rps[1];
            ratios.push(rps[1] / rps[0]);
        }
        let (off, on) = (off_total / rounds as f64, on_total / rounds as f64);
        let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = ratios.iter().copied().fold(0.0, f64::max);
        summary.push(format!(
            "{}, concurrency {concurrency}: mean requests/s audit off {off:.0}, on {on:.0}, ratio {:.2}; per-round ratios median {:.2}, lowest {lowest:.2}, highest {highest:.2} (target >= 0.80)",
            kms.name(),
            on / off,
            median(&mut ratios),
        ));
    }
    for line in summary {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
