//! Submission to MediaConvert and the request token's write-ahead.
//!
//! Owns the CreateJob POST through aws-sdk-mediaconvert (the SDK signs,
//! resolves the endpoint, honours `AWS_ENDPOINT_URL_MEDIACONVERT` and
//! retries; the body is the broker's checked wire document, which replaces
//! the SDK's serialisation before signing) and the ledger's token states:
//! claimed before anything is keyed, PENDING with the planned answer before
//! the POST, SUBMITTED with the job id. The `ClientRequestToken` is derived
//! from the ledger's token (MediaConvert's own window is a minute; the
//! ledger's is days), so an SDK retry of a lost answer is the same job.
//! Must never store or log a static key: planned answers are redacted.

use std::time::{Duration, Instant};

use aws_sdk_mediaconvert::error::ProvideErrorMetadata as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::error::{McError, ServiceFailure};
use super::request::{McAnswer, McJobRequest};
pub(super) use crate::jobs::ticket::Ticket;
use crate::ledger::{Claim, Ledger, METADATA_KEY, RequestToken, SubmissionState, TokenAnswer};

/// How often a call waiting for another call's submission looks again.
const POLL: Duration = Duration::from_millis(100);

/// The ticket of `token` for `request`: the hash covers the document as the
/// caller sent it and every protection flag.
///
/// # Errors
/// [`McError::Serialise`] when the document cannot be written.
pub(super) fn new_ticket(identity: &str, token: RequestToken, request: &McJobRequest) -> Result<Ticket, McError> {
    let body = serde_json::to_vec(&request.job)?;
    let flags = format!(
        "{:?}|{}|{}|{}|{}|{}",
        request.inputs.fingerprints,
        request.inputs.rewrap_et_keys,
        request.outputs.encrypt_outputs,
        request.outputs.bind_job_context,
        request.outputs.constant_iv,
        request.kms_key_id.as_ref().map_or("", |k| k.as_str()),
    );
    Ok(Ticket::new(identity, token, |hash| {
        hash.update(&body);
        hash.update([0]);
        hash.update(flags.as_bytes());
    }))
}

/// How a tokened submission goes on after its claim.
pub(super) enum Start {
    /// This call owns the token: key and submit.
    Fresh,
    /// The token's answer, replayed.
    Answer(Box<McAnswer>),
}

/// Claims `ticket`; while another call holds it, waits (at most a lease)
/// for its answer, or takes over a claim whose owner vanished before
/// planning anything.
///
/// # Errors
/// `ALREADY_EXISTS` for another request under the token, `ABORTED` while
/// the first call is at it, `FAILED_PRECONDITION` for a planned job whose
/// outcome is unknown, a ledger failure.
pub(super) async fn claim(ledger: &Ledger, ticket: &Ticket, lease: Duration) -> Result<Start, McError> {
    let give_up = Instant::now() + lease;
    loop {
        let existing = match ledger.claim_token(ticket.key(), ticket.hash(), lease).await? {
            Claim::Owner { .. } => return Ok(Start::Fresh),
            Claim::Existing(existing) => existing,
        };
        if existing.request_hash != ticket.hash() {
            return Err(McError::TokenReused(ticket.token().as_str().to_owned()));
        }
        let expired = existing.claimed_until_ms < Ledger::now_ms();
        match (existing.state, existing.answer_json.as_deref()) {
            (SubmissionState::Submitted, Some(json)) => {
                return Ok(Start::Answer(Box::new(serde_json::from_str(json)?)));
            }
            (_, None)
                if expired
                    && ledger.take_over_token(ticket.key(), existing.claimed_until_ms, lease).await?.is_some() =>
            {
                return Ok(Start::Fresh);
            }
            (SubmissionState::Pending, Some(_)) if expired => {
                return Err(McError::Precondition(format!(
                    "request_token: the first submission under {:?} stopped after its keys were recorded; whether \
                     MediaConvert has the job is unknown: find it by UserMetadata {METADATA_KEY} = {}",
                    ticket.token().as_str(),
                    ticket.marker()
                )));
            }
            _ => {}
        }
        if Instant::now() + POLL > give_up {
            return Err(McError::TokenInFlight(ticket.token().as_str().to_owned()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Records the planned answer (PENDING) before the POST.
///
/// # Errors
/// [`McError::Ledger`]: nothing is submitted.
pub(super) async fn mark_planned(
    ledger: &Ledger,
    ticket: &Ticket,
    planned: &McAnswer,
    entry: &str,
) -> Result<(), McError> {
    let json = serde_json::to_string(planned)?;
    let answer = TokenAnswer { state: SubmissionState::Pending, answer_json: &json, job_id: None, entry_id: entry };
    Ok(ledger.set_token_answer(ticket.key(), &answer).await?)
}

/// Names the job in the ledger and, with a token, records the answer
/// SUBMITTED. A failure is logged, not answered: the job exists.
pub(super) async fn mark_submitted(
    ledger: &Ledger,
    ticket: Option<&Ticket>,
    answer: &McAnswer,
    job_id: &str,
    entry: &str,
) {
    let recorded = async {
        ledger.attach_job(entry, job_id).await?;
        if let Some(ticket) = ticket {
            let json = serde_json::to_string(answer).map_err(|e| crate::ledger::LedgerError::Corrupt(e.to_string()))?;
            let done = TokenAnswer {
                state: SubmissionState::Submitted,
                answer_json: &json,
                job_id: Some(job_id),
                entry_id: entry,
            };
            ledger.set_token_answer(ticket.key(), &done).await?;
        }
        Ok::<(), crate::ledger::LedgerError>(())
    };
    if let Err(e) = recorded.await {
        tracing::error!(job_id = %job_id, error = %e, "key ledger: submitted MediaConvert job not recorded");
    }
}

/// A job MediaConvert created.
pub(super) struct Created {
    /// Its id.
    pub(super) id: String,
    /// What the answer says of it, wire form (no settings: the broker
    /// answers its own document).
    pub(super) job: Value,
}

/// POSTs `wire` (the checked document, wire form) with the ticket's
/// `ClientRequestToken` and `UserMetadata` marker.
///
/// # Errors
/// [`McError::Service`] when MediaConvert refuses or stays unreachable.
pub(super) async fn create_job(
    client: &aws_sdk_mediaconvert::Client,
    mut wire: Value,
    ticket: Option<&Ticket>,
) -> Result<Created, McError> {
    if let (Some(ticket), Some(body)) = (ticket, wire.as_object_mut()) {
        body.insert("clientRequestToken".to_owned(), json!(ticket.marker()));
        let metadata = body.entry("userMetadata").or_insert_with(|| json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert(METADATA_KEY.to_owned(), json!(ticket.marker()));
        }
    }
    let role = wire.get("role").and_then(Value::as_str).unwrap_or_default().to_owned();
    let body = bytes::Bytes::from(serde_json::to_vec(&wire)?);
    drop(wire);
    let sent = client
        .create_job()
        .role(role)
        .customize()
        .mutate_request(move |request| {
            let length = body.len().to_string();
            *request.body_mut() = aws_smithy_types::body::SdkBody::from(body.clone());
            request.headers_mut().insert("content-length", length);
        })
        .send()
        .await;
    let output = sent.map_err(|e| {
        let failure = crate::app::aws::sdk_failure(&e);
        let kind = match e.as_service_error().and_then(|s| s.code()) {
            Some("BadRequestException" | "ConflictException" | "NotFoundException") => ServiceFailure::Rejected,
            Some("ForbiddenException") => ServiceFailure::AccessDenied,
            _ if failure.transport => ServiceFailure::Unavailable,
            Some("TooManyRequestsException" | "InternalServerErrorException" | "ServiceQuotaExceededException") => {
                ServiceFailure::Unavailable
            }
            _ => ServiceFailure::Internal,
        };
        McError::Service { kind, message: failure.message }
    })?;
    let job = output.job().ok_or_else(|| McError::Service {
        kind: ServiceFailure::Internal,
        message: "the answer holds no job".to_owned(),
    })?;
    let id = job.id().unwrap_or_default().to_owned();
    let summary = json!({
        "id": id,
        "arn": job.arn(),
        "role": job.role(),
        "status": job.status().map(|s| s.as_str().to_owned()),
        "userMetadata": job.user_metadata(),
        "clientRequestToken": job.client_request_token(),
    });
    Ok(Created { id, job: summary })
}
