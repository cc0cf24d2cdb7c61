//! The keyed chain: how a record becomes a chained line, where an existing
//! log's chain ends, and what hash a line should carry.
//!
//! Owns the line format the module header documents (`v`, `seq`, `prev`,
//! the record's members, then `hash` over the exact bytes before it: an
//! HMAC-SHA256 under the chain key for version 2, a plain SHA-256 for the
//! unversioned legacy lines of older logs). Must never open, write or sync
//! files (the committer does) nor judge a whole log (verification does): it
//! chains and hashes one line at a time.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::audit::key::ChainKey;

/// The record format version keyed lines carry as `v`; lines without `v`
/// are legacy (plain SHA-256, unauthenticated).
pub const RECORD_VERSION: u64 = 2;

/// The `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What follows the hashed part of a line: `,"hash":"` 64 hex digits `"}`.
const HASH_MEMBER: &str = ",\"hash\":\"";
const HASH_SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;

/// The chain position: the next sequence number and the last hash.
pub(super) struct Chain {
    pub(super) seq: u64,
    pub(super) prev: String,
}

/// How a line's `hash` is computed.
#[derive(Clone, Copy)]
pub(super) enum Seal<'a> {
    /// HMAC-SHA256 under the chain key (version 2).
    Keyed(&'a ChainKey),
    /// Plain SHA-256 (legacy lines, which anyone can recompute).
    Legacy,
}

impl Seal<'_> {
    fn digest(self, parts: &[&[u8]]) -> String {
        match self {
            Seal::Keyed(key) => hex::encode(key.mac(parts)),
            Seal::Legacy => {
                let mut digest = Sha256::new();
                parts.iter().for_each(|part| digest.update(part));
                hex::encode(digest.finalize())
            }
        }
    }
}

/// Appends `fields` (a JSON object) to `out` as the keyed line at `chain`,
/// newline included, and moves `chain` past it.
pub(super) fn push_chained(out: &mut Vec<u8>, fields: &[u8], chain: &mut Chain, key: &ChainKey) {
    let start = out.len();
    let members = fields.strip_prefix(b"{").and_then(|f| f.strip_suffix(b"}")).unwrap_or_default();
    let _ = write!(out, "{{\"v\":{RECORD_VERSION},\"seq\":{},\"prev\":\"{}\"", chain.seq, chain.prev);
    if !members.is_empty() {
        out.push(b',');
        out.extend_from_slice(members);
    }
    out.push(b'}');
    let hash = Seal::Keyed(key).digest(&[&out[start..]]);
    out.pop();
    out.extend_from_slice(HASH_MEMBER.as_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    chain.seq += 1;
    chain.prev = hash;
}

/// Reads the chain position from an existing log's last record.
pub(super) fn tail_of(file: &mut File) -> std::io::Result<Chain> {
    file.seek(SeekFrom::Start(0))?;
    let mut last = None;
    for line in BufReader::new(&mut *file).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    file.seek(SeekFrom::End(0))?;
    let Some(line) = last else {
        return Ok(Chain { seq: 0, prev: GENESIS.to_owned() });
    };
    let value: Value = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("last record is not JSON: {e}")))?;
    let seq = value.get("seq").and_then(Value::as_u64);
    let hash = value.get("hash").and_then(Value::as_str);
    match (seq, hash) {
        (Some(seq), Some(hash)) => match seq.checked_add(1) {
            Some(next) => Ok(Chain { seq: next, prev: hash.to_owned() }),
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "last record's seq is at its maximum")),
        },
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "last record has no seq or hash")),
    }
}

/// The hash a line should carry under `seal`: over its bytes up to its
/// last member, closed with `}`; `None` when the line does not end with a
/// `"hash"` member of 64 hex digits.
pub(super) fn hash_of_line(line: &str, seal: Seal<'_>) -> Option<String> {
    let bytes = line.as_bytes();
    let cut = bytes.len().checked_sub(HASH_SUFFIX_LEN)?;
    let (hashed, suffix) = bytes.split_at(cut);
    let digits = suffix.strip_prefix(HASH_MEMBER.as_bytes())?.strip_suffix(b"\"}")?;
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(seal.digest(&[hashed, b"}"]))
}
