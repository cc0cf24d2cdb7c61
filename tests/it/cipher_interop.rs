//! `keybroker::objects::cipher` against real peers: the `openssl` CLI and Python's
//! `cryptography` package. These prove the files are byte-exact ET formats,
//! in both directions, not just self-consistent.
//!
//! Needs `/usr/bin/openssl` and a Python 3 with `cryptography`
//! (`KEYBROKER_TEST_PYTHON`, else `.venv/bin/python`, else `python3`). A
//! missing peer fails the test with what to install; nothing is skipped.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use keybroker::custody::keys::{DataKey, EncryptionMode, Iv16};
use keybroker::objects::cipher::{Decryptor, Encryptor, ciphertext_len};
use sha2::{Digest, Sha256};

use crate::support::rng::Rng;
use crate::support::tools::{openssl_cipher, openssl_enc, python_with_cryptography};

const SIZES: [usize; 8] = [0, 1, 15, 16, 17, 65_535, 65_536, 65_537];
const KEY_LENS: [usize; 3] = [16, 24, 32];
const MIB: usize = 1 << 20;

/// Runs a command to completion and returns its stdout, failing with its stderr.
fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn key_of(bytes: &[u8]) -> DataKey {
    DataKey::from_vec(bytes.to_vec(), "test key").unwrap()
}

/// Encrypts in uneven chunks, as a real upload loop would.
fn encrypt(mode: EncryptionMode, key: &DataKey, iv: &Iv16, pt: &[u8]) -> Vec<u8> {
    let mut enc = Encryptor::new(mode, key, iv).unwrap();
    let mut out = Vec::with_capacity(ciphertext_len(mode, pt.len() as u64) as usize);
    for chunk in pt.chunks(4093) {
        enc.update(chunk, &mut out).unwrap();
    }
    enc.finalize(&mut out).unwrap();
    out
}

fn decrypt(mode: EncryptionMode, key: &DataKey, iv: &Iv16, ct: &[u8]) -> Vec<u8> {
    let mut dec = Decryptor::new(mode, key, iv).unwrap();
    let mut out = Vec::with_capacity(ct.len());
    for chunk in ct.chunks(5001) {
        dec.update(chunk, &mut out).unwrap();
    }
    dec.finalize(&mut out).unwrap_or_else(|err| panic!("{}: {err}", mode.as_str()));
    out
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

#[test]
fn openssl_enc_and_keybroker_read_each_others_cbc_and_ctr_files() {
    let dir = tempfile::tempdir().unwrap();
    let (pt_path, ct_path) = (dir.path().join("plain"), dir.path().join("cipher"));
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut cases = 0;
    for mode in [EncryptionMode::AesCbcPkcs7, EncryptionMode::AesCtr] {
        for key_len in KEY_LENS {
            let key_bytes = rng.bytes(key_len);
            let key = key_of(&key_bytes);
            // A random IV, and for CTR one that makes the 128-bit counter wrap.
            let mut ivs = vec![Iv16(rng.bytes(16).try_into().unwrap())];
            if mode == EncryptionMode::AesCtr {
                let mut near_wrap = [0xFF; 16];
                near_wrap[15] = 0xF0;
                ivs.push(Iv16(near_wrap));
            }
            for iv in &ivs {
                for size in SIZES {
                    let what = format!("{} {size} bytes, iv {}", openssl_cipher(mode, key_len), hex::encode(iv.0));
                    let pt = rng.bytes(size);
                    let ours = encrypt(mode, &key, iv, &pt);
                    write_file(&pt_path, &pt);
                    write_file(&ct_path, &ours);

                    let theirs = stdout_of(&mut openssl_enc(mode, &key_bytes, &iv.0, false, &pt_path));
                    assert!(theirs == ours, "{what}: openssl enc wrote different bytes");
                    let opened = stdout_of(&mut openssl_enc(mode, &key_bytes, &iv.0, true, &ct_path));
                    assert!(opened == pt, "{what}: openssl enc -d did not get the plaintext back");
                    assert!(decrypt(mode, &key, iv, &theirs) == pt, "{what}: we could not read openssl's file");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 3 * SIZES.len() + 3 * SIZES.len());
}

/// Per case: encrypt `pt` and decrypt `ct` (keybroker's file) with
/// `cryptography`, write both, and for GCM check a tampered file is refused.
const PYTHON_CASES: &str = r#"
import json, sys
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def run(ctx, data, pad=None, unpad=None):
    if pad:
        data = pad.update(data) + pad.finalize()
    out = ctx.update(data) + ctx.finalize()
    if unpad:
        out = unpad.update(out) + unpad.finalize()
    return out

for line in sys.stdin:
    case = json.loads(line)
    key, iv = bytes.fromhex(case["key"]), bytes.fromhex(case["iv"])
    pt, ct = open(case["pt"], "rb").read(), open(case["ct"], "rb").read()
    mode, tamper_refused = case["mode"], None
    if mode == "aes-gcm":
        sealed = AESGCM(key).encrypt(iv, pt, None)
        opened = AESGCM(key).decrypt(iv, ct, None)
        forged = bytearray(ct)
        forged[len(forged) // 2] ^= 0x04
        try:
            AESGCM(key).decrypt(iv, bytes(forged), None)
            tamper_refused = False
        except InvalidTag:
            tamper_refused = True
    elif mode == "aes-cbc-pkcs7":
        aes = Cipher(algorithms.AES(key), modes.CBC(iv))
        sealed = run(aes.encryptor(), pt, pad=padding.PKCS7(128).padder())
        opened = run(aes.decryptor(), ct, unpad=padding.PKCS7(128).unpadder())
    elif mode == "aes-ctr":
        aes = Cipher(algorithms.AES(key), modes.CTR(iv))
        sealed = run(aes.encryptor(), pt)
        opened = run(aes.decryptor(), ct)
    else:
        raise SystemExit("unknown mode " + mode)
    open(case["sealed"], "wb").write(sealed)
    open(case["opened"], "wb").write(opened)
    print(json.dumps({"id": case["id"], "tamper_refused": tamper_refused}), flush=True)
"#;

struct PythonCase {
    mode: EncryptionMode,
    key: Vec<u8>,
    iv: Iv16,
    pt: Vec<u8>,
    ours: Vec<u8>,
}

#[test]
fn python_cryptography_and_keybroker_read_each_others_files_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xFEED_FACE_CAFE_BEEF);
    let mut cases = Vec::new();
    let mut manifest = String::new();
    for mode in [EncryptionMode::AesCbcPkcs7, EncryptionMode::AesCtr, EncryptionMode::AesGcm] {
        for key_len in KEY_LENS {
            for size in SIZES {
                let key = rng.bytes(key_len);
                let iv = Iv16(rng.bytes(16).try_into().unwrap());
                let pt = rng.bytes(size);
                let ours = encrypt(mode, &key_of(&key), &iv, &pt);
                let id = cases.len();
                let path = |name: &str| dir.path().join(format!("{id}.{name}"));
                write_file(&path("pt"), &pt);
                write_file(&path("ct"), &ours);
                let case = serde_json::json!({
                    "id": id, "mode": mode.as_str(), "key": hex::encode(&key), "iv": hex::encode(iv.0),
                    "pt": path("pt"), "ct": path("ct"), "sealed": path("sealed"), "opened": path("opened"),
                });
                manifest.push_str(&format!("{case}\n"));
                cases.push(PythonCase { mode, key, iv, pt, ours });
            }
        }
    }

    let mut child = Command::new(python_with_cryptography())
        .args(["-c", PYTHON_CASES])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(reports.len(), cases.len(), "python handled every case");

    for (id, (case, report)) in cases.iter().zip(&reports).enumerate() {
        let what = format!("case {id}: {} {}-bit, {} bytes", case.mode.as_str(), case.key.len() * 8, case.pt.len());
        let read = |name: &str| std::fs::read(dir.path().join(format!("{id}.{name}"))).unwrap();
        let (sealed, opened) = (read("sealed"), read("opened"));
        assert!(sealed == case.ours, "{what}: cryptography wrote different bytes");
        assert!(opened == case.pt, "{what}: cryptography did not get our plaintext back");
        let key = key_of(&case.key);
        assert!(
            decrypt(case.mode, &key, &case.iv, &sealed) == case.pt,
            "{what}: we could not read cryptography's file"
        );
        let tamper = &report["tamper_refused"];
        if case.mode == EncryptionMode::AesGcm {
            assert_eq!(tamper, &serde_json::Value::Bool(true), "{what}: cryptography accepted a forged tag");
        }
    }
    assert_eq!(cases.len(), 3 * 3 * SIZES.len());
}

/// Streams `path` through an [`Encryptor`] in 1 MiB chunks; returns the
/// SHA-256 and length of the ciphertext.
fn encrypt_file_digest(mode: EncryptionMode, key: &DataKey, iv: &Iv16, path: &Path) -> ([u8; 32], u64) {
    let mut file = File::open(path).unwrap();
    let mut enc = Encryptor::new(mode, key, iv).unwrap();
    let (mut buf, mut out) = (vec![0u8; MIB], Vec::with_capacity(MIB + 32));
    let (mut hash, mut len) = (Sha256::new(), 0u64);
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.clear();
        enc.update(&buf[..n], &mut out).unwrap();
        hash.update(&out);
        len += out.len() as u64;
    }
    out.clear();
    enc.finalize(&mut out).unwrap();
    hash.update(&out);
    len += out.len() as u64;
    (hash.finalize().into(), len)
}

/// Runs a peer that writes a ciphertext to stdout and hashes that stream in
/// 1 MiB reads; with a [`Decryptor`], also decrypts it on the fly. Returns the
/// SHA-256 of the peer's ciphertext and, if decrypted, of the plaintext.
fn peer_stream_digests(mut peer: Command, mut dec: Option<Decryptor>) -> ([u8; 32], Option<[u8; 32]>) {
    let mut child = peer
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {peer:?}: {err}"));
    let mut stdout = child.stdout.take().unwrap();
    let (mut buf, mut out) = (vec![0u8; MIB], Vec::with_capacity(MIB + 32));
    let (mut ct_hash, mut pt_hash) = (Sha256::new(), Sha256::new());
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ct_hash.update(&buf[..n]);
        if let Some(dec) = dec.as_mut() {
            out.clear();
            dec.update(&buf[..n], &mut out).unwrap();
            pt_hash.update(&out);
        }
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{peer:?} failed ({status}): {err}");
    let opened = dec.map(|dec| {
        out.clear();
        dec.finalize(&mut out).unwrap_or_else(|e| panic!("{e}"));
        pt_hash.update(&out);
        pt_hash.finalize().into()
    });
    (ct_hash.finalize().into(), opened)
}

/// Streams a file through `cryptography`'s incremental GCM encryptor to
/// stdout, then the tag: the same bytes `AESGCM.encrypt` would give, without
/// holding 100 MiB in Python.
const PYTHON_GCM_STREAM: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key, iv, path = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]
enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
out = sys.stdout.buffer
with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
        out.write(enc.update(chunk))
out.write(enc.finalize())
out.write(enc.tag)
"#;

#[test]
fn a_100_mib_file_is_byte_identical_with_openssl_and_cryptography() {
    const LEN: usize = 100 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large");
    let mut rng = Rng(0x1DEA_5EED_0000_0001);
    let mut pt_hash = Sha256::new();
    {
        let mut file = BufWriter::new(File::create(&path).unwrap());
        let mut chunk = vec![0u8; MIB];
        for _ in 0..LEN / MIB {
            rng.fill(&mut chunk);
            pt_hash.update(&chunk);
            file.write_all(&chunk).unwrap();
        }
        file.flush().unwrap();
    }
    let pt_digest: [u8; 32] = pt_hash.finalize().into();

    let key_bytes = rng.bytes(32);
    let key = key_of(&key_bytes);
    let iv = Iv16(rng.bytes(16).try_into().unwrap());
    let check_mode = |mode: EncryptionMode| {
        let (ours, len) = encrypt_file_digest(mode, &key, &iv, &path);
        assert_eq!(len, ciphertext_len(mode, LEN as u64), "{}", mode.as_str());
        let peer = if mode == EncryptionMode::AesGcm {
            let mut cmd = Command::new(python_with_cryptography());
            cmd.args(["-c", PYTHON_GCM_STREAM, &hex::encode(&key_bytes), &hex::encode(iv.0)]).arg(&path);
            cmd
        } else {
            openssl_enc(mode, &key_bytes, &iv.0, false, &path)
        };
        // Equal digests mean equal files, so decrypting the peer's copy too
        // only re-tests our own round trip; debug builds are slow, so do it
        // once, for GCM, where a 100 MiB tag check is worth having.
        let dec = (mode == EncryptionMode::AesGcm).then(|| Decryptor::new(mode, &key, &iv).unwrap());
        let (theirs, opened) = peer_stream_digests(peer, dec);
        assert_eq!(hex::encode(theirs), hex::encode(ours), "{}: peer wrote different bytes", mode.as_str());
        if let Some(opened) = opened {
            assert_eq!(hex::encode(opened), hex::encode(pt_digest), "{}: we misread the peer's file", mode.as_str());
        }
    };
    let check_mode = &check_mode;
    // One thread per mode: debug builds are slow, and CI boxes have cores.
    std::thread::scope(|scope| {
        let runs: Vec<_> = [EncryptionMode::AesCbcPkcs7, EncryptionMode::AesCtr, EncryptionMode::AesGcm]
            .map(|mode| scope.spawn(move || check_mode(mode)))
            .into_iter()
            .collect();
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}
