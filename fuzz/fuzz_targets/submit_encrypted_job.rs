//! A `SubmitEncryptedJob` request from raw bytes: a body starting with `{`
//! is a job spec in ET's JSON form (what `keybroker submit-job` reads), any
//! other a protobuf body. Decoding, the field limits, the ET model checks
//! and the key plan must refuse or accept it, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybroker::fuzzing::submit_encrypted_job(data));
