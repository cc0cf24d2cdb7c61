//! Request tokens' records, for idempotent job submission and S3-mode
//! object encryption: one row per (caller identity, request token),
//! claimed PENDING before anything is keyed, holding the planned answer
//! once a job's keys are recorded, SUBMITTED with ET's job id (or with an
//! object's result once it is written).
//!
//! Owns the claim protocol: exactly one caller owns a token at a time (the
//! database's primary key decides), and a claim whose owner vanished can
//! be taken over only after its lease ran out, by exactly one caller, or
//! released by its owner when its work failed.
//! Must never store plaintext: the answer holds wrapped keys only.

use sqlx::Row as _;

use super::error::LedgerError;
use super::store::{Store, on_pool};

/// Where a submission stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionState {
    /// Claimed; Elastic Transcoder may or may not have the job, or the
    /// object is still being written.
    Pending,
    /// ET created the job, or the object was written.
    Submitted,
}

impl SubmissionState {
    fn name(self) -> &'static str {
        match self {
            SubmissionState::Pending => "pending",
            SubmissionState::Submitted => "submitted",
        }
    }
}

/// A submission as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The hash of the request the token was first used with.
    pub request_hash: String,
    /// Where it stands.
    pub state: SubmissionState,
    /// Until when its owner holds it, milliseconds since the epoch.
    pub claimed_until_ms: i64,
    /// When the token was first used.
    pub created_at_ms: i64,
    /// The answer (planned while PENDING, final once SUBMITTED), JSON.
    pub answer_json: Option<String>,
    /// ET's job id, once SUBMITTED.
    pub job_id: Option<String>,
    /// The key ledger entry holding the job's keys, once planned.
    pub entry_id: Option<String>,
}

/// What claiming a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now owns the token, until `claimed_until_ms`.
    Owner {
        /// The lease's end.
        claimed_until_ms: i64,
    },
    /// The token was already in use.
    Existing(Submission),
}

/// What a request token is answered with.
#[derive(Debug, Clone, Copy)]
pub struct TokenAnswer<'a> {
    /// PENDING (planned) or SUBMITTED.
    pub state: SubmissionState,
    /// The answer, JSON, wrapped keys only.
    pub answer_json: &'a str,
    /// ET's job id, once SUBMITTED.
    pub job_id: Option<&'a str>,
    /// The key ledger entry holding the job's keys.
    pub entry_id: &'a str,
}

/// A token of one caller.
#[derive(Debug, Clone, Copy)]
pub struct TokenKey<'a> {
    /// The caller's identity.
    pub identity: &'a str,
    /// The token.
    pub token: &'a str,
}

impl Store {
    /// Claims `key` for a request hashing to `hash`, until `until_ms`;
    /// a record older than `expired_before_ms` is forgotten first.
    pub(crate) async fn claim(
        &self,
        key: TokenKey<'_>,
        hash: &str,
        now_ms: i64,
        until_ms: i64,
        expired_before_ms: i64,
    ) -> Result<Claim, LedgerError> {
        const FORGET: &str =
            "DELETE FROM ledger_submissions WHERE identity = $1 AND request_token = $2 AND created_at_ms < $3";
        const INSERT: &str = "INSERT INTO ledger_submissions (identity, request_token, request_hash, state, \
                              claimed_until_ms, created_at_ms) VALUES ($1, $2, $3, 'pending', $4, $5) \
                              ON CONFLICT (identity, request_token) DO NOTHING";
        let inserted = on_pool!(self, |pool| {
            sqlx::query(FORGET).bind(key.identity).bind(key.token).bind(expired_before_ms).execute(pool).await?;
            sqlx::query(INSERT)
                .bind(key.identity)
                .bind(key.token)
                .bind(hash)
                .bind(until_ms)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if inserted == 1 {
            return Ok(Claim::Owner { claimed_until_ms: until_ms });
        }
        match self.submission(key).await? {
            Some(existing) => Ok(Claim::Existing(existing)),
            // Forgotten between the insert and the read: a retry claims it.
            None => Err(LedgerError::Corrupt("a submission vanished while it was claimed".to_owned())),
        }
    }

    /// The submission of `key`, if any.
    pub(crate) async fn submission(&self, key: TokenKey<'_>) -> Result<Option<Submission>, LedgerError> {
        const SQL: &str = "SELECT request_hash, state, claimed_until_ms, created_at_ms, answer_json, job_id, entry_id \
                           FROM ledger_submissions WHERE identity = $1 AND request_token = $2";
        on_pool!(self, |pool| {
            let Some(row) = sqlx::query(SQL).bind(key.identity).bind(key.token).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let state = match row.try_get::<String, _>("state")?.as_str() {
                "pending" => SubmissionState::Pending,
                "submitted" => SubmissionState::Submitted,
                other => return Err(LedgerError::Corrupt(format!("submission state {other:?}"))),
            };
            Ok(Some(Submission {
                request_hash: row.try_get("request_hash")?,
                state,
                claimed_until_ms: row.try_get("claimed_until_ms")?,
                created_at_ms: row.try_get("created_at_ms")?,
                answer_json: row.try_get("answer_json")?,
                job_id: row.try_get("job_id")?,
                entry_id: row.try_get("entry_id")?,
            }))
        })
    }

    /// Takes over a PENDING claim whose lease (`seen_until_ms`) ran out;
    /// true for exactly one of the callers racing for it.
    pub(crate) async fn take_over(
        &self,
        key: TokenKey<'_>,
        seen_until_ms: i64,
        until_ms: i64,
    ) -> Result<bool, LedgerError> {
        const SQL: &str = "UPDATE ledger_submissions SET claimed_until_ms = $1 WHERE identity = $2 AND \
                           request_token = $3 AND state = 'pending' AND claimed_until_ms = $4";
        let updated = on_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(until_ms)
                .bind(key.identity)
                .bind(key.token)
                .bind(seen_until_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Records the answer of `key` (the planned one while PENDING, with
    /// ET's job id once SUBMITTED).
    pub(crate) async fn set_answer(&self, key: TokenKey<'_>, answer: &TokenAnswer<'_>) -> Result<(), LedgerError> {
        const SQL: &str = "UPDATE ledger_submissions SET state = $1, answer_json = $2, job_id = $3, \
                           entry_id = $4 WHERE identity = $5 AND request_token = $6";
        on_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(answer.state.name())
                .bind(answer.answer_json)
                .bind(answer.job_id)
                .bind(answer.entry_id)
                .bind(key.identity)
                .bind(key.token)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes the PENDING claim of `key` its owner holds until `until_ms`
    /// (its work failed before anything was completed), so the next call
    /// claims the token anew; true when the claim was still the owner's.
    pub(crate) async fn release(&self, key: TokenKey<'_>, until_ms: i64) -> Result<bool, LedgerError> {
        const SQL: &str = "DELETE FROM ledger_submissions WHERE identity = $1 AND request_token = $2 AND \
                           state = 'pending' AND claimed_until_ms = $3";
        let deleted = on_pool!(self, |pool| {
            sqlx::query(SQL).bind(key.identity).bind(key.token).bind(until_ms).execute(pool).await?.rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Forgets submissions first made before `before_ms`.
    pub(crate) async fn forget_submissions(&self, before_ms: i64) -> Result<u64, LedgerError> {
        const SQL: &str = "DELETE FROM ledger_submissions WHERE created_at_ms < $1";
        Ok(on_pool!(self, |pool| sqlx::query(SQL).bind(before_ms).execute(pool).await?.rows_affected()))
    }
}
