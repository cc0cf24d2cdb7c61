//! `keybroker audit verify`: checks audit log files as one hash chain and
//! prints what it found.
//!
//! Owns the command's output and exit status. Must never modify a log.

use std::path::PathBuf;

use crate::client::error::CliError;

/// `keybroker audit verify FILES… [--after HASH]`: one line per file that
/// continues the chain, then the summary or the first fault.
pub(super) fn audit_verify(files: &[PathBuf], after: Option<&str>) -> Result<(), CliError> {
    let report = crate::audit::verify_files(files, after);
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
    match report.last_hash {
        Some(last_hash) => println!("ok: {} records, chain intact; last hash {last_hash}", report.records),
        None => println!("ok: no records"),
    }
    Ok(())
}
