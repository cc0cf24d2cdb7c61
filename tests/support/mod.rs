//! Real peers for the integration tests: the local AWS (moto), the Elastic
//! Transcoder endpoint of the test suite, and a broker to talk to.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod broker;
pub mod et;
pub mod logs;
pub mod moto;
pub mod pki;
pub mod process;
