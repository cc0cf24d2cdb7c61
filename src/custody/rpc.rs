//! The operations a caller may be granted, by name: the policy's `rpcs`,
//! the audit log's `rpc`, the metrics' `rpc` label and the gRPC method all
//! speak of the same names.
//!
//! Owns the names and which operations always hand plaintext out. Lives in
//! custody because the policy grants them; knows nothing of gRPC paths.

use std::fmt;

/// One of the broker's RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// A fresh data key, wrapped (and in plaintext when asked and allowed).
    IssueDataKey,
    /// The caller's key material, wrapped.
    WrapKey,
    /// A wrapped key, unwrapped: always plaintext out.
    UnwrapKey,
    /// An Elastic Transcoder job keyed, validated and submitted.
    SubmitEncryptedJob,
    /// A file or S3 object encrypted under a fresh key.
    EncryptObject,
    /// A file or S3 object decrypted: always plaintext out.
    DecryptObject,
    /// The key ledger's records of a job, object, key or request token.
    LookupKeys,
    /// Recorded or given keys moved to another KMS key or service context.
    RewrapKeys,
    /// A pipeline's KMS set-up checked; changes nothing.
    CheckPipeline,
    /// A KMS key put on a pipeline and its role let use it (or the plan).
    ConnectPipeline,
    /// A MediaConvert job keyed, validated and submitted.
    SubmitMediaConvertJob,
    /// A MediaConvert job role's KMS set-up checked; changes nothing.
    CheckMediaConvertRole,
    /// A MediaConvert job role let decrypt with a KMS key (or the plan).
    ConnectMediaConvertRole,
}

impl Rpc {
    /// Every RPC, in the order the API lists them.
    pub const ALL: [Rpc; 13] = [
        Rpc::IssueDataKey,
        Rpc::WrapKey,
        Rpc::UnwrapKey,
        Rpc::SubmitEncryptedJob,
        Rpc::EncryptObject,
        Rpc::DecryptObject,
        Rpc::LookupKeys,
        Rpc::RewrapKeys,
        Rpc::CheckPipeline,
        Rpc::ConnectPipeline,
        Rpc::SubmitMediaConvertJob,
        Rpc::CheckMediaConvertRole,
        Rpc::ConnectMediaConvertRole,
    ];

    /// The RPC's name, as the proto, the policy and the audit log write it.
    pub const fn name(self) -> &'static str {
        match self {
            Rpc::IssueDataKey => "IssueDataKey",
            Rpc::WrapKey => "WrapKey",
            Rpc::UnwrapKey => "UnwrapKey",
            Rpc::SubmitEncryptedJob => "SubmitEncryptedJob",
            Rpc::EncryptObject => "EncryptObject",
            Rpc::DecryptObject => "DecryptObject",
            Rpc::LookupKeys => "LookupKeys",
            Rpc::RewrapKeys => "RewrapKeys",
            Rpc::CheckPipeline => "CheckPipeline",
            Rpc::ConnectPipeline => "ConnectPipeline",
            Rpc::SubmitMediaConvertJob => "SubmitMediaConvertJob",
            Rpc::CheckMediaConvertRole => "CheckMediaConvertRole",
            Rpc::ConnectMediaConvertRole => "ConnectMediaConvertRole",
        }
    }

    /// The RPC of that name, if any.
    pub fn from_name(name: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|rpc| rpc.name() == name)
    }

    /// Whether the call streams its request (the object RPCs), so its
    /// messages arrive over the call's life rather than in one body.
    pub const fn is_streaming(self) -> bool {
        matches!(self, Rpc::EncryptObject | Rpc::DecryptObject)
    }

    /// Whether a policy rule's `rpcs = ["*"]` grants it. `RewrapKeys` puts
    /// a key within another service's (or KMS key's) reach, and
    /// `ConnectPipeline` and `ConnectMediaConvertRole` change a key's
    /// grants (and a pipeline), so a rule must name them.
    pub const fn granted_by_wildcard(self) -> bool {
        !matches!(self, Rpc::RewrapKeys | Rpc::ConnectPipeline | Rpc::ConnectMediaConvertRole)
    }

    /// Whether every successful call hands plaintext key material out, so
    /// the caller needs plaintext export before anything else is read.
    pub const fn always_exports_plaintext(self) -> bool {
        matches!(self, Rpc::UnwrapKey | Rpc::DecryptObject)
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_name(rpc.name()), Some(rpc));
            assert_eq!(rpc.to_string(), rpc.name());
        }
        assert_eq!(Rpc::from_name("issuedatakey"), None);
        assert_eq!(Rpc::from_name("*"), None);
    }
}
