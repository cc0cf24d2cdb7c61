//! Checkpoints: the chain's end, authenticated with the chain key and
//! written where the log's writer cannot take it back, so a log whose tail
//! was cut off no longer verifies against the last checkpoint.
//!
//! A checkpoint names the last record's seq and hash, when it was made
//! (Unix milliseconds) and the log file (its name, hex), and carries an
//! HMAC-SHA256 under the chain key over those (prefixed
//! `keybroker-audit-checkpoint\n`, which no record line starts with). It is
//! written as one token of lower-case hex and dots, so it survives any log
//! format and can be pasted from a log line:
//!
//! ```text
//! kbcp1.SEQ.HASH.UNIX_MS.FILE_HEX.MAC
//! ```
//!
//! The committer emits one every [`CheckpointSettings::every`] records or
//! [`CheckpointSettings::interval`], whichever comes first (when records
//! were written since the last), before a reopen (rotation) and when the
//! log closes: as a `tracing` line, as the gauge
//! `keybroker_audit_checkpoint_sequence`, and appended (and synced) to the
//! optional checkpoint file.
//!
//! Owns the token, its MAC and where checkpoints go. Must never fail an
//! RPC: a checkpoint that cannot be written is logged and counted.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::audit::chain::Chain;
use crate::audit::key::ChainKey;

/// The token's leading tag (format version 1).
const TAG: &str = "kbcp1";
/// What the MAC covers before the token's fields.
const MAC_CONTEXT: &[u8] = b"keybroker-audit-checkpoint\n";

/// When and where checkpoints are emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Emit after this many records since the last checkpoint.
    pub every: u64,
    /// Emit when records were written and this long has passed since the
    /// last checkpoint.
    pub interval: Duration,
    /// An append-only file each checkpoint is also written to, one token a
    /// line (best kept on another volume than the log, or `chattr +a`).
    pub path: Option<PathBuf>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings { every: 1000, interval: Duration::from_secs(10), path: None }
    }
}

/// A checkpoint, parsed or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The seq of the last record it covers.
    pub seq: u64,
    /// That record's hash.
    pub hash: String,
    /// When it was made, Unix milliseconds.
    pub unix_ms: u64,
    /// The log file's name.
    pub file: String,
    /// The MAC, hex.
    mac: String,
}

/// Why a text holds no usable checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("not a checkpoint: {0} (expected kbcp1.SEQ.HASH.UNIX_MS.FILE_HEX.MAC)")]
pub struct CheckpointError(&'static str);

impl Checkpoint {
    /// The checkpoint of `chain`'s last record, sealed with `key`; `None`
    /// before the first record.
    fn seal(key: &ChainKey, chain: &Chain, file: &str) -> Option<Self> {
        let seq = chain.seq.checked_sub(1)?;
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut checkpoint =
            Checkpoint { seq, hash: chain.prev.clone(), unix_ms, file: file.to_owned(), mac: String::new() };
        checkpoint.mac = checkpoint.expected_mac(key);
        Some(checkpoint)
    }

    /// The fields the MAC covers, as the token writes them.
    fn body(&self) -> String {
        format!("{TAG}.{}.{}.{}.{}", self.seq, self.hash, self.unix_ms, hex::encode(&self.file))
    }

    fn expected_mac(&self, key: &ChainKey) -> String {
        hex::encode(key.mac(&[MAC_CONTEXT, self.body().as_bytes()]))
    }

    /// Whether `key` made this checkpoint.
    pub fn authentic(&self, key: &ChainKey) -> bool {
        // Compared in variable time: verification runs offline, where no
        // one can time repeated guesses.
        self.expected_mac(key) == self.mac
    }

    /// The token.
    pub fn token(&self) -> String {
        format!("{}.{}", self.body(), self.mac)
    }

    /// The last checkpoint token in `text`: a token alone, a line of the
    /// server log, or a whole checkpoint file.
    ///
    /// # Errors
    /// [`CheckpointError`] when `text` holds no well-formed token.
    pub fn find(text: &str) -> Result<Self, CheckpointError> {
        let at = text.rfind(&format!("{TAG}.")).ok_or(CheckpointError("no kbcp1 token"))?;
        let token: String = text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
        let parts: Vec<&str> = token.split('.').collect();
        let [_, seq, hash, unix_ms, file, mac] = parts.as_slice() else {
            return Err(CheckpointError("it does not have six dot-separated parts"));
        };
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex64(hash) || !hex64(mac) {
            return Err(CheckpointError("its hash and MAC must be 64 lower-case hex digits"));
        }
        let seq = seq.parse().map_err(|_| CheckpointError("its seq is not a number"))?;
        let unix_ms = unix_ms.parse().map_err(|_| CheckpointError("its time is not a number"))?;
        let file = hex::decode(file)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(CheckpointError("its file name is not hex of UTF-8"))?;
        Ok(Checkpoint { seq, hash: (*hash).to_owned(), unix_ms, file, mac: (*mac).to_owned() })
    }
}

/// Emits checkpoints for the committer.
pub(super) struct Checkpointer {
    settings: CheckpointSettings,
    /// The log file's name, as checkpoints name it.
    log_name: String,
    file: Option<File>,
    /// Records written since the last checkpoint.
    since: u64,
    last_at: Instant,
}

impl Checkpointer {
    /// Opens the checkpoint file, if any (append-only, created mode 0600).
    pub(super) fn open(settings: CheckpointSettings, log: &Path) -> std::io::Result<Self> {
        let file = match &settings.path {
            Some(path) => Some(OpenOptions::new().append(true).create(true).mode(0o600).open(path)?),
            None => None,
        };
        let log_name = log.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        Ok(Checkpointer { settings, log_name, file, since: 0, last_at: Instant::now() })
    }

    /// Counts `records` just committed, and checkpoints when due.
    pub(super) fn committed(&mut self, records: usize, key: &ChainKey, chain: &Chain) {
        self.since += records as u64;
        if self.since >= self.settings.every || self.last_at.elapsed() >= self.settings.interval {
            self.emit(key, chain);
        }
    }

    /// When the next checkpoint is due if no record comes; `None` when
    /// every record is checkpointed.
    pub(super) fn due(&self) -> Option<Instant> {
        (self.since > 0).then(|| self.last_at + self.settings.interval)
    }

    /// Checkpoints the chain's end, unless nothing was written since the
    /// last checkpoint.
    pub(super) fn emit(&mut self, key: &ChainKey, chain: &Chain) {
        self.last_at = Instant::now();
        if self.since == 0 {
            return;
        }
        self.since = 0;
        let Some(checkpoint) = Checkpoint::seal(key, chain, &self.log_name) else {
            return;
        };
        let token = checkpoint.token();
        tracing::info!(checkpoint = %token, seq = checkpoint.seq, file = %self.log_name, "audit checkpoint");
        metrics::gauge!("keybroker_audit_checkpoint_sequence").set(checkpoint.seq as f64);
        if let Some(file) = &mut self.file {
            let written = file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_data());
            if let Err(e) = written {
                metrics::counter!("keybroker_audit_checkpoint_failures_total").increment(1);
                tracing::error!(error = %e, "audit checkpoint not written to the checkpoint file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::key::tests::key;

    fn chain() -> Chain {
        Chain { seq: 42, prev: "ab".repeat(32) }
    }

    #[test]
    fn a_token_parses_back_from_any_text_and_only_its_key_made_it() {
        let key = key();
        let made = Checkpoint::seal(&key, &chain(), "audit.jsonl").unwrap();
        assert_eq!((made.seq, made.hash.as_str(), made.file.as_str()), (41, "ab".repeat(32).as_str(), "audit.jsonl"));
        let line =
            format!("2026-12-04T11:00:00Z INFO keybroker::audit: audit checkpoint checkpoint={} seq=41", made.token());
        let found = Checkpoint::find(&line).unwrap();
        assert_eq!(found, made);
        assert!(found.authentic(&key));
        assert!(!found.authentic(&super::super::key::tests::key()), "another key's checkpoint");

        let forged = made.token().replacen(".41.", ".40.", 1);
        assert!(!Checkpoint::find(&forged).unwrap().authentic(&key), "an edited seq");
        assert!(Checkpoint::find("kbcp1.1.2").is_err());
        assert!(Checkpoint::find("nothing here").is_err());
        assert!(Checkpoint::seal(&key, &Chain { seq: 0, prev: String::new() }, "a").is_none());
    }

    #[test]
    fn checkpoints_come_every_n_records_and_only_after_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let settings = CheckpointSettings { every: 3, interval: Duration::from_secs(3600), path: Some(path.clone()) };
        let mut checkpointer = Checkpointer::open(settings, &dir.path().join("audit.jsonl")).unwrap();
        let key = key();
        let count = || std::fs::read_to_string(&path).unwrap().lines().count();
        checkpointer.committed(2, &key, &chain());
        assert_eq!((count(), checkpointer.due().is_some()), (0, true));
        checkpointer.committed(1, &key, &chain());
        assert_eq!((count(), checkpointer.due()), (1, None));
        checkpointer.emit(&key, &chain());
        assert_eq!(count(), 1, "nothing new, no checkpoint");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Checkpoint::find(&text).unwrap().file, "audit.jsonl");
    }
}
