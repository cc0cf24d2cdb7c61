//! The object stream ciphers (ET's CBC, CTR and GCM formats) over arbitrary
//! ciphertext in arbitrary chunks: decrypted or refused, never a panic; and
//! the same bytes as plaintext round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybroker::fuzzing::stream_ciphers(data));
