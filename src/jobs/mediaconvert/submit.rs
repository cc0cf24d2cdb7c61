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

use serde_json::{Value, json};
use sha2::Digest as _;

use super::error::{McError, ServiceFailure};
use super::request::{McAnswer, McJobRequest};
pub(super) use crate::jobs::ticket::Ticket;
use crate::ledger::{Ledger, METADATA_KEY, RequestToken, SubmissionState, TokenAnswer};

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
    // The SDK's own idempotency token lives in the body it no longer
    // writes: without one of the caller's, every POST gets a fresh one, so
    // an SDK retry after a lost answer is the same job.
    if let Some(body) = wire.as_object_mut()
        && !body.contains_key("clientRequestToken")
    {
        body.insert("clientRequestToken".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
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
    let output = sent.map_err(|e| service_failure("", &e))?;
    let job = output.job().ok_or_else(|| McError::Service {
        kind: ServiceFailure::Internal,
        message: "the answer holds no job".to_owned(),
    })?;
    Ok(created(job))
}

/// What the broker keeps of a job MediaConvert has.
pub(super) fn created(job: &aws_sdk_mediaconvert::types::Job) -> Created {
    let id = job.id().unwrap_or_default().to_owned();
    let summary = json!({
        "id": id,
        "arn": job.arn(),
        "role": job.role(),
        "status": job.status().map(|s| s.as_str().to_owned()),
        "userMetadata": job.user_metadata(),
        "clientRequestToken": job.client_request_token(),
    });
    Created { id, job: summary }
}

/// An SDK failure of a MediaConvert call, `operation` naming it unless it
/// is CreateJob.
pub(super) fn service_failure<E, R>(
    operation: &str,
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> McError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let failure = crate::app::aws::sdk_failure(e);
    let kind = match failure.code.as_deref() {
        Some("BadRequestException" | "ConflictException" | "NotFoundException") => ServiceFailure::Rejected,
        Some("ForbiddenException") => ServiceFailure::AccessDenied,
        _ if failure.transport => ServiceFailure::Unavailable,
        Some("TooManyRequestsException" | "InternalServerErrorException" | "ServiceQuotaExceededException") => {
            ServiceFailure::Unavailable
        }
        _ => ServiceFailure::Internal,
    };
    McError::Service { kind, message: format!("{operation}{}", failure.message) }
}
