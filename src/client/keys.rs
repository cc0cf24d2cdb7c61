//! `issue-key`, `wrap-key` and `unwrap-key`, and ET's `Encryption` JSON as
//! the CLI prints and reads it.
//!
//! Owns reading key material from a file or stdin. Must never take key
//! material from the command line, print a plaintext key (`--plaintext-out`
//! hands it to [`crate::client::export`]), or leave a copy of one in memory
//! that is not wiped.

use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

use crate::client::args::{IssueKeyArgs, KeyEncoding, UnwrapKeyArgs, WrapKeyArgs};
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::client::export::{KeyFile, check_stdout, encode, write_stdout};
use crate::custody::keys::EncryptionText;
use crate::edge::pb;

/// Prints the broker's `Encryption` block as ET's JSON on stdout.
///
/// # Errors
/// [`CliError::Answer`] when the broker sent none.
pub(super) fn print_encryption(block: Option<pb::Encryption>) -> Result<(), CliError> {
    let block = block.ok_or_else(|| CliError::Answer("the broker answered no encryption block".to_owned()))?;
    let text = EncryptionText {
        mode: block.mode,
        key: block.key,
        key_md5: block.key_md5,
        initialization_vector: block.initialization_vector,
    };
    let json = serde_json::to_string_pretty(&text).map_err(CliError::Json)?;
    println!("{json}");
    Ok(())
}

/// Reads ET's `Encryption` JSON: the block itself, or an object holding it
/// under `Encryption`.
///
/// # Errors
/// [`CliError::Input`] naming the file and the JSON problem.
pub fn read_encryption(path: &Path) -> Result<pb::Encryption, CliError> {
    let bad = |e: &dyn std::fmt::Display| CliError::Input(format!("--encryption {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e))?;
    if let Some(inner) = value.get_mut("Encryption") {
        value = inner.take();
    }
    let block: EncryptionText = serde_json::from_value(value).map_err(|e| bad(&e))?;
    if block.key.is_empty() {
        return Err(bad(&"no Key: expected ET's Encryption JSON as issue-key and encrypt print it"));
    }
    Ok(pb::Encryption {
        mode: block.mode,
        key: block.key,
        key_md5: block.key_md5,
        initialization_vector: block.initialization_vector,
    })
}

/// `keybroker issue-key`; with `--plaintext-out`, the plaintext key goes
/// to that new file (claimed before the call) and nowhere else.
pub(super) async fn issue_key(args: IssueKeyArgs) -> Result<(), CliError> {
    let key_file = args.plaintext_out.as_deref().map(|path| KeyFile::create(path, "--plaintext-out")).transpose()?;
    let mut client = connect(&args.client).await?;
    let mut response = client
        .issue_data_key(pb::IssueDataKeyRequest {
            kms_key_id: args.kms_key_id,
            key_bits: args.key_bits,
            mode: args.mode,
            return_plaintext: key_file.is_some(),
            context: args.context.to_proto(),
        })
        .await?
        .into_inner();
    let key = Zeroizing::new(std::mem::take(&mut response.plaintext_key));
    if let Some(file) = key_file {
        if key.is_empty() {
            return Err(CliError::Answer("the broker answered no plaintext key".to_owned()));
        }
        file.write(&encode(&key, KeyEncoding::Hex))?;
    }
    eprintln!("kms_key_arn: {}", response.kms_key_arn);
    print_encryption(response.encryption)
}

/// Reads key material from a file (or `-` for stdin) in `encoding`.
fn read_key_material(path: &Path, encoding: KeyEncoding) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut raw = Zeroizing::new(Vec::with_capacity(128));
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut raw).map_err(|source| CliError::Io { path: "stdin".into(), source })?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(|source| CliError::Io { path: path.to_owned(), source })?;
    }
    let text = || std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
    let decoded = match encoding {
        KeyEncoding::Raw => return Ok(raw),
        KeyEncoding::Hex => hex::decode(text()).ok(),
        KeyEncoding::Base64 => crate::custody::keys::decode_base64(text(), "key").ok(),
    };
    decoded
        .map(Zeroizing::new)
        .ok_or_else(|| CliError::Input(format!("{}: not valid {encoding:?} key material", path.display())))
}

/// `keybroker wrap-key`.
pub(super) async fn wrap_key(args: WrapKeyArgs) -> Result<(), CliError> {
    let mut key = read_key_material(&args.key_file, args.key_encoding)?;
    let iv = match &args.iv_hex {
        Some(text) => hex::decode(text).map_err(|_| CliError::Usage("--iv-hex: must be hex".to_owned()))?,
        None => Vec::new(),
    };
    let mut client = connect(&args.client).await?;
    // The key's buffer moves into the request (prost owns a plain Vec), so
    // no second copy is ever made and `key` is left empty. tonic consumes
    // the request: it encodes it and drops it, and we keep no handle on it
    // to wipe afterwards.
    let request = pb::WrapKeyRequest {
        kms_key_id: args.kms_key_id,
        plaintext_key: std::mem::take(&mut *key),
        mode: args.mode,
        context: args.context.to_proto(),
        initialization_vector: iv,
    };
    let response = client.wrap_key(request).await?.into_inner();
    eprintln!("kms_key_arn: {}", response.kms_key_arn);
    print_encryption(response.encryption)
}

/// `keybroker unwrap-key`: the key to a new 0600 file (`--out`, the IV as
/// hex on stdout), or to stdout (not a terminal unless asked; the IV on
/// stderr).
pub(super) async fn unwrap_key(args: UnwrapKeyArgs) -> Result<(), CliError> {
    let encryption = read_encryption(&args.encryption)?;
    // Claim the file, or refuse a terminal, before anything is unwrapped.
    let file = match &args.out {
        Some(path) => Some(KeyFile::create(path, "--out")?),
        None => {
            check_stdout(args.force_terminal)?;
            None
        }
    };
    let mut client = connect(&args.client).await?;
    let request = pb::UnwrapKeyRequest {
        encryption: Some(encryption),
        kms_key_id: args.kms_key_id,
        context: args.context.to_proto(),
    };
    let mut response = client.unwrap_key(request).await?.into_inner();
    let key = Zeroizing::new(std::mem::take(&mut response.plaintext_key));
    if key.is_empty() {
        return Err(CliError::Answer("the broker answered no key".to_owned()));
    }
    let encoded = encode(&key, args.key_encoding);
    eprintln!("kms_key_arn: {}", response.kms_key_arn);
    eprintln!("key_fingerprint: {}", response.key_fingerprint);
    let iv = hex::encode(&response.initialization_vector);
    match file {
        Some(file) => {
            file.write(&encoded)?;
            // The IV is not secret: it travels in the clear in the block.
            println!("{iv}");
            Ok(())
        }
        None => {
            eprintln!("initialization_vector: {iv}");
            write_stdout(&encoded)
        }
    }
}
