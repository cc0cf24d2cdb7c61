//! The audit log: one JSON line per RPC, allowed or denied, each carrying
//! the hash of the record before it, so `keybroker audit verify` finds the
//! first edited, deleted, inserted or reordered record.
//!
//! Durable without capping throughput: a record is on disk (fdatasync)
//! before its RPC answers. Each call serialises its own record; one
//! committer thread chains every record waiting, writes them with one write
//! and makes them durable with one fdatasync (group commit), so the sync's
//! wait costs no runtime worker. Under sustained concurrent load the
//! committer also spaces its commits (see [`GroupCommit`]): a sync costs
//! CPU as well as time, and fewer, larger groups leave more of the CPU to
//! the calls. Fails closed: when a record cannot be written, the RPC fails
//! and no key leaves. Records name keys by fingerprint (a keyed hash of the
//! wrapped key), never by plaintext.
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
use std::time::{Duration, Instant, SystemTime};

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

/// One RPC, as the audit log records it. Borrows what the call already
/// holds, so writing a record copies each field once, into its line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339 time the record was made.
    pub time: Timestamp,
    /// The caller's identity (SPIFFE ID, DNS name, or `anonymous`).
    pub identity: &'a str,
    /// The caller's address (empty when unknown).
    #[serde(serialize_with = "serialize_peer")]
    pub peer: Option<std::net::SocketAddr>,
    /// The RPC.
    pub rpc: &'a str,
    /// The caller's `x-request-id`, or one the broker made.
    pub request_id: &'a str,
    /// `ok`, `denied` or `error`.
    pub outcome: &'a str,
    /// The gRPC status code name.
    pub code: &'a str,
    /// The status message when not OK.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub message: &'a str,
    /// The pipeline, for jobs.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub pipeline: &'a str,
    /// The KMS key ARN used.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub kms_key_arn: &'a str,
    /// ET's job id.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub job_id: &'a str,
    /// Fingerprints of every key involved.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub key_fingerprints: &'a [String],
}

/// When a record was made, written as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp::now()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

fn serialize_peer<S: serde::Serializer>(peer: &Option<std::net::SocketAddr>, serializer: S) -> Result<S::Ok, S::Error> {
    match peer {
        Some(addr) => serializer.collect_str(addr),
        None => serializer.serialize_str(""),
    }
}

impl AuditRecord<'_> {
    /// The record as the JSON object its line carries (before chaining).
    ///
    /// # Errors
    /// When serialisation fails (it cannot for these field types).
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut fields = Vec::with_capacity(RECORD_CAPACITY);
        serde_json::to_writer(&mut fields, self)?;
        Ok(fields)
    }
}

/// Room for a typical record, so serialising it does not reallocate.
const RECORD_CAPACITY: usize = 512;

/// How the committer groups records.
///
/// Calls announce themselves when they start ([`AuditLog::expect`]) and
/// hand in their record when they finish. When a commit could start, the
/// committer holds it, but no longer than `delay` after the previous
/// commit started, while records it expects are still on their way, or
/// while the log is busy (the previous commit carried more than one
/// record: calls overlap, and more records are likely on their way even
/// when no call in the server still owes one). It commits as soon as the
/// group is full ([`MAX_GROUP`]), the delay runs out, or (when the log is
/// not busy) every call in the server is waiting for the log. A lone
/// caller is committed at once; under load, commits are spaced by about
/// `delay`, so each fdatasync (which costs CPU as well as time, hundreds
/// of microseconds of it on a virtual disk) carries a larger group. Like
/// PostgreSQL's `commit_delay` and `commit_siblings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// The most a commit is held for expected records, counted from the
    /// start of the previous commit; zero commits at once.
    pub delay: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit { delay: Duration::from_micros(1000) }
    }
}

/// The most records one commit waits for; a group this large is committed
/// without waiting out the delay.
pub const MAX_GROUP: usize = 1024;

/// The committer's answer: the outcome, and the record's buffer handed
/// back so that the caller's thread frees what it allocated (a free from
/// the committer thread would contend for the caller's malloc arena).
type Committed = (Result<(), String>, Vec<u8>);

/// A record serialised by its caller, waiting for the committer.
struct Pending {
    /// The record's JSON object.
    fields: Vec<u8>,
    done: oneshot::Sender<Committed>,
}

/// What the committer thread is asked to do.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    reopen: Vec<oneshot::Sender<Result<(), String>>>,
    /// The committer is waiting for work (a caller must wake it).
    idle: bool,
    /// Calls in the server that will hand in a record ([`Expected`]).
    expected: usize,
    /// The committer is holding a commit for expected records; the caller
    /// whose record completes the group wakes it.
    gathering: bool,
    /// The last commit carried more than one record: calls overlap, so the
    /// next commit waits out the delay for company even when no call in
    /// the server still owes a record (more are likely on their way).
    busy: bool,
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
    group: GroupCommit,
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
fn push_chained(out: &mut Vec<u8>, fields: &[u8], chain: &mut Chain) {
    let start = out.len();
    let members = fields.strip_prefix(b"{").and_then(|f| f.strip_suffix(b"}")).unwrap_or_default();
    let _ = write!(out, "{{\"seq\":{},\"prev\":\"{}\"", chain.seq, chain.prev);
    if !members.is_empty() {
        out.push(b',');
        out.extend_from_slice(members);
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
    /// The file's length, after checking it is still linked: a removed log
    /// (or one another file was renamed over) fails closed instead of
    /// writing to an unlinked inode. One `fstat`, no path lookup. A log
    /// renamed away by rotation keeps its records until SIGHUP reopens
    /// the path.
    fn linked_len(&self) -> Result<u64, String> {
        let meta = self.file.metadata().map_err(|e| format!("{}: {e}", self.path.display()))?;
        if meta.nlink() == 0 {
            return Err(format!("{} was removed or replaced; send SIGHUP to reopen", self.path.display()));
        }
        Ok(meta.len())
    }

    /// Chains, writes and syncs a batch; the chain moves only if all of it
    /// is durable.
    fn commit(&mut self, batch: &[Pending]) -> Result<(), String> {
        let before = self.linked_len()?;
        let mut chain = Chain { seq: self.chain.seq, prev: self.chain.prev.clone() };
        self.out.clear();
        for record in batch {
            push_chained(&mut self.out, &record.fields, &mut chain);
        }
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
        let group = shared.group;
        let mut batch = Vec::new();
        // When the last commit started.
        let mut last_start: Option<Instant> = None;
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
            if let Some(last) = last_start
                && !group_complete(&queue)
            {
                queue = gather(shared, queue, last + group.delay);
            }
            std::mem::swap(&mut queue.pending, &mut batch);
            drop(queue);
            let started = Instant::now();
            let result = self.commit(&batch);
            let took = started.elapsed();
            let batch_len = batch.len();
            shared.stats.records.fetch_add(batch_len as u64, Relaxed);
            shared.stats.commits.fetch_add(1, Relaxed);
            shared.stats.commit_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
            metrics::histogram!("keybroker_audit_commit_records").record(batch_len as f64);
            metrics::histogram!("keybroker_audit_commit_seconds").record(took.as_secs_f64());
            if let Err(e) = &result {
                tracing::error!(error = %e, records = batch_len, "audit records not written; failing their RPCs");
            }
            for record in batch.drain(..) {
                let _ = record.done.send((result.clone(), record.fields));
            }
            last_start = Some(started);
            let busy = batch_len > 1;
            queue = lock(&shared.queue);
            queue.busy = busy;
        }
    }
}

/// Whether waiting could add nothing to the group: the group is full, or
/// the log is not busy and every call in the server has handed in its
/// record.
fn group_complete(queue: &Queue) -> bool {
    queue.pending.len() >= MAX_GROUP || (queue.expected == 0 && !queue.busy)
}

/// Ends a hold the committer is in when it must end (`urgent`) or the
/// group is now complete; true when the committer must be woken for it.
fn end_gathering(queue: &mut Queue, urgent: bool) -> bool {
    let end = queue.gathering && (urgent || group_complete(queue));
    if end {
        queue.gathering = false;
    }
    end
}

/// Holds a commit until `deadline` for expected records, cut short when
/// the group completes, a reopen is asked for or the last handle goes.
fn gather<'a>(
    shared: &'a Shared,
    mut queue: std::sync::MutexGuard<'a, Queue>,
    deadline: Instant,
) -> std::sync::MutexGuard<'a, Queue> {
    queue.gathering = true;
    loop {
        let now = Instant::now();
        if now >= deadline || group_complete(&queue) || queue.closed || !queue.reopen.is_empty() {
            break;
        }
        queue = match shared.work.wait_timeout(queue, deadline - now) {
            Ok((queue, _)) => queue,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
    queue.gathering = false;
    queue
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, continuing its
    /// chain, and starts its committer thread.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened or its last record
    /// is unreadable: the server must not start without its audit log.
    pub fn open(path: &Path, group: GroupCommit) -> Result<Self, AuditError> {
        let open_error = |source| AuditError::Open { path: path.to_owned(), source };
        let mut file = open_file(path).map_err(open_error)?;
        let chain = tail_of(&mut file).map_err(open_error)?;
        let writer = Writer { path: path.to_owned(), file, chain, out: Vec::new() };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            stats: CommitStats::default(),
            group,
        });
        let committer = shared.clone();
        std::thread::Builder::new()
            .name("audit-commit".to_owned())
            .spawn(move || writer.run(&committer))
            .map_err(open_error)?;
        Ok(AuditLog { handle: Arc::new(Handle { shared }) })
    }

    /// Queues work for the committer, waking it if it sleeps, or if it
    /// holds a group that is now complete or must end (`urgent`).
    fn enqueue(&self, urgent: bool, add: impl FnOnce(&mut Queue)) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let mut queue = lock(&shared.queue);
        if queue.stopped {
            return Err(AuditError::Write("the audit committer stopped".to_owned()));
        }
        add(&mut queue);
        let idle = std::mem::take(&mut queue.idle);
        let wake = end_gathering(&mut queue, urgent) || idle;
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
    pub async fn write(&self, record: &AuditRecord<'_>, expected: Option<Expected<'_>>) -> Result<(), AuditError> {
        let fields = record.to_json().map_err(|e| AuditError::Write(e.to_string()))?;
        let (done, wait) = oneshot::channel();
        let arrived = expected.is_some_and(Expected::disarm);
        self.enqueue(false, |queue| {
            queue.pending.push(Pending { fields, done });
            if arrived {
                queue.expected = queue.expected.saturating_sub(1);
            }
        })?;
        match wait.await {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(e), _)) => Err(AuditError::Write(e)),
            Err(_) => Err(AuditError::Write("the audit committer stopped".to_owned())),
        }
    }

    /// Announces a call that will hand in a record (to [`AuditLog::write`]),
    /// so a commit may wait for it; a call that ends without one drops the
    /// guard. For short calls: a long-running call would hold every commit
    /// for the whole delay.
    pub fn expect(&self) -> Expected<'_> {
        lock(&self.handle.shared.queue).expected += 1;
        Expected { log: self, armed: true }
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
        self.enqueue(true, |queue| queue.reopen.push(done))?;
        match wait.await {
            Ok(result) => result.map_err(AuditError::Write),
            Err(_) => Err(AuditError::Write("the audit committer stopped".to_owned())),
        }
    }
}

/// A call the committer expects a record from; see [`AuditLog::expect`].
#[must_use = "dropping it at once announces nothing"]
pub struct Expected<'a> {
    log: &'a AuditLog,
    armed: bool,
}

impl Expected<'_> {
    /// Hands the expectation over to the record being queued (which
    /// settles the count under the queue's lock); true if it was armed.
    fn disarm(mut self) -> bool {
        std::mem::replace(&mut self.armed, false)
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        if self.armed {
            // The call ended without a record: a commit must not wait for it.
            let shared = &self.log.handle.shared;
            let mut queue = lock(&shared.queue);
            queue.expected = queue.expected.saturating_sub(1);
            let wake = end_gathering(&mut queue, false);
            drop(queue);
            if wake {
                shared.work.notify_one();
            }
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

    /// Identities for test records, which borrow them.
    const CALLERS: [&str; 10] = [
        "caller-0", "caller-1", "caller-2", "caller-3", "caller-4", "caller-5", "caller-6", "caller-7", "caller-8",
        "caller-9",
    ];

    fn record(n: usize) -> AuditRecord<'static> {
        AuditRecord { rpc: "IssueDataKey", identity: CALLERS[n % 10], outcome: "ok", ..AuditRecord::default() }
    }

    fn open(path: &Path) -> AuditLog {
        AuditLog::open(path, GroupCommit::default()).unwrap()
    }

    /// A log in a fresh directory whose commits may wait up to `delay`.
    fn log_with(delay: Duration) -> (tempfile::TempDir, PathBuf, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, GroupCommit { delay }).unwrap();
        (dir, path, log)
    }

    async fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = open(&path);
        let records: Vec<_> = (0..n).map(record).collect();
        let writes: Vec<_> = records.iter().map(|r| log.write(r, None)).collect();
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
        let log = open(&path);
        log.write(&record(9), None).await.unwrap();
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
        let log = open(&path);
        log.write(&AuditRecord { message: "d\u{e9}j\u{e0} \"vu\"\n", ..record(0) }, None).await.unwrap();
        log.write(&record(1), None).await.unwrap();
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
        let log = open(&path);
        let writers: Vec<_> = (0..400)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.write(&record(i), None).await })
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
        let log = open(&path);
        log.write(&record(0), None).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(log.write(&record(1), None).await.is_err());
        std::fs::write(&path, "").unwrap();
        assert!(log.write(&record(2), None).await.is_err(), "a replaced file is not the log");
        log.reopen().await.unwrap();
        log.write(&record(3), None).await.unwrap();
    }

    /// A group delay no test may wait out.
    const FOREVER: Duration = Duration::from_secs(3600);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_nobody_else_is_expected_with_are_committed_at_once() {
        let (_dir, path, log) = log_with(FOREVER);
        let quick = Duration::from_secs(20);
        // A lone caller, announced or not, never waits out the delay.
        for i in 0..20 {
            let expected = (i % 2 == 0).then(|| log.expect());
            tokio::time::timeout(quick, log.write(&record(i), expected)).await.expect("a lone record waited").unwrap();
        }
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 20, .. }));
    }

    /// Starts a commit, then queues a record while another call is still
    /// expected: the committer holds that record for it.
    async fn held_for_an_expected_call(log: &AuditLog) -> (Expected<'_>, tokio::task::JoinHandle<Instant>) {
        log.write(&record(0), None).await.unwrap();
        let expected = log.expect();
        let held = {
            let log = log.clone();
            tokio::spawn(async move {
                log.write(&record(1), None).await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "the record was committed without waiting for the expected one");
        (expected, held)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_waits_for_the_record_of_a_call_still_running_and_no_longer() {
        let (dir, path, log) = log_with(Duration::from_secs(10));
        let (expected, held) = held_for_an_expected_call(&log).await;
        let arrived = Instant::now();
        log.write(&record(2), Some(expected)).await.unwrap();
        let released = held.await.unwrap();
        assert!(released.duration_since(arrived) < Duration::from_secs(5), "waited out the delay");
        let (records, commits) = log.stats();
        assert_eq!((records, commits), (3, 2), "the held record and the expected one share a commit");

        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 3, .. }));

        // A call that ends without a record releases the hold too (on a
        // fresh log: the shared commit above made this one busy).
        let path = dir.path().join("audit-2.jsonl");
        let log = AuditLog::open(&path, GroupCommit { delay: Duration::from_secs(10) }).unwrap();
        let (expected, held) = held_for_an_expected_call(&log).await;
        let dropped = Instant::now();
        drop(expected);
        assert!(held.await.unwrap().duration_since(dropped) < Duration::from_secs(5));
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 2, .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_shared_commit_the_next_waits_out_the_delay_and_a_lone_one_ends_that() {
        let delay = Duration::from_secs(2);
        let (_dir, path, log) = log_with(delay);
        // Records 1 and 2 share a commit: calls overlap, the log is busy.
        let (expected, held) = held_for_an_expected_call(&log).await;
        log.write(&record(2), Some(expected)).await.unwrap();
        held.await.unwrap();
        assert_eq!(log.stats(), (3, 2));
        // The next record, though no call still owes one, waits for company
        // until the delay (counted from the shared commit's start) is out.
        let started = Instant::now();
        log.write(&record(3), None).await.unwrap();
        assert!(started.elapsed() >= delay / 2, "a busy log committed a lone record at once");
        // That commit carried one record: the next is committed at once.
        let started = Instant::now();
        log.write(&record(4), None).await.unwrap();
        assert!(started.elapsed() < delay * 3 / 4, "an idle log held a lone record");
        assert!(matches!(verify(&path).unwrap(), Verdict::Intact { records: 5, .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hold_ends_with_the_delay() {
        let (_dir, _path, log) = log_with(Duration::from_millis(600));
        let (_expected, held) = held_for_an_expected_call(&log).await;
        tokio::time::timeout(Duration::from_secs(20), held).await.expect("held past the delay").unwrap();
    }

    fn shared(group: GroupCommit) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            stats: CommitStats::default(),
            group,
        })
    }

    fn pending() -> Pending {
        Pending { fields: b"{}".to_vec(), done: oneshot::channel().0 }
    }

    #[test]
    fn gathering_waits_for_the_deadline_when_nothing_cuts_it_short() {
        let shared = shared(GroupCommit { delay: FOREVER });
        lock(&shared.queue).expected = 1;
        let started = Instant::now();
        let queue = gather(&shared, lock(&shared.queue), started + Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(!queue.gathering);
    }

    #[test]
    fn a_full_group_or_the_last_handle_going_ends_the_wait() {
        let shared = shared(GroupCommit { delay: FOREVER });
        let deadline = Instant::now() + FOREVER;
        let mut queue = lock(&shared.queue);
        queue.expected = MAX_GROUP * 4;
        queue.pending.extend(std::iter::repeat_with(pending).take(MAX_GROUP));
        let queue = gather(&shared, queue, deadline);
        assert_eq!(queue.pending.len(), MAX_GROUP, "a full group is committed at once");
        drop(queue);

        // Callers fill the group while the committer gathers.
        let log = AuditLog { handle: Arc::new(Handle { shared: shared.clone() }) };
        lock(&shared.queue).pending.clear();
        let filler = std::thread::spawn(move || {
            for _ in 0..MAX_GROUP {
                log.enqueue(false, |queue| queue.pending.push(pending())).unwrap();
            }
            log
        });
        let queue = gather(&shared, lock(&shared.queue), deadline);
        assert!(queue.pending.len() >= MAX_GROUP);
        drop(queue);

        // The last handle going (shutdown) ends the wait too.
        let log = filler.join().unwrap();
        lock(&shared.queue).pending.clear();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(log);
        });
        let queue = gather(&shared, lock(&shared.queue), deadline);
        assert!(queue.closed);
        drop(queue);
        closer.join().unwrap();
    }
}
