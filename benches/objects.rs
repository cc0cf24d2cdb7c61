//! EncryptObject throughput over loopback gRPC beside `openssl enc` on the
//! same bytes in the same run, and the broker's peak RSS while a 4 GiB stream
//! passes through it.
//!
//! `cargo bench --bench objects` (a `harness = false` bench, release profile).
//!
//! Throughput: an in-process server (local keyring, `--dev` configuration)
//! and a tonic client on one 2-worker runtime; for each mode at AES-256 the
//! client streams 1 GiB (`KEYBROKER_BENCH_MIB` changes it) of pseudo-random
//! bytes in 1 MiB chunks and reads the ciphertext back, timed from the call
//! to the `result` message; best of 3. Beside it, `openssl enc
//! -aes-256-{cbc,ctr} -nosalt` over a file of the same bytes to `/dev/null`
//! (process start and page-cache read included), best of 3.
//!
//! Memory: `keybroker serve --dev --allow-plaintext-export` as a child
//! process (this bench's own release binary); 4 GiB
//! (`KEYBROKER_BENCH_RSS_MIB`) through EncryptObject (aes-gcm), then through
//! DecryptObject (aes-ctr, which takes any bytes), reading the child's
//! `VmRSS` before and `VmHWM` (peak resident set) from `/proc/PID/status`
//! after each. MB/s are 10^6 bytes per second.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The allocator the `keybroker` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keybroker::app::config::{Config, KmsBackend};
use keybroker::app::server::{Application, Peers};
use keybroker::custody::kms::{Kms, LocalKeyring};
use keybroker::pb;
use keybroker::pb::key_broker_client::KeyBrokerClient;
use tonic::transport::Channel;

const MIB: usize = 1 << 20;
const RUNS: usize = 3;
const MODES: [&str; 3] = ["aes-cbc-pkcs7", "aes-ctr", "aes-gcm"];

fn env_mib(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// 16 distinct MiB of pseudo-random bytes (xorshift64*), cycled.
fn chunk_pool() -> Vec<Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..16)
        .map(|_| {
            let mut chunk = vec![0u8; MIB];
            for word in chunk.chunks_mut(8) {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()[..word.len()]);
            }
            chunk
        })
        .collect()
}

/// Streams `mib` chunks from the pool through EncryptObject; answers the
/// ciphertext bytes seen and the time to the result.
async fn encrypt_stream(
    client: &mut KeyBrokerClient<Channel>,
    mode: &str,
    pool: &Arc<Vec<Vec<u8>>>,
    mib: usize,
) -> (u64, Duration) {
    use pb::encrypt_object_request::Message;
    let start = pb::EncryptObjectRequest {
        message: Some(Message::Start(pb::EncryptObjectStart { mode: mode.into(), ..Default::default() })),
    };
    let pool = pool.clone();
    let chunks =
        (0..mib).map(move |i| pb::EncryptObjectRequest { message: Some(Message::Chunk(pool[i % 16].clone())) });
    let started = Instant::now();
    let mut stream =
        client.encrypt_object(futures::stream::iter(std::iter::once(start).chain(chunks))).await.unwrap().into_inner();
    let mut seen = 0u64;
    let mut result = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.message.unwrap() {
            pb::encrypt_object_response::Message::Chunk(bytes) => seen += bytes.len() as u64,
            pb::encrypt_object_response::Message::Result(r) => result = Some(r),
        }
    }
    let took = started.elapsed();
    let result = result.expect("a result");
    assert_eq!(result.plaintext_bytes, (mib * MIB) as u64);
    assert_eq!(result.ciphertext_bytes, seen);
    (seen, took)
}

/// Streams `mib` chunks through DecryptObject under `block` (aes-ctr: any
/// bytes decrypt).
async fn decrypt_stream(
    client: &mut KeyBrokerClient<Channel>,
    block: pb::Encryption,
    pool: &Arc<Vec<Vec<u8>>>,
    mib: usize,
) -> Duration {
    use pb::decrypt_object_request::Message;
    let start = pb::DecryptObjectRequest {
        message: Some(Message::Start(pb::DecryptObjectStart { encryption: Some(block), ..Default::default() })),
    };
    let pool = pool.clone();
    let chunks =
        (0..mib).map(move |i| pb::DecryptObjectRequest { message: Some(Message::Chunk(pool[i % 16].clone())) });
    let started = Instant::now();
    let mut stream =
        client.decrypt_object(futures::stream::iter(std::iter::once(start).chain(chunks))).await.unwrap().into_inner();
    let mut result = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let pb::decrypt_object_response::Message::Result(r) = message.message.unwrap() {
            result = Some(r);
        }
    }
    assert_eq!(result.expect("a result").plaintext_bytes, (mib * MIB) as u64);
    started.elapsed()
}

fn openssl_enc(cipher: &str, path: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("openssl")
        .args(["enc", cipher, "-nosalt", "-K", &"ab".repeat(32), "-iv", &"cd".repeat(16), "-out", "/dev/null", "-in"])
        .arg(path)
        .stderr(Stdio::inherit())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl enc {cipher}");
    started.elapsed()
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

/// A client with tonic's defaults, or as `keybroker encrypt` connects:
/// larger HTTP/2 receive windows (4 MiB per stream, 8 MiB per connection)
/// and 1 MiB frames.
async fn client(addr: &str, large_windows: bool) -> KeyBrokerClient<Channel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    if large_windows {
        endpoint = endpoint
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .max_frame_size(1 << 20);
    }
    KeyBrokerClient::new(endpoint.connect().await.unwrap())
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

async fn throughput(pool: &Arc<Vec<Vec<u8>>>, dir: &Path) {
    let mib = env_mib("KEYBROKER_BENCH_MIB", 1024);
    let mut config = Config::default();
    config.kms.backend = KmsBackend::Local;
    config.kms.local.master_key_file = dir.join("master.key");
    config.apply_dev();
    let ring: Arc<dyn Kms> = Arc::new(LocalKeyring::open_or_create(&config.kms.local.master_key_file).unwrap());
    let peers = Peers { kms: Some(ring), ..Peers::default() };
    let app = Application::build(config.clone(), peers).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        app.run(listener, std::future::pending()).await.unwrap();
    });
    let mut clients = [client(&addr.to_string(), false).await, client(&addr.to_string(), true).await];

    // The same bytes on disk for openssl: the pool, cycled.
    let file = dir.join("plaintext.bin");
    {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..mib {
            out.write_all(&pool[i % 16]).unwrap();
        }
    }
    let openssl = |cipher: &str| (0..RUNS).map(|_| openssl_enc(cipher, &file)).min().unwrap();

    println!("EncryptObject over loopback gRPC, in-process server, {mib} MiB in 1 MiB chunks, AES-256, best of {RUNS}");
    println!("(client A: tonic's HTTP/2 defaults; client B: 4 MiB stream / 8 MiB connection windows, 1 MiB frames)");
    println!("{:<14} {:>16} {:>16} {:>16} {:>10}", "mode", "client A", "client B", "openssl enc", "B / openssl");
    for mode in MODES {
        let mut best = [Duration::MAX; 2];
        for client in clients.iter_mut() {
            // Warm up the connection and the allocator.
            encrypt_stream(client, mode, pool, 16).await;
        }
        // Interleaved, so both clients see the same machine load.
        for _ in 0..RUNS {
            for (client, best) in clients.iter_mut().zip(best.iter_mut()) {
                *best = (*best).min(encrypt_stream(client, mode, pool, mib).await.1);
            }
        }
        let [a, b] = best.map(|took| mb_per_s(mib * MIB, took));
        let theirs = match mode {
            "aes-cbc-pkcs7" => Some(mb_per_s(mib * MIB, openssl("-aes-256-cbc"))),
            "aes-ctr" => Some(mb_per_s(mib * MIB, openssl("-aes-256-ctr"))),
            _ => None,
        };
        match theirs {
            Some(theirs) => {
                println!("{mode:<14} {a:>11.0} MB/s {b:>11.0} MB/s {theirs:>11.0} MB/s {:>10.2}", b / theirs);
            }
            None => println!("{mode:<14} {a:>11.0} MB/s {b:>11.0} MB/s {:>16} {:>10}", "n/a", "n/a"),
        }
    }
    let _ = std::fs::remove_file(&file);
}

async fn peak_rss(pool: &Arc<Vec<Vec<u8>>>, dir: &Path) {
    let mib = env_mib("KEYBROKER_BENCH_RSS_MIB", 4096);
    let addr = free_addr();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keybroker"))
        .current_dir(dir)
        .args(["serve", "--dev", "--allow-plaintext-export", "--listen", &addr])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = client(&addr, true).await;
    encrypt_stream(&mut client, "aes-gcm", pool, 16).await;
    let idle = proc_status_kib(pid, "VmRSS:");

    let mut encrypted = Vec::new();
    for mode in MODES {
        let (_, took) = encrypt_stream(&mut client, mode, pool, mib).await;
        encrypted.push((mode, took, proc_status_kib(pid, "VmHWM:")));
    }

    let block = client
        .issue_data_key(pb::IssueDataKeyRequest { mode: "aes-ctr".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .encryption
        .unwrap();
    let decrypt_took = decrypt_stream(&mut client, block, pool, mib).await;
    let after_decrypt = proc_status_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();

    let as_mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!("Peak RSS of `keybroker serve --dev` (child process, pid {pid}) while {mib} MiB stream through it");
    println!("  resident after start and a 16 MiB warm-up (VmRSS):       {:>7.1} MiB", as_mib(idle));
    for (mode, took, peak) in encrypted {
        println!(
            "  peak after EncryptObject {mode:<13}, {mib} MiB (VmHWM): {:>7.1} MiB   ({:.0} MB/s)",
            as_mib(peak),
            mb_per_s(mib * MIB, took)
        );
    }
    println!(
        "  peak after DecryptObject aes-ctr      , {mib} MiB (VmHWM): {:>7.1} MiB   ({:.0} MB/s)",
        as_mib(after_decrypt),
        mb_per_s(mib * MIB, decrypt_took)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("keybroker-bench-objects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{cpus} CPUs; load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let pool = Arc::new(chunk_pool());
    if std::env::var_os("KEYBROKER_BENCH_SKIP_THROUGHPUT").is_none() {
        throughput(&pool, &dir).await;
    }
    if std::env::var_os("KEYBROKER_BENCH_SKIP_RSS").is_none() {
        peak_rss(&pool, &dir).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
