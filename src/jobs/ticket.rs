//! A caller's request token for one job submission, whatever the
//! transcoder: who asked, the token, the hash of the request it was first
//! used with, and the marker that names it in the job (`UserMetadata`, and
//! MediaConvert's `ClientRequestToken`).
//!
//! Owns the token's identity in the ledger ([`TokenKey`]), its marker, and
//! the claim loop both transcoders share ([`claim`]): a replayed answer, a
//! planned job resolved at the transcoder by its marker, a vanished
//! owner's claim taken over once its lease ran out.
//! Must never hash or hold key material: the hash covers the request as the
//! caller sent it, whose keys are wrapped.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::ledger::{Claim, Ledger, LedgerError, RequestToken, SubmissionState, TokenKey};

/// How often a call waiting for another call's submission looks again.
const POLL: Duration = Duration::from_millis(100);

/// One caller's token for one request.
#[derive(Debug, Clone)]
pub struct Ticket {
    identity: String,
    token: RequestToken,
    hash: String,
    marker: String,
}

impl Ticket {
    /// The ticket of `token` for `identity`'s request, whose canonical bytes
    /// `hashed` writes into the hash.
    pub fn new(identity: &str, token: RequestToken, hashed: impl FnOnce(&mut Sha256)) -> Ticket {
        let mut hash = Sha256::new();
        hashed(&mut hash);
        Ticket {
            marker: token.metadata_value(identity),
            identity: identity.to_owned(),
            token,
            hash: hex::encode(hash.finalize()),
        }
    }

    /// The token's key in the ledger.
    pub fn key(&self) -> TokenKey<'_> {
        TokenKey { identity: &self.identity, token: self.token.as_str() }
    }

    /// The token as the caller wrote it.
    pub fn token(&self) -> &RequestToken {
        &self.token
    }

    /// The hash of the request the ticket was made for.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The value that names the token in a job: SHA-256 of caller and
    /// token, hex (64 characters).
    pub fn marker(&self) -> &str {
        &self.marker
    }
}

/// How a tokened submission goes on after its claim; `A` is the
/// transcoder's answer as the ledger keeps it.
#[derive(Debug)]
pub enum Start<A> {
    /// This call owns the token, until `claimed_until_ms`, and nothing is
    /// planned: key and submit.
    Fresh {
        /// The claim's lease end, to release it by.
        claimed_until_ms: i64,
    },
    /// The token's answer, replayed, or resolved at the transcoder.
    Answer(A),
    /// This call took over a planned job the transcoder does not have:
    /// POST it again, same keys.
    Resubmit {
        /// The planned answer.
        planned: A,
        /// The ledger entry holding its keys.
        entry: String,
        /// The claim's lease end.
        claimed_until_ms: i64,
    },
}

/// Where a claim looks up a planned job whose POST's outcome is unknown:
/// the transcoder, by the ticket's marker.
pub trait FindPlanned<A>: Sync {
    /// The transcoder's error.
    type Error: ClaimError;

    /// Looks the job of `planned` (whose keys the ledger entry `entry`
    /// holds) up; when the transcoder has it, completes `planned`, records
    /// it SUBMITTED and answers true.
    fn find(&self, planned: &mut A, entry: &str) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// The errors a claim answers, in the transcoder's own error type.
pub trait ClaimError: From<LedgerError> + From<serde_json::Error> {
    /// The token was first used with another request (`ALREADY_EXISTS`).
    fn reused(token: &str) -> Self;
    /// Another call still holds the token (`ABORTED`).
    fn in_flight(token: &str) -> Self;
}

/// Claims `ticket` for `lease`. While another call holds it, waits (at most
/// `wait`) for its answer or for its lease to run out. A planned answer
/// (PENDING: keys recorded, the POST's outcome unknown) is handed to
/// `planned_jobs`, which looks the job up at the transcoder by the ticket's marker
/// and, when it is there, completes the answer and records it SUBMITTED
/// (true); when it is not, the planned job is resubmitted by whoever takes
/// the lapsed claim over.
///
/// # Errors
/// [`ClaimError::reused`], [`ClaimError::in_flight`], a ledger failure, an
/// answer that does not parse, or what the lookup answers.
pub async fn claim<A, F>(
    ledger: &Ledger,
    ticket: &Ticket,
    lease: Duration,
    wait: Duration,
    planned_jobs: &F,
) -> Result<Start<A>, F::Error>
where
    A: DeserializeOwned + Send,
    F: FindPlanned<A>,
{
    let give_up = Instant::now() + wait;
    loop {
        let existing = match ledger.claim_token(ticket.key(), ticket.hash(), lease).await? {
            Claim::Owner { claimed_until_ms } => return Ok(Start::Fresh { claimed_until_ms }),
            Claim::Existing(existing) => existing,
        };
        if existing.request_hash != ticket.hash() {
            return Err(F::Error::reused(ticket.token().as_str()));
        }
        let answer: Option<A> = existing.answer_json.as_deref().map(serde_json::from_str).transpose()?;
        let lapsed = || existing.claimed_until_ms < Ledger::now_ms();
        match (existing.state, answer) {
            (SubmissionState::Submitted, Some(answer)) => return Ok(Start::Answer(answer)),
            (_, Some(mut planned)) => {
                let entry = existing.entry_id.clone().unwrap_or_default();
                if planned_jobs.find(&mut planned, &entry).await? {
                    return Ok(Start::Answer(planned));
                }
                if lapsed()
                    && let Some(until) = ledger.take_over_token(ticket.key(), existing.claimed_until_ms, lease).await?
                {
                    return Ok(Start::Resubmit { planned, entry, claimed_until_ms: until });
                }
            }
            (_, None) => {
                if lapsed()
                    && let Some(until) = ledger.take_over_token(ticket.key(), existing.claimed_until_ms, lease).await?
                {
                    return Ok(Start::Fresh { claimed_until_ms: until });
                }
            }
        }
        if Instant::now() + POLL > give_up {
            return Err(F::Error::in_flight(ticket.token().as_str()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// This call's fresh claim on a token until its job is planned: cut off
/// before then (its future dropped at the caller's deadline), nothing has
/// reached the transcoder, so the claim is released in the background and
/// a retry with the token runs at once instead of at the lease's end.
pub struct Hold {
    ledger: Ledger,
    identity: String,
    token: String,
    claimed_until_ms: i64,
    armed: std::sync::atomic::AtomicBool,
}

impl Hold {
    /// The hold on `ticket`'s claim that lasts until `claimed_until_ms`.
    pub fn new(ledger: &Ledger, ticket: &Ticket, claimed_until_ms: i64) -> Self {
        let key = ticket.key();
        Hold {
            ledger: ledger.clone(),
            identity: key.identity.to_owned(),
            token: key.token.to_owned(),
            claimed_until_ms,
            armed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// From here on the claim is left to its lease (or released by the
    /// call itself): the job is about to be planned and POSTed.
    pub fn disarm(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (ledger, identity, token, until) = (
            self.ledger.clone(),
            std::mem::take(&mut self.identity),
            std::mem::take(&mut self.token),
            self.claimed_until_ms,
        );
        runtime.spawn(async move {
            let key = crate::ledger::TokenKey { identity: &identity, token: &token };
            match ledger.release_token(key, until).await {
                Ok(_) => tracing::info!("a call cut off before its job was planned released its token"),
                Err(e) => tracing::warn!(error = %e, "a cut-off call's request token not released; it frees when its lease ends"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_of_two_callers_is_two_tickets_and_the_hash_follows_the_request() {
        let token = || RequestToken::parse_optional("t-1", "request_token").unwrap().unwrap();
        let a = Ticket::new("dns:a", token(), |h| h.update(b"job"));
        let b = Ticket::new("dns:b", token(), |h| h.update(b"job"));
        assert_ne!(a.marker(), b.marker());
        assert_eq!(a.marker().len(), 64);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), Ticket::new("dns:a", token(), |h| h.update(b"other")).hash());
        assert_eq!(a.key().identity, "dns:a");
    }

    /// A transcoder that has the planned job or not, counting lookups.
    struct Transcoder {
        has_job: bool,
        lookups: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("reused {0}")]
        Reused(String),
        #[error("in flight {0}")]
        InFlight(String),
        #[error(transparent)]
        Ledger(#[from] LedgerError),
        #[error(transparent)]
        Json(#[from] serde_json::Error),
    }

    impl ClaimError for TestError {
        fn reused(token: &str) -> Self {
            TestError::Reused(token.to_owned())
        }

        fn in_flight(token: &str) -> Self {
            TestError::InFlight(token.to_owned())
        }
    }

    impl FindPlanned<String> for Transcoder {
        type Error = TestError;

        async fn find(&self, planned: &mut String, _entry: &str) -> Result<bool, TestError> {
            self.lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.has_job {
                planned.push_str(" job-1");
            }
            Ok(self.has_job)
        }
    }

    fn transcoder(has_job: bool) -> Transcoder {
        Transcoder { has_job, lookups: std::sync::atomic::AtomicUsize::new(0) }
    }

    async fn plan(ledger: &Ledger, ticket: &Ticket, state: SubmissionState) {
        let answer = crate::ledger::TokenAnswer { state, answer_json: "\"planned\"", job_id: None, entry_id: "e-1" };
        ledger.set_token_answer(ticket.key(), &answer).await.unwrap();
    }

    #[tokio::test]
    async fn the_shared_claim_loop_replays_resolves_takes_over_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(None, &dir.path().join("ledger.sqlite"), Duration::from_secs(5)).await.unwrap();
        let token = || RequestToken::parse_optional("t-1", "request_token").unwrap().unwrap();
        let ticket = Ticket::new("dns:a", token(), |h| h.update(b"job"));
        let (short, wait) = (Duration::from_millis(300), Duration::from_millis(250));

        // Fresh, then the same token held by that claim: in flight.
        let fresh = claim::<String, _>(&ledger, &ticket, short, wait, &transcoder(false)).await.unwrap();
        assert!(matches!(fresh, Start::Fresh { .. }), "{fresh:?}");
        let busy = claim::<String, _>(&ledger, &ticket, short, Duration::ZERO, &transcoder(false)).await;
        assert!(matches!(busy, Err(TestError::InFlight(_))), "{busy:?}");
        // Another request under the token.
        let other = Ticket::new("dns:a", token(), |h| h.update(b"another job"));
        let reused = claim::<String, _>(&ledger, &other, short, wait, &transcoder(false)).await;
        assert!(matches!(reused, Err(TestError::Reused(_))), "{reused:?}");

        // Planned: the transcoder has the job, so it is the answer.
        plan(&ledger, &ticket, SubmissionState::Pending).await;
        let found = claim(&ledger, &ticket, short, wait, &transcoder(true)).await.unwrap();
        assert!(matches!(&found, Start::Answer(a) if a == "planned job-1"), "{found:?}");

        // Planned, not at the transcoder: taken over once the lease lapsed.
        let missing = transcoder(false);
        let resubmit = claim(&ledger, &ticket, short, Duration::from_secs(2), &missing).await.unwrap();
        assert!(matches!(&resubmit, Start::Resubmit { planned, entry, .. } if planned == "planned" && entry == "e-1"));
        assert!(missing.lookups.load(std::sync::atomic::Ordering::SeqCst) >= 1, "looked before resubmitting");

        // Submitted: replayed with no lookup.
        plan(&ledger, &ticket, SubmissionState::Submitted).await;
        let replay_lookups = transcoder(true);
        let replay = claim(&ledger, &ticket, short, wait, &replay_lookups).await.unwrap();
        assert!(matches!(&replay, Start::Answer(a) if a == "planned"), "{replay:?}");
        assert_eq!(replay_lookups.lookups.load(std::sync::atomic::Ordering::SeqCst), 0);
        ledger.close().await;
    }
}
