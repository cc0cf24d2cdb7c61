//! Verification: reads a log back and finds the first edited, forged,
//! deleted, inserted or reordered record, in one file or across rotated
//! files checked as one chain, and whether the chain reaches a checkpoint.
//!
//! Owns the verdicts and their messages. Must never write, repair or
//! reopen a log, nor print: it answers data for `keybroker audit verify`
//! (or any other caller) to report.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::audit::chain::{GENESIS, RECORD_VERSION, Seal, hash_of_line};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::key::ChainKey;

/// The verdict on a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record chains to the one before.
    Intact {
        /// Records read.
        records: u64,
        /// Of those, legacy records (no `v`: plain SHA-256, which anyone
        /// can recompute); they come before every keyed record.
        legacy: u64,
        /// The last record's hash (anchor it elsewhere to detect truncation).
        last_hash: String,
        /// The first record's seq: 0 for a log that starts the chain; more
        /// for one continued from a rotated file, or whose head was cut off.
        first_seq: u64,
        /// The first record's `prev`: the previous file's last hash when
        /// `first_seq` is not 0 (compare them to detect a cut-off head).
        first_prev: String,
    },
    /// The first place the chain breaks.
    Broken {
        /// 1-based line.
        line: usize,
        /// What is wrong there.
        problem: String,
    },
}

/// Checks a log's chain under `key` and reports the first edited, forged,
/// deleted, inserted or reordered record.
///
/// # Errors
/// When the file cannot be read.
pub fn verify(path: &Path, key: &ChainKey) -> std::io::Result<Verdict> {
    verify_probing(path, key, None).map(|(verdict, _)| verdict)
}

/// [`verify`], also answering the hash of the record at seq `probe`, when
/// the file holds it.
fn verify_probing(path: &Path, key: &ChainKey, probe: Option<u64>) -> std::io::Result<(Verdict, Option<String>)> {
    let all: Vec<String> = BufReader::new(File::open(path)?).lines().collect::<Result<_, _>>()?;
    let seq_at = |line: &str| serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("seq")?.as_u64());
    let mut expected_seq: Option<u64> = None;
    let mut prev = GENESIS.to_owned();
    let (mut records, mut legacy) = (0, 0);
    let mut start: Option<(u64, String)> = None;
    let mut probed = None;
    for (index, line) in all.iter().enumerate() {
        let number = index + 1;
        let broken = |problem: String| Ok((Verdict::Broken { line: number, problem }, None));
        if line.trim().is_empty() {
            return broken("an empty line (a record was removed or the file was edited)".to_owned());
        }
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
            return broken("not a JSON record: the record was edited".to_owned());
        };
        let Some(Value::String(hash)) = map.get("hash").cloned() else {
            return broken("no hash: the record was edited".to_owned());
        };
        let seal = match map.get("v") {
            None if records > legacy => {
                return broken("an unkeyed (legacy) record after keyed ones: it was forged".to_owned());
            }
            None => Seal::Legacy,
            Some(v) if v.as_u64() == Some(RECORD_VERSION) => Seal::Keyed(key),
            Some(v) => return broken(format!("unknown record version {v}: the record was edited")),
        };
        if hash_of_line(line, seal).as_deref() != Some(hash.as_str()) {
            let seq = map.get("seq").map(Value::to_string).unwrap_or_default();
            return broken(match seal {
                Seal::Keyed(_) => format!(
                    "record seq {seq} was edited or forged: its MAC does not match its contents under this chain key"
                ),
                Seal::Legacy => format!("record seq {seq} was edited: its hash does not match its contents"),
            });
        }
        let seq = map.get("seq").and_then(Value::as_u64);
        let record_prev = map.get("prev").and_then(Value::as_str).unwrap_or("");
        let Some(seq) = seq else {
            return broken("no seq: the record was edited".to_owned());
        };
        match expected_seq {
            None if seq != 0 && record_prev != GENESIS => {
                // A log continued from a rotated file starts mid-chain.
            }
            None => {
                if record_prev != GENESIS && seq == 0 {
                    return broken("the first record does not start the chain".to_owned());
                }
            }
            Some(expected) => {
                if seq > expected
                    && all[index + 1..].iter().filter_map(|l| seq_at(l)).any(|s| (expected..seq).contains(&s))
                {
                    return broken(format!("record seq {seq} comes before seq {expected}: reordered"));
                }
                if seq > expected {
                    return broken(deleted(expected, seq));
                }
                if seq < expected {
                    return broken(format!("record seq {seq} after seq {}: inserted or reordered", expected - 1));
                }
                if record_prev != prev {
                    return broken(format!(
                        "record seq {seq} does not chain to the record before it: inserted or reordered"
                    ));
                }
            }
        }
        let Some(next) = seq.checked_add(1) else {
            return broken("seq at its maximum: the record was forged".to_owned());
        };
        if expected_seq.is_none() {
            start = Some((seq, record_prev.to_owned()));
        }
        if probe == Some(seq) {
            probed = Some(hash.clone());
        }
        expected_seq = Some(next);
        prev = hash;
        records += 1;
        if matches!(seal, Seal::Legacy) {
            legacy += 1;
        }
    }
    let (first_seq, first_prev) = start.unwrap_or((0, GENESIS.to_owned()));
    Ok((Verdict::Intact { records, legacy, last_hash: prev, first_seq, first_prev }, probed))
}

/// A file of a chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    /// The file.
    pub path: PathBuf,
    /// The seqs of its first and last records; `None` when it is empty.
    pub seqs: Option<RangeInclusive<u64>>,
}

/// Why files given as one chain are not one intact chain; the message names
/// the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum ChainFault {
    /// A file could not be read.
    #[error("{}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's own chain breaks.
    #[error("{}: line {line}: {problem}", .path.display())]
    Broken {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong there.
        problem: String,
    },
    /// The first file does not start at seq 0 and no anchor was given: its
    /// head was cut off, or it continues a file not given.
    #[error(
        "{}: line 1: the log starts at seq {first_seq}, not 0: records were cut from its head, \
         or it continues a rotated file; verify the files in order (keybroker audit verify OLD NEW) \
         or give the previous file's last hash with --after",
        .path.display()
    )]
    CutHead {
        /// The file.
        path: PathBuf,
        /// Its first record's seq.
        first_seq: u64,
    },
    /// A file does not continue the file before it (or the anchor).
    #[error(
        "{}: line 1: record seq {first_seq} does not continue the chain{} from hash {from_hash}: \
         a rotated file is missing, records were cut between the files, or the files are out of order",
        .path.display(),
        .at_seq.map_or_else(String::new, |seq| format!(" at seq {seq}"))
    )]
    Discontinuous {
        /// The file.
        path: PathBuf,
        /// Its first record's seq.
        first_seq: u64,
        /// The hash it had to continue from: the last of the file before,
        /// or the anchor.
        from_hash: String,
        /// The seq it had to start at; `None` after an anchor alone.
        at_seq: Option<u64>,
    },
    /// The checkpoint was not made with this chain key.
    #[error("the checkpoint (seq {seq}) does not authenticate under this chain key: it was forged or is another log's")]
    ForgedCheckpoint {
        /// The seq it claims.
        seq: u64,
    },
    /// The files end before the checkpoint's record.
    #[error(
        "the chain ends {} but the checkpoint covers seq {checkpoint_seq}: records were cut from the tail \
         (or a later file is missing)",
        .last_seq.map_or_else(|| "with no record".to_owned(), |seq| format!("at seq {seq}"))
    )]
    CutTail {
        /// The last record's seq, if any.
        last_seq: Option<u64>,
        /// The checkpoint's seq.
        checkpoint_seq: u64,
    },
    /// The record at the checkpoint's seq is not the one checkpointed, or
    /// the files given start after it.
    #[error("record seq {seq} {problem}")]
    CheckpointMismatch {
        /// The checkpoint's seq.
        seq: u64,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The verdict on files checked as one chain, in the order given.
#[derive(Debug)]
pub struct ChainReport {
    /// The files that verified, in order, up to the fault if there is one.
    pub files: Vec<VerifiedFile>,
    /// Records in those files.
    pub records: u64,
    /// Of those, legacy records (plain SHA-256, not authenticated).
    pub legacy: u64,
    /// Their last record's hash; `None` when they hold no record.
    pub last_hash: Option<String>,
    /// The checkpoint the chain was proven to reach, if one was given.
    pub checkpoint: Option<Checkpoint>,
    /// Where the chain breaks; `None` when it is intact.
    pub fault: Option<ChainFault>,
}

/// Checks `files` (a log and the files rotated out of it, oldest first) as
/// one chain under `key`: each file intact, and each continuing the one
/// before it. The first file must start the chain at seq 0 unless `after`
/// gives the hash it continues from, the last hash of the file before it,
/// which was rotated away or archived; without it a log whose head was cut
/// off would verify. With a `checkpoint`, the chain must also reach the
/// checkpoint's record, with its hash: a log whose tail was cut off (or
/// rewritten) since does not. Reads every file up to the first fault and
/// reports what it found, so a caller can show how far the chain holds.
pub fn verify_files(
    files: &[PathBuf],
    after: Option<&str>,
    key: &ChainKey,
    checkpoint: Option<&Checkpoint>,
) -> ChainReport {
    let mut report = ChainReport {
        files: Vec::with_capacity(files.len()),
        records: 0,
        legacy: 0,
        last_hash: None,
        checkpoint: None,
        fault: None,
    };
    let result = match checkpoint {
        Some(checkpoint) if !checkpoint.authentic(key) => Err(ChainFault::ForgedCheckpoint { seq: checkpoint.seq }),
        _ => chain_files(files, after, key, checkpoint.map(|c| c.seq), &mut report)
            .and_then(|probed| reaches(checkpoint, probed, &report)),
    };
    match result {
        Ok(()) => report.checkpoint = checkpoint.cloned(),
        Err(fault) => report.fault = Some(fault),
    }
    report
}

/// Whether the chain `report` read reaches `checkpoint`, given the hash
/// found at its seq.
/// What a gap in the seqs says: the record (or records) before `seq`,
/// from `expected` on, are missing.
fn deleted(expected: u64, seq: u64) -> String {
    if seq - expected == 1 {
        format!("record seq {expected} was deleted before record seq {seq}")
    } else {
        format!("records seq {expected} to {} were deleted before record seq {seq}", seq - 1)
    }
}

fn reaches(checkpoint: Option<&Checkpoint>, probed: Option<String>, report: &ChainReport) -> Result<(), ChainFault> {
    let Some(checkpoint) = checkpoint else {
        return Ok(());
    };
    let seq = checkpoint.seq;
    let last_seq = report.files.iter().rev().find_map(|file| file.seqs.as_ref().map(|seqs| *seqs.end()));
    let first_seq = report.files.iter().find_map(|file| file.seqs.as_ref().map(|seqs| *seqs.start()));
    match probed {
        Some(hash) if hash == checkpoint.hash => Ok(()),
        Some(_) => Err(ChainFault::CheckpointMismatch {
            seq,
            problem: "does not carry the checkpoint's hash: the log was rewritten after the checkpoint",
        }),
        None if last_seq.is_none_or(|last| last < seq) => Err(ChainFault::CutTail { last_seq, checkpoint_seq: seq }),
        None if first_seq.is_some_and(|first| first > seq) => Err(ChainFault::CheckpointMismatch {
            seq,
            problem: "is before the first file given: give the file that holds it",
        }),
        None => Err(ChainFault::CheckpointMismatch { seq, problem: "is not in the files given" }),
    }
}

/// Verifies `files` in order into `report`, up to the first fault;
/// answers the hash of the record at seq `probe`, if found.
fn chain_files(
    files: &[PathBuf],
    after: Option<&str>,
    key: &ChainKey,
    probe: Option<u64>,
    report: &mut ChainReport,
) -> Result<Option<String>, ChainFault> {
    // Where the next file must continue: the last hash, and the next seq
    // when known (`after` gives only the hash).
    let mut continues: Option<(String, Option<u64>)> = after.map(|hash| (hash.to_owned(), None));
    let mut found = None;
    for path in files {
        let (verdict, probed) =
            verify_probing(path, key, probe).map_err(|source| ChainFault::Unreadable { path: path.clone(), source })?;
        let (records, legacy, last_hash, first_seq, first_prev) = match verdict {
            Verdict::Broken { line, problem } => return Err(ChainFault::Broken { path: path.clone(), line, problem }),
            Verdict::Intact { records: 0, .. } => {
                report.files.push(VerifiedFile { path: path.clone(), seqs: None });
                continue;
            }
            Verdict::Intact { records, legacy, last_hash, first_seq, first_prev } => {
                (records, legacy, last_hash, first_seq, first_prev)
            }
        };
        match &continues {
            None if first_seq != 0 => return Err(ChainFault::CutHead { path: path.clone(), first_seq }),
            Some((hash, seq)) if first_prev != *hash || seq.is_some_and(|seq| seq != first_seq) => {
                return Err(ChainFault::Discontinuous {
                    path: path.clone(),
                    first_seq,
                    from_hash: hash.clone(),
                    at_seq: *seq,
                });
            }
            _ => {}
        }
        if legacy > 0 && report.records > report.legacy {
            return Err(ChainFault::Broken {
                path: path.clone(),
                line: 1,
                problem: "an unkeyed (legacy) file after keyed records: it was forged".to_owned(),
            });
        }
        let next = first_seq + records;
        report.files.push(VerifiedFile { path: path.clone(), seqs: Some(first_seq..=next - 1) });
        report.records += records;
        report.legacy += legacy;
        report.last_hash = Some(last_hash.clone());
        found = found.or(probed);
        continues = Some((last_hash, Some(next)));
    }
    Ok(found)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::audit::chain::{Chain, push_chained};
    use crate::audit::key::tests::{fixed, key};
    use crate::audit::record::tests::record;

    #[test]
    fn one_missing_record_is_named_in_the_singular() {
        assert_eq!(deleted(1, 2), "record seq 1 was deleted before record seq 2");
        assert_eq!(deleted(1, 4), "records seq 1 to 3 were deleted before record seq 4");
    }

    /// A log of `n` records in a fresh directory, chained as the committer
    /// chains them.
    fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut chain = Chain { seq: 0, prev: GENESIS.to_owned() };
        let mut out = Vec::new();
        for i in 0..n {
            push_chained(&mut out, &record(i).to_json().unwrap(), &mut chain, &fixed());
        }
        std::fs::write(&path, out).unwrap();
        (dir, path)
    }

    pub(in crate::audit) fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
    }

    pub(in crate::audit) fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn edits_deletions_insertions_and_swaps_are_found() {
        let (_dir, path) = log_of(10);
        let original = lines(&path);

        let mut edited = original.clone();
        edited[4] = edited[4].replace("caller-4", "caller-X");
        rewrite(&path, &edited);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 5, ref problem } if problem.contains("edited"))
        );

        let mut deleted = original.clone();
        deleted.remove(6);
        rewrite(&path, &deleted);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 7, ref problem } if problem.contains("deleted"))
        );

        let mut swapped = original.clone();
        swapped.swap(2, 3);
        rewrite(&path, &swapped);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 3, ref problem } if problem.contains("reordered"))
        );

        rewrite(&path, &original[3..]);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 7, first_seq: 3, ref first_prev, .. }
                if first_prev != GENESIS),
            "a cut-off head verifies only as a continued chain, and says where it starts"
        );

        let mut inserted = original.clone();
        inserted.insert(5, original[5].clone());
        rewrite(&path, &inserted);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 7, ref problem } if problem.contains("inserted"))
        );
    }

    fn hash_of(line: &str) -> String {
        serde_json::from_str::<Value>(line).unwrap()["hash"].as_str().unwrap().to_owned()
    }

    /// A log of 7 records split after its third: the rotated file, the
    /// current one, and the hash the rotated one ends with.
    fn rotated() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
        let (dir, path) = log_of(7);
        let all = lines(&path);
        let (old, new) = (dir.path().join("old.jsonl"), dir.path().join("new.jsonl"));
        rewrite(&old, &all[..3]);
        rewrite(&new, &all[3..]);
        (dir, old, new, hash_of(&all[2]))
    }

    #[test]
    fn rotated_files_verify_as_one_chain_in_order() {
        let (dir, old, new, _) = rotated();
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let report = verify_files(&[old.clone(), empty.clone(), new.clone()], None, &fixed(), None);
        assert!(report.fault.is_none(), "{:?}", report.fault);
        assert_eq!(
            report.files,
            [
                VerifiedFile { path: old.clone(), seqs: Some(0..=2) },
                VerifiedFile { path: empty, seqs: None },
                VerifiedFile { path: new.clone(), seqs: Some(3..=6) },
            ]
        );
        assert_eq!(report.records, 7);
        assert_eq!(report.last_hash, lines(&new).last().map(|line| hash_of(line)));

        let reversed = verify_files(&[new, old], None, &fixed(), None);
        assert!(reversed.files.is_empty());
        assert!(matches!(reversed.fault, Some(ChainFault::CutHead { first_seq: 3, .. })), "{:?}", reversed.fault);
    }

    #[test]
    fn a_cut_head_is_refused_without_an_anchor_and_accepted_with_the_right_one() {
        let (_dir, _old, new, last_of_old) = rotated();
        let cut = verify_files(std::slice::from_ref(&new), None, &fixed(), None);
        assert!(cut.files.is_empty());
        let fault = cut.fault.unwrap();
        assert!(matches!(fault, ChainFault::CutHead { first_seq: 3, .. }), "{fault:?}");
        let message = fault.to_string();
        assert!(
            message.starts_with(&format!("{}: line 1: the log starts at seq 3, not 0", new.display())),
            "{message}"
        );

        let anchored = verify_files(std::slice::from_ref(&new), Some(&last_of_old), &fixed(), None);
        assert!(anchored.fault.is_none(), "{:?}", anchored.fault);
        assert_eq!(anchored.files, [VerifiedFile { path: new.clone(), seqs: Some(3..=6) }]);
        assert_eq!(anchored.records, 4);
        assert_eq!(anchored.last_hash, lines(&new).last().map(|line| hash_of(line)));

        let first_of_new = hash_of(&lines(&new)[0]);
        let wrong = verify_files(std::slice::from_ref(&new), Some(&first_of_new), &fixed(), None);
        assert!(wrong.files.is_empty());
        let fault = wrong.fault.unwrap();
        assert!(matches!(fault, ChainFault::Discontinuous { first_seq: 3, at_seq: None, .. }), "{fault:?}");
        let message = fault.to_string();
        assert!(message.contains(&format!("record seq 3 does not continue the chain from hash {first_of_new}")));
    }

    #[test]
    fn a_gap_between_files_is_found_and_the_files_before_it_are_reported() {
        let (_dir, old, new, _) = rotated();
        rewrite(&old, &lines(&old)[..2]);
        let gap = verify_files(&[old.clone(), new.clone()], None, &fixed(), None);
        assert_eq!(gap.files, [VerifiedFile { path: old, seqs: Some(0..=1) }]);
        assert_eq!(gap.records, 2);
        let message = gap.fault.unwrap().to_string();
        assert!(
            message
                .starts_with(&format!("{}: line 1: record seq 3 does not continue the chain at seq 2", new.display())),
            "{message}"
        );
    }

    #[test]
    fn a_broken_or_unreadable_file_ends_the_chain() {
        let (dir, old, new, _) = rotated();
        let mut edited = lines(&new);
        edited[1] = edited[1].replace("caller-4", "caller-X");
        rewrite(&new, &edited);
        let broken = verify_files(&[old.clone(), new], None, &fixed(), None);
        assert_eq!(broken.files.len(), 1);
        assert!(matches!(broken.fault, Some(ChainFault::Broken { line: 2, .. })), "{:?}", broken.fault);

        let unreadable = verify_files(&[old, dir.path().join("missing.jsonl")], None, &fixed(), None);
        assert_eq!(unreadable.files.len(), 1);
        assert!(matches!(unreadable.fault, Some(ChainFault::Unreadable { .. })), "{:?}", unreadable.fault);
    }

    /// `lines` chained again as an attacker without the key would: each
    /// line's `prev` and `hash` recomputed with `seal`, in order.
    pub(in crate::audit) fn rechained(lines: &[String], seal: Seal<'_>, keep_version: bool) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        lines
            .iter()
            .enumerate()
            .map(|(seq, line)| {
                let mut map: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
                map.remove("hash");
                if !keep_version {
                    map.remove("v");
                }
                map.insert("seq".to_owned(), Value::from(seq as u64));
                map.insert("prev".to_owned(), Value::from(prev.clone()));
                let body = serde_json::to_string(&map).unwrap();
                let members = &body[..body.len() - 1];
                let hash = hash_of_line(&format!("{members},\"hash\":\"{}\"}}", "0".repeat(64)), seal).unwrap();
                prev = hash.clone();
                format!("{members},\"hash\":\"{hash}\"}}")
            })
            .collect()
    }

    #[test]
    fn a_chain_rewritten_without_the_key_is_found() {
        let (_dir, path) = log_of(6);
        let mut original = lines(&path);
        original.remove(2);

        rewrite(&path, &rechained(&original, Seal::Keyed(&key()), true));
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 1, ref problem } if problem.contains("forged")),
            "re-chained under a guessed key"
        );
        rewrite(&path, &rechained(&original, Seal::Legacy, true));
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 1, ref problem } if problem.contains("MAC")),
            "re-chained with plain SHA-256 as version 2"
        );
        rewrite(&path, &rechained(&original, Seal::Legacy, false));
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 5, legacy: 5, .. }),
            "re-chained as legacy: intact, but every record reported unkeyed"
        );

        // Legacy records may only come first: a forged legacy tail is found.
        let (_dir, path) = log_of(3);
        let keyed = lines(&path);
        let mut spliced = keyed.clone();
        let mut tail = rechained(&keyed, Seal::Legacy, false);
        spliced.push(tail.remove(0).replace("\"seq\":0", "\"seq\":3"));
        rewrite(&path, &spliced);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 4, ref problem } if problem.contains("legacy"))
        );
        let mut unknown = keyed.clone();
        unknown[0] = unknown[0].replacen("{\"v\":2,", "{\"v\":3,", 1);
        rewrite(&path, &unknown);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 1, ref problem } if problem.contains("version 3"))
        );
    }

    /// A checkpoint of `seq`, `hash` under `key`.
    fn checkpoint_of(key: &ChainKey, seq: u64, hash: &str) -> Checkpoint {
        let chain = Chain { seq: seq + 1, prev: hash.to_owned() };
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::audit::CheckpointSettings {
            every: 1,
            interval: std::time::Duration::from_secs(60),
            path: Some(dir.path().join("cp")),
        };
        let mut checkpointer =
            crate::audit::checkpoint::Checkpointer::open(settings, Path::new("audit.jsonl")).unwrap();
        checkpointer.committed(1, key, &chain);
        Checkpoint::find(&std::fs::read_to_string(dir.path().join("cp")).unwrap()).unwrap()
    }

    #[test]
    fn a_checkpoint_catches_a_cut_tail_and_a_rewritten_record() {
        let (dir, old, new, _) = rotated();
        let all: Vec<String> = lines(&old).into_iter().chain(lines(&new)).collect();
        let last = checkpoint_of(&fixed(), 6, &hash_of(&all[6]));
        let files = [old.clone(), new.clone()];
        let report = verify_files(&files, None, &fixed(), Some(&last));
        assert!(report.fault.is_none(), "{:?}", report.fault);
        assert_eq!(report.checkpoint.as_ref(), Some(&last));
        let mid = checkpoint_of(&fixed(), 4, &hash_of(&all[4]));
        assert!(
            verify_files(&files, None, &fixed(), Some(&mid)).fault.is_none(),
            "records after a checkpoint are fine"
        );

        rewrite(&new, &lines(&new)[..2]);
        let cut = verify_files(&files, None, &fixed(), Some(&last));
        let fault = cut.fault.unwrap();
        assert!(matches!(fault, ChainFault::CutTail { last_seq: Some(4), checkpoint_seq: 6 }), "{fault:?}");
        assert!(fault.to_string().contains("cut from the tail"));
        let missing = verify_files(std::slice::from_ref(&old), None, &fixed(), Some(&last));
        assert!(matches!(missing.fault, Some(ChainFault::CutTail { last_seq: Some(2), .. })), "{:?}", missing.fault);

        let other = checkpoint_of(&fixed(), 4, &"e".repeat(64));
        let rewritten = verify_files(&files, None, &fixed(), Some(&other));
        assert!(
            matches!(rewritten.fault, Some(ChainFault::CheckpointMismatch { seq: 4, .. })),
            "{:?}",
            rewritten.fault
        );
        let forged = checkpoint_of(&key(), 6, &hash_of(&all[6]));
        let refused = verify_files(&files, None, &fixed(), Some(&forged));
        assert!(matches!(refused.fault, Some(ChainFault::ForgedCheckpoint { seq: 6 })), "{:?}", refused.fault);
        drop(dir);
    }
}
