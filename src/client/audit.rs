//! `keybroker audit verify` and `keybroker audit export-key`: check audit
//! log files as one keyed chain (against a checkpoint, if given) and print
//! what was found; write the chain key out for offline review.
//!
//! Owns the commands' output and exit status, and how they get the chain
//! key (a key file, or KMS as the broker's configuration names it). Must
//! never modify a log, nor print the key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::config::{Config, KmsBackend};
use crate::audit::{ChainKey, Checkpoint};
use crate::client::args::{ChainKeyArgs, ChainKmsArgs};
use crate::client::error::CliError;
use crate::custody::kms::{AwsKms, Kms, LocalKeyring};

/// `keybroker audit verify FILES… [--after HASH] [--checkpoint FILE|TOKEN]`:
/// one line per file that continues the chain, then the summary or the
/// first fault.
pub(super) async fn audit_verify(
    files: &[PathBuf],
    after: Option<&str>,
    checkpoint: Option<&str>,
    allow_legacy: bool,
    key: &ChainKeyArgs,
) -> Result<(), CliError> {
    let checkpoint = checkpoint.map(read_checkpoint).transpose()?;
    let key = chain_key(key).await?;
    let report = crate::audit::verify_files(files, after, &key, checkpoint.as_ref());
    for file in &report.files {
        let name = file.path.display();
        match &file.seqs {
            None => println!("{name}: empty"),
            Some(seqs) => println!("{name}: ok, records seq {} to {}", seqs.start(), seqs.end()),
        }
    }
    if let Some(fault) = report.fault {
        return Err(CliError::AuditChain(fault));
    }
    if report.legacy > 0 {
        let unkeyed = format!(
            "{} of {} records are unkeyed legacy records (plain SHA-256): anyone who can write the file could \
             have rewritten them",
            report.legacy, report.records
        );
        if !allow_legacy {
            return Err(CliError::Input(format!(
                "{unkeyed}; the chain is not keyed-valid (--allow-legacy accepts them)"
            )));
        }
        println!("warning: {unkeyed}");
    }
    match report.last_hash {
        Some(last_hash) => println!(
            "ok: {} records, keyed chain intact{}; last hash {last_hash}",
            report.records,
            if report.legacy > 0 { " after the legacy records" } else { "" }
        ),
        None => println!("ok: no records"),
    }
    if let Some(checkpoint) = report.checkpoint {
        println!(
            "ok: reaches the checkpoint of {} at seq {} (made at unix ms {})",
            checkpoint.file, checkpoint.seq, checkpoint.unix_ms
        );
    }
    Ok(())
}

/// `keybroker audit export-key --out FILE`.
pub(super) async fn export_key(out: &Path, kms: &ChainKmsArgs) -> Result<(), CliError> {
    let key = unwrap_through_kms(kms).await?;
    key.write_file(out).map_err(|e| CliError::Input(e.to_string()))?;
    println!("wrote the audit chain key to {} (mode 0600); keep it as secret as KMS access", out.display());
    Ok(())
}

/// The checkpoint in a file (its last) or in the argument itself.
fn read_checkpoint(arg: &str) -> Result<Checkpoint, CliError> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        std::fs::read_to_string(path).map_err(|source| CliError::Io { path: path.to_owned(), source })?
    } else {
        arg.to_owned()
    };
    Checkpoint::find(&text).map_err(|e| CliError::Usage(format!("--checkpoint: {e}")))
}

/// The chain key from `--key-file`, or through KMS.
async fn chain_key(args: &ChainKeyArgs) -> Result<ChainKey, CliError> {
    match &args.key_file {
        Some(path) => ChainKey::read_file(path).map_err(|e| CliError::Input(e.to_string())),
        None => unwrap_through_kms(&args.kms).await,
    }
}

/// Unwraps the chain key with the KMS the configuration names.
async fn unwrap_through_kms(args: &ChainKmsArgs) -> Result<ChainKey, CliError> {
    let config = Config::load_with(args.config.as_deref(), args.overrides())?;
    let wrapped = config.audit.wrapped_chain_key_path().ok_or_else(|| {
        CliError::Usage(
            "no chain key: give --key-file, or --config (or --wrapped-key) naming the broker's wrapped key".to_owned(),
        )
    })?;
    let kms: Arc<dyn Kms> = match config.kms.backend {
        KmsBackend::Aws => Arc::new(AwsKms::new(&crate::app::aws::load_sdk_config(&config.aws).await)),
        KmsBackend::Local => {
            let master = &config.kms.local.master_key_file;
            if !master.exists() {
                // Never make a new master key: it could unwrap nothing.
                let source = std::io::Error::from(std::io::ErrorKind::NotFound);
                return Err(CliError::Io { path: master.clone(), source });
            }
            Arc::new(LocalKeyring::open_or_create(master).map_err(|e| CliError::Input(e.to_string()))?)
        }
    };
    ChainKey::unwrap_file(kms.as_ref(), &wrapped).await.map_err(|e| CliError::Input(e.to_string()))
}
