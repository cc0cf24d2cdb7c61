//! keybroker: the key-custody boundary for encrypted media transcoding.
//!
//! # Layout
//! - [`config`]: the TOML file, `KEYBROKER_*` variables and flags.
//! - [`telemetry`]: structured logs.
//! - [`server`]: startup, health, reflection, shutdown.
//! - [`api`]: the tonic service; protobuf in, domain out.
//! - [`broker`]: issuing, wrapping and unwrapping keys (the custody domain).
//! - [`keys`]: data keys, IVs and digests; the only place plaintext lives.
//! - [`kms`]: KMS backends (`aws`, `local`) behind one trait.
//! - [`cipher`]: file encryption in ET's formats (CBC, CTR, GCM), streaming.
//! - [`objects`]: whole objects encrypted and decrypted as streams, and S3 mode.
//! - [`fingerprint`]: keyed hashes that name wrapped keys in logs.
//! - [`tls`]: mutual TLS, reloadable certificates, caller identity.
//! - [`conn`]: accepted connections, written so small answers coalesce.
//! - [`policy`]: who may do what; per-identity rate limits.
//! - [`audit`]: the hash-chained, group-committed audit log.
//! - [`layers`]: load shedding; [`metrics`]: Prometheus exposition.
//! - [`hygiene`]: no core dumps, locked pages.
//! - [`loadgen`]: the `keybroker bench` load generator.
//! - [`cloud`]: the shared AWS SDK configuration.
//! - [`transcoder`]: Elastic Transcoder CreateJob assembly, validation, submission.
//! - [`cli`]: the `keybroker` command line, server and client subcommands.

#![deny(unsafe_code)]

pub mod api;
pub mod audit;
pub mod broker;
pub mod cipher;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod conn;
pub mod fingerprint;
pub mod hygiene;
pub mod keys;
pub mod kms;
pub mod layers;
pub mod loadgen;
pub mod metrics;
pub mod objects;
pub mod policy;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod transcoder;

/// The generated `keybroker.v1` protobuf and gRPC code.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("keybroker.v1");

    /// The encoded descriptors of `keybroker.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keybroker_descriptor");
}
