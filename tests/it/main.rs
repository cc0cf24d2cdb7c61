//! The integration tests, one binary: the real server on port 0 (or the
//! `keybroker` binary as a child process) against real peers, which
//! [`support`] spawns once for the whole suite: moto's KMS and S3, the
//! Elastic Transcoder endpoint of the test suite, a test PKI, OpenSSL and
//! Python. One module per area; `tests/zeroize.rs` stays a binary of its own
//! because it installs a global allocator.
//!
//! Tests unwrap and panic: a failure is the point.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod audit_chain;
mod binary;
mod bodies;
mod cipher_interop;
mod cli;
mod custody;
mod custody_limits;
mod dashboard;
mod deploy_lint;
mod et_endpoint;
mod examples;
mod exhaustion;
mod field_bounds;
mod key_export;
mod key_rpcs;
mod ledger;
mod ledger_objects;
mod ledger_rewrap;
mod ledger_tokens;
mod mediaconvert_endpoint;
mod mediaconvert_inputs;
mod mediaconvert_jobs;
mod mediaconvert_policy;
mod mediaconvert_role;
mod mediaconvert_tokens;
mod object_cli;
mod object_rpcs;
mod object_s3;
mod pipeline_connect;
mod pipeline_preflight;
mod pool;
mod pool_names;
mod readme;
mod submit_job;
mod submit_job_failures;
