//! Idempotent S3-mode `EncryptObject`: a request token makes a repeat of a
//! finished transfer answer the first call's recorded result, with no new
//! key, no KMS call and no second upload.
//!
//! Owns the object's claim on its token (the key ledger's request-token
//! records, which job submission uses too), the hash that tells the same
//! request from another, and the recorded result. Must never run a
//! transfer while another call holds its token (a repeat in flight is
//! refused, not run), and never encrypt twice under one key: a claim whose
//! transfer failed is released, and the retry runs anew with a fresh key.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::custody::keys::EncryptionText;
use crate::ledger::{Claim, Ledger, RequestToken, S3Object, SubmissionState, TokenDone, TokenKey};
use crate::objects::error::ObjectError;
use crate::objects::s3::{S3Transfer, StoredObject};
use crate::objects::session::{EncryptParams, EncryptedObject};

/// What an encryption answers, and what a request token keeps of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncryptResult {
    /// The ET `Encryption` block (wrapped key, `KeyMd5`, IV, mode).
    pub encryption: EncryptionText,
    /// The ARN of the wrapping KMS key.
    pub kms_key_arn: String,
    /// The keyed fingerprint of the wrapped key.
    pub key_fingerprint: String,
    /// Plaintext bytes read.
    pub plaintext_bytes: u64,
    /// Ciphertext bytes written.
    pub ciphertext_bytes: u64,
    /// What S3 answered for the object written (S3 mode only).
    pub stored: Option<StoredObject>,
}

impl EncryptResult {
    /// The result of a finished encryption and, in S3 mode, of its upload.
    pub fn of(done: &EncryptedObject, stored: Option<StoredObject>) -> Self {
        EncryptResult {
            encryption: done.block.to_text(),
            kms_key_arn: done.key_arn.clone(),
            key_fingerprint: done.fingerprint.clone(),
            plaintext_bytes: done.plaintext_bytes,
            ciphertext_bytes: done.ciphertext_bytes,
            stored,
        }
    }
}

/// How a tokened encryption goes on after its claim.
#[derive(Debug)]
pub enum TokenStart {
    /// This call holds the token: encrypt and upload.
    Run(TokenClaim),
    /// The first call finished: its result, replayed.
    Replay(Box<EncryptResult>),
}

/// The hash of an S3-mode encryption request, as a token compares it: the
/// key asked for and both objects.
pub(super) fn request_hash(params: &EncryptParams, transfer: &S3Transfer) -> String {
    let mut hash = Sha256::new();
    let context = params.context.entry();
    let bits = params.bits.bits().to_string();
    for part in [
        "EncryptObject",
        params.mode.as_str(),
        &bits,
        params.key_id.as_ref().map_or("", |k| k.as_str()),
        context.0,
        context.1,
        transfer.source.bucket(),
        transfer.source.key(),
        transfer.destination.bucket(),
        transfer.destination.key(),
    ] {
        hash.update(part.len().to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// Claims `token` of `identity` for an encryption hashing to `hash`, for
/// `lease`.
///
/// # Errors
/// [`ObjectError::TokenReused`] (another request under the token),
/// [`ObjectError::TokenInFlight`] (the first call still holds it),
/// [`ObjectError::Ledger`].
pub(super) async fn claim(
    ledger: &Ledger,
    identity: &str,
    token: RequestToken,
    hash: &str,
    lease: Duration,
) -> Result<TokenStart, ObjectError> {
    let key = TokenKey { identity, token: token.as_str() };
    let existing = match ledger.claim_token(key, hash, lease).await? {
        Claim::Owner { claimed_until_ms } => {
            return Ok(TokenStart::Run(TokenClaim::new(ledger, identity, token, claimed_until_ms)));
        }
        Claim::Existing(existing) => existing,
    };
    if existing.request_hash != hash {
        return Err(ObjectError::TokenReused(token.as_str().to_owned()));
    }
    match (existing.state, existing.answer_json) {
        (SubmissionState::Submitted, Some(json)) => {
            let recorded = serde_json::from_str(&json)
                .map_err(|e| ObjectError::Internal(format!("the recorded result of a request token: {e}")))?;
            Ok(TokenStart::Replay(Box::new(recorded)))
        }
        // A claim whose owner stopped without releasing it (a crashed
        // broker) is taken over once its lease ran out, by one caller.
        _ if existing.claimed_until_ms < Ledger::now_ms() => {
            match ledger.take_over_token(key, existing.claimed_until_ms, lease).await? {
                Some(until) => Ok(TokenStart::Run(TokenClaim::new(ledger, identity, token, until))),
                None => Err(ObjectError::TokenInFlight(token.as_str().to_owned())),
            }
        }
        _ => Err(ObjectError::TokenInFlight(token.as_str().to_owned())),
    }
}

/// Records what S3 answered for the object `entry_id`'s key encrypts (the
/// key row gets its version id and ETag) and, with `claim`, the result as
/// the token's answer, in one transaction. A failure is logged, not
/// answered: the object is written and its key recorded; a repeat with the
/// token is refused until the claim's lease ends, then runs anew.
pub(super) async fn record_stored(
    ledger: &Ledger,
    entry_id: &str,
    transfer: &S3Transfer,
    result: &EncryptResult,
    claim: Option<TokenClaim>,
) {
    let stored = result.stored.clone().unwrap_or_default();
    let object = S3Object {
        bucket: transfer.destination.bucket().to_owned(),
        key: transfer.destination.key().to_owned(),
        version_id: stored.version_id,
        etag: stored.etag,
    };
    let answer = match claim.as_ref().map(|_| serde_json::to_string(result)).transpose() {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "the result of a request token does not serialise");
            None
        }
    };
    let done = claim.as_ref().zip(answer.as_deref()).map(|(claim, answer_json)| TokenDone {
        key: claim.key(),
        claimed_until_ms: claim.claimed_until_ms,
        answer_json,
    });
    match ledger.object_stored(entry_id, &object, done).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            destination = %transfer.destination,
            "request token taken over by another call while this one wrote the object; its result is not kept"
        ),
        Err(e) => tracing::error!(
            destination = %transfer.destination,
            ledger_entry = %entry_id,
            error = %e,
            "key ledger: the written object's version and ETag (and its request token's result) not recorded"
        ),
    }
    if let Some(mut claim) = claim {
        // Settled either way: done, or left to its lease (never released
        // once the object may exist, so a repeat cannot upload it again
        // before the lease ends).
        claim.settled = true;
    }
}

/// This call's hold on a request token. Released when the call's transfer
/// failed (so a retry runs anew, with a fresh key); dropped unsettled (the
/// call was cut off by its deadline), it is released in the background.
#[derive(Debug)]
pub struct TokenClaim {
    ledger: Ledger,
    identity: String,
    token: RequestToken,
    claimed_until_ms: i64,
    settled: bool,
}

impl TokenClaim {
    fn new(ledger: &Ledger, identity: &str, token: RequestToken, claimed_until_ms: i64) -> Self {
        TokenClaim { ledger: ledger.clone(), identity: identity.to_owned(), token, claimed_until_ms, settled: false }
    }

    fn key(&self) -> TokenKey<'_> {
        TokenKey { identity: &self.identity, token: self.token.as_str() }
    }

    /// Gives the token up: the transfer failed and no object was written.
    pub async fn release(mut self) {
        self.settled = true;
        release(&self.ledger, self.key(), self.claimed_until_ms).await;
    }
}

async fn release(ledger: &Ledger, key: TokenKey<'_>, claimed_until_ms: i64) {
    match ledger.release_token(key, claimed_until_ms).await {
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "a failed call's request token not released; it frees when its lease ends")
        }
    }
}

impl Drop for TokenClaim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (ledger, identity, token, until) =
            (self.ledger.clone(), std::mem::take(&mut self.identity), self.token.clone(), self.claimed_until_ms);
        runtime.spawn(async move {
            release(&ledger, TokenKey { identity: &identity, token: token.as_str() }, until).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custody::keys::{EncryptionMode, KeyBits, ServiceContext};
    use crate::custody::kms::KmsKeyId;
    use crate::objects::s3::S3Location;

    fn params(mode: EncryptionMode, bits: u32, key: Option<&str>, context: ServiceContext) -> EncryptParams {
        EncryptParams {
            key_id: key.map(|k| KmsKeyId::parse(k, "k").unwrap()),
            bits: KeyBits::parse(bits, "b").unwrap(),
            mode,
            context,
        }
    }

    fn transfer(source: (&str, &str), destination: (&str, &str)) -> S3Transfer {
        S3Transfer {
            source: S3Location::parse(source.0, source.1, "s").unwrap(),
            destination: S3Location::parse(destination.0, destination.1, "d").unwrap(),
        }
    }

    #[test]
    fn the_hash_tells_every_part_of_the_request_apart() {
        let base = params(EncryptionMode::AesGcm, 256, None, ServiceContext::ElasticTranscoder);
        let objects = transfer(("media", "in/a"), ("media", "out/a"));
        let hash = request_hash(&base, &objects);
        assert_eq!(
            hash,
            request_hash(&params(EncryptionMode::AesGcm, 0, None, ServiceContext::ElasticTranscoder), &objects),
            "0 bits is 256"
        );
        let others = [
            request_hash(&params(EncryptionMode::AesCtr, 256, None, ServiceContext::ElasticTranscoder), &objects),
            request_hash(&params(EncryptionMode::AesGcm, 128, None, ServiceContext::ElasticTranscoder), &objects),
            request_hash(
                &params(EncryptionMode::AesGcm, 256, Some("alias/x"), ServiceContext::ElasticTranscoder),
                &objects,
            ),
            request_hash(&params(EncryptionMode::AesGcm, 256, None, ServiceContext::MediaConvert), &objects),
            request_hash(&base, &transfer(("media", "in/b"), ("media", "out/a"))),
            request_hash(&base, &transfer(("media", "in/a"), ("media", "out/b"))),
            request_hash(&base, &transfer(("medi", "ain/a"), ("media", "out/a"))),
            request_hash(&base, &transfer(("media", "out/a"), ("media", "in/a"))),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(*other, hash, "variant {i}");
        }
    }

    #[test]
    fn a_recorded_result_round_trips_through_json_with_wrapped_keys_only() {
        let result = EncryptResult {
            encryption: EncryptionText {
                mode: "aes-gcm".into(),
                key: "d3JhcHBlZA==".into(),
                key_md5: "bWQ1".into(),
                initialization_vector: "aXY=".into(),
            },
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            key_fingerprint: "f".repeat(64),
            plaintext_bytes: 10,
            ciphertext_bytes: 26,
            stored: Some(StoredObject { version_id: Some("v1".into()), etag: Some("\"e\"".into()) }),
        };
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(serde_json::from_str::<EncryptResult>(&json).unwrap(), result);
    }
}
