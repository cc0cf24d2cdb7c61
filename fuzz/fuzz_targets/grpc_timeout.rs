//! A `grpc-timeout` header value: parsed as the gRPC specification's
//! grammar allows, or refused.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| keybroker::fuzzing::grpc_timeout(text));
