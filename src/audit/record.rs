//! One audit record: the fields an RPC leaves behind, its timestamp, and
//! its serialisation to the JSON object a log line carries.
//!
//! Owns what a record says and how it is written as JSON. Must never chain,
//! hash or write records (that is the committer's), and never hold key
//! material: keys appear only by fingerprint.

use std::time::SystemTime;

use serde::Serialize;

/// One RPC, as the audit log records it. Borrows what the call already
/// holds, so writing a record copies each field once, into its line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339 time the record was made.
    pub time: Timestamp,
    /// The caller's identity (SPIFFE ID, DNS name, or `anonymous`).
    pub identity: &'a str,
    /// The caller's address (empty when unknown).
    #[serde(serialize_with = "serialize_peer")]
    pub peer: Option<std::net::SocketAddr>,
    /// The RPC.
    pub rpc: &'a str,
    /// The caller's `x-request-id`, or one the broker made.
    pub request_id: &'a str,
    /// `ok`, `denied` or `error`.
    pub outcome: &'a str,
    /// The gRPC status code name.
    pub code: &'a str,
    /// The status message when not OK.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub message: &'a str,
    /// The pipeline, for jobs.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub pipeline: &'a str,
    /// The KMS key ARN used.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub kms_key_arn: &'a str,
    /// ET's job id.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub job_id: &'a str,
    /// Fingerprints of every key involved.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
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
}
