//! One audit record: the fields an RPC leaves behind, its timestamp, and
//! its serialisation to the JSON object a log line carries.
//!
//! Owns what a record says, how it is written as JSON, and its bound: every
//! field a caller can influence is cut to a fixed length, and fingerprints
//! past [`MAX_FINGERPRINTS`] are counted, not listed, so no line exceeds
//! [`MAX_RECORD_BYTES`] however large the input. Must never chain, hash or
//! write records (that is the committer's), and never hold key material:
//! keys appear only by fingerprint.

use std::time::SystemTime;

use serde::Serialize;

/// One RPC, as the audit log records it. Borrows what the call already
/// holds, so writing a record copies each field once, into its line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339 time the record was made.
    pub time: Timestamp,
    /// The caller's identity (SPIFFE ID, DNS name, or `anonymous`).
    #[serde(serialize_with = "cap_identity")]
    pub identity: &'a str,
    /// The caller's address (empty when unknown).
    #[serde(serialize_with = "serialize_peer")]
    pub peer: Option<std::net::SocketAddr>,
    /// The RPC.
    pub rpc: &'a str,
    /// The caller's `x-request-id`, or one the broker made.
    #[serde(serialize_with = "cap_short")]
    pub request_id: &'a str,
    /// `ok`, `denied` or `error`.
    pub outcome: &'a str,
    /// The gRPC status code name.
    pub code: &'a str,
    /// The status message when not OK.
    #[serde(skip_serializing_if = "str::is_empty", serialize_with = "cap_message")]
    pub message: &'a str,
    /// The pipeline, for jobs.
    #[serde(skip_serializing_if = "str::is_empty", serialize_with = "cap_short")]
    pub pipeline: &'a str,
    /// The KMS key ARN used.
    #[serde(skip_serializing_if = "str::is_empty", serialize_with = "cap_arn")]
    pub kms_key_arn: &'a str,
    /// The IAM role the call checked or granted the key to (MediaConvert's
    /// job role).
    #[serde(skip_serializing_if = "str::is_empty", serialize_with = "cap_arn")]
    pub role_arn: &'a str,
    /// ET's job id.
    #[serde(skip_serializing_if = "str::is_empty", serialize_with = "cap_short")]
    pub job_id: &'a str,
    /// Fingerprints of every key involved.
    #[serde(skip_serializing_if = "<[String]>::is_empty", serialize_with = "cap_fingerprints")]
    pub key_fingerprints: &'a [String],
}

/// When a record was made, written as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp::now()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

fn serialize_peer<S: serde::Serializer>(peer: &Option<std::net::SocketAddr>, serializer: S) -> Result<S::Ok, S::Error> {
    match peer {
        Some(addr) => serializer.collect_str(addr),
        None => serializer.serialize_str(""),
    }
}

/// The most bytes of an identity a record keeps (SPIFFE IDs are at most
/// 2,048 bytes; identities that long are cut and marked).
pub const MAX_IDENTITY_BYTES: usize = 512;
/// The most bytes of a request id, pipeline id or job id a record keeps.
pub const MAX_SHORT_BYTES: usize = 128;
/// The most bytes of a status message a record keeps (the gate's bound).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The most bytes of a KMS key or IAM role ARN a record keeps (KMS's key-id
/// limit; IAM's for a role ARN is the same 2,048).
pub const MAX_ARN_BYTES: usize = crate::custody::kms::MAX_KEY_ID_LEN;
/// The most fingerprints a record lists; the rest are counted in a last
/// entry `+N more`.
pub const MAX_FINGERPRINTS: usize = 256;
/// The most bytes of one fingerprint a record keeps (the broker's are 44).
pub const MAX_FINGERPRINT_BYTES: usize = 64;
/// The largest record line, chain members included: every capped field
/// (and its `…` mark) at six bytes per byte, JSON's worst escape
/// (`\u0001`), quoted, and 1 KiB for the names, the fixed fields and the
/// chain's members.
pub const MAX_RECORD_BYTES: usize = 6
    * (MAX_IDENTITY_BYTES + 3 * MAX_SHORT_BYTES + MAX_MESSAGE_BYTES + 2 * MAX_ARN_BYTES)
    + (MAX_FINGERPRINTS + 1) * (6 * MAX_FINGERPRINT_BYTES + 6)
    + 1024;

/// `value`, cut on a character boundary to at most `max` bytes and marked
/// `…` when cut.
fn capped<S: serde::Serializer>(value: &str, max: usize, serializer: S) -> Result<S::Ok, S::Error> {
    if value.len() <= max {
        return serializer.serialize_str(value);
    }
    let mut cut = max;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    serializer.collect_str(&format_args!("{}…", &value[..cut]))
}

fn cap_identity<S: serde::Serializer>(value: &&str, serializer: S) -> Result<S::Ok, S::Error> {
    capped(value, MAX_IDENTITY_BYTES, serializer)
}

fn cap_short<S: serde::Serializer>(value: &&str, serializer: S) -> Result<S::Ok, S::Error> {
    capped(value, MAX_SHORT_BYTES, serializer)
}

fn cap_message<S: serde::Serializer>(value: &&str, serializer: S) -> Result<S::Ok, S::Error> {
    capped(value, MAX_MESSAGE_BYTES, serializer)
}

fn cap_arn<S: serde::Serializer>(value: &&str, serializer: S) -> Result<S::Ok, S::Error> {
    capped(value, MAX_ARN_BYTES, serializer)
}

fn cap_fingerprints<S: serde::Serializer>(value: &&[String], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let listed = value.len().min(MAX_FINGERPRINTS);
    let rest = value.len() - listed;
    let mut seq = serializer.serialize_seq(Some(listed + usize::from(rest > 0)))?;
    for fingerprint in &value[..listed] {
        seq.serialize_element(&Capped(fingerprint, MAX_FINGERPRINT_BYTES))?;
    }
    if rest > 0 {
        seq.serialize_element(&format!("+{rest} more"))?;
    }
    seq.end()
}

/// A string serialised cut to a bound.
struct Capped<'a>(&'a str, usize);

impl Serialize for Capped<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        capped(self.0, self.1, serializer)
    }
}

impl AuditRecord<'_> {
    /// The record as the JSON object its line carries (before chaining).
    ///
    /// # Errors
    /// When serialisation fails (it cannot for these field types).
    pub(super) fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut fields = Vec::with_capacity(RECORD_CAPACITY);
        serde_json::to_writer(&mut fields, self)?;
        Ok(fields)
    }
}

/// Room for a typical record, so serialising it does not reallocate.
const RECORD_CAPACITY: usize = 512;

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Identities for test records, which borrow them.
    const CALLERS: [&str; 10] = [
        "caller-0", "caller-1", "caller-2", "caller-3", "caller-4", "caller-5", "caller-6", "caller-7", "caller-8",
        "caller-9",
    ];

    /// An `IssueDataKey` record by `caller-N`, N the last digit of `n`.
    pub(in crate::audit) fn record(n: usize) -> AuditRecord<'static> {
        AuditRecord { rpc: "IssueDataKey", identity: CALLERS[n % 10], outcome: "ok", ..AuditRecord::default() }
    }

    #[test]
    fn a_record_of_the_largest_worst_input_stays_within_its_bound() {
        let worst = "\u{1}".repeat(1 << 20);
        let fingerprints: Vec<String> =
            (0..10_000).map(|i| format!("hmac-sha256:{i:032x}{}", "\u{1}".repeat(99))).collect();
        let worst_record = AuditRecord {
            identity: &worst,
            request_id: &worst,
            message: &worst,
            pipeline: &worst,
            kms_key_arn: &worst,
            role_arn: &worst,
            job_id: &worst,
            key_fingerprints: &fingerprints,
            peer: Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".parse().unwrap()),
            ..record(0)
        };
        let json = worst_record.to_json().unwrap();
        // The chain adds `"v":2,"seq":…,"prev":"…"` and `"hash":"…"`: under 200 bytes.
        assert!(json.len() + 200 <= MAX_RECORD_BYTES, "{} bytes", json.len());
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let listed = value["key_fingerprints"].as_array().unwrap();
        assert_eq!(listed.len(), MAX_FINGERPRINTS + 1);
        assert_eq!(listed[MAX_FINGERPRINTS], format!("+{} more", 10_000 - MAX_FINGERPRINTS));
        assert!(value["identity"].as_str().unwrap().ends_with('…'));

        let wide = "é".repeat(MAX_SHORT_BYTES);
        let cut = AuditRecord { request_id: &wide, ..record(1) }.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        let kept = value["request_id"].as_str().unwrap();
        assert_eq!(kept, format!("{}…", "é".repeat(MAX_SHORT_BYTES / 2)), "cut on a character boundary");
        let whole = AuditRecord { request_id: "req-1", ..record(2) }.to_json().unwrap();
        assert!(String::from_utf8(whole).unwrap().contains("\"request_id\":\"req-1\""));
    }
}
