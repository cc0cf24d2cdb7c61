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

pub mod app;
pub mod audit;
pub mod client;
pub mod custody;
pub mod edge;
pub mod jobs;
pub mod objects;

pub use edge::pb;
