//! Group commit: calls hand their rows to one writer task, which commits
//! whatever has queued up as one transaction (on PostgreSQL, a few such
//! transactions at once), so concurrent calls share a commit instead of
//! queueing for the database one by one.
//!
//! Owns the queue and the writer. Must never answer a call before its rows
//! are committed, or report a batch durable that its transaction did not
//! commit.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::store::{Entry, MAX_INSERT_ROWS, Store};

/// Entries waiting for the writer; callers beyond it wait for room.
const QUEUE_DEPTH: usize = 4096;

/// One call's rows and where to answer it.
pub(super) struct Queued {
    pub(super) entry: Entry,
    pub(super) done: oneshot::Sender<Result<i64, String>>,
}

/// Starts the writer task over `store`; it ends when every sender is gone.
pub(super) fn start(store: Store) -> mpsc::Sender<Queued> {
    let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
    tokio::spawn(run(store, receiver));
    sender
}

/// Takes what is queued (at least one entry, at most about
/// [`MAX_INSERT_ROWS`] rows) once a commit slot is free, commits it, answers
/// every caller in it. SQLite has one writer, so one commit at a time;
/// PostgreSQL commits a few batches at once ([`Store::concurrent_commits`]),
/// so rows that arrive while one commit waits for its disk flush go into
/// the next one at once instead of waiting behind it.
async fn run(store: Store, mut queue: mpsc::Receiver<Queued>) {
    let slots = Arc::new(Semaphore::new(store.concurrent_commits()));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut rows = first.entry.rows.len();
        let mut batch = vec![first];
        while rows < MAX_INSERT_ROWS {
            match queue.try_recv() {
                Ok(next) => {
                    rows += next.entry.rows.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            commit(&store, batch, rows).await;
            drop(slot);
        });
    }
}

/// Commits one batch and answers its callers.
async fn commit(store: &Store, batch: Vec<Queued>, rows: usize) {
    let started = std::time::Instant::now();
    let (entries, answers): (Vec<Entry>, Vec<_>) = batch.into_iter().map(|q| (q.entry, q.done)).unzip();
    let at = now_ms();
    let result = store.insert(&entries, at).await.map(|()| at).map_err(|e| e.to_string());
    metrics::histogram!("keybroker_ledger_commit_rows").record(rows as f64);
    metrics::histogram!("keybroker_ledger_commit_seconds").record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("keybroker_ledger_commit_failures_total").increment(1);
        tracing::error!(error = %e, rows, engine = store.engine(), "ledger rows not committed; failing their calls");
    }
    for done in answers {
        let _ = done.send(result.clone());
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
