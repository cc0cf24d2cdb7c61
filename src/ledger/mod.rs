//! The key ledger: the broker's durable memory of every key it hands out
//! or uses, written before the key (or the job or object that uses it)
//! leaves.
//!
//! Owns recording ([`Ledger::record`], group-committed by `commit`) and
//! reading back ([`Ledger::find`]), over SQLite embedded or PostgreSQL
//! shared (`store`). Fails closed: a row that cannot be recorded is an
//! error the caller must answer `UNAVAILABLE` with, releasing nothing.
//! Must never hold plaintext key material: rows carry the wrapped key as
//! handed out ([`KeyRow`]).

mod commit;
mod error;
mod row;
mod store;
mod stored;
mod submissions;
mod token;

use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use self::error::LedgerError;
pub use self::row::{KeyRow, Origin, S3Object, Usage, Wrapping};
use self::store::{Entry, Store};
pub use self::store::{Filter, RecordedKey};
pub use self::stored::TokenDone;
pub use self::submissions::{Claim, Submission, SubmissionState, TokenAnswer, TokenKey};
pub use self::token::{METADATA_KEY, RequestToken};

/// `duration` in milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

/// A new entry id: a UUID in version 7's layout (milliseconds first, then
/// random bits), so ids recorded close in time sort close together and the
/// entry index grows at its end instead of at random places.
fn entry_id() -> String {
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[..10]);
    let millis = u64::try_from(commit::now_ms()).unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid().to_string()
}

/// A handle to the ledger; cheap to clone. [`Ledger::disabled`] records
/// nothing, for a server configured without one.
#[derive(Clone, Debug)]
pub struct Ledger {
    inner: Option<Open>,
}

#[derive(Clone, Debug)]
struct Open {
    store: Store,
    writer: mpsc::Sender<commit::Queued>,
    token_retention: Duration,
}

/// How long request tokens are kept unless configured otherwise: 7 days.
pub const DEFAULT_TOKEN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Ledger {
    /// Opens the PostgreSQL ledger at `url`, or else the SQLite `file`,
    /// runs its migrations and starts its writer. Calls wait at most
    /// `connect_timeout` for a connection.
    ///
    /// # Errors
    /// [`LedgerError`] when the database is unreachable or its schema
    /// cannot be migrated.
    pub async fn open(url: Option<&str>, file: &Path, connect_timeout: Duration) -> Result<Ledger, LedgerError> {
        let store = Store::open(url, file, connect_timeout).await?;
        tracing::info!(engine = store.engine(), "key ledger open");
        let writer = commit::start(store.clone());
        Ok(Ledger { inner: Some(Open { store, writer, token_retention: DEFAULT_TOKEN_RETENTION }) })
    }

    /// The same ledger, keeping request tokens for `retention`, and
    /// forgetting older ones every hour.
    #[must_use]
    pub fn with_token_retention(mut self, retention: Duration) -> Ledger {
        if let Some(open) = &mut self.inner {
            open.token_retention = retention;
            let store = open.store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    match store.forget_submissions(commit::now_ms() - millis(retention)).await {
                        Ok(0) => {}
                        Ok(forgotten) => tracing::info!(forgotten, "key ledger: expired request tokens forgotten"),
                        Err(e) => tracing::warn!(error = %e, "key ledger: cannot forget expired request tokens"),
                    }
                }
            });
        }
        self
    }

    fn opened(&self) -> Result<&Open, LedgerError> {
        self.inner.as_ref().ok_or(LedgerError::Disabled)
    }

    /// Claims the request token `key` for a request hashing to `hash`,
    /// for `lease`; answers what the token already stands for if another
    /// call claimed it first. A token older than the retention is
    /// forgotten and claimed anew.
    ///
    /// # Errors
    /// [`LedgerError::Disabled`] without a ledger; a database failure.
    pub async fn claim_token(&self, key: TokenKey<'_>, hash: &str, lease: Duration) -> Result<Claim, LedgerError> {
        let open = self.opened()?;
        let now = commit::now_ms();
        open.store.claim(key, hash, now, now + millis(lease), now - millis(open.token_retention)).await
    }

    /// Takes over the PENDING claim of `key` whose lease, `seen_until_ms`,
    /// ran out, for `lease`; answers the new lease's end to exactly one of
    /// the racing callers, `None` to the others.
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails.
    pub async fn take_over_token(
        &self,
        key: TokenKey<'_>,
        seen_until_ms: i64,
        lease: Duration,
    ) -> Result<Option<i64>, LedgerError> {
        let until = commit::now_ms() + millis(lease);
        Ok(self.opened()?.store.take_over(key, seen_until_ms, until).await?.then_some(until))
    }

    /// Gives up the PENDING claim of `key` held until `claimed_until_ms`,
    /// because its work failed before anything was completed: the next
    /// call with the token runs anew. False when the claim was no longer
    /// the caller's.
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails.
    pub async fn release_token(&self, key: TokenKey<'_>, claimed_until_ms: i64) -> Result<bool, LedgerError> {
        self.opened()?.store.release(key, claimed_until_ms).await
    }

    /// Records what S3 answered for the object whose key the entry
    /// `entry_id` recorded (its version id and ETag), and the answer of
    /// the call's request token, in one transaction. False when the
    /// token's claim was no longer the caller's. Disabled, records nothing.
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails: nothing of it is recorded.
    pub async fn object_stored(
        &self,
        entry_id: &str,
        object: &S3Object,
        token: Option<TokenDone<'_>>,
    ) -> Result<bool, LedgerError> {
        match &self.inner {
            Some(open) => open.store.object_stored(entry_id, object, token).await,
            None => Ok(true),
        }
    }

    /// What the request token `key` stands for now.
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails.
    pub async fn submission(&self, key: TokenKey<'_>) -> Result<Option<Submission>, LedgerError> {
        self.opened()?.store.submission(key).await
    }

    /// Records the answer of the request token `key`: planned (PENDING,
    /// before the job is POSTed) or final (SUBMITTED, with ET's job id).
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails.
    pub async fn set_token_answer(&self, key: TokenKey<'_>, answer: &TokenAnswer<'_>) -> Result<(), LedgerError> {
        self.opened()?.store.set_answer(key, answer).await
    }

    /// Milliseconds since the Unix epoch, as the ledger records time.
    pub fn now_ms() -> i64 {
        commit::now_ms()
    }

    /// A ledger that records nothing and finds nothing.
    pub fn disabled() -> Ledger {
        Ledger { inner: None }
    }

    /// Whether keys are recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Records `rows` for the call `origin` describes, durable when this
    /// returns; they share one entry id, which it answers. With no rows, or
    /// disabled, records nothing.
    ///
    /// # Errors
    /// [`LedgerError`] when the rows could not be committed: none of them
    /// is recorded, and the call must release nothing.
    pub async fn record(&self, origin: &Origin, rows: Vec<KeyRow>) -> Result<String, LedgerError> {
        self.record_at(origin, rows).await.map(|(entry_id, _)| entry_id)
    }

    /// [`Ledger::record`], answering also the rows' `recorded_at_ms` (the
    /// time of their commit; now, when nothing was recorded).
    ///
    /// # Errors
    /// As [`Ledger::record`].
    pub async fn record_at(&self, origin: &Origin, rows: Vec<KeyRow>) -> Result<(String, i64), LedgerError> {
        let entry_id = entry_id();
        let Some(open) = self.inner.as_ref().filter(|_| !rows.is_empty()) else {
            return Ok((entry_id, Ledger::now_ms()));
        };
        let (done, answer) = oneshot::channel();
        let entry = Entry { entry_id: entry_id.clone(), origin: origin.clone(), rows };
        open.writer.send(commit::Queued { entry, done }).await.map_err(|_| LedgerError::Stopped)?;
        let at = answer.await.map_err(|_| LedgerError::Stopped)?.map_err(LedgerError::Commit)?;
        Ok((entry_id, at))
    }

    /// Names the Elastic Transcoder job whose keys the entry `entry_id`
    /// recorded.
    ///
    /// # Errors
    /// [`LedgerError::Database`].
    pub async fn attach_job(&self, entry_id: &str, job_id: &str) -> Result<(), LedgerError> {
        if let Some(open) = &self.inner {
            open.store.attach_job(entry_id, job_id).await?;
        }
        Ok(())
    }

    /// The recorded keys `filter` selects, oldest first.
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails.
    pub async fn find(&self, filter: &Filter) -> Result<Vec<RecordedKey>, LedgerError> {
        self.find_at_most(filter, usize::MAX).await
    }

    /// The first `limit` recorded keys `filter` selects, oldest first.
    ///
    /// # Errors
    /// [`LedgerError`] when the database fails.
    pub async fn find_at_most(&self, filter: &Filter, limit: usize) -> Result<Vec<RecordedKey>, LedgerError> {
        match &self.inner {
            Some(open) => open.store.find(filter, i64::try_from(limit).unwrap_or(i64::MAX)).await,
            None => Ok(Vec::new()),
        }
    }

    /// Closes the database connections (the writer ends with the last handle).
    pub async fn close(&self) {
        if let Some(open) = &self.inner {
            open.store.close().await;
        }
    }
}
