//! Compiles `proto/keybroker/v1/keybroker.proto` into `OUT_DIR`, with a file
//! descriptor set for server reflection. Uses the vendored `protoc` unless
//! `PROTOC` names one already, so a fresh machine needs no install step.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("keybroker_descriptor.bin"))
        .compile_with_config(config, &["proto/keybroker/v1/keybroker.proto"], &["proto"])?;
    Ok(())
}
