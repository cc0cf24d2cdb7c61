//! The custody domain: data keys and their digests, the broker that issues,
//! wraps and unwraps them through a KMS, key fingerprints, the policy
//! that decides who may do what, the ledger's records as callers see
//! them (lookup and rewrap), and the pools of keys wrapped ahead of
//! demand.

pub mod broker;
pub mod field;
pub mod fingerprint;
pub mod keys;
pub mod kms;
pub mod policy;
pub mod pool;
pub mod records;
pub mod rpc;
