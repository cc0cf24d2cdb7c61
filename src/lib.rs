//! keybroker: the key-custody boundary for encrypted media transcoding.
//!
//! # Layout
//!
//! The code is in wings; the tour follows a request through them.
//!
//! **Start-up.** `main.rs` parses the command line ([`client`], which also
//! holds the client subcommands and the `bench` load generator) and hands
//! `serve` to [`app`]: [`app::config`] lays defaults, the TOML file,
//! `KEYBROKER_*` variables and flags over each other;
//! [`app::server::Application`] builds everything the configuration
//! describes (the KMS backend, the AWS clients of [`app::aws`], the policy,
//! the audit log) and serves it until SIGTERM, then drains. The tests start
//! the same `Application`.
//!
//! **An `IssueDataKey` call.** A connection is accepted within the
//! connection limits ([`edge::listen`]) and carries its peer and calls
//! ([`edge::conn`]); with mutual TLS, [`edge::tls`] names the caller from its
//! certificate. Before the body is read, the admission layer
//! ([`edge::admit`]) has the policy grant the call ([`custody::policy`], by
//! [`custody::rpc::Rpc`]) and places it under the identity's and the
//! server's concurrency limits; the body is decoded ([`edge::codec`]). The
//! call gate ([`edge::gate`]) is the one scope every RPC passes, unary or
//! streaming: the grant, the deadline, metrics ([`app::metrics`]), the
//! request id, and one audit record per call ([`audit`]), durable before the
//! answer leaves. The RPC's own file, [`edge::rpc::issue_data_key`], parses
//! the protobuf ([`edge::pb`]) into domain types and calls the custody
//! domain: [`custody::broker`] draws a [`custody::keys::DataKey`] (the only
//! type holding plaintext, zeroized on drop), has a [`custody::kms`] backend
//! (AWS KMS or the local keyring) wrap it under the transcoder's encryption
//! context, and names it by [`custody::fingerprint`]. Errors become gRPC
//! statuses in one place, [`edge::status`].
//!
//! **A `SubmitEncryptedJob` call.** The same gate; then
//! [`edge::rpc::submit_encrypted_job`] maps the protobuf job to the Elastic
//! Transcoder model ([`jobs::et::model`]), and [`jobs::et`] resolves the
//! pipeline ([`jobs::et::pipeline`]), validates the job against ET's rules
//! ([`jobs::et::validate`]), finds every key block ([`jobs::et::plan`], at
//! places named by [`jobs::place`]), keys them concurrently through the
//! broker, and submits `CreateJob` through the AWS SDK. Keys no one needs
//! in plaintext again (job keys, `IssueDataKey` without the plaintext) come
//! from [`custody::pool`] when it holds one: keys KMS wrapped ahead of
//! demand, so a job need not wait for KMS and rides out a KMS outage.
//!
//! **A pipeline's preflight.** `CheckPipeline` and `ConnectPipeline`
//! ([`edge::rpc::check_pipeline`], [`edge::rpc::connect_pipeline`]) pass
//! the same gate; [`jobs::et::preflight`] reads the pipeline, asks KMS, S3
//! and STS what they show of its key, buckets and role, probes the key
//! through the broker, and, to connect, calls ET `UpdatePipeline` and KMS
//! `CreateGrant`. The server also checks its configured pipelines at start.
//! `CheckMediaConvertRole` and `ConnectMediaConvertRole`
//! ([`edge::rpc::check_mediaconvert_role`],
//! [`edge::rpc::connect_mediaconvert_role`]) do the same for a MediaConvert
//! job role ([`jobs::mediaconvert::role`]); both build on the parts every
//! transcoder shares ([`jobs::preflight`]: key, access, probe and grant).
//!
//! Every key that leaves (issued, wrapped, in a job or an S3 object) is
//! first recorded in the key ledger ([`ledger`], SQLite or PostgreSQL); a
//! job with a request token is claimed there, so a repeat answers the
//! first answer ([`jobs::et`]'s idempotent submission).
//!
//! **MediaConvert.** [`edge::rpc::submit_mediaconvert_job`] parses the
//! caller's CreateJob document; [`jobs::mediaconvert`] checks it against the
//! MediaConvert model ([`jobs::mediaconvert::validate`]), fills input keys
//! from the ledger or verifies them through KMS
//! ([`jobs::mediaconvert::inputs`]), gives output groups SSE-KMS and fresh
//! static keys ([`jobs::mediaconvert::outputs`]), and submits it through
//! aws-sdk-mediaconvert under the same request-token write-ahead and claim
//! loop as Elastic Transcoder ([`jobs::ticket::claim`]; a PENDING job is
//! found at MediaConvert by `ListJobs` and its token in `UserMetadata`).
//!
//! **Files.** `EncryptObject` and `DecryptObject` stream through
//! [`objects`]: sessions over [`objects::cipher`] (ET's CBC, CTR and GCM
//! formats), or the S3 mode in which the broker reads and writes the
//! objects itself.
//!
//! **Afterwards.** `keybroker audit verify` checks the audit log's keyed
//! chain and its checkpoints ([`audit`]); [`app::hygiene`] keeps keys out of
//! core dumps and swap.

#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod client;
pub mod custody;
pub mod edge;
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod ledger;
pub mod objects;

pub use edge::pb;
