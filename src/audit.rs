//! The audit log: one JSON line per RPC, allowed or denied, each carrying
//! the hash of the record before it, so `keybroker audit verify` finds the
//! first edited, deleted, inserted or reordered record.
//!
//! Durable without capping throughput: a record is on disk (fdatasync)
//! before its RPC answers. Each call serialises its own record; one
//! committer thread chains every record waiting, writes them with one write
//! and makes them durable with one fdatasync (group commit), so the sync's
//! wait costs no runtime worker. Fails closed: when a record cannot be
//! written, the RPC fails and no key leaves. Records name keys by
//! fingerprint (a keyed hash of the wrapped key), never by plaintext.
//!
//! A line is `{"seq":N,"prev":"<hex>",<the record's fields>,"hash":"<hex>"}`
//! where `hash` is the SHA-256 of the line's exact bytes without its
//! `,"hash":"…"` member (that is, up to the last field, then `}`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

/// The `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What follows the hashed part of a line: `,"hash":"` 64 hex digits `"}`.
const HASH_MEMBER: &str = ",\"hash\":\"";
const HASH_SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;

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

/// The committer's answer: the outcome, and the record's buffer handed
/// back so that the caller's thread frees what it allocated (a free from
/// the committer thread would contend for the caller's malloc arena).
type Committed = (Result<(), String>, String);

/// A record serialised by its caller, waiting for the committer.
struct Pending {
    /// The record's JSON object.
    fields: String,
    done: oneshot::Sender<Committed>,
}

/// What the committer thread is asked to do.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    reopen: Vec<oneshot::Sender<Result<(), String>>>,
    /// The committer is waiting for work (a caller must wake it).
    idle: bool,
    /// Every handle is gone: commit what is queued and stop.
    closed: bool,
    /// The committer thread has ended: nothing queued would ever be
    /// committed, so calls fail at once instead of waiting.
    stopped: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    stats: CommitStats,
}

/// How well group commit is batching: records and syncs so far.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Records written.
    pub records: AtomicU64,
    /// Write-and-sync rounds.
    pub commits: AtomicU64,
    /// Time spent in them, microseconds.
    pub commit_micros: AtomicU64,
}

/// A handle on the audit log; cheap to clone. The committer thread stops
/// once the last handle is dropped and the queue is empty.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared.queue);
        queue.closed = true;
        drop(queue);
        self.shared.work.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The chain position: the next sequence number and the last hash.
struct Chain {
    seq: u64,
    prev: String,
}

/// Appends `fields` (a JSON object) to `out` as the chained line at
/// `chain`, newline included, and moves `chain` past it.
fn push_chained(out: &mut Vec<u8>, fields: &str, chain: &mut Chain) {
    let start = out.len();
    let members = fields.strip_prefix('{').and_then(|f| f.strip_suffix('}')).unwrap_or_default();
    let _ = write!(out, "{{\"seq\":{},\"prev\":\"{}\"", chain.seq, chain.prev);
    if !members.is_empty() {
        out.push(b',');
        out.extend_from_slice(members.as_bytes());
    }
    out.push(b'}');
    let hash = hex::encode(Sha256::digest(&out[start..]));
    out.pop();
    out.extend_from_slice(HASH_MEMBER.as_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    chain.seq += 1;
    chain.prev = hash;
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
        (Some(seq), Some(hash)) => match seq.checked_add(1) {
            Some(next) => Ok(Chain { seq: next, prev: hash.to_owned() }),
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "last record's seq is at its maximum")),
        },
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "last record has no seq or hash")),
    }
}

/// Opens (creating, mode 0600) the log; a file it creates is made durable
/// in its directory too, or a crash could lose the whole new file even
/// though its records were synced.
fn open_file(path: &Path) -> std::io::Result<File> {
    let existed = path.exists();
    let file = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
    if !existed {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

/// Marks the queue stopped when the committer thread ends, however it
/// ends, failing whatever is still queued.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.queue);
        queue.stopped = true;
        let pending = std::mem::take(&mut queue.pending);
        let reopen = std::mem::take(&mut queue.reopen);
        drop(queue);
        // Dropping the senders answers every waiting call with an error.
        drop((pending, reopen));
    }
}

/// The file and the chain; owned by the committer thread.
struct Writer {
    path: PathBuf,
    file: File,
    chain: Chain,
    /// The batch being written (kept to reuse its allocation).
    out: Vec<u8>,
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

    /// Chains, writes and syncs a batch; the chain moves only if all of it
    /// is durable.
    fn commit(&mut self, batch: &[Pending]) -> Result<(), String> {
        self.check_in_place()?;
        let mut chain = Chain { seq: self.chain.seq, prev: self.chain.prev.clone() };
        self.out.clear();
        for record in batch {
            push_chained(&mut self.out, &record.fields, &mut chain);
        }
        let before = self.file.metadata().map_err(|e| e.to_string())?.len();
        let written = self.file.write_all(&self.out).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Take back whatever part of the batch reached the file, so the
            // next commit continues the chain from the last durable record
            // instead of leaving records that verify as inserted.
            let _ = self.file.set_len(before).and_then(|()| self.file.sync_data());
            return Err(format!("{}: {e}", self.path.display()));
        }
        self.chain = chain;
        Ok(())
    }

    /// Opens the path again and continues the chain from its last record
    /// (a fresh file after rotation starts from the chain so far).
    fn reopen(&mut self) -> Result<(), String> {
        let describe = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut file = open_file(&self.path).map_err(describe)?;
        let tail = tail_of(&mut file).map_err(describe)?;
        if tail.seq > 0 {
            self.chain = tail;
        }
        self.file = file;
        Ok(())
    }

    /// The committer thread: commits whatever is queued, as one batch,
    /// until every handle is gone.
    fn run(mut self, shared: &Shared) {
        let _stop = StopGuard(shared);
        let mut batch = Vec::new();
        let mut queue = lock(&shared.queue);
        loop {
            if !queue.reopen.is_empty() {
                let asked = std::mem::take(&mut queue.reopen);
                drop(queue);
                let result = self.reopen();
                for done in asked {
                    let _ = done.send(result.clone());
                }
                queue = lock(&shared.queue);
                continue;
            }
            if queue.pending.is_empty() {
                if queue.closed {
                    return;
                }
                queue.idle = true;
                queue = shared.work.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            std::mem::swap(&mut queue.pending, &mut batch);
            drop(queue);
            let started = std::time::Instant::now();
            let result = self.commit(&batch);
            let took = started.elapsed();
            shared.stats.records.fetch_add(batch.len() as u64, Relaxed);
            shared.stats.commits.fetch_add(1, Relaxed);
            shared.stats.commit_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
            metrics::histogram!("keybroker_audit_commit_records").record(batch.len() as f64);
            metrics::histogram!("keybroker_audit_commit_seconds").record(took.as_secs_f64());
            if let Err(e) = &result {
                tracing::error!(error = %e, records = batch.len(), "audit records not written; failing their RPCs");
            }
            for record in batch.drain(..) {
                let _ = record.done.send((result.clone(), record.fields));
            }
            queue = lock(&shared.queue);
        }
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, continuing its
    /// chain, and starts its committer thread.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened or its last record
    /// is unreadable: the server must not start without its audit log.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let open_error = |source| AuditError::Open { path: path.to_owned(), source };
        let mut file = open_file(path).map_err(open_error)?;
        let chain = tail_of(&mut file).map_err(open_error)?;
        let writer = Writer { path: path.to_owned(), file, chain, out: Vec::new() };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            stats: CommitStats::default(),
        });
        let committer = shared.clone();
        std::thread::Builder::new()
            .name("audit-commit".to_owned())
            .spawn(move || writer.run(&committer))
            .map_err(open_error)?;
        Ok(AuditLog { handle: Arc::new(Handle { shared }) })
    }

    /// Queues work for the committer, waking it if it sleeps.
    fn enqueue(&self, add: impl FnOnce(&mut Queue)) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let mut queue = lock(&shared.queue);
        if queue.stopped {
            return Err(AuditError::Write("the audit committer stopped".to_owned()));
        }
        add(&mut queue);
        let wake = std::mem::take(&mut queue.idle);
        drop(queue);
        if wake {
            shared.work.notify_one();
        }
        Ok(())
    }

    /// Writes a record; returns once it is on disk.
    ///
    /// The record is serialised here, in the caller; the committer thread
    /// only chains it (one SHA-256), so records queued while a sync runs go
    /// out together with the next one.
    ///
    /// # Errors
    /// [`AuditError::Write`]: the caller must fail its RPC and return no key.
    pub async fn write(&self, record: AuditRecord) -> Result<(), AuditError> {
        let fields = serde_json::to_string(&record).map_err(|e| AuditError::Write(e.to_string()))?;
        let (done, wait) = oneshot::channel();
        self.enqueue(|queue| queue.pending.push(Pending { fields, done }))?;
        match wait.await {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(e), _)) => Err(AuditError::Write(e)),
            Err(_) => Err(AuditError::Write("the audit committer stopped".to_owned())),
        }
    }

    /// Records and commits so far (records per commit is the group size).
    pub fn stats(&self) -> (u64, u64) {
        let stats = &self.handle.shared.stats;
        (stats.records.load(Relaxed), stats.commits.load(Relaxed))
    }

    /// Mean time of one write + fdatasync so far.
    pub fn mean_commit(&self) -> std::time::Duration {
        let stats = &self.handle.shared.stats;
        let commits = stats.commits.load(Relaxed).max(1);
        std::time::Duration::from_micros(stats.commit_micros.load(Relaxed) / commits)
    }

    /// Reopens the file at the configured path (after rotation; SIGHUP).
    ///
    /// # Errors
    /// [`AuditError::Write`] when it cannot be opened.
    pub async fn reopen(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.enqueue(|queue| queue.reopen.push(done))?;
        match wait.await {
            Ok(result) => result.map_err(AuditError::Write),
            Err(_) => Err(AuditError::Write("the audit committer stopped".to_owned())),
        }
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

/// The hash a line should carry: SHA-256 of its bytes up to its last
/// member, closed with `}`; `None` when the line does not end with a
/// `"hash"` member of 64 hex digits.
fn hash_of_line(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    let cut = bytes.len().checked_sub(HASH_SUFFIX_LEN)?;
    let (hashed, suffix) = bytes.split_at(cut);
    let digits = suffix.strip_prefix(HASH_MEMBER.as_bytes())?.strip_suffix(b"\"}")?;
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut digest = Sha256::new();
    digest.update(hashed);
    digest.update(b"}");
    Some(hex::encode(digest.finalize()))
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
    let mut start: Option<(u64, String)> = None;
    for (index, line) in all.iter().enumerate() {
        let number = index + 1;
        let broken = |problem: String| Ok(Verdict::Broken { line: number, problem });
        if line.trim().is_empty() {
            return broken("an empty line (a record was removed or the file was edited)".to_owned());
        }
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
            return broken("not a JSON record: the record was edited".to_owned());
        };
        let Some(Value::String(hash)) = map.get("hash").cloned() else {
            return broken("no hash: the record was edited".to_owned());
        };
        if hash_of_line(line).as_deref() != Some(hash.as_str()) {
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
                if seq > expected
                    && all[index + 1..].iter().filter_map(|l| seq_at(l)).any(|s| (expected..seq).contains(&s))
                {
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
        let Some(next) = seq.checked_add(1) else {
            return broken("seq at its maximum: the record was forged".to_owned());
        };
        if expected_seq.is_none() {
            start = Some((seq, record_prev.to_owned()));
        }
        expected_seq = Some(next);
        prev = hash;
        records += 1;
    }
    let (first_seq, first_prev) = start.unwrap_or((0, GENESIS.to_owned()));
    Ok(Verdict::Intact { records, last_hash: prev, first_seq, first_prev })
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
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 20, first_seq: 0, .. }));
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

        rewrite(&path, &original[3..]);
        assert!(
            matches!(verify(&path).unwrap(), Verdict::Intact { records: 7, first_seq: 3, ref first_prev, .. }
                if first_prev != GENESIS),
            "a cut-off head verifies only as a continued chain, and says where it starts"
        );

        let mut inserted = original.clone();
        inserted.insert(5, original[5].clone());
        rewrite(&path, &inserted);
        assert!(
            matches!(verify(&path).unwrap(), Verdict::Broken { line: 7, ref problem } if problem.contains("inserted"))
        );
    }

    #[tokio::test]
    async fn a_line_is_hashed_over_its_exact_bytes_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.write(AuditRecord { message: "d\u{e9}j\u{e0} \"vu\"\n".into(), ..record(0) }).await.unwrap();
        log.write(record(1)).await.unwrap();
        let lines = lines(&path);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert!(lines[0].starts_with(&format!("{{\"seq\":0,\"prev\":\"{GENESIS}\",\"time\":")), "{}", lines[0]);
        let hash = first["hash"].as_str().unwrap();
        let unhashed = lines[0].replace(&format!(",\"hash\":\"{hash}\""), "");
        assert_eq!(hex::encode(Sha256::digest(unhashed.as_bytes())), hash);
        assert_eq!(first["message"], "d\u{e9}j\u{e0} \"vu\"\n");
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["prev"], hash);
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 2, .. }));

        let mut spaced = lines.clone();
        spaced[1] = spaced[1].replacen("\"rpc\":", "\"rpc\": ", 1);
        rewrite(&path, &spaced);
        assert!(matches!(verify(&path).unwrap(), Verdict::Broken { line: 2, .. }), "a byte-level edit is an edit");
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
