//! A policy file from raw text: parsed or refused, never a panic; a parsed
//! policy answers every RPC for a few identities.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| keybroker::fuzzing::policy(text));
