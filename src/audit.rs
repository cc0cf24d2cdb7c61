//! The audit log: one JSON line per RPC, allowed or denied, each carrying
//! the hash of the record before it, so `keybroker audit verify` finds the
//! first edited, deleted, inserted or reordered record.
//!
//! Durable without capping throughput: a record is on disk (fdatasync)
//! before its RPC answers, and whichever call finds the file free commits
//! every record that is waiting in one write and one sync (group commit). Fails closed: when a
//! record cannot be written, the RPC fails and no key leaves. Records name
//! keys by fingerprint (a keyed hash of the wrapped key), never by plaintext.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most records committed by one write and sync.
const MAX_BATCH: usize = 4096;

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log could not be opened at start.
    #[error("audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record could not be made durable; the RPC must fail.
    #[error("audit log not written: {0}")]
    Write(String),
}

/// One RPC, as the audit log records it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 time the record was made.
    pub time: String,
    /// The caller's identity (SPIFFE ID, DNS name, or `anonymous`).
    pub identity: String,
    /// The caller's address.
    pub peer: String,
    /// The RPC.
    pub rpc: String,
    /// The caller's `x-request-id`, or one the broker made.
    pub request_id: String,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// The gRPC status code name.
    pub code: String,
    /// The status message when not OK.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The pipeline, for jobs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    /// The KMS key ARN used.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kms_key_arn: String,
    /// ET's job id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    /// Fingerprints of every key involved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_fingerprints: Vec<String>,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn now() -> Self {
        AuditRecord { time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(), ..Default::default() }
    }
}

struct Pending {
    record: AuditRecord,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle on the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    /// Records waiting for the next commit.
    pending: Mutex<Vec<Pending>>,
    /// The file; whoever holds it is the committer of the moment.
    writer: Mutex<Writer>,
    stats: CommitStats,
}

/// How well group commit is batching: records and syncs so far.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Records written.
    pub records: std::sync::atomic::AtomicU64,
    /// Write-and-sync rounds.
    pub commits: std::sync::atomic::AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs blocking file I/O from async code without stalling the runtime's
/// other tasks where the runtime allows it.
fn blocking<R>(run: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
        _ => run(),
    }
}

/// The chain position: the next sequence number and the last hash.
struct Chain {
    seq: u64,
    prev: String,
}

fn hash_line(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// Serialises a record at its chain position: `(line, hash)`.
fn chained_line(record: &AuditRecord, seq: u64, prev: &str) -> Result<(String, String), String> {
    let Value::Object(mut map) = serde_json::to_value(record).map_err(|e| e.to_string())? else {
        return Err("a record is not a JSON object".to_owned());
    };
    map.insert("seq".to_owned(), Value::from(seq));
    map.insert("prev".to_owned(), Value::from(prev));
    let body = serde_json::to_string(&map).map_err(|e| e.to_string())?;
    let hash = hash_line(&body);
    map.insert("hash".to_owned(), Value::from(hash.clone()));
    Ok((serde_json::to_string(&map).map_err(|e| e.to_string())?, hash))
}

/// Reads the chain position from an existing log's last record.
fn tail_of(file: &mut File) -> std::io::Result<Chain> {
    file.seek(SeekFrom::Start(0))?;
    let mut last = None;
    for line in BufReader::new(&mut *file).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    file.seek(SeekFrom::End(0))?;
    let Some(line) = last else {
        return Ok(Chain { seq: 0, prev: GENESIS.to_owned() });
    };
    let value: Value = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("last record is not JSON: {e}")))?;
    let seq = value.get("seq").and_then(Value::as_u64);
    let hash = value.get("hash").and_then(Value::as_str);
    match (seq, hash) {
        (Some(seq), Some(hash)) => Ok(Chain { seq: seq + 1, prev: hash.to_owned() }),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "last record has no seq or hash")),
    }
}

fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)
}

struct Writer {
    path: PathBuf,
    file: File,
    chain: Chain,
}

impl Writer {
    /// The file must still be the one at `path`: a removed or replaced log
    /// fails closed instead of writing to an unlinked inode.
    fn check_in_place(&self) -> Result<(), String> {
        let at_path = std::fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let open = self.file.metadata().map_err(|e| e.to_string())?;
        if at_path.ino() != open.ino() || at_path.dev() != open.dev() {
            return Err(format!("{} was replaced; send SIGHUP to reopen", self.path.display()));
        }
        Ok(())
    }

    fn commit(&mut self, batch: &[AuditRecord]) -> Result<(), String> {
        self.check_in_place()?;
        let mut seq = self.chain.seq;
        let mut prev = self.chain.prev.clone();
        let mut out = String::with_capacity(batch.len() * 512);
        for record in batch {
            let (line, hash) = chained_line(record, seq, &prev)?;
            out.push_str(&line);
            out.push('\n');
            seq += 1;
            prev = hash;
        }
        self.file.write_all(out.as_bytes()).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.file.sync_data().map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.chain = Chain { seq, prev };
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), String> {
        let file = open_file(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.file = file;
        Ok(())
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, continuing its chain.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened or its last record
    /// is unreadable: the server must not start without its audit log.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let open_error = |source| AuditError::Open { path: path.to_owned(), source };
        let mut file = open_file(path).map_err(open_error)?;
        let chain = tail_of(&mut file).map_err(open_error)?;
        let writer = Writer { path: path.to_owned(), file, chain };
        Ok(AuditLog {
            inner: std::sync::Arc::new(Inner {
                pending: Mutex::new(Vec::new()),
                writer: Mutex::new(writer),
                stats: CommitStats::default(),
            }),
        })
    }

    /// Writes a record; returns once it is on disk.
    ///
    /// Group commit without a writer thread: the caller queues its record,
    /// and whichever caller finds the file free commits everything queued
    /// (one write, one fdatasync) and keeps committing until the queue is
    /// empty; the others wait for their record's turn.
    ///
    /// # Errors
    /// [`AuditError::Write`]: the caller must fail its RPC and return no key.
    pub async fn write(&self, record: AuditRecord) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        lock(&self.inner.pending).push(Pending { record, done });
        self.commit_queued();
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Write(e)),
            Err(_) => Err(AuditError::Write("the audit commit was abandoned".to_owned())),
        }
    }

    /// Commits queued records while this caller can hold the file. A record
    /// queued while another caller holds it is committed by that caller,
    /// which looks at the queue again after letting go of the file.
    fn commit_queued(&self) {
        loop {
            let Ok(mut writer) = self.inner.writer.try_lock() else {
                return;
            };
            loop {
                let batch: Vec<Pending> = {
                    let mut pending = lock(&self.inner.pending);
                    let take = pending.len().min(MAX_BATCH);
                    pending.drain(..take).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let (records, waiting): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.record, p.done)).unzip();
                let result = blocking(|| writer.commit(&records));
                self.inner.stats.records.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.inner.stats.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::histogram!("keybroker_audit_commit_records").record(records.len() as f64);
                if let Err(e) = &result {
                    tracing::error!(error = %e, records = records.len(), "audit records not written; failing their RPCs");
                }
                for done in waiting {
                    let _ = done.send(result.clone());
                }
            }
            drop(writer);
            if lock(&self.inner.pending).is_empty() {
                return;
            }
        }
    }

    /// Records and commits so far (records per commit is the group size).
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.inner.stats.records.load(Relaxed), self.inner.stats.commits.load(Relaxed))
    }

    /// Reopens the file at the configured path (after rotation; SIGHUP).
    ///
    /// # Errors
    /// [`AuditError::Write`] when it cannot be opened.
    pub async fn reopen(&self) -> Result<(), AuditError> {
        let inner = self.inner.clone();
        let reopened = tokio::task::spawn_blocking(move || lock(&inner.writer).reopen())
            .await
            .map_err(|e| AuditError::Write(e.to_string()))?;
        reopened.map_err(AuditError::Write)
    }
}

/// The verdict on a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record chains to the one before.
    Intact {
        /// Records read.
        records: u64,
        /// The last record's hash (anchor it elsewhere to detect truncation).
        last_hash: String,
    },
    /// The first place the chain breaks.
    Broken {
        /// 1-based line.
        line: usize,
        /// What is wrong there.
        problem: String,
    },
}

/// Checks a log's chain and reports the first edited, deleted, inserted or
/// reordered record.
///
/// # Errors
/// When the file cannot be read.
pub fn verify(path: &Path) -> std::io::Result<Verdict> {
    let all: Vec<String> = BufReader::new(File::open(path)?).lines().collect::<Result<_, _>>()?;
    let seq_at = |line: &str| serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("seq")?.as_u64());
    let mut expected_seq: Option<u64> = None;
    let mut prev = GENESIS.to_owned();
    let mut records = 0;
    for (index, line) in all.iter().enumerate() {
        let number = index + 1;
        let broken = |problem: String| Ok(Verdict::Broken { line: number, problem });
        if line.trim().is_empty() {
            return broken("an empty line (a record was removed or the file was edited)".to_owned());
        }
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(line) else {
            return broken("not a JSON record: the record was edited".to_owned());
        };
        let Some(Value::String(hash)) = map.remove("hash") else {
            return broken("no hash: the record was edited".to_owned());
        };
        let body = serde_json::to_string(&Map::clone(&map)).unwrap_or_default();
        if hash_line(&body) != hash {
            let seq = map.get("seq").map(Value::to_string).unwrap_or_default();
            return broken(format!("record seq {seq} was edited: its hash does not match its contents"));
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
                let later = all[index + 1..].iter().filter_map(|l| seq_at(l)).any(|s| (expected..seq).contains(&s));
                if seq > expected && later {
                    return broken(format!("record seq {seq} comes before seq {expected}: reordered"));
                }
                if seq > expected {
                    return broken(format!(
                        "records seq {expected} to {} were deleted before record seq {seq}",
                        seq - 1
                    ));
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
        expected_seq = Some(seq + 1);
        prev = hash;
        records += 1;
    }
    Ok(Verdict::Intact { records, last_hash: prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord {
            rpc: "IssueDataKey".into(),
            identity: format!("caller-{n}"),
            outcome: "ok".into(),
            ..AuditRecord::now()
        }
    }

    async fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let writes: Vec<_> = (0..n).map(|i| log.write(record(i))).collect();
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[tokio::test]
    async fn an_intact_log_verifies_and_reopening_continues_the_chain() {
        let (_dir, path) = log_of(20).await;
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 20, .. }));
        let log = AuditLog::open(&path).unwrap();
        log.write(record(99)).await.unwrap();
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 21, .. }));
    }

    #[tokio::test]
    async fn edits_deletions_insertions_and_swaps_are_found() {
        let (_dir, path) = log_of(10).await;
        let original = lines(&path);

        let mut edited = original.clone();
        edited[4] = edited[4].replace("caller-4", "caller-X");
        rewrite(&path, &edited);
        assert!(
            matches!(verify(&path).unwrap(), Verdict::Broken { line: 5, ref problem } if problem.contains("edited"))
        );

        let mut deleted = original.clone();
        deleted.remove(6);
        rewrite(&path, &deleted);
        assert!(
            matches!(verify(&path).unwrap(), Verdict::Broken { line: 7, ref problem } if problem.contains("deleted"))
        );

        let mut swapped = original.clone();
        swapped.swap(2, 3);
        rewrite(&path, &swapped);
        assert!(
            matches!(verify(&path).unwrap(), Verdict::Broken { line: 3, ref problem } if problem.contains("reordered"))
        );

        let mut inserted = original.clone();
        inserted.insert(5, original[5].clone());
        rewrite(&path, &inserted);
        assert!(
            matches!(verify(&path).unwrap(), Verdict::Broken { line: 7, ref problem } if problem.contains("inserted"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_commits_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let writers: Vec<_> = (0..400)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.write(record(i)).await })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 400, .. }));
        let (records, commits) = log.stats();
        assert_eq!(records, 400);
        assert!(commits < 400, "group commit batched nothing ({commits} commits)");
    }

    #[tokio::test]
    async fn a_removed_log_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.write(record(0)).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(log.write(record(1)).await.is_err());
        std::fs::write(&path, "").unwrap();
        assert!(log.write(record(2)).await.is_err(), "a replaced file is not the log");
        log.reopen().await.unwrap();
        log.write(record(3)).await.unwrap();
    }
}
