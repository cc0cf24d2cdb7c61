//! Real peers for the integration tests: the local AWS (moto), the Elastic
//! Transcoder endpoint of the test suite, a broker to talk to (in process or
//! as a child process), a test PKI, the external programs the broker's files
//! are checked with, and deterministic test data.

pub mod broker;
pub mod et;
pub mod kms;
pub mod ledger_db;
pub mod logs;
pub mod mc_model;
pub mod mediaconvert;
pub mod moto;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod rng;
pub mod s3;
pub mod tools;
