//! Throughput of `keybroker::objects::cipher` beside OpenSSL on the same machine, in the
//! same run, so the ratio means something wherever it is run.
//!
//! `cargo bench --bench cipher` (a `harness = false` bench). For each ET mode
//! at AES-256 it streams the same pseudo-random data (256 MiB by default;
//! `KEYBROKER_BENCH_MIB` changes it) through `Encryptor` and `Decryptor` in
//! 1 MiB chunks from memory into one reused output buffer, and times, beside
//! it, `openssl enc -aes-256-cbc` / `-aes-256-ctr` on a file of the same bytes
//! (process start, page-cache read and `/dev/null` write included) and
//! `openssl speed -evp aes-256-{cbc,ctr,gcm} -bytes 16384 -seconds 3` (pure
//! in-memory, OpenSSL's best case; `enc` cannot do GCM). Each timing is the
//! best of 3. MB/s are 10^6 bytes per second.

use std::error::Error;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keybroker::custody::keys::{DataKey, EncryptionMode, Iv16, KeyBits};
use keybroker::objects::cipher::{Decryptor, Encryptor};

const MIB: usize = 1 << 20;
const RUNS: usize = 3;
const OPENSSL: &str = "openssl";

type Res<T> = Result<T, Box<dyn Error>>;

/// One in-place transform of a chunk, for the component rows.
type ChunkOp<'a> = Box<dyn FnMut(&mut [u8]) + 'a>;

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

fn best_of<F: FnMut() -> Res<Duration>>(mut run: F) -> Res<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        best = best.min(run()?);
    }
    Ok(best)
}

/// Pseudo-random bytes (xorshift64*): incompressible, cheap to make.
fn test_data(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        data.extend_from_slice(&word[..(len - data.len()).min(8)]);
    }
    data
}

fn time_encrypt(mode: EncryptionMode, key: &DataKey, iv: &Iv16, data: &[u8]) -> Res<Duration> {
    let mut out = Vec::with_capacity(MIB + 32);
    let start = Instant::now();
    let mut enc = Encryptor::new(mode, key, iv)?;
    for chunk in data.chunks(MIB) {
        out.clear();
        enc.update(chunk, &mut out)?;
        std::hint::black_box(&out);
    }
    out.clear();
    enc.finalize(&mut out)?;
    std::hint::black_box(&out);
    Ok(start.elapsed())
}

fn time_decrypt(mode: EncryptionMode, key: &DataKey, iv: &Iv16, ciphertext: &[u8]) -> Res<Duration> {
    let mut out = Vec::with_capacity(MIB + 32);
    let start = Instant::now();
    let mut dec = Decryptor::new(mode, key, iv)?;
    for chunk in ciphertext.chunks(MIB) {
        out.clear();
        dec.update(chunk, &mut out)?;
        std::hint::black_box(&out);
    }
    out.clear();
    dec.finalize(&mut out)?;
    Ok(start.elapsed())
}

/// The whole ciphertext, to time decryption on.
fn encrypt_all(mode: EncryptionMode, key: &DataKey, iv: &Iv16, data: &[u8]) -> Res<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + 32);
    let mut enc = Encryptor::new(mode, key, iv)?;
    enc.update(data, &mut out)?;
    enc.finalize(&mut out)?;
    Ok(out)
}

fn time_openssl_enc(cipher: &str, key: &DataKey, iv: &Iv16, path: &std::path::Path) -> Res<Duration> {
    let start = Instant::now();
    let status = Command::new(OPENSSL)
        .args(["enc", &format!("-{cipher}"), "-nosalt", "-K"])
        .arg(hex::encode(key.expose_secret()))
        .args(["-iv", &hex::encode(iv.0), "-out", "/dev/null", "-in"])
        .arg(path)
        .stderr(Stdio::inherit())
        .status()?;
    let took = start.elapsed();
    if !status.success() {
        return Err(format!("openssl enc -{cipher} failed: {status}").into());
    }
    Ok(took)
}

/// The RustCrypto parts on their own, in place, without our streaming layer:
/// where the time goes, and the ceiling our composition can reach.
fn time_components(key: &DataKey, iv: &Iv16, data: &[u8]) -> Res<Vec<(&'static str, f64)>> {
    use aes::Aes256;
    use aes_gcm::AesGcm;
    use aes_gcm::aead::AeadInOut;
    use cipher::consts::U16;
    use cipher::{Array, KeyInit, KeyIvInit, StreamCipher};
    use ghash::GHash;
    use ghash::universal_hash::UniversalHash;

    let key_bytes = key.expose_secret();
    let mut buf = vec![0u8; MIB];
    let mut rows = Vec::new();
    let mut run = |name: &'static str, mut op: ChunkOp<'_>| -> Res<()> {
        let took = best_of(|| {
            let start = Instant::now();
            for chunk in data.chunks(MIB) {
                buf[..chunk.len()].copy_from_slice(chunk);
                op(&mut buf[..chunk.len()]);
            }
            std::hint::black_box(&buf);
            Ok(start.elapsed())
        })?;
        rows.push((name, mb_per_s(data.len(), took)));
        Ok(())
    };
    run("memcpy 1 MiB chunks only", Box::new(|_| {}))?;
    let mut ctr = ctr::Ctr128BE::<Aes256>::new_from_slices(key_bytes, &iv.0)?;
    run("ctr::Ctr128BE<Aes256> in place", Box::new(move |b| ctr.apply_keystream(b)))?;
    let mut ghash = GHash::new_from_slice(&[0x5A; 16])?;
    run(
        "ghash::GHash alone",
        Box::new(move |b| {
            let (blocks, _) = Array::<u8, U16>::slice_as_chunks(b);
            ghash.update(blocks);
        }),
    )?;
    let gcm = AesGcm::<Aes256, U16>::new_from_slice(key_bytes)?;
    let nonce = Array::<u8, U16>::from(iv.0);
    // One-shot per 1 MiB chunk (a fresh message each time; same work per byte).
    run(
        "aes_gcm::AesGcm<Aes256, U16> one-shot in place",
        Box::new(move |b| {
            let _ = std::hint::black_box(gcm.encrypt_inout_detached(&nonce, b"", b.into()));
        }),
    )?;
    Ok(rows)
}

/// Bytes per second from `openssl speed -mr`, whose result line reads
/// `+F:<n>:<ALGORITHM>:<bytes per second>`.
fn openssl_speed(cipher: &str) -> Res<f64> {
    let out = Command::new(OPENSSL)
        .args(["speed", "-mr", "-evp", cipher, "-bytes", "16384", "-seconds", "3"])
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl speed -evp {cipher} failed: {}", out.status).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let rate = text
        .lines()
        .filter(|line| line.starts_with("+F:"))
        .filter_map(|line| line.rsplit(':').next()?.trim().parse::<f64>().ok())
        .next()
        .ok_or_else(|| format!("no +F: line in openssl speed output: {text}"))?;
    Ok(rate / 1e6)
}

struct Row {
    mode: EncryptionMode,
    encrypt: f64,
    decrypt: f64,
    openssl_enc: Option<f64>,
    openssl_speed: f64,
}

fn main() -> Res<()> {
    let mib: usize = match std::env::var("KEYBROKER_BENCH_MIB") {
        Ok(text) => text.parse()?,
        Err(_) => 256,
    };
    let len = mib * MIB;
    let data = test_data(len);
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(&data)?;
    file.flush()?;

    let key = DataKey::generate(KeyBits::Aes256)?;
    let iv = Iv16::generate()?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let openssl_version = String::from_utf8(Command::new(OPENSSL).arg("version").output()?.stdout)?;
    println!("keybroker cipher bench: AES-256, {mib} MiB in 1 MiB chunks, best of {RUNS}");
    println!("cpu: {cpu}; {} logical CPUs", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("openssl: {}", openssl_version.trim());

    let mut rows = Vec::new();
    for (mode, cipher) in [
        (EncryptionMode::AesCbcPkcs7, "aes-256-cbc"),
        (EncryptionMode::AesCtr, "aes-256-ctr"),
        (EncryptionMode::AesGcm, "aes-256-gcm"),
    ] {
        let encrypt = mb_per_s(len, best_of(|| time_encrypt(mode, &key, &iv, &data))?);
        let ciphertext = encrypt_all(mode, &key, &iv, &data)?;
        let decrypt = mb_per_s(len, best_of(|| time_decrypt(mode, &key, &iv, &ciphertext))?);
        drop(ciphertext);
        let openssl_enc = if mode == EncryptionMode::AesGcm {
            None
        } else {
            Some(mb_per_s(len, best_of(|| time_openssl_enc(cipher, &key, &iv, file.path()))?))
        };
        let openssl_speed = openssl_speed(cipher)?;
        rows.push(Row { mode, encrypt, decrypt, openssl_enc, openssl_speed });
    }

    let components = time_components(&key, &iv, &data)?;

    println!();
    println!(
        "| mode | ours encrypt MB/s | ours decrypt MB/s | openssl enc MB/s | openssl speed MB/s | encrypt / enc | encrypt / speed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let enc = row.openssl_enc.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
        let vs_enc = row.openssl_enc.map_or("n/a".to_owned(), |v| format!("{:.2}", row.encrypt / v));
        println!(
            "| {} | {:.0} | {:.0} | {enc} | {:.0} | {vs_enc} | {:.2} |",
            row.mode.as_str(),
            row.encrypt,
            row.decrypt,
            row.openssl_speed,
            row.encrypt / row.openssl_speed,
        );
    }
    println!();
    println!("| RustCrypto part, AES-256, 1 MiB chunks | MB/s |");
    println!("|---|---:|");
    for (name, rate) in components {
        println!("| {name} | {rate:.0} |");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!("load average at the end: {}", load.trim());
    Ok(())
}
