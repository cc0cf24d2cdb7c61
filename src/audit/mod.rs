//! The audit log: one JSON line per RPC, allowed or denied, each carrying
//! an HMAC that chains it to the record before it, under a key only KMS
//! can unwrap, so `keybroker audit verify` finds the first edited, forged,
//! deleted, inserted or reordered record, and, against a checkpoint,
//! records cut from the tail.
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
//! wrapped key), never by plaintext, and are bounded in size
//! ([`MAX_RECORD_BYTES`]).
//!
//! A line is `{"v":2,"seq":N,"prev":"<hex>",<the record's fields>,"hash":"<hex>"}`
//! where `hash` is the HMAC-SHA256, under the chain key ([`ChainKey`]), of
//! the line's exact bytes without its `,"hash":"…"` member (that is, up to
//! the last field, then `}`). Lines without `v` are the legacy format of
//! older logs, whose `hash` is a plain SHA-256 that anyone can recompute:
//! verification reports them as unkeyed. The committer also emits signed
//! [`Checkpoint`]s of the chain's end (see [`checkpoint`]).
//!
//! The files: `record` (what a record says, as JSON), `key` (the chain key
//! and KMS), `chain` (the line format and its MAC), `checkpoint` (the
//! chain's end, signed, written elsewhere), `commit` (the committer thread
//! and how it groups records), `verify` (reading a log back, one file or
//! rotated files as one chain). This file is the public face, [`AuditLog`];
//! it owns no file and no chain, and must never answer a write before the
//! committer does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::oneshot;

mod chain;
pub mod checkpoint;
mod commit;
mod key;
mod record;
mod verify;

pub use chain::{GENESIS, RECORD_VERSION};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointSettings};
pub use commit::{CommitStats, GroupCommit, MAX_GROUP};
pub use key::{CHAIN_KEY_LEN, ChainKey, ChainKeyError};
pub use record::{AuditRecord, MAX_RECORD_BYTES, Timestamp};
pub use verify::{ChainFault, ChainReport, Verdict, VerifiedFile, verify, verify_files};

use commit::{Pending, Queue, Shared, end_gathering, lock};

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

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, continuing its
    /// chain under `key`, and starts its committer thread, which groups
    /// records as `group` says and checkpoints as `checkpoints` says.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file (or the checkpoint file) cannot be
    /// opened or its last record is unreadable: the server must not start
    /// without its audit log.
    pub fn open(
        path: &Path,
        key: ChainKey,
        group: GroupCommit,
        checkpoints: CheckpointSettings,
    ) -> Result<Self, AuditError> {
        let shared = commit::start(path, key, group, checkpoints)
            .map_err(|source| AuditError::Open { path: path.to_owned(), source })?;
        Ok(AuditLog { handle: Arc::new(Handle { shared }) })
    }

    /// Checkpoints every record committed so far (at shutdown); returns
    /// once the checkpoint is out.
    pub async fn checkpoint(&self) {
        let (done, wait) = oneshot::channel();
        if self.enqueue(true, |queue| queue.checkpoint.push(done)).is_ok() {
            let _ = wait.await;
        }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use hmac::{Hmac, KeyInit as _, Mac as _};
    use serde_json::Value;
    use sha2::Sha256;

    use super::*;
    use crate::audit::chain::Seal;
    use crate::audit::commit::gather;
    use crate::audit::commit::tests::{FOREVER, pending};
    use crate::audit::key::tests::fixed;
    use crate::audit::record::tests::record;
    use crate::audit::verify::tests::{lines, rechained, rewrite};

    fn open(path: &Path) -> AuditLog {
        AuditLog::open(path, fixed(), GroupCommit::default(), CheckpointSettings::default()).unwrap()
    }

    /// A log in a fresh directory whose commits may wait up to `delay`.
    fn log_with(delay: Duration) -> (tempfile::TempDir, PathBuf, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, fixed(), GroupCommit { delay }, CheckpointSettings::default()).unwrap();
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

    #[tokio::test]
    async fn an_intact_log_verifies_and_reopening_continues_the_chain() {
        let (_dir, path) = log_of(20).await;
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 20, first_seq: 0, .. }));
        let log = open(&path);
        log.write(&record(9), None).await.unwrap();
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 21, .. }));
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
        assert!(lines[0].starts_with(&format!("{{\"v\":2,\"seq\":0,\"prev\":\"{GENESIS}\",\"time\":")), "{}", lines[0]);
        let hash = first["hash"].as_str().unwrap();
        let unhashed = lines[0].replace(&format!(",\"hash\":\"{hash}\""), "");
        let mac = <Hmac<Sha256>>::new_from_slice(&[7; 32]).unwrap().chain_update(unhashed.as_bytes()).finalize();
        assert_eq!(hex::encode(mac.into_bytes()), hash, "the HMAC-SHA256 of the line under the chain key");
        assert_eq!(first["message"], "d\u{e9}j\u{e0} \"vu\"\n");
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["prev"], hash);
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 2, .. }));

        let mut spaced = lines.clone();
        spaced[1] = spaced[1].replacen("\"rpc\":", "\"rpc\": ", 1);
        rewrite(&path, &spaced);
        assert!(
            matches!(verify(&path, &fixed()).unwrap(), Verdict::Broken { line: 2, .. }),
            "a byte-level edit is an edit"
        );
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
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 400, .. }));
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

    #[tokio::test]
    async fn a_legacy_log_is_continued_keyed_and_its_old_records_reported_unkeyed() {
        let (_dir, path) = log_of(3).await;
        rewrite(&path, &rechained(&lines(&path), Seal::Legacy, false));
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 3, legacy: 3, .. }));
        let log = open(&path);
        log.write(&record(3), None).await.unwrap();
        log.write(&record(4), None).await.unwrap();
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 5, legacy: 3, .. }));
        assert!(lines(&path)[3].starts_with("{\"v\":2,\"seq\":3,"));
    }

    #[tokio::test]
    async fn a_quiet_log_is_checkpointed_after_the_interval_and_a_rotated_one_chains_on() {
        let dir = tempfile::tempdir().unwrap();
        let (path, checkpoints) = (dir.path().join("audit.jsonl"), dir.path().join("checkpoints"));
        let settings =
            CheckpointSettings { every: 1000, interval: Duration::from_millis(200), path: Some(checkpoints.clone()) };
        let log = AuditLog::open(&path, fixed(), GroupCommit::default(), settings).unwrap();
        let last = |n: usize| {
            let text = std::fs::read_to_string(&checkpoints).unwrap();
            assert_eq!(text.lines().count(), n, "{text}");
            Checkpoint::find(&text).unwrap()
        };
        log.write(&record(0), None).await.unwrap();
        log.write(&record(1), None).await.unwrap();
        let started = Instant::now();
        while std::fs::read_to_string(&checkpoints).unwrap().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(20), "no checkpoint after the interval");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = last(1);
        assert_eq!((first.seq, first.file.as_str()), (1, "audit.jsonl"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        last(1); // Nothing new, no checkpoint.

        // Rotation: the rotated file's end is checkpointed, and the new file
        // continues the chain from it.
        let rotated = dir.path().join("audit.jsonl.1");
        log.write(&record(2), None).await.unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().await.unwrap();
        assert_eq!(last(2).seq, 2);
        log.write(&record(3), None).await.unwrap();
        log.checkpoint().await;
        let end = last(3);
        let report = verify_files(&[rotated, path], None, &fixed(), Some(&end));
        assert!(report.fault.is_none(), "{:?}", report.fault);
        assert_eq!((report.records, end.seq), (4, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_nobody_else_is_expected_with_are_committed_at_once() {
        let (_dir, path, log) = log_with(FOREVER);
        let quick = Duration::from_secs(20);
        // A lone caller, announced or not, never waits out the delay.
        for i in 0..20 {
            let expected = (i % 2 == 0).then(|| log.expect());
            tokio::time::timeout(quick, log.write(&record(i), expected)).await.expect("a lone record waited").unwrap();
        }
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 20, .. }));
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

        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 3, .. }));

        // A call that ends without a record releases the hold too (on a
        // fresh log: the shared commit above made this one busy).
        let path = dir.path().join("audit-2.jsonl");
        let log = AuditLog::open(
            &path,
            fixed(),
            GroupCommit { delay: Duration::from_secs(10) },
            CheckpointSettings::default(),
        )
        .unwrap();
        let (expected, held) = held_for_an_expected_call(&log).await;
        let dropped = Instant::now();
        drop(expected);
        assert!(held.await.unwrap().duration_since(dropped) < Duration::from_secs(5));
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 2, .. }));
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
        assert!(matches!(verify(&path, &fixed()).unwrap(), Verdict::Intact { records: 5, .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hold_ends_with_the_delay() {
        let (_dir, _path, log) = log_with(Duration::from_millis(600));
        let (_expected, held) = held_for_an_expected_call(&log).await;
        tokio::time::timeout(Duration::from_secs(20), held).await.expect("held past the delay").unwrap();
    }

    #[test]
    fn a_full_group_or_the_last_handle_going_ends_the_wait() {
        let shared = Shared::new(GroupCommit { delay: FOREVER });
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
