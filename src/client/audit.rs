//! `keybroker audit verify`: checks audit log files as one hash chain and
//! prints what it found.
//!
//! Owns the command's output and exit status. Must never modify a log.

use std::path::PathBuf;

use crate::client::error::CliError;

/// `keybroker audit verify FILES… [--after HASH]`.
pub(super) fn audit_verify(files: &[PathBuf], after: Option<&str>) -> Result<(), CliError> {
    use crate::audit::{Verdict, verify};
    // Where the next file must continue: the last hash, and the next seq
    // when known (`--after` gives only the hash).
    let mut continues: Option<(String, Option<u64>)> = after.map(|hash| (hash.to_owned(), None));
    let mut total = 0;
    for file in files {
        let name = file.display();
        match verify(file).map_err(|e| CliError::Input(format!("{name}: {e}")))? {
            Verdict::Broken { line, problem } => {
                return Err(CliError::Input(format!("{name}: line {line}: {problem}")));
            }
            Verdict::Intact { records: 0, .. } => println!("{name}: empty"),
            Verdict::Intact { records, last_hash, first_seq, first_prev } => {
                match &continues {
                    None if first_seq != 0 => {
                        return Err(CliError::Input(format!(
                            "{name}: line 1: the log starts at seq {first_seq}, not 0: records were cut from its head, \
                             or it continues a rotated file; verify the files in order (keybroker audit verify OLD NEW) \
                             or give the previous file's last hash with --after"
                        )));
                    }
                    Some((hash, seq)) if first_prev != *hash || seq.is_some_and(|seq| seq != first_seq) => {
                        let expected = seq.map_or_else(String::new, |seq| format!(" at seq {seq}"));
                        return Err(CliError::Input(format!(
                            "{name}: line 1: record seq {first_seq} does not continue the chain{expected} \
                             from hash {hash}: records were cut between the files, or the files are out of order"
                        )));
                    }
                    _ => {}
                }
                println!("{name}: ok, records seq {first_seq} to {}", first_seq + records - 1);
                total += records;
                continues = Some((last_hash, Some(first_seq + records)));
            }
        }
    }
    match continues {
        Some((last_hash, Some(_))) => println!("ok: {total} records, chain intact; last hash {last_hash}"),
        _ => println!("ok: no records"),
    }
    Ok(())
}
