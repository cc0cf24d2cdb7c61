//! The caller's identity: a first byte of 0 makes the rest a client
//! certificate (DER) whose SANs name the caller; any other first byte makes
//! the rest SAN text for the SPIFFE ID and DNS name grammars.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybroker::fuzzing::tls_identity(data));
