//! Compiles `proto/keybroker/v1/keybroker.proto` into `OUT_DIR`, with a file
//! descriptor set for server reflection. Uses the vendored `protoc` unless
//! `PROTOC` names one already, so a fresh machine needs no install step.

use std::path::PathBuf;

/// Messages with a plaintext key field; kept in step with the `Debug`
/// impls in src/lib.rs (a missing impl fails to compile).
const KEY_MESSAGES: &[&str] = &["IssueDataKeyResponse", "WrapKeyRequest", "UnwrapKeyResponse", "PlayReadyDrm"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        // INVALID_ARGUMENT, not prost's INTERNAL, for a body that is not protobuf.
        .codec_path("crate::edge::codec::ProtoCodec")
        // Messages that carry plaintext key material get a hand-written,
        // redacting `Debug` (src/lib.rs, `pb`) instead of the derived one.
        .skip_debug(KEY_MESSAGES.iter().map(|m| format!("keybroker.v1.{m}")))
        .file_descriptor_set_path(out_dir.join("keybroker_descriptor.bin"))
        .compile_with_config(config, &["proto/keybroker/v1/keybroker.proto"], &["proto"])?;
    Ok(())
}
