//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz`):
//! each runs one parser of caller input the way the broker runs it, from
//! raw bytes, and checks what must hold of any input. Not an API: hidden
//! from the documentation, used by nothing else.
//!
//! Must never do I/O or call KMS: every path here is pure, so a target
//! runs millions of inputs and a finding reproduces from its bytes alone.
//! An entry point panics only when a property breaks (that is a finding).

#![allow(clippy::panic)]

use std::time::Duration;

use prost::Message as _;

use crate::custody::keys::{DataKey, EncryptionMode, Iv16};
use crate::custody::policy::Policy;
use crate::custody::rpc::Rpc;
use crate::edge::pb;
use crate::edge::rpc::{bounds, job};
use crate::jobs::et::{self, model};
use crate::objects::cipher::{Decryptor, Encryptor};

/// A `SubmitEncryptedJob` request: input starting with `{` is a job spec
/// in ET's JSON form (as `keybroker submit-job` reads it and sends it), any
/// other a protobuf body. Either is decoded, held to the field limits,
/// mapped to the ET model, validated and planned.
pub fn submit_encrypted_job(input: &[u8]) {
    let request = if input.first() == Some(&b'{') {
        let Ok(job) = serde_json::from_slice::<model::CreateJob>(input) else {
            return;
        };
        job::job_request_to_proto(&job, true)
    } else {
        let Ok(request) = pb::SubmitEncryptedJobRequest::decode(input) else {
            return;
        };
        request
    };
    check_job_request(request);
}

fn check_job_request(mut request: pb::SubmitEncryptedJobRequest) {
    if let Err(status) = bounds::check(&mut request, "") {
        check_message(status.message());
        return;
    }
    let Ok(mut parsed) = job::job_request_from_proto(request) else {
        return;
    };
    if let Err(err) = et::check_and_plan(&mut parsed.job, &mut parsed.playready_content_keys) {
        check_message(&err.to_string());
    }
}

/// A refusal names a field and stays short, whatever the input.
fn check_message(message: &str) {
    assert!(message.contains(": "), "a refusal without a field: {message}");
    assert!(message.len() <= 2048, "a refusal of {} bytes", message.len());
}

/// A policy file: parsed, and when it parses, asked about a few callers.
pub fn policy(text: &str) {
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    for identity in ["spiffe://example.org/encoder", "dns:encoder.example.org", "anonymous", ""] {
        for rpc in Rpc::ALL {
            let _ = policy.authorize(identity, rpc);
        }
    }
}

/// The caller's identity: a first byte of 0 makes the rest a client
/// certificate (DER), any other the rest SAN text.
pub fn tls_identity(input: &[u8]) {
    match input.split_first() {
        Some((0, der)) => certificate_identity(der),
        Some((_, text)) => {
            if let Ok(text) = std::str::from_utf8(text) {
                san_text(text);
            }
        }
        None => {}
    }
}

/// A client certificate (DER) as the handshake hands it over: the
/// identity read from its SANs, which must be one the policy can name.
fn certificate_identity(der: &[u8]) {
    let leaf = rustls_pki_types::CertificateDer::from(der);
    if let Some(identity) = crate::edge::tls::identity_of(&leaf) {
        let typed = crate::edge::tls::is_spiffe_id(&identity)
            || identity.strip_prefix("dns:").is_some_and(crate::edge::tls::is_dns_name);
        assert!(typed, "an identity of neither kind: {identity:?}");
    }
}

/// SAN text as the identity grammars read it.
fn san_text(text: &str) {
    let spiffe = crate::edge::tls::is_spiffe_id(text);
    let dns = crate::edge::tls::is_dns_name(text);
    assert!(!(spiffe && dns), "both a SPIFFE ID and a DNS name: {text:?}");
    if spiffe {
        assert!(text.starts_with("spiffe://"), "{text:?}");
    }
    if dns {
        assert!(!text.contains("://") && text.len() <= 253, "{text:?}");
    }
}

/// A `grpc-timeout` header value: what parses is what the grammar allows.
pub fn grpc_timeout(text: &str) {
    let Some(parsed) = crate::edge::gate::parse_grpc_timeout(text) else {
        return;
    };
    let (digits, unit) = text.split_at(text.len() - 1);
    assert!(!digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
    assert!(["H", "M", "S", "m", "u", "n"].contains(&unit), "{text:?}");
    assert!(parsed <= Duration::from_secs(99_999_999 * 3600), "{text:?}");
}

const MODES: [EncryptionMode; 3] = [EncryptionMode::AesCbcPkcs7, EncryptionMode::AesCtr, EncryptionMode::AesGcm];

/// The stream ciphers over caller bytes. The input picks a mode, a key
/// length and chunk sizes; the rest is read twice: as ciphertext (which
/// must decrypt or be refused, never panic, never answer more bytes than
/// came in) and as plaintext (which must round-trip through encryption and
/// decryption in different chunkings).
pub fn stream_ciphers(input: &[u8]) {
    let [selector, chunk_a, chunk_b, rest @ ..] = input else {
        return;
    };
    let mode = MODES[usize::from(selector % 3)];
    let key_len = [16, 24, 32][usize::from((selector / 3) % 3)];
    let key_bytes: Vec<u8> = (0..key_len).map(|i| (i as u8).wrapping_mul(*selector) ^ 0x5c).collect();
    let (Ok(key), Ok(iv)) = (DataKey::from_vec(key_bytes, "key"), Iv16::from_slice(&[*chunk_a; 16], "iv")) else {
        panic!("a valid key and IV refused");
    };
    let chunking = |size: u8| usize::from(size).max(1);

    let Ok(mut decryptor) = Decryptor::new(mode, &key, &iv) else {
        panic!("no {mode:?} decryptor");
    };
    let mut out = Vec::new();
    let decrypted = rest
        .chunks(chunking(*chunk_a))
        .try_for_each(|chunk| decryptor.update(chunk, &mut out))
        .and_then(|()| decryptor.finalize(&mut out));
    assert!(out.len() <= rest.len(), "{mode:?} answered more than it read");
    if decrypted.is_ok() && mode == EncryptionMode::AesGcm {
        panic!("a GCM tag forged by the fuzzer verified");
    }

    let Ok(mut encryptor) = Encryptor::new(mode, &key, &iv) else {
        panic!("no {mode:?} encryptor");
    };
    let mut ciphertext = Vec::new();
    for chunk in rest.chunks(chunking(*chunk_b)) {
        if encryptor.update(chunk, &mut ciphertext).is_err() {
            panic!("{mode:?} refused to encrypt");
        }
    }
    if encryptor.finalize(&mut ciphertext).is_err() {
        panic!("{mode:?} refused to finish");
    }
    let Ok(mut decryptor) = Decryptor::new(mode, &key, &iv) else {
        panic!("no {mode:?} decryptor");
    };
    let mut plaintext = Vec::new();
    for chunk in ciphertext.chunks(chunking(*chunk_a)) {
        if let Err(err) = decryptor.update(chunk, &mut plaintext) {
            panic!("{mode:?} refused its own ciphertext: {err}");
        }
    }
    if let Err(err) = decryptor.finalize(&mut plaintext) {
        panic!("{mode:?} refused its own ciphertext at the end: {err}");
    }
    assert_eq!(plaintext, rest, "{mode:?} did not round-trip");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The seed corpus of `target` (`fuzz/corpus/<target>/seed-*`).
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("seed-")))
            .map(|path| std::fs::read(path).unwrap())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    /// The fuzz targets' entry points, on stable, over their seeds (and any
    /// finding saved beside them as a seed): what `cargo fuzz` found once
    /// stays fixed.
    #[test]
    fn every_seed_runs_through_its_target() {
        seeds("submit_encrypted_job").iter().for_each(|seed| super::submit_encrypted_job(seed));
        seeds("policy").iter().for_each(|seed| super::policy(text(seed)));
        seeds("tls_identity").iter().for_each(|seed| super::tls_identity(seed));
        seeds("grpc_timeout").iter().for_each(|seed| super::grpc_timeout(text(seed)));
        seeds("stream_ciphers").iter().for_each(|seed| super::stream_ciphers(seed));
    }
}
