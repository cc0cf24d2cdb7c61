//! Group commit: the queue callers hand their serialised records to, and the
//! one committer thread that chains each group, writes it with one write and
//! makes it durable with one fdatasync.
//!
//! Owns the log file, the chain position, the queue and when a commit is
//! held for expected records ([`GroupCommit`]). Must never answer a caller
//! before its record is durable, move the chain past a record that is not
//! on disk, or write to a file that is no longer the log (a removed or
//! replaced file fails closed until a reopen).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::audit::chain::{Chain, push_chained, tail_of};
use crate::audit::checkpoint::{CheckpointSettings, Checkpointer};
use crate::audit::key::ChainKey;

/// How the committer groups records.
///
/// Calls announce themselves when they start
/// ([`AuditLog::expect`](crate::audit::AuditLog::expect)) and
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
pub(super) type Committed = (Result<(), String>, Vec<u8>);

/// A record serialised by its caller, waiting for the committer.
pub(super) struct Pending {
    /// The record's JSON object.
    pub(super) fields: Vec<u8>,
    pub(super) done: oneshot::Sender<Committed>,
}

/// What the committer thread is asked to do.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) pending: Vec<Pending>,
    pub(super) reopen: Vec<oneshot::Sender<Result<(), String>>>,
    /// Callers waiting for a checkpoint of everything committed so far.
    pub(super) checkpoint: Vec<oneshot::Sender<()>>,
    /// The committer is waiting for work (a caller must wake it).
    pub(super) idle: bool,
    /// Calls in the server that will hand in a record ([`Expected`](crate::audit::Expected)).
    pub(super) expected: usize,
    /// The committer is holding a commit for expected records; the caller
    /// whose record completes the group wakes it.
    pub(super) gathering: bool,
    /// The last commit carried more than one record: calls overlap, so the
    /// next commit waits out the delay for company even when no call in
    /// the server still owes a record (more are likely on their way).
    pub(super) busy: bool,
    /// Every handle is gone: commit what is queued and stop.
    pub(super) closed: bool,
    /// The committer thread has ended: nothing queued would ever be
    /// committed, so calls fail at once instead of waiting.
    pub(super) stopped: bool,
}

/// What callers and the committer thread share.
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) work: Condvar,
    pub(super) stats: CommitStats,
    group: GroupCommit,
}

impl Shared {
    /// An empty queue for a committer that groups records as `group` says.
    pub(super) fn new(group: GroupCommit) -> Arc<Self> {
        Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            stats: CommitStats::default(),
            group,
        })
    }
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

/// Locks `mutex`, whatever a panicking holder left behind.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let checkpoint = std::mem::take(&mut queue.checkpoint);
        drop(queue);
        // Dropping the senders answers every waiting call with an error.
        drop((pending, reopen, checkpoint));
    }
}

/// The file, the chain and its key; owned by the committer thread.
struct Writer {
    path: PathBuf,
    file: File,
    chain: Chain,
    key: ChainKey,
    checkpoints: Checkpointer,
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
            push_chained(&mut self.out, &record.fields, &mut chain, &self.key);
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
        self.checkpoints.committed(batch.len(), &self.key, &self.chain);
        Ok(())
    }

    /// Checkpoints the chain's end now (when records were written since
    /// the last checkpoint).
    fn checkpoint(&mut self) {
        self.checkpoints.emit(&self.key, &self.chain);
    }

    /// Opens the path again and continues the chain from its last record
    /// (a fresh file after rotation starts from the chain so far, its first
    /// record carrying the rotated file's last hash). The rotated file's
    /// end is checkpointed first.
    fn reopen(&mut self) -> Result<(), String> {
        self.checkpoint();
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
            if !queue.checkpoint.is_empty() && queue.pending.is_empty() {
                let asked = std::mem::take(&mut queue.checkpoint);
                drop(queue);
                self.checkpoint();
                for done in asked {
                    let _ = done.send(());
                }
                queue = lock(&shared.queue);
                continue;
            }
            if queue.pending.is_empty() {
                if queue.closed {
                    drop(queue);
                    self.checkpoint();
                    return;
                }
                queue.idle = true;
                queue = match self.checkpoints.due() {
                    None => shared.work.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner),
                    Some(due) => {
                        let wait = due.saturating_duration_since(Instant::now());
                        let (queue, timeout) = match shared.work.wait_timeout(queue, wait) {
                            Ok((queue, timeout)) => (queue, timeout),
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        if timeout.timed_out() && queue.pending.is_empty() {
                            drop(queue);
                            self.checkpoint();
                            lock(&shared.queue)
                        } else {
                            queue
                        }
                    }
                };
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
pub(super) fn end_gathering(queue: &mut Queue, urgent: bool) -> bool {
    let end = queue.gathering && (urgent || group_complete(queue));
    if end {
        queue.gathering = false;
    }
    end
}

/// Holds a commit until `deadline` for expected records, cut short when
/// the group completes, a reopen is asked for or the last handle goes.
pub(super) fn gather<'a>(
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

/// Opens the log at `path`, continuing its chain, and starts the committer
/// thread on it; the thread commits until every handle is gone.
///
/// # Errors
/// When the file (or the checkpoint file) cannot be opened, its last
/// record is unreadable, or the thread cannot start.
pub(super) fn start(
    path: &Path,
    key: ChainKey,
    group: GroupCommit,
    checkpoints: CheckpointSettings,
) -> std::io::Result<Arc<Shared>> {
    let mut file = open_file(path)?;
    let chain = tail_of(&mut file)?;
    let checkpoints = Checkpointer::open(checkpoints, path)?;
    let writer = Writer { path: path.to_owned(), file, chain, key, checkpoints, out: Vec::new() };
    let shared = Shared::new(group);
    let committer = shared.clone();
    std::thread::Builder::new().name("audit-commit".to_owned()).spawn(move || writer.run(&committer))?;
    Ok(shared)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A group delay no test may wait out.
    pub(in crate::audit) const FOREVER: Duration = Duration::from_secs(3600);

    /// A queued record nobody waits for.
    pub(in crate::audit) fn pending() -> Pending {
        Pending { fields: b"{}".to_vec(), done: oneshot::channel().0 }
    }

    #[test]
    fn gathering_waits_for_the_deadline_when_nothing_cuts_it_short() {
        let shared = Shared::new(GroupCommit { delay: FOREVER });
        lock(&shared.queue).expected = 1;
        let started = Instant::now();
        let queue = gather(&shared, lock(&shared.queue), started + Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(!queue.gathering);
    }
}
