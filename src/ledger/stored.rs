//! An S3 object the broker finished writing: its key row (recorded before
//! the first byte was written) gets the version id and ETag S3 answered,
//! and, for a call with a request token, the token's answer is recorded in
//! the same transaction.
//!
//! Owns that one transaction. Must never mark a token done that its caller
//! no longer holds, and never store plaintext: the answer holds the
//! wrapped key only.

use super::error::LedgerError;
use super::row::S3Object;
use super::store::{Store, on_pool};
use super::submissions::TokenKey;

/// The answer of a request token whose work is done, as its owner records it.
#[derive(Debug, Clone, Copy)]
pub struct TokenDone<'a> {
    /// The token.
    pub key: TokenKey<'a>,
    /// The end of the owner's lease, which names the claim as the owner's.
    pub claimed_until_ms: i64,
    /// The answer, JSON, wrapped keys only.
    pub answer_json: &'a str,
}

impl Store {
    /// Names the version and ETag of the object whose key the entry
    /// `entry_id` recorded, and records `token`'s answer (SUBMITTED) if
    /// given; false when the token's claim was no longer the owner's (the
    /// key row is updated all the same).
    pub(crate) async fn object_stored(
        &self,
        entry_id: &str,
        object: &S3Object,
        token: Option<TokenDone<'_>>,
    ) -> Result<bool, LedgerError> {
        const KEYS: &str = "UPDATE ledger_keys SET s3_version_id = $1, s3_etag = $2 WHERE entry_id = $3 AND \
                            s3_bucket = $4 AND s3_key = $5";
        const TOKEN: &str = "UPDATE ledger_submissions SET state = 'submitted', answer_json = $1, entry_id = $2 \
                             WHERE identity = $3 AND request_token = $4 AND state = 'pending' AND \
                             claimed_until_ms = $5";
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(KEYS)
                .bind(object.version_id.as_deref())
                .bind(object.etag.as_deref())
                .bind(entry_id)
                .bind(&object.bucket)
                .bind(&object.key)
                .execute(&mut *tx)
                .await?;
            let mut owned = true;
            if let Some(done) = token {
                owned = sqlx::query(TOKEN)
                    .bind(done.answer_json)
                    .bind(entry_id)
                    .bind(done.key.identity)
                    .bind(done.key.token)
                    .bind(done.claimed_until_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            }
            tx.commit().await?;
            owned
        }))
    }
}
